/**
 * A test JWT-SVID authority: real keys, real signatures (node:crypto), and any header or claim
 * a test wants — including the forbidden ones (alg none, HS256 with the public key as secret).
 */
import { constants, createHmac, type KeyObject, randomBytes, sign } from 'node:crypto';
import { generateKey } from './x509.js';

export type JwtKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

const DEFAULT_ALG: Record<JwtKeyType, string> = {
  'ec-p256': 'ES256',
  'ec-p384': 'ES384',
  'rsa-2048': 'RS256',
};

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/** A compact JWS with the given header and claims and an empty signature (alg none). */
export function unsignedToken(header: Record<string, unknown>, claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}.`;
}

export interface JwtAuthorityOptions {
  trustDomain: string;
  keyType?: JwtKeyType;
  kid?: string;
  /** Default algorithm for sign(); default ES256 / ES384 / RS256 by key type. */
  alg?: string;
}

export class TestJwtAuthority {
  readonly trustDomain: string;
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;

  private constructor(opts: Required<JwtAuthorityOptions>, privateKey: KeyObject, publicKey: KeyObject) {
    this.trustDomain = opts.trustDomain;
    this.kid = opts.kid;
    this.alg = opts.alg;
    this.privateKey = privateKey;
    this.publicKey = publicKey;
  }

  static create(opts: JwtAuthorityOptions): TestJwtAuthority {
    const keyType = opts.keyType ?? 'ec-p256';
    const { privateKey, publicKey } = generateKey(keyType);
    return new TestJwtAuthority(
      {
        trustDomain: opts.trustDomain,
        keyType,
        kid: opts.kid ?? randomBytes(8).toString('hex'),
        alg: opts.alg ?? DEFAULT_ALG[keyType],
      },
      privateKey,
      publicKey,
    );
  }

  /** The public key as a JWK with kid and `use: jwt-svid`, as a SPIFFE bundle carries it. */
  jwk(): Record<string, unknown> {
    return { ...this.publicKey.export({ format: 'jwk' }), kid: this.kid, use: 'jwt-svid' };
  }

  /** A JWKS `{ keys: [jwk] }` as a Workload API JWT bundle. */
  jwks(): string {
    return JSON.stringify({ keys: [this.jwk()] });
  }

  /**
   * Signs `claims` (defaults: aud ["test"], exp in 5 minutes, iat now, unless given; sub required).
   * `header` overrides the default `{ alg, kid, typ: 'JWT' }`; a key set to undefined is removed.
   * The signature follows the header's alg: ES*, RS*, PS*, HS* (keyed with the public key's PEM —
   * the classic confusion attack), or none.
   */
  sign(claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
    const now = Math.floor(Date.now() / 1000);
    const fullClaims = { aud: ['test'], exp: now + 300, iat: now, ...claims };
    const fullHeader: Record<string, unknown> = { alg: this.alg, kid: this.kid, typ: 'JWT', ...header };
    for (const k of Object.keys(fullHeader)) if (fullHeader[k] === undefined) delete fullHeader[k];
    for (const k of Object.keys(fullClaims))
      if ((fullClaims as Record<string, unknown>)[k] === undefined)
        delete (fullClaims as Record<string, unknown>)[k];
    const signingInput = `${b64url(JSON.stringify(fullHeader))}.${b64url(JSON.stringify(fullClaims))}`;
    const alg = String(fullHeader.alg);
    return `${signingInput}.${this.#signature(alg, signingInput)}`;
  }

  #signature(alg: string, input: string): string {
    const hash = `sha${alg.slice(2)}`;
    if (alg === 'none') return '';
    if (alg.startsWith('HS')) {
      const secret = this.publicKey.export({ type: 'spki', format: 'pem' });
      return createHmac(hash, secret).update(input).digest('base64url');
    }
    if (alg.startsWith('ES'))
      return sign(hash, Buffer.from(input), { key: this.privateKey, dsaEncoding: 'ieee-p1363' }).toString(
        'base64url',
      );
    if (alg.startsWith('PS')) {
      return sign(hash, Buffer.from(input), {
        key: this.privateKey,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
      }).toString('base64url');
    }
    if (alg.startsWith('RS')) return sign(hash, Buffer.from(input), this.privateKey).toString('base64url');
    throw new Error(`testkit: cannot sign with alg ${alg}`);
  }
}
