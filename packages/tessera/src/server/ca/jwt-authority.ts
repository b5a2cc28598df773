import { type KeyObject, randomBytes } from 'node:crypto';
import { parseSpiffeId, type SpiffeId, type TrustDomain } from '@tessera/spiffe';
import { SignJWT } from 'jose';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { generateKeyPairOfType } from '../keymanager/generate.js';
import type { KeyType } from '../keymanager/key-manager.js';

export type JwtKeyType = KeyType;

function refuse(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.CA_ISSUE, `jwt: ${message}`);
}

export interface MintJwtSvidRequest {
  spiffeId: string | SpiffeId;
  audience: readonly string[];
  ttlMs: number;
  now: Date;
}

/**
 * One JWT signing key of the trust domain. Mints JWT-SVIDs as SPIRE does (spec §3): header
 * `alg`, `kid`, `typ: JWT`; claims `sub`, `aud` (always an array holding every requested
 * audience), `exp`, `iat`, and `iss` when configured. The expiry is capped at the key's own.
 */
export class JwtAuthority {
  readonly trustDomain: TrustDomain;
  readonly kid: string;
  readonly alg: 'ES256' | 'ES384' | 'RS256';
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly notAfter: Date;
  readonly #issuer: string;

  constructor(opts: {
    trustDomain: TrustDomain;
    kid: string;
    privateKey: KeyObject;
    publicKey: KeyObject;
    notAfter: Date;
    issuer?: string;
  }) {
    this.alg = algorithmFor(opts.privateKey);
    this.trustDomain = opts.trustDomain;
    this.kid = opts.kid;
    this.privateKey = opts.privateKey;
    this.publicKey = opts.publicKey;
    this.notAfter = opts.notAfter;
    this.#issuer = opts.issuer ?? '';
  }

  /** A fresh key with a random 32-character kid, valid until `notAfter`. */
  static generate(opts: {
    trustDomain: TrustDomain;
    keyType: JwtKeyType;
    notAfter: Date;
    issuer?: string;
  }): JwtAuthority {
    const pair = generateKeyPairOfType(opts.keyType);
    return new JwtAuthority({
      trustDomain: opts.trustDomain,
      kid: newKid(),
      ...pair,
      notAfter: opts.notAfter,
      ...(opts.issuer === undefined ? {} : { issuer: opts.issuer }),
    });
  }

  async mint(req: MintJwtSvidRequest): Promise<{ token: string; expiresAt: Date }> {
    let id: SpiffeId;
    try {
      id = typeof req.spiffeId === 'string' ? parseSpiffeId(req.spiffeId) : req.spiffeId;
    } catch (err) {
      throw refuse(`cannot mint for ${JSON.stringify(String(req.spiffeId))}: ${(err as Error).message}`);
    }
    if (!id.memberOf(this.trustDomain))
      throw refuse(`cannot mint for "${id}": it is not in trust domain "${this.trustDomain}"`);
    const audience = req.audience.filter((a) => a !== '');
    if (audience.length === 0) throw refuse('audience must be specified');
    if (!Number.isSafeInteger(req.ttlMs) || req.ttlMs <= 0)
      throw refuse(`TTL must be a positive number of milliseconds; got ${req.ttlMs}`);
    const now = req.now.getTime();
    if (now >= this.notAfter.getTime())
      throw refuse(`JWT key "${this.kid}" expired at ${this.notAfter.toISOString()}; rotate the authority`);
    const iat = Math.floor(now / 1000);
    const exp = Math.floor(Math.min(now + req.ttlMs, this.notAfter.getTime()) / 1000);
    const jwt = new SignJWT({ aud: audience })
      .setProtectedHeader({ alg: this.alg, kid: this.kid, typ: 'JWT' })
      .setSubject(id.toString())
      .setIssuedAt(iat)
      .setExpirationTime(exp);
    if (this.#issuer !== '') jwt.setIssuer(this.#issuer);
    return { token: await jwt.sign(this.privateKey), expiresAt: new Date(exp * 1000) };
  }
}

/**
 * The JWS algorithm SPIRE pairs with a key (private or public): P-256 → ES256, P-384 → ES384,
 * RSA → RS256; undefined for any other key.
 */
export function jwtAlgorithmOf(key: KeyObject): 'ES256' | 'ES384' | 'RS256' | undefined {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (type === 'rsa') return 'RS256';
  if (type === 'ec' && curve === 'prime256v1') return 'ES256';
  if (type === 'ec' && curve === 'secp384r1') return 'ES384';
  return undefined;
}

function algorithmFor(key: KeyObject): 'ES256' | 'ES384' | 'RS256' {
  const alg = jwtAlgorithmOf(key);
  if (alg !== undefined) return alg;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  throw new TypeError(
    `jwt: a JWT authority key must be EC P-256, P-384 or RSA; got ${key.asymmetricKeyType} ${curve ?? ''}`.trim(),
  );
}

/** A random 32-character key ID. */
export function newKid(): string {
  return randomBytes(24).toString('base64url');
}
