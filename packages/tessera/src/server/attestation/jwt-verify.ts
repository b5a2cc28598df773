// The checks the JWT-based node attestors (jwt, k8s_psat) make on a token before their own rules:
// its shape, an asymmetric algorithm, the signature by one of the issuer's keys, iss, aud, and
// exp / nbf / iat with a leeway. Each failure says which check failed and with what values (claims
// are not secret); the token itself is never in a message.
import { type CryptoKey, compactVerify, decodeProtectedHeader, type JWSHeaderParameters } from 'jose';
import { type JwtKeys, NoSigningKeyError } from './jwt-keys.js';

/** Asymmetric JWS algorithms only: no `none`, no HMAC (a public key must never be a shared secret). */
export const NODE_JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

/** Larger tokens are refused before any parsing. */
export const MAX_NODE_JWT_BYTES = 64 * 1024;

export type JwtClaims = Readonly<Record<string, unknown>>;

export interface VerifyNodeJwtOptions {
  readonly keys: JwtKeys;
  /** The exact `iss` expected. */
  readonly issuer: string;
  /** The token's `aud` must name at least one of these. */
  readonly audiences: readonly string[];
  readonly clockSkewMs: number;
  readonly now: Date;
}

/** A check failed: `message` says which (no token in it). */
export class NodeJwtError extends Error {
  override readonly name = 'NodeJwtError';
}

/** The claims of a compact JWS without verifying anything, for choosing which issuer's rules apply. */
export function peekClaims(token: string): JwtClaims {
  checkShape(token);
  const part = token.split('.')[1] as string;
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new NodeJwtError('the token payload is not base64url-encoded JSON');
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims))
    throw new NodeJwtError('the token payload is not a JSON object of claims');
  return claims as JwtClaims;
}

function checkShape(token: string): void {
  if (token.length > MAX_NODE_JWT_BYTES)
    throw new NodeJwtError(`the token is ${token.length} bytes; at most ${MAX_NODE_JWT_BYTES}`);
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token))
    throw new NodeJwtError(
      'the evidence is not a JWT in compact form (three base64url parts separated by dots)',
    );
}

/** Verifies the signature and the registered claims; returns the claims. Throws NodeJwtError. */
export async function verifyNodeJwt(token: string, o: VerifyNodeJwtOptions): Promise<JwtClaims> {
  checkShape(token);
  let header: JWSHeaderParameters;
  try {
    header = decodeProtectedHeader(token) as JWSHeaderParameters;
  } catch (err) {
    throw new NodeJwtError(`the token header is unreadable: ${(err as Error).message}`);
  }
  const alg = header.alg;
  if (typeof alg !== 'string' || !(NODE_JWT_ALGORITHMS as readonly string[]).includes(alg))
    throw new NodeJwtError(
      `the token's alg ${JSON.stringify(alg)} is not allowed; allowed: ${NODE_JWT_ALGORITHMS.join(', ')}`,
    );
  let keys: CryptoKey[];
  try {
    keys = await o.keys.keyFor(header);
  } catch (err) {
    if (err instanceof NoSigningKeyError) throw new NodeJwtError(`unknown signing key: ${err.message}`);
    throw err;
  }
  let payload: Uint8Array | undefined;
  let lastError: unknown;
  for (const key of keys) {
    try {
      ({ payload } = await compactVerify(token, key, { algorithms: [...NODE_JWT_ALGORITHMS] }));
      break;
    } catch (err) {
      lastError = err;
    }
  }
  if (payload === undefined) {
    const code = (lastError as { code?: string }).code;
    const kid = header.kid === undefined ? 'no kid' : `kid "${header.kid}"`;
    throw new NodeJwtError(
      code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'
        ? `bad signature: the token (${alg}, ${kid}) is not signed by the key of that ID in ${o.keys.describe()}`
        : `the token (${alg}, ${kid}) does not verify: ${(lastError as Error).message}`,
    );
  }
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    throw new NodeJwtError('the token payload is not JSON');
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims))
    throw new NodeJwtError('the token payload is not a JSON object of claims');
  checkRegisteredClaims(claims as JwtClaims, o);
  return claims as JwtClaims;
}

function checkRegisteredClaims(c: JwtClaims, o: VerifyNodeJwtOptions): void {
  if (c.iss !== o.issuer)
    throw new NodeJwtError(
      `wrong issuer: iss is ${JSON.stringify(c.iss)}, expected ${JSON.stringify(o.issuer)}`,
    );
  const aud = typeof c.aud === 'string' ? [c.aud] : Array.isArray(c.aud) ? c.aud : undefined;
  if (aud === undefined || aud.length === 0)
    throw new NodeJwtError(
      `wrong audience: the token has no aud; expected one of ${JSON.stringify(o.audiences)}`,
    );
  if (!aud.some((a) => typeof a === 'string' && o.audiences.includes(a)))
    throw new NodeJwtError(
      `wrong audience: aud is ${JSON.stringify(c.aud)}, expected one of ${JSON.stringify(o.audiences)} (audience)`,
    );
  const now = o.now.getTime();
  const skew = o.clockSkewMs;
  const at = (s: number) => new Date(s * 1000).toISOString();
  const time = (name: 'exp' | 'nbf' | 'iat'): number | undefined => {
    const v = c[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new NodeJwtError(`the token's ${name} is ${JSON.stringify(v)}, not a number of seconds`);
    return v;
  };
  const exp = time('exp');
  if (exp === undefined)
    throw new NodeJwtError('the token has no exp; node attestation takes expiring tokens only');
  if (now > exp * 1000 + skew)
    throw new NodeJwtError(
      `expired: exp ${at(exp)} is before now ${o.now.toISOString()} (leeway ${skew / 1000}s, clock_skew)`,
    );
  const nbf = time('nbf');
  if (nbf !== undefined && now + skew < nbf * 1000)
    throw new NodeJwtError(
      `not valid yet: nbf ${at(nbf)} is after now ${o.now.toISOString()} (leeway ${skew / 1000}s, clock_skew)`,
    );
  const iat = time('iat');
  if (iat !== undefined && now + skew < iat * 1000)
    throw new NodeJwtError(
      `issued in the future: iat ${at(iat)} is after now ${o.now.toISOString()} (leeway ${skew / 1000}s, clock_skew)`,
    );
}

/** Until when a verified token can be presented: its exp plus the leeway (how long to refuse its replay). */
export function usableUntil(claims: JwtClaims, clockSkewMs: number): Date {
  return new Date((claims.exp as number) * 1000 + clockSkewMs);
}
