// The signing keys of a token issuer, for the attestors that check JWTs (jwt, k8s_psat): a JWK Set
// read from a file, fetched from a URL, or found by OIDC discovery from the issuer's URL
// (<issuer>/.well-known/openid-configuration → jwks_uri). Keys are loaded at start, fetched again
// when a token names a key ID the set does not hold (at most once per `minRefreshMs`), and refreshed
// before use once they are older than `refreshMs`; a failed refresh keeps the last good keys.
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import {
  type CryptoKey,
  createLocalJWKSet,
  type JSONWebKeySet,
  type JWK,
  type JWSHeaderParameters,
} from 'jose';
import type { Field } from '../../common/config-schema.js';
import type { DaemonLogger } from '../../common/log.js';
import type { NodeAttestorContext } from './registry.js';

/** Where the keys come from. */
export type JwtKeysLocation =
  | { readonly kind: 'discovery'; readonly issuer: string }
  | { readonly kind: 'uri'; readonly uri: string }
  | { readonly kind: 'file'; readonly path: string };

/** GETs a URL and returns its JSON body; throws an Error saying what failed. */
export type JsonFetcher = (url: string, options: { ca?: string; timeoutMs: number }) => Promise<unknown>;

export interface JwtKeysOptions {
  readonly location: JwtKeysLocation;
  /** Roots (PEM) for HTTPS fetches instead of the system's, e.g. a cluster's CA. */
  readonly ca?: string;
  readonly now: () => Date;
  readonly logger: DaemonLogger;
  /** Default: an HTTPS GET with node:https (no redirects, at most 1 MiB). */
  readonly fetch?: JsonFetcher;
  /** Each fetch (discovery document, then JWKS) may take this long; default 10 s. */
  readonly timeoutMs?: number;
  /** Keys older than this are fetched again before use; default 5 min. */
  readonly refreshMs?: number;
  /** Fetches (or file reads) happen at most this often, whatever asks; default 30 s. */
  readonly minRefreshMs?: number;
}

export const DEFAULT_JWKS_TIMEOUT_MS = 10_000;
export const DEFAULT_JWKS_REFRESH_MS = 5 * 60_000;
export const DEFAULT_JWKS_MIN_REFRESH_MS = 30_000;
const MAX_BODY = 1024 * 1024;

type KeyGetter = ReturnType<typeof createLocalJWKSet>;

interface Loaded {
  readonly getKey: KeyGetter;
  readonly kids: readonly string[];
  readonly at: number;
}

/** Why no key was found for a token: said as such in the attestor's refusal. */
export class NoSigningKeyError extends Error {
  override readonly name = 'NoSigningKeyError';
}

/** A JWT issuer's keys, kept current. `keyFor` gives the candidate keys of a token. */
export class JwtKeys {
  readonly #o: JwtKeysOptions;
  readonly #fetch: JsonFetcher;
  #loaded: Loaded | undefined;
  #lastAttempt = Number.NEGATIVE_INFINITY;
  #lastError: string | undefined;
  #inFlight: Promise<void> | undefined;

  constructor(options: JwtKeysOptions) {
    this.#o = options;
    this.#fetch = options.fetch ?? httpsGetJson;
  }

  /** What the keys are read from, for messages: a file, a JWKS URL, or an issuer's discovery document. */
  describe(): string {
    const l = this.#o.location;
    if (l.kind === 'file') return `the JWKS file ${l.path}`;
    if (l.kind === 'uri') return `the JWKS at ${l.uri}`;
    return `the JWKS of ${l.issuer} (by OIDC discovery)`;
  }

  /** The key IDs held now. */
  get keyIds(): readonly string[] {
    return this.#loaded?.kids ?? [];
  }

  /** Loads the keys now; throws what failed (the start-up load). */
  async load(): Promise<void> {
    await this.#refresh(true);
    if (this.#loaded === undefined) throw new Error(this.#lastError ?? 'no keys');
  }

  /**
   * The keys for a token's protected header (one, or several when it names no key ID). An unknown key ID makes one fetch (rate-limited) before
   * giving up; throws NoSigningKeyError saying which key was wanted and what is held.
   */
  async keyFor(header: JWSHeaderParameters): Promise<CryptoKey[]> {
    const now = this.#o.now().getTime();
    if (this.#loaded === undefined || now - this.#loaded.at >= (this.#o.refreshMs ?? DEFAULT_JWKS_REFRESH_MS))
      await this.#refresh(false);
    const first = await this.#find(header);
    if (first !== undefined) return first;
    await this.#refresh(false);
    const second = await this.#find(header);
    if (second !== undefined) return second;
    const loaded = this.#loaded;
    const wanted = header.kid === undefined ? `a key for alg ${header.alg}` : `key ID "${header.kid}"`;
    if (loaded === undefined)
      throw new NoSigningKeyError(
        `no signing keys: ${this.describe()} could not be loaded (${this.#lastError ?? 'not yet tried'})`,
      );
    const age = Math.round((now - loaded.at) / 1000);
    const failure = this.#lastError === undefined ? '' : `; the last fetch failed: ${this.#lastError}`;
    throw new NoSigningKeyError(
      `${this.describe()} has no ${wanted} (it holds ${loaded.kids.length === 0 ? 'no keys' : `key IDs ${loaded.kids.join(', ')}`}, loaded ${age}s ago${failure})`,
    );
  }

  async #find(header: JWSHeaderParameters): Promise<CryptoKey[] | undefined> {
    const loaded = this.#loaded;
    if (loaded === undefined) return undefined;
    try {
      return [await loaded.getKey(header as Parameters<KeyGetter>[0])];
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_JWKS_NO_MATCHING_KEY') return undefined;
      if (code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') {
        // A token without a key ID and several keys of its kind: each is tried.
        const all: CryptoKey[] = [];
        for await (const k of err as AsyncIterable<CryptoKey>) all.push(k);
        return all.length === 0 ? undefined : all;
      }
      throw new NoSigningKeyError(
        `${this.describe()} has no usable key for the token: ${(err as Error).message}`,
      );
    }
  }

  /** One fetch at a time; at most one per minRefreshMs unless `force` (the start-up load). */
  #refresh(force: boolean): Promise<void> {
    if (this.#inFlight !== undefined) return this.#inFlight;
    const now = this.#o.now().getTime();
    if (!force && now - this.#lastAttempt < (this.#o.minRefreshMs ?? DEFAULT_JWKS_MIN_REFRESH_MS))
      return Promise.resolve();
    this.#lastAttempt = now;
    this.#inFlight = this.#read()
      .then((jwks) => {
        this.#loaded = toLoaded(jwks, this.describe(), this.#o.now().getTime());
        this.#lastError = undefined;
      })
      .catch((err: unknown) => {
        this.#lastError = (err as Error).message;
        this.#o.logger.warn(
          this.#loaded === undefined
            ? "attestation: cannot load a token issuer's signing keys; its tokens are refused until they load"
            : "attestation: cannot refresh a token issuer's signing keys; keeping the last ones",
          {
            keys: this.describe(),
            error: this.#lastError,
            held: this.#loaded?.kids.join(',') ?? '',
          },
        );
      })
      .finally(() => {
        this.#inFlight = undefined;
      });
    return this.#inFlight;
  }

  async #read(): Promise<unknown> {
    const l = this.#o.location;
    const fetchOptions = {
      ...(this.#o.ca === undefined ? {} : { ca: this.#o.ca }),
      timeoutMs: this.#o.timeoutMs ?? DEFAULT_JWKS_TIMEOUT_MS,
    };
    if (l.kind === 'file') {
      let text: string;
      try {
        text = readFileSync(l.path, 'utf8');
      } catch (err) {
        throw new Error(
          `cannot read ${l.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
      try {
        return JSON.parse(text);
      } catch (err) {
        throw new Error(`${l.path} is not JSON: ${(err as Error).message}`);
      }
    }
    if (l.kind === 'uri') return this.#fetch(l.uri, fetchOptions);
    const url = discoveryUrl(l.issuer);
    const doc = await this.#fetch(url, fetchOptions);
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
      throw new Error(`${url} is not a JSON object (an OpenID provider configuration)`);
    const { issuer, jwks_uri: jwksUri } = doc as { issuer?: unknown; jwks_uri?: unknown };
    // OpenID Connect Discovery 1.0 §4.3: the document's issuer must be exactly the one asked for.
    if (issuer !== l.issuer)
      throw new Error(
        `${url} names issuer ${JSON.stringify(issuer)}, not ${JSON.stringify(l.issuer)}; set issuer to the exact value the provider publishes`,
      );
    if (typeof jwksUri !== 'string' || !jwksUri.startsWith('https://'))
      throw new Error(`${url} has no https jwks_uri (got ${JSON.stringify(jwksUri)})`);
    return this.#fetch(jwksUri, fetchOptions);
  }
}

/** `<issuer>/.well-known/openid-configuration`, a trailing slash of the issuer removed first. */
export function discoveryUrl(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
}

function toLoaded(jwks: unknown, from: string, at: number): Loaded {
  const keys = (jwks as { keys?: unknown } | null)?.keys;
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray(keys))
    throw new Error(`${from} is not a JWK Set (a JSON object with a "keys" array)`);
  const usable: JWK[] = [];
  keys.forEach((k: unknown, i) => {
    if (typeof k !== 'object' || k === null || Array.isArray(k))
      throw new Error(`${from}: key ${i} is not a JSON object`);
    const jwk = k as JWK;
    if (jwk.d !== undefined || jwk.k !== undefined)
      throw new Error(`${from}: key ${i} holds private or secret key material; publish public keys only`);
    if (typeof jwk.kty !== 'string') throw new Error(`${from}: key ${i} has no "kty"`);
    usable.push(jwk);
  });
  let getKey: KeyGetter;
  try {
    getKey = createLocalJWKSet({ keys: usable } as JSONWebKeySet);
  } catch (err) {
    throw new Error(`${from} is not a usable JWK Set: ${(err as Error).message}`);
  }
  return { getKey, kids: usable.map((k, i) => k.kid ?? `(key ${i} without kid)`), at };
}

/** An HTTPS GET of a JSON document: 200 only, no redirects, at most 1 MiB, within `timeoutMs`. */
export function httpsGetJson(url: string, options: { ca?: string; timeoutMs: number }): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      reject(new Error(`${JSON.stringify(url)} is not a URL`));
      return;
    }
    if (u.protocol !== 'https:') {
      reject(new Error(`${url} is not an https URL`));
      return;
    }
    const req = httpsRequest(
      u,
      {
        method: 'GET',
        headers: { accept: 'application/json' },
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        signal: AbortSignal.timeout(options.timeoutMs),
      },
      (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          res.resume();
          const where =
            res.headers.location === undefined
              ? ''
              : ` (to ${res.headers.location}; redirects are not followed)`;
          reject(new Error(`${url} answered HTTP ${res.statusCode}${where}`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY) {
            req.destroy(new Error(`${url} answered more than ${MAX_BODY} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', (err) => reject(new Error(`${url}: ${err.message}`)));
        res.on('end', () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch (err) {
            reject(new Error(`${url} answered something that is not JSON: ${(err as Error).message}`));
          }
        });
      },
    );
    req.on('error', (err) => {
      const msg =
        err.name === 'AbortError' || err.name === 'TimeoutError'
          ? `no answer within ${options.timeoutMs} ms`
          : err.message;
      reject(new Error(`cannot fetch ${url}: ${msg}`));
    });
    req.end();
  });
}

// What the JWT-based attestors' configurations share: where an issuer's keys come from.

export const httpsUrl = (v: string) => {
  try {
    const u = new URL(v);
    if (u.protocol !== 'https:') return `must be an https:// URL; got ${JSON.stringify(v)}`;
    if (u.username !== '' || u.password !== '') return 'must not hold a user name or password';
    return undefined;
  } catch {
    return `must be an https:// URL; got ${JSON.stringify(v)}`;
  }
};
const absolutePath = (v: string) =>
  v.startsWith('/') ? undefined : `must be an absolute path; got ${JSON.stringify(v)}`;
/** Issuer and cluster names are path segments of agent IDs. */
export const segmentName = (v: string) =>
  /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(v)
    ? undefined
    : `must be a name of letters, digits, . _ - (it is a path segment of agent IDs); got ${JSON.stringify(v)}`;

/** Where an issuer's keys come from, shared by jwt and k8s_psat. */
export const JWT_KEYS_FIELDS = {
  // The keys: by OIDC discovery from `issuer` (the default), from a JWKS URL, or from a JWKS file
  // (re-read every 5 minutes and on an unknown key ID).
  jwks_uri: { kind: 'string', check: httpsUrl },
  jwks_path: { kind: 'string', check: absolutePath },
  // PEM roots for the HTTPS fetches instead of the system's (a private CA).
  ca_bundle_path: { kind: 'string', check: absolutePath },
  clock_skew: { kind: 'duration', default: '30s' },
} as const satisfies Record<string, Field>;

export interface JwtKeysConfig {
  readonly jwks_uri?: string;
  readonly jwks_path?: string;
  readonly ca_bundle_path?: string;
  readonly clock_skew: number;
}

/** Reads the PEM file of ca_bundle_path, or throws naming the key. */
export function readCaBundle(path: string | undefined, key: string): string | undefined {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(
      `${key}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----'))
    throw new Error(`${key}: ${path} holds no PEM certificate`);
  return text;
}

/** Where the keys of `issuer` come from by its configuration. */
export function keysLocation(c: JwtKeysConfig, issuer: string): JwtKeysLocation {
  if (c.jwks_path !== undefined) return { kind: 'file', path: c.jwks_path };
  if (c.jwks_uri !== undefined) return { kind: 'uri', uri: c.jwks_uri };
  return { kind: 'discovery', issuer };
}

/**
 * Builds the keys and loads them once: a JWKS file that cannot be read is a start-up error (a
 * configuration mistake); an issuer that cannot be reached is a warning (it is tried again, at most
 * every 30 s, when a token comes), so one provider's outage does not stop the server.
 */
export async function startKeys(
  c: JwtKeysConfig,
  issuer: string,
  key: string,
  ctx: NodeAttestorContext,
): Promise<JwtKeys> {
  const ca = readCaBundle(c.ca_bundle_path, `${key}.ca_bundle_path`);
  const keys = new JwtKeys({
    location: keysLocation(c, issuer),
    ...(ca === undefined ? {} : { ca }),
    now: ctx.now,
    logger: ctx.logger.with({ config_key: key }),
  });
  try {
    await keys.load();
  } catch (err) {
    // An issuer out of reach was logged (and is tried again); a file that cannot be read is a mistake.
    if (c.jwks_path !== undefined) throw new Error(`${key}.jwks_path: ${(err as Error).message}`);
  }
  return keys;
}
