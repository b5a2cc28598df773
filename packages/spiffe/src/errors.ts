/**
 * One error class for the whole package. Callers match on `code`, which is stable and never
 * reused; the message says what failed, with which input, and what is allowed.
 *
 * Codes are listed in packages/spiffe/docs/errors.md (kept in sync by errors.test.ts).
 */
export const ErrorCode = {
  /** A SPIFFE ID string, path or segment breaks the SPIFFE-ID grammar. */
  SPIFFEID_INVALID: 'ERR_SPIFFEID_INVALID',
  /** A trust domain name breaks the SPIFFE-ID grammar. */
  TRUST_DOMAIN_INVALID: 'ERR_TRUST_DOMAIN_INVALID',
  /** A matcher or authorizer refused a SPIFFE ID. */
  ID_UNAUTHORIZED: 'ERR_ID_UNAUTHORIZED',
  /** A bundle document (PEM, DER, JWKS, SPIFFE bundle) could not be parsed. */
  BUNDLE_INVALID: 'ERR_BUNDLE_INVALID',
  /** No bundle is known for the trust domain asked for. */
  BUNDLE_NOT_FOUND: 'ERR_BUNDLE_NOT_FOUND',
  /** An X509-SVID (chain or key) is malformed or breaks the X509-SVID rules. */
  X509SVID_INVALID: 'ERR_X509SVID_INVALID',
  /** An X509-SVID chain failed verification against the trust bundle. */
  X509SVID_VERIFY: 'ERR_X509SVID_VERIFY',
  /** A certificate in an X509-SVID chain is on a CRL its issuer signed. */
  X509SVID_REVOKED: 'ERR_X509SVID_REVOKED',
  /** A certificate revocation list (DER or PEM) could not be parsed. */
  X509CRL_INVALID: 'ERR_X509CRL_INVALID',
  /** A JWT-SVID is malformed or breaks the JWT-SVID rules. */
  JWTSVID_INVALID: 'ERR_JWTSVID_INVALID',
  /** A JWT-SVID's signature, expiry or audience check failed. */
  JWTSVID_VERIFY: 'ERR_JWTSVID_VERIFY',
  /** A Workload API endpoint address is malformed or missing. */
  WORKLOADAPI_ADDRESS: 'ERR_WORKLOADAPI_ADDRESS',
  /** The Workload API refused the caller: no identity was issued to this process. */
  WORKLOADAPI_PERMISSION_DENIED: 'ERR_WORKLOADAPI_PERMISSION_DENIED',
  /** The Workload API answered with an error, or with a message that breaks the spec. */
  WORKLOADAPI_RESPONSE: 'ERR_WORKLOADAPI_RESPONSE',
  /** The Workload API could not be reached. */
  WORKLOADAPI_UNAVAILABLE: 'ERR_WORKLOADAPI_UNAVAILABLE',
  /** The operation was aborted by its AbortSignal or by close(). */
  ABORTED: 'ERR_ABORTED',
  /** A source was used after close(), or closed before its first update. */
  SOURCE_CLOSED: 'ERR_SOURCE_CLOSED',
  /** A source's create() gave up: no complete update within readyTimeoutMs. */
  SOURCE_TIMEOUT: 'ERR_SOURCE_TIMEOUT',
  /** A TLS peer was refused (verification or authorization failed). */
  TLS_PEER_REFUSED: 'ERR_TLS_PEER_REFUSED',
  /** A federation bundle endpoint could not be fetched or returned an invalid bundle. */
  FEDERATION_FETCH: 'ERR_FEDERATION_FETCH',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class SpiffeError extends Error {
  override readonly name = 'SpiffeError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** True when `err` is a SpiffeError, optionally with the given code. */
export function isSpiffeError(err: unknown, code?: ErrorCode): err is SpiffeError {
  return err instanceof SpiffeError && (code === undefined || err.code === code);
}
