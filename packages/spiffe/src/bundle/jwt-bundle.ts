import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { TrustDomain } from '../spiffeid/trust-domain.js';
import { bundleInvalid, bundleNotFound } from './errors.js';
import type { JwtBundleSource } from './source.js';

/**
 * The JWT authorities (public keys by key ID) of one trust domain, used to validate JWT-SVIDs
 * whose subject is in that trust domain. Immutable: `with*`/`without*` return copies.
 */
export class JwtBundle implements JwtBundleSource {
  readonly trustDomain: TrustDomain;
  readonly authorities: ReadonlyMap<string, KeyObject>;

  constructor(trustDomain: TrustDomain, authorities: Iterable<readonly [string, KeyObject]> = []) {
    this.trustDomain = trustDomain;
    const map = new Map<string, KeyObject>();
    for (const [kid, key] of authorities) {
      if (typeof kid !== 'string' || kid === '') {
        throw bundleInvalid(
          'JWT bundle',
          trustDomain,
          'a JWT authority has an empty key ID; every key needs a "kid"',
        );
      }
      if (key.type !== 'public') {
        throw new TypeError(
          `bundle: JWT authority "${kid}" must be a public KeyObject, got a ${key.type} key`,
        );
      }
      map.set(kid, key);
    }
    this.authorities = map;
  }

  findJwtAuthority(keyId: string): KeyObject | undefined {
    return this.authorities.get(keyId);
  }

  hasJwtAuthority(keyId: string): boolean {
    return this.authorities.has(keyId);
  }

  withJwtAuthority(keyId: string, key: KeyObject): JwtBundle {
    return new JwtBundle(this.trustDomain, [...this.authorities, [keyId, key] as const]);
  }

  withoutJwtAuthority(keyId: string): JwtBundle {
    return new JwtBundle(
      this.trustDomain,
      [...this.authorities].filter(([k]) => k !== keyId),
    );
  }

  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle {
    if (!this.trustDomain.equals(trustDomain)) throw bundleNotFound('JWT', trustDomain);
    return this;
  }

  /** A plain JWK Set (`{"keys":[...]}`, each key with `kid`), the Workload API's JWT bundle format. */
  toJwks(): { keys: JsonWebKey[] } {
    return { keys: [...this.authorities].map(([kid, key]) => ({ ...key.export({ format: 'jwk' }), kid })) };
  }

  /** The JWK Set as UTF-8 JSON bytes. */
  marshal(): Buffer {
    return Buffer.from(JSON.stringify(this.toJwks()), 'utf8');
  }

  equals(other: JwtBundle | undefined | null): boolean {
    if (other == null || !this.trustDomain.equals(other.trustDomain)) return false;
    if (other.authorities.size !== this.authorities.size) return false;
    for (const [kid, key] of this.authorities) {
      const o = other.authorities.get(kid);
      if (!o?.equals(key)) return false;
    }
    return true;
  }
}

/**
 * Parses a JWK Set (JSON text, bytes, or an already-parsed object) into a JWT bundle, as
 * go-spiffe's jwtbundle.Parse does: every key must have a `kid`; `use` is not consulted.
 * Keys are converted with node:crypto; a key it cannot read is an error naming its index.
 */
export function parseJwtBundle(trustDomain: TrustDomain, jwks: string | Uint8Array | object): JwtBundle {
  const doc = typeof jwks === 'object' && !(jwks instanceof Uint8Array) ? jwks : parseJson(trustDomain, jwks);
  const keys = (doc as { keys?: unknown }).keys;
  // A JWK Set without keys is an empty bundle, as go-spiffe and py-spiffe read it.
  if (keys === undefined || keys === null) return new JwtBundle(trustDomain);
  if (!Array.isArray(keys)) throw bundleInvalid('JWT bundle', trustDomain, '"keys" must be an array');
  const entries: Array<[string, KeyObject]> = [];
  const seen = new Set<string>();
  keys.forEach((jwk: unknown, i) => {
    entries.push(jwkToAuthority(trustDomain, jwk, i, seen));
  });
  return new JwtBundle(trustDomain, entries);
}

/** @internal converts one JWK of a JWT bundle; shared with the SPIFFE bundle parser. */
export function jwkToAuthority(
  trustDomain: TrustDomain,
  jwk: unknown,
  index: number,
  seenKids: Set<string>,
): [string, KeyObject] {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) {
    throw bundleInvalid('JWT bundle', trustDomain, `key ${index} is not a JSON object`);
  }
  const kid = (jwk as { kid?: unknown }).kid;
  if (typeof kid !== 'string' || kid === '') {
    throw bundleInvalid(
      'JWT bundle',
      trustDomain,
      `key ${index} has no "kid"; every JWT authority needs a key ID`,
    );
  }
  if (seenKids.has(kid)) {
    throw bundleInvalid(
      'JWT bundle',
      trustDomain,
      `key ${index} repeats key ID "${kid}"; key IDs must be unique`,
    );
  }
  seenKids.add(kid);
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk as Record<string, unknown>;
  if (_d !== undefined) {
    throw bundleInvalid('JWT bundle', trustDomain, `key ${index} ("${kid}") contains private key material`);
  }
  try {
    return [kid, createPublicKey({ key: pub as JsonWebKey, format: 'jwk' })];
  } catch (err) {
    throw bundleInvalid(
      'JWT bundle',
      trustDomain,
      `key ${index} ("${kid}") is not a usable public key: ${(err as Error).message}`,
      err,
    );
  }
}

function parseJson(td: TrustDomain, input: string | Uint8Array): object {
  const text = typeof input === 'string' ? input : Buffer.from(input).toString('utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bundleInvalid('JWT bundle', td, `not valid JSON (${(err as Error).message})`, err);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw bundleInvalid('JWT bundle', td, 'the document must be a JSON object with a "keys" array');
  }
  return doc;
}
