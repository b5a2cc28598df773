import { constants, type KeyObject, verify } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import type { JwtBundleSource } from '../bundle/source.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import { parseSpiffeId, type SpiffeId } from '../spiffeid/spiffe-id.js';

/** The JWS algorithms a JWT-SVID may use (spec §3.2); anything else is refused before any other work. */
export const JWT_SVID_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
] as const;
export type JwtSvidAlgorithm = (typeof JWT_SVID_ALGORITHMS)[number];

/** Clock-skew allowance for exp, nbf and iat, as go-spiffe (go-jose's default leeway). */
export const DEFAULT_JWT_LEEWAY_SECONDS = 60;

export interface ValidateJwtSvidOptions {
  /** The time at which exp/nbf/iat are checked; default now. */
  now?: Date;
  /** Allowed clock skew in seconds; default 60 (as go-spiffe). */
  leewaySeconds?: number;
}

/** A JWT-SVID: a signed JWT whose `sub` is a SPIFFE ID, for the audiences in `aud`. */
export class JwtSvid {
  readonly id: SpiffeId;
  readonly audience: readonly string[];
  readonly expiresAt: Date;
  readonly claims: Readonly<Record<string, unknown>>;
  /** The operator-chosen name of this SVID among several (Workload API `hint`); '' when none. */
  readonly hint: string;
  readonly #token: string;

  constructor(
    token: string,
    id: SpiffeId,
    audience: readonly string[],
    expiresAt: Date,
    claims: Record<string, unknown>,
    hint = '',
  ) {
    this.#token = token;
    this.id = id;
    this.audience = Object.freeze([...audience]);
    this.expiresAt = expiresAt;
    this.claims = Object.freeze({ ...claims });
    this.hint = hint;
  }

  /** The compact JWS, to send as `Authorization: Bearer <token>`. */
  marshal(): string {
    return this.#token;
  }

  /** Never print the token: it is a bearer credential. */
  toString(): string {
    return `JwtSvid(${this.id}, aud=${JSON.stringify(this.audience)}, exp=${this.expiresAt.toISOString()})`;
  }

  toJSON(): { id: string; audience: readonly string[]; expiresAt: string } {
    return { id: this.id.toString(), audience: this.audience, expiresAt: this.expiresAt.toISOString() };
  }
}

function invalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.JWTSVID_INVALID,
    `jwtsvid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

function refused(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.JWTSVID_VERIFY,
    `jwtsvid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

interface Decoded {
  header: ProtectedHeaderParameters;
  alg: JwtSvidAlgorithm;
  claims: JWTPayload;
  id: SpiffeId;
  exp: number;
  parts: [string, string, string];
}

/** Structure checks shared by parseInsecure and parseAndValidate, in go-spiffe's order (spec §3.4). */
function decode(token: string): Decoded {
  if (typeof token !== 'string') throw new TypeError('jwtsvid: token must be a string');
  const parts = token.split('.');
  if (parts.length !== 3) {
    throw invalid(
      `unable to parse JWT token: a JWT-SVID is a compact JWS with 3 dot-separated parts; got ${parts.length}`,
    );
  }
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw invalid(
      `unable to parse JWT token: the header is not base64url-encoded JSON (${(err as Error).message})`,
      err,
    );
  }
  const alg = header.alg;
  if (typeof alg !== 'string' || !(JWT_SVID_ALGORITHMS as readonly string[]).includes(alg)) {
    throw invalid(
      `unable to parse JWT token: algorithm ${JSON.stringify(alg ?? null)} is not allowed; a JWT-SVID uses one of ${JWT_SVID_ALGORITHMS.join(', ')}`,
    );
  }
  if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') {
    throw invalid(`token header type ${JSON.stringify(header.typ)} not equal to either JWT or JOSE`);
  }
  let claims: JWTPayload;
  try {
    claims = decodeJwt(token);
  } catch (err) {
    throw invalid(
      `unable to parse JWT token: the payload is not a JSON object (${(err as Error).message})`,
      err,
    );
  }
  if (claims.sub === undefined || claims.sub === '') throw invalid('token missing subject claim');
  let id: SpiffeId;
  try {
    id = parseSpiffeId(claims.sub);
  } catch (err) {
    throw invalid(`token has an invalid subject claim: ${(err as Error).message}`, err);
  }
  if (claims.exp === undefined) throw invalid('token missing exp claim');
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp))
    throw invalid('token exp claim is not a NumericDate');
  return {
    header,
    alg: alg as JwtSvidAlgorithm,
    claims,
    id,
    exp: claims.exp,
    parts: parts as [string, string, string],
  };
}

function audienceOf(claims: JWTPayload): string[] {
  const aud = claims.aud;
  if (aud === undefined) throw invalid('token missing audience claim');
  const list = typeof aud === 'string' ? [aud] : aud;
  if (!Array.isArray(list) || list.some((a) => typeof a !== 'string'))
    throw invalid('token audience claim must be a string or an array of strings');
  if (list.length === 0) throw invalid('token audience claim is empty');
  return list;
}

function checkAudience(actual: readonly string[], expected: readonly string[]): void {
  // go-spiffe and SPIRE accept the token when ANY expected audience is present (spec §3.4 step 7).
  if (!expected.some((e) => actual.includes(e))) {
    throw refused(`expected audience in ${JSON.stringify(expected)} (audience=${JSON.stringify(actual)})`);
  }
}

function checkTimes(claims: JWTPayload, exp: number, options: ValidateJwtSvidOptions): void {
  const now = (options.now ?? new Date()).getTime() / 1000;
  const leeway = options.leewaySeconds ?? DEFAULT_JWT_LEEWAY_SECONDS;
  if (now - leeway > exp) throw refused('token has expired');
  if (typeof claims.nbf === 'number' && now + leeway < claims.nbf)
    throw refused('token is not valid yet (nbf is in the future)');
  if (typeof claims.iat === 'number' && now + leeway < claims.iat)
    throw refused('token issued in the future (iat)');
}

function checkExpectedAudience(audience: readonly string[]): void {
  if (
    !Array.isArray(audience) ||
    audience.length === 0 ||
    audience.some((a) => typeof a !== 'string' || a === '')
  ) {
    throw new TypeError('jwtsvid: the expected audience must be a non-empty list of non-empty strings');
  }
}

/**
 * Parses a JWT-SVID WITHOUT verifying its signature, for tokens that came from a trusted channel
 * (the Workload API). Structure, subject, exp and audience rules still apply.
 */
export function parseInsecureJwtSvid(token: string, audience: readonly string[], hint = ''): JwtSvid {
  checkExpectedAudience(audience);
  const d = decode(token);
  const aud = audienceOf(d.claims);
  checkAudience(aud, audience);
  return new JwtSvid(token, d.id, aud, new Date(d.exp * 1000), d.claims, hint);
}

const HASH: Record<JwtSvidAlgorithm, string> = {
  RS256: 'sha256',
  RS384: 'sha384',
  RS512: 'sha512',
  PS256: 'sha256',
  PS384: 'sha384',
  PS512: 'sha512',
  ES256: 'sha256',
  ES384: 'sha384',
  ES512: 'sha512',
};
const CURVE: Partial<Record<JwtSvidAlgorithm, string>> = {
  ES256: 'prime256v1',
  ES384: 'secp384r1',
  ES512: 'secp521r1',
};

/** Why `key` cannot verify `alg`, or undefined when it can. */
function keyMismatch(alg: JwtSvidAlgorithm, key: KeyObject): string | undefined {
  const type = key.asymmetricKeyType;
  const curve = CURVE[alg];
  if (curve !== undefined) {
    if (type !== 'ec') return `${alg} needs an EC key; the authority is ${type}`;
    const have = key.asymmetricKeyDetails?.namedCurve;
    return have === curve ? undefined : `${alg} needs curve ${curve}; the authority key is on ${have}`;
  }
  if (type !== 'rsa' && type !== 'rsa-pss') return `${alg} needs an RSA key; the authority is ${type}`;
  return undefined;
}

/**
 * Validates a JWT-SVID (spec §3.4): algorithm allow-list first, typ, subject and exp, then the key
 * named by `kid` in the JWT bundle of the SUBJECT's trust domain, the signature, the time claims
 * and the audience (any of `audience` must appear in `aud`).
 *
 * The signature is checked with node:crypto directly (jose decodes the header and claims): jose's
 * WebCrypto path is async and measured at under half the rate of a synchronous verify here, which
 * misses the benchmark goal of half of OpenSSL's P-256 verify rate.
 */
export function parseAndValidateJwtSvid(
  token: string,
  bundles: JwtBundleSource,
  audience: readonly string[],
  options: ValidateJwtSvidOptions = {},
): JwtSvid {
  checkExpectedAudience(audience);
  const d = decode(token);
  const kid = d.header.kid;
  if (kid === undefined || kid === '') throw invalid('token header missing key id');
  const td = d.id.trustDomain;
  let key: KeyObject | undefined;
  try {
    key = bundles.getJwtBundleForTrustDomain(td).findJwtAuthority(kid);
  } catch (err) {
    throw refused(`no bundle found for trust domain "${td}"`, err);
  }
  if (key === undefined) throw refused(`no JWT authority "${kid}" found for trust domain "${td}"`);
  const mismatch = keyMismatch(d.alg, key);
  if (mismatch !== undefined)
    throw refused(`unable to verify the token signature: ${mismatch} (kid "${kid}")`);
  const [h, p, s] = d.parts;
  const signature = Buffer.from(s, 'base64url');
  const signed = Buffer.from(`${h}.${p}`, 'latin1');
  let ok: boolean;
  try {
    ok = verify(
      HASH[d.alg],
      signed,
      d.alg.startsWith('ES')
        ? { key, dsaEncoding: 'ieee-p1363' }
        : d.alg.startsWith('PS')
          ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
          : { key, padding: constants.RSA_PKCS1_PADDING },
      signature,
    );
  } catch (err) {
    throw refused(`unable to verify the token signature: ${(err as Error).message}`, err);
  }
  if (!ok)
    throw refused(`token signature does not verify with JWT authority "${kid}" of trust domain "${td}"`);
  checkTimes(d.claims, d.exp, options);
  const aud = audienceOf(d.claims);
  checkAudience(aud, audience);
  return new JwtSvid(token, d.id, aud, new Date(d.exp * 1000), d.claims);
}
