// The agent's side of the k8s_psat node attestor, as SPIRE's: the agent runs in a pod with a
// projected service account token mounted at token_path (audience: the server's, "tessera-server" by
// default) and sends it with the name of its cluster, read afresh for each attestation (the kubelet
// rotates the file).
import { readFileSync } from 'node:fs';
import type { Field } from '../../common/config-schema.js';
import type { AgentNodeAttestorPlugin, NodeEvidence } from './registry.js';

/** Where the projected token is mounted unless configured (SPIRE's is /var/run/secrets/tokens/spire-agent). */
export const K8S_PSAT_DEFAULT_TOKEN_PATH = '/var/run/secrets/tokens/tessera-agent';

export const AGENT_K8S_PSAT_CONFIG = {
  kind: 'object',
  fields: {
    // The cluster's name as the server knows it (node_attestors.k8s_psat.clusters.<name>).
    cluster: { kind: 'string', required: true },
    token_path: {
      kind: 'string',
      default: K8S_PSAT_DEFAULT_TOKEN_PATH,
      check: (v) => (v.startsWith('/') ? undefined : `must be an absolute path; got ${JSON.stringify(v)}`),
    },
  },
} as const satisfies Field & { kind: 'object' };

interface AgentK8sPsatConfig {
  readonly cluster: string;
  readonly token_path: string;
}

export const agentK8sPsatNodeAttestorPlugin: AgentNodeAttestorPlugin = {
  name: 'k8s_psat',
  config: AGENT_K8S_PSAT_CONFIG,
  async evidence(raw): Promise<NodeEvidence> {
    const c = raw as AgentK8sPsatConfig;
    let token: string;
    try {
      token = readFileSync(c.token_path, 'utf8').trim();
    } catch (err) {
      throw new Error(
        `token_path: cannot read ${c.token_path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; mount a projected service account token there`,
      );
    }
    if (token === '') throw new Error(`token_path: ${c.token_path} is empty`);
    return { type: 'k8s_psat', payload: Buffer.from(JSON.stringify({ cluster: c.cluster, token }), 'utf8') };
  },
};
