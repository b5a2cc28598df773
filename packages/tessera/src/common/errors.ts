/**
 * One error class for the daemons. `code` is stable; the table in packages/tessera/docs/errors.md
 * (kept in sync by errors.test.ts) says what each means and how to fix it. gRPC status codes are
 * chosen from `code` once, at the API boundary.
 */
export const TesseraErrorCode = {
  /** A registration entry with the same SPIFFE ID, parent ID and selectors exists. */
  ENTRY_DUPLICATE: 'ERR_ENTRY_DUPLICATE',
  /** No registration entry has that ID. */
  ENTRY_NOT_FOUND: 'ERR_ENTRY_NOT_FOUND',
  /** An entry is malformed (bad SPIFFE ID, selector, TTL...). */
  ENTRY_INVALID: 'ERR_ENTRY_INVALID',
  /** A write carried a revision older than the stored one: someone else changed the record first. */
  REVISION_CONFLICT: 'ERR_REVISION_CONFLICT',
  /** A join token is unknown, already used or expired. */
  JOIN_TOKEN_INVALID: 'ERR_JOIN_TOKEN_INVALID',
  /** A certificate signing request is malformed, has a bad signature, or an unacceptable key. */
  CSR_INVALID: 'ERR_CSR_INVALID',
  /** The CA cannot issue what was asked (bad SPIFFE ID, TTL, no active key). */
  CA_ISSUE: 'ERR_CA_ISSUE',
  /** A key file is unreadable, corrupt, or readable by others. */
  KEY_FILE: 'ERR_KEY_FILE',
  /** No attested agent has that SPIFFE ID. */
  AGENT_NOT_FOUND: 'ERR_AGENT_NOT_FOUND',
  /** No bundle is stored for that trust domain. */
  BUNDLE_NOT_FOUND: 'ERR_BUNDLE_NOT_FOUND',
  /** A federation relationship with that trust domain exists already. */
  FEDERATION_EXISTS: 'ERR_FEDERATION_EXISTS',
  /** No federation relationship names that trust domain (or it is defined in server.yaml). */
  FEDERATION_NOT_FOUND: 'ERR_FEDERATION_NOT_FOUND',
  /** No unexpired X509-SVID issued by this trust domain has that serial, or the entry has none. */
  X509_SVID_NOT_FOUND: 'ERR_X509_SVID_NOT_FOUND',
  /** A bundle endpoint could not be fetched or its answer was not a valid bundle. */
  FEDERATION_FETCH: 'ERR_FEDERATION_FETCH',
  /** The agent is banned: it must be evicted before it can attest again. */
  AGENT_BANNED: 'ERR_AGENT_BANNED',
  /** Node attestation failed: unknown attestor, bad evidence, failed challenge. */
  ATTESTATION_FAILED: 'ERR_ATTESTATION_FAILED',
  /** A workload attestor could not look up the caller (D-Bus, container engine, timeout): the connection is refused. */
  WORKLOAD_ATTESTATION: 'ERR_WORKLOAD_ATTESTATION',
  /** The caller is not entitled to what it asked for. */
  PERMISSION_DENIED: 'ERR_PERMISSION_DENIED',
  /** A request is malformed (missing field, bad value). */
  INVALID_ARGUMENT: 'ERR_INVALID_ARGUMENT',
  /** The daemon cannot start: data directory, lock, port, keys. */
  STARTUP: 'ERR_STARTUP',
  /** The datastore cannot be opened or a query failed. */
  DATASTORE: 'ERR_DATASTORE',
  /** An AuthorizationPolicy file cannot be read or is malformed; every problem is listed with file and line. */
  POLICY_INVALID: 'ERR_POLICY_INVALID',
  /** `tessera helper`: a file in cert_dir cannot be written (missing or unwritable directory, disk full). */
  HELPER_WRITE: 'ERR_HELPER_WRITE',
  /** `tessera helper`: the app cannot be told to reload (pid file missing or stale, signal refused, reload command failed). */
  HELPER_RELOAD: 'ERR_HELPER_RELOAD',
  /** `tessera helper`: what the files need did not come from the Workload API (in time, or with that hint). */
  HELPER_FETCH: 'ERR_HELPER_FETCH',
} as const;

export type TesseraErrorCode = (typeof TesseraErrorCode)[keyof typeof TesseraErrorCode];

export class TesseraError extends Error {
  override readonly name = 'TesseraError';
  readonly code: TesseraErrorCode;

  constructor(code: TesseraErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isTesseraError(err: unknown, code?: TesseraErrorCode): err is TesseraError {
  return err instanceof TesseraError && (code === undefined || err.code === code);
}
