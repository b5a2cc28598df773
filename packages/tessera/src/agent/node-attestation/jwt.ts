// The agent's side of the jwt node attestor: it sends a JWT its platform gave it — a CI runner's
// OIDC token written to a file (token_path) or held in an environment variable (token_env), e.g.
// GitLab CI's id_tokens. The token is read afresh for each attestation, and sent as it is.
import { readFileSync } from 'node:fs';
import type { Field } from '../../common/config-schema.js';
import type { AgentNodeAttestorPlugin, NodeEvidence } from './registry.js';

export const AGENT_JWT_CONFIG = {
  kind: 'object',
  fields: {
    // One of: a file holding the token (its first line), or the name of an environment variable.
    token_path: {
      kind: 'string',
      check: (v) => (v.startsWith('/') ? undefined : `must be an absolute path; got ${JSON.stringify(v)}`),
    },
    token_env: {
      kind: 'string',
      check: (v) =>
        /^[A-Za-z_][A-Za-z0-9_]*$/.test(v)
          ? undefined
          : `must be an environment variable name; got ${JSON.stringify(v)}`,
    },
  },
} as const satisfies Field & { kind: 'object' };

interface AgentJwtConfig {
  readonly token_path?: string;
  readonly token_env?: string;
}

/** The token from `token_path` or `token_env`; throws naming the key. `env` is the process's by default. */
export function readJwtToken(c: AgentJwtConfig, env: NodeJS.ProcessEnv = process.env): string {
  if ((c.token_path === undefined) === (c.token_env === undefined))
    throw new Error(
      'set one of token_path (a file holding the token) and token_env (an environment variable)',
    );
  let token: string | undefined;
  if (c.token_path !== undefined) {
    try {
      token = readFileSync(c.token_path, 'utf8').split('\n')[0]?.trim();
    } catch (err) {
      throw new Error(
        `token_path: cannot read ${c.token_path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    if (token === undefined || token === '') throw new Error(`token_path: ${c.token_path} is empty`);
    return token;
  }
  token = env[c.token_env as string]?.trim();
  if (token === undefined || token === '')
    throw new Error(`token_env: the environment variable ${c.token_env} is not set or empty`);
  return token;
}

export const agentJwtNodeAttestorPlugin: AgentNodeAttestorPlugin = {
  name: 'jwt',
  config: AGENT_JWT_CONFIG,
  async evidence(config): Promise<NodeEvidence> {
    return { type: 'jwt', payload: Buffer.from(readJwtToken(config as AgentJwtConfig), 'utf8') };
  },
};
