import type { X509Certificate } from 'node:crypto';
import { ErrorCode, SpiffeError } from '../errors.js';
import { parseSpiffeId, type SpiffeId } from '../spiffeid/spiffe-id.js';
import { parseTrustDomain, type TrustDomain } from '../spiffeid/trust-domain.js';

/**
 * Decides whether a verified peer may talk to us: throws ERR_ID_UNAUTHORIZED to refuse. Runs after
 * the peer's chain verified as an X509-SVID of its own trust domain. `trustDomains`, when an
 * authorizer can only ever accept peers of those trust domains, lets the TLS layer trust only their
 * roots, so OpenSSL itself refuses other peers with a TLS alert.
 */
export interface Authorizer {
  (id: SpiffeId, verifiedChain: readonly X509Certificate[]): void;
  readonly trustDomains?: readonly TrustDomain[];
  /** For log lines: what the authorizer accepts. */
  readonly description: string;
}

function unauthorized(message: string): SpiffeError {
  return new SpiffeError(ErrorCode.ID_UNAUTHORIZED, `tlsconfig: ${message}`);
}

function make(
  description: string,
  check: (id: SpiffeId, chain: readonly X509Certificate[]) => void,
  trustDomains?: readonly TrustDomain[],
): Authorizer {
  return Object.assign(check, { description, ...(trustDomains === undefined ? {} : { trustDomains }) });
}

const toId = (id: SpiffeId | string): SpiffeId => (typeof id === 'string' ? parseSpiffeId(id) : id);
const toTd = (td: TrustDomain | string): TrustDomain => (typeof td === 'string' ? parseTrustDomain(td) : td);

function uniqueTds(ids: readonly SpiffeId[]): TrustDomain[] {
  const out: TrustDomain[] = [];
  for (const id of ids) if (!out.some((t) => t.equals(id.trustDomain))) out.push(id.trustDomain);
  return out;
}

/** Any peer whose SVID verifies against the bundle of its trust domain. */
export function authorizeAny(): Authorizer {
  return make('any SPIFFE ID', () => {});
}

/** Exactly this SPIFFE ID. */
export function authorizeId(expected: SpiffeId | string): Authorizer {
  const want = toId(expected);
  return make(
    `ID "${want}"`,
    (id) => {
      if (!id.equals(want)) throw unauthorized(`unexpected ID "${id}"; expected "${want}"`);
    },
    [want.trustDomain],
  );
}

/** One of these SPIFFE IDs. */
export function authorizeOneOf(...allowed: (SpiffeId | string)[]): Authorizer {
  const ids = allowed.map(toId);
  const set = new Set(ids.map((i) => i.toString()));
  return make(
    `one of ${JSON.stringify([...set])}`,
    (id) => {
      if (!set.has(id.toString()))
        throw unauthorized(`unexpected ID "${id}"; expected one of ${JSON.stringify([...set])}`);
    },
    uniqueTds(ids),
  );
}

/** Any SPIFFE ID of this trust domain. */
export function authorizeMemberOf(trustDomain: TrustDomain | string): Authorizer {
  const td = toTd(trustDomain);
  return make(
    `members of trust domain "${td}"`,
    (id) => {
      if (!id.memberOf(td))
        throw unauthorized(`unexpected trust domain "${id.trustDomain}"; expected "${td}"`);
    },
    [td],
  );
}

/** A custom rule: `predicate` returns true to accept. `description` names the rule in refusals. */
export function authorizeIf(
  predicate: (id: SpiffeId, verifiedChain: readonly X509Certificate[]) => boolean,
  description: string,
): Authorizer {
  return make(description, (id, chain) => {
    if (!predicate(id, chain)) throw unauthorized(`ID "${id}" does not satisfy ${description}`);
  });
}
