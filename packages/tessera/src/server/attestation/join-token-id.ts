import { createHash } from 'node:crypto';
import type { TrustDomain } from '@tessera/spiffe';
import { agentId } from './types.js';

/**
 * The agent ID a join token attests to: `…/tessera/agent/join_token/<name>` with the token's fixed
 * agent name, else the first 32 hex digits of the token's SHA-256 (never the token itself, which
 * is a secret until used).
 */
export function joinTokenAgentId(trustDomain: TrustDomain, token: string, agentName?: string): string {
  const id =
    agentName !== undefined && agentName !== ''
      ? agentName
      : createHash('sha256').update(token, 'utf8').digest('hex').slice(0, 32);
  return agentId(trustDomain, 'join_token', id);
}
