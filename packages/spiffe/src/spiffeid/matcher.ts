import { ErrorCode, SpiffeError } from '../errors.js';
import type { SpiffeId } from './spiffe-id.js';
import type { TrustDomain } from './trust-domain.js';

/** Decides whether an ID is acceptable; throws ERR_ID_UNAUTHORIZED when it is not. */
export type Matcher = (id: SpiffeId) => void;

export function matchAny(): Matcher {
  return () => {};
}

export function matchId(expected: SpiffeId): Matcher {
  return (id) => {
    if (!id.equals(expected)) throw unexpectedId(id, `expected "${expected}"`);
  };
}

export function matchOneOf(...expected: SpiffeId[]): Matcher {
  const allowed = new Set(expected.map(String));
  return (id) => {
    if (!allowed.has(id.toString())) {
      throw unexpectedId(id, `expected one of ${JSON.stringify([...allowed])}`);
    }
  };
}

export function matchMemberOf(td: TrustDomain): Matcher {
  return (id) => {
    if (!id.memberOf(td)) {
      throw new SpiffeError(
        ErrorCode.ID_UNAUTHORIZED,
        `spiffeid: unexpected trust domain "${id.trustDomain}" of ID "${id}"; expected a member of "${td}"`,
      );
    }
  };
}

function unexpectedId(id: SpiffeId, expected: string): SpiffeError {
  return new SpiffeError(ErrorCode.ID_UNAUTHORIZED, `spiffeid: unexpected ID "${id}"; ${expected}`);
}
