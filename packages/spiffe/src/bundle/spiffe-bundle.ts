import type { KeyObject, X509Certificate } from 'node:crypto';
import { parse as parseLosslessJson } from 'lossless-json';
import { certificateFromDer } from '../internal/x509.js';
import type { TrustDomain } from '../spiffeid/trust-domain.js';
import { bundleInvalid, bundleNotFound } from './errors.js';
import { JwtBundle, jwkToAuthority } from './jwt-bundle.js';
import type { JwtBundleSource, X509BundleSource } from './source.js';
import { X509Bundle } from './x509-bundle.js';

const MAX_UINT64 = (1n << 64n) - 1n;
// JWK key types we can read. A JWK of another kty is ignored, as the SPIFFE bundle spec says.
const KNOWN_KTY = new Set(['EC', 'RSA', 'OKP']);
// The JWK members that carry the public key, per kty (RFC 7518 §6, RFC 8037).
const KEY_MEMBERS: Record<string, readonly string[]> = {
  EC: ['kty', 'crv', 'x', 'y'],
  RSA: ['kty', 'n', 'e'],
  OKP: ['kty', 'crv', 'x'],
};

export interface SpiffeBundleInit {
  trustDomain: TrustDomain;
  x509Authorities?: Iterable<X509Certificate>;
  jwtAuthorities?: Iterable<readonly [string, KeyObject]>;
  /** `spiffe_sequence`: a 64-bit unsigned integer, kept exactly. */
  sequenceNumber?: bigint;
  /** `spiffe_refresh_hint` in seconds. */
  refreshHint?: number;
}

/**
 * A trust domain's SPIFFE bundle (spec §4): its X.509 authorities, its JWT authorities, and the
 * freshness metadata federation uses. The document does not name its trust domain, so the trust
 * domain is always given alongside. Immutable.
 */
export class SpiffeBundle implements X509BundleSource, JwtBundleSource {
  readonly trustDomain: TrustDomain;
  readonly #x509: X509Bundle;
  readonly #jwt: JwtBundle;
  readonly sequenceNumber: bigint | undefined;
  readonly refreshHint: number | undefined;

  constructor(init: SpiffeBundleInit) {
    this.trustDomain = init.trustDomain;
    this.#x509 = new X509Bundle(init.trustDomain, init.x509Authorities ?? []);
    this.#jwt = new JwtBundle(init.trustDomain, init.jwtAuthorities ?? []);
    if (init.sequenceNumber !== undefined && (init.sequenceNumber < 0n || init.sequenceNumber > MAX_UINT64)) {
      throw new RangeError(`bundle: sequence number ${init.sequenceNumber} is outside 0..2^64-1`);
    }
    if (init.refreshHint !== undefined && (!Number.isSafeInteger(init.refreshHint) || init.refreshHint < 0)) {
      throw new RangeError(
        `bundle: refresh hint ${init.refreshHint} must be a whole, non-negative number of seconds`,
      );
    }
    this.sequenceNumber = init.sequenceNumber;
    this.refreshHint = init.refreshHint;
  }

  static fromX509Bundle(bundle: X509Bundle): SpiffeBundle {
    return new SpiffeBundle({ trustDomain: bundle.trustDomain, x509Authorities: bundle.authorities });
  }

  static fromJwtBundle(bundle: JwtBundle): SpiffeBundle {
    return new SpiffeBundle({ trustDomain: bundle.trustDomain, jwtAuthorities: bundle.authorities });
  }

  get x509Authorities(): readonly X509Certificate[] {
    return this.#x509.authorities;
  }

  get jwtAuthorities(): ReadonlyMap<string, KeyObject> {
    return this.#jwt.authorities;
  }

  x509Bundle(): X509Bundle {
    return this.#x509;
  }

  jwtBundle(): JwtBundle {
    return this.#jwt;
  }

  /** A copy with other fields replaced. */
  with(changes: Omit<Partial<SpiffeBundleInit>, 'trustDomain'>): SpiffeBundle {
    return new SpiffeBundle({
      trustDomain: this.trustDomain,
      x509Authorities: changes.x509Authorities ?? this.x509Authorities,
      jwtAuthorities: changes.jwtAuthorities ?? this.jwtAuthorities,
      sequenceNumber: 'sequenceNumber' in changes ? changes.sequenceNumber : this.sequenceNumber,
      refreshHint: 'refreshHint' in changes ? changes.refreshHint : this.refreshHint,
    });
  }

  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle {
    if (!this.trustDomain.equals(trustDomain)) throw bundleNotFound('X.509', trustDomain);
    return this.#x509;
  }

  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle {
    if (!this.trustDomain.equals(trustDomain)) throw bundleNotFound('JWT', trustDomain);
    return this.#jwt;
  }

  /**
   * The JWKS document: one `x509-svid` JWK per X.509 authority (key members plus a one-element
   * `x5c`, no kid) and one `jwt-svid` JWK per JWT authority (with its kid), then
   * `spiffe_refresh_hint` and `spiffe_sequence` when set. The sequence is written exactly, even
   * above 2^53.
   */
  marshal(): string {
    const keys = [
      ...this.x509Authorities.map((cert) => ({
        ...cert.publicKey.export({ format: 'jwk' }),
        use: 'x509-svid',
        x5c: [cert.raw.toString('base64')],
      })),
      ...[...this.jwtAuthorities].map(([kid, key]) => ({
        ...key.export({ format: 'jwk' }),
        kid,
        use: 'jwt-svid',
      })),
    ];
    const doc: Record<string, unknown> = { keys };
    if (this.refreshHint !== undefined) doc.spiffe_refresh_hint = this.refreshHint;
    const json = JSON.stringify(doc);
    return this.sequenceNumber === undefined
      ? json
      : `${json.slice(0, -1)},"spiffe_sequence":${this.sequenceNumber.toString()}}`;
  }

  equals(other: SpiffeBundle | undefined | null): boolean {
    return (
      other != null &&
      this.trustDomain.equals(other.trustDomain) &&
      this.sequenceNumber === other.sequenceNumber &&
      this.refreshHint === other.refreshHint &&
      this.#x509.equals(other.#x509) &&
      this.#jwt.equals(other.#jwt)
    );
  }
}

type Json = null | boolean | number | bigint | string | Json[] | { [key: string]: Json };

// Integers beyond 2^53 stay exact as bigint; everything else is a JS number.
function parseNumber(text: string): number | bigint {
  if (/^-?\d+$/.test(text)) {
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : BigInt(text);
  }
  return Number(text);
}

/**
 * Parses a SPIFFE bundle document (JWKS) for `trustDomain`, following the spec (§4.1, §2.7, §3.6)
 * and go-spiffe's spiffebundle.Parse: `keys` required (may be empty); JWKs with a missing or
 * unknown `use`, or an unknown `kty`, are ignored; an `x509-svid` JWK carries exactly one `x5c`
 * certificate whose public key matches the JWK; a `jwt-svid` JWK needs a unique `kid`;
 * `spiffe_sequence` is a 64-bit unsigned integer; `spiffe_refresh_hint` whole seconds.
 */
export function parseSpiffeBundle(trustDomain: TrustDomain, json: string | Uint8Array): SpiffeBundle {
  const fail = (detail: string, cause?: unknown) =>
    bundleInvalid('SPIFFE bundle', trustDomain, detail, cause);
  const text = typeof json === 'string' ? json : Buffer.from(json).toString('utf8');
  let doc: Json;
  try {
    doc = parseLosslessJson(text, undefined, parseNumber) as Json;
  } catch (err) {
    throw fail(`not valid JSON: ${(err as Error).message}`, err);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw fail('the document is not a JSON object');
  const keys = doc.keys;
  if (keys === undefined || keys === null) throw fail('no authorities found: the "keys" member is missing');
  if (!Array.isArray(keys)) throw fail('"keys" must be an array');

  const x509: X509Certificate[] = [];
  const jwt: Array<[string, KeyObject]> = [];
  const seenKids = new Set<string>();
  keys.forEach((jwk, i) => {
    if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk))
      throw fail(`key ${i} is not a JSON object`);
    const use = jwk.use;
    if (typeof jwk.kty !== 'string' || !KNOWN_KTY.has(jwk.kty)) return;
    if (use === 'x509-svid') {
      x509.push(x509Authority(jwk, i, fail));
    } else if (use === 'jwt-svid') {
      jwt.push(jwkToAuthority(trustDomain, jwk, i, seenKids));
    }
    // Any other use (missing, "wit-svid", unknown) is ignored, as the spec and go-spiffe do.
  });

  return new SpiffeBundle({
    trustDomain,
    x509Authorities: x509,
    jwtAuthorities: jwt,
    sequenceNumber: readSequence(doc.spiffe_sequence, fail),
    refreshHint: readRefreshHint(doc.spiffe_refresh_hint, fail),
  });
}

function x509Authority(
  jwk: { [key: string]: Json },
  i: number,
  fail: (d: string, c?: unknown) => Error,
): X509Certificate {
  const x5c = jwk.x5c;
  if (!Array.isArray(x5c) || x5c.length !== 1) {
    throw fail(
      `expected a single certificate in x509-svid entry ${i}; got ${Array.isArray(x5c) ? x5c.length : 0}`,
    );
  }
  const b64 = x5c[0];
  if (typeof b64 !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) {
    throw fail(`x509-svid entry ${i}: x5c[0] must be standard base64 DER`);
  }
  let cert: X509Certificate;
  try {
    cert = certificateFromDer(Buffer.from(b64, 'base64'));
  } catch (err) {
    throw fail(
      `x509-svid entry ${i}: x5c[0] is not a valid X.509 certificate (${(err as Error).message})`,
      err,
    );
  }
  // The JWK's key members must be the certificate's key. Comparing them with the certificate key's
  // own JWK form is exact for canonical encodings and avoids building a key from the JWK (~65 µs
  // each in Node 20, where exporting the certificate key as a JWK costs ~5 µs). A kid is ignored,
  // as go-spiffe does (producers must not set one, spec §2.7).
  const certJwk = cert.publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
  const members = KEY_MEMBERS[String(certJwk.kty)] ?? [];
  if (members.length === 0 || members.some((m) => jwk[m] !== certJwk[m])) {
    throw fail(`x509-svid entry ${i}: public keys in key and x5c fields do not match`);
  }
  return cert;
}

function readSequence(value: Json | undefined, fail: (d: string) => Error): bigint | undefined {
  if (value === undefined) return undefined;
  const n =
    typeof value === 'bigint'
      ? value
      : typeof value === 'number' && Number.isInteger(value)
        ? BigInt(value)
        : undefined;
  if (n === undefined || n < 0n || n > MAX_UINT64) {
    throw fail(
      `"spiffe_sequence" must be an integer from 0 to 2^64-1; got ${JSON.stringify(typeof value === 'bigint' ? value.toString() : value)}`,
    );
  }
  return n;
}

function readRefreshHint(value: Json | undefined, fail: (d: string) => Error): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw fail(`"spiffe_refresh_hint" must be a whole, non-negative number of seconds; got ${String(value)}`);
  }
  return value;
}
