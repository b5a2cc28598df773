import type { TrustDomain } from '@tessera/spiffe';
import type { Selector } from '../datastore/types.js';

/** What a node attestor concluded: who the node is and what is known about it. */
export interface AttestationResult {
  /** The agent's SPIFFE ID, `spiffe://<td>/tessera/agent/<attestor>/<id>`. */
  spiffeId: string;
  /** Node selectors, matched by node-alias entries. */
  selectors: Selector[];
}

/**
 * A node attestor: checks the evidence an agent sent and, when it needs proof of possession, asks
 * the agent challenges through `challenge` (each resolves with the agent's response). Throws
 * ERR_ATTESTATION_FAILED saying which check failed; never includes secrets in the message.
 */
export interface NodeAttestor {
  readonly type: string;
  attest(
    payload: Uint8Array,
    challenge: (bytes: Uint8Array) => Promise<Uint8Array>,
    now: Date,
  ): Promise<AttestationResult>;
}

/** `spiffe://<td>/tessera/agent/<attestor>/<id>` */
export function agentId(trustDomain: TrustDomain, attestor: string, id: string): string {
  return `${trustDomain.idString()}/tessera/agent/${attestor}/${id}`;
}

/** True for IDs of the form agentId() makes. */
export function isAgentId(trustDomain: TrustDomain, id: string): boolean {
  return id.startsWith(`${trustDomain.idString()}/tessera/agent/`);
}
