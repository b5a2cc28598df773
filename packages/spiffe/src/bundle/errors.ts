import { ErrorCode, SpiffeError } from '../errors.js';
import type { TrustDomain } from '../spiffeid/trust-domain.js';

/** @internal */
export function bundleNotFound(kind: 'X.509' | 'JWT' | 'SPIFFE', td: TrustDomain): SpiffeError {
  return new SpiffeError(
    ErrorCode.BUNDLE_NOT_FOUND,
    `bundle: no ${kind} bundle found for trust domain "${td}"`,
  );
}

/** @internal */
export function bundleInvalid(
  what: string,
  td: TrustDomain | string,
  detail: string,
  cause?: unknown,
): SpiffeError {
  return new SpiffeError(
    ErrorCode.BUNDLE_INVALID,
    `bundle: cannot parse ${what} for trust domain "${td}": ${detail}`,
    cause === undefined ? undefined : { cause },
  );
}
