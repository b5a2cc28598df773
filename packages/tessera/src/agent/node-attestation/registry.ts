// The agent's side of the node attestors, each one file: its agent.yaml section
// (node_attestor.<name>) and how it produces the evidence (and answers challenges). join_token and
// x509pop predate this list and keep their own code (run.ts).
import type { Field } from '../../common/config-schema.js';
import type { DaemonLogger } from '../../common/log.js';
import { awsIidAgentPlugin } from './aws-iid.js';
import { agentJwtNodeAttestorPlugin } from './jwt.js';
import { agentK8sPsatNodeAttestorPlugin } from './k8s-psat.js';
import { tpmAgentNodeAttestor } from './tpm.js';

/** What the agent sends to attest, and for challenge–response attestors how to answer. */
export interface NodeEvidence {
  readonly type: string;
  readonly payload: Uint8Array;
  readonly respond?: (challenge: Uint8Array) => Uint8Array | Promise<Uint8Array>;
}

export interface AgentNodeAttestorPlugin {
  /** The key under node_attestor in agent.yaml, and the attestor's type on the wire. */
  readonly name: string;
  readonly config: Field & { kind: 'object' };
  /**
   * The evidence, fresh for each attestation (a token read again, a document fetched again). A
   * problem is thrown as an Error whose message names the key and the input.
   */
  evidence(config: unknown, ctx: { readonly logger: DaemonLogger }): Promise<NodeEvidence>;
}

export const AGENT_NODE_ATTESTOR_PLUGINS: readonly AgentNodeAttestorPlugin[] = [
  awsIidAgentPlugin,
  tpmAgentNodeAttestor,
  agentJwtNodeAttestorPlugin,
  agentK8sPsatNodeAttestorPlugin,
];

/** The node_attestor options the plugins add to agent.yaml's schema. */
export function agentPluginConfigOptions(): Record<string, Field & { kind: 'object' }> {
  return Object.fromEntries(AGENT_NODE_ATTESTOR_PLUGINS.map((p) => [p.name, p.config]));
}
