// The join_token node attestor: the agent presents a one-time token an operator generated
// (`tessera token generate`); the datastore holds only its SHA-256 and consumes it atomically.
import type { TrustDomain } from '@tessera/spiffe';
import { isTesseraError, TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { Datastore } from '../datastore/types.js';
import { joinTokenAgentId } from './join-token-id.js';
import type { AttestationResult, NodeAttestor } from './types.js';

export class JoinTokenAttestor implements NodeAttestor {
  readonly type = 'join_token';
  readonly #td: TrustDomain;
  readonly #ds: Datastore;

  constructor(trustDomain: TrustDomain, datastore: Datastore) {
    this.#td = trustDomain;
    this.#ds = datastore;
  }

  async attest(payload: Uint8Array, _challenge: unknown, now: Date): Promise<AttestationResult> {
    const token = Buffer.from(payload).toString('utf8');
    if (token === '')
      throw new TesseraError(TesseraErrorCode.ATTESTATION_FAILED, 'join_token: the request carries no token');
    let agentName: string | undefined;
    try {
      ({ agentName } = await this.#ds.consumeJoinToken(token, now));
    } catch (err) {
      // Unknown, reused or expired: the datastore's message says which, and never holds the token.
      if (isTesseraError(err, TesseraErrorCode.JOIN_TOKEN_INVALID))
        throw new TesseraError(TesseraErrorCode.ATTESTATION_FAILED, err.message, { cause: err });
      throw err;
    }
    return {
      spiffeId: joinTokenAgentId(this.#td, token, agentName),
      selectors: agentName === undefined ? [] : [{ type: 'join_token', value: `name:${agentName}` }],
    };
  }
}
