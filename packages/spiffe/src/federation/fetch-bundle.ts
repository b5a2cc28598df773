import { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import {
  checkServerIdentity,
  type DetailedPeerCertificate,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import type { X509BundleSource } from '../bundle/source.js';
import { parseSpiffeBundle, type SpiffeBundle } from '../bundle/spiffe-bundle.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import { matchId } from '../spiffeid/matcher.js';
import { SpiffeId } from '../spiffeid/spiffe-id.js';
import { TrustDomain } from '../spiffeid/trust-domain.js';
import { verifyX509Svid } from '../svid/x509-verify.js';

/** The two bundle endpoint profiles of the SPIFFE federation spec. */
export type BundleEndpointProfile = 'https_web' | 'https_spiffe';

/**
 * `https_web`: the endpoint's certificate is checked with Web PKI rules (RFC 6125) against the
 * system's roots, or the roots in `ca`, and the URL's host name.
 */
export interface HttpsWebProfileOptions {
  profile: 'https_web';
  /** Trust only these roots (PEM text or certificates) instead of the system's. */
  ca?: string | readonly (string | X509Certificate)[];
}

/**
 * `https_spiffe`: the endpoint presents an X509-SVID, verified against the bundle of its own
 * trust domain from `bundleSource`; its SPIFFE ID must be exactly `endpointId`. Host names are not
 * checked.
 */
export interface HttpsSpiffeProfileOptions {
  profile: 'https_spiffe';
  /** The SPIFFE ID the endpoint's server must present, e.g. spiffe://example.org/spire/server. */
  endpointId: SpiffeId;
  /** The bundle of the endpoint's trust domain: the last one fetched, or the bootstrap bundle. */
  bundleSource: X509BundleSource;
}

export type BundleEndpointProfileOptions = HttpsWebProfileOptions | HttpsSpiffeProfileOptions;

export interface BundleEndpointClientOptions {
  /** Milliseconds the whole fetch (connect, TLS, response, body) may take; default 10 000. */
  timeout?: number;
  /** Largest accepted response body in bytes; default 1 MiB. */
  maxBodySize?: number;
  /** Redirects followed (each to an https URL, checked like the first); default 10, 0 refuses them. */
  maxRedirects?: number;
  /** The clock used to check the validity of the endpoint's X509-SVID; default the system clock. */
  clock?: { now(): Date };
}

export type FetchBundleOptions = BundleEndpointProfileOptions &
  BundleEndpointClientOptions & {
    signal?: AbortSignal;
  };

export const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_BUNDLE_SIZE = 1024 * 1024;
const DEFAULT_MAX_REDIRECTS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * Fetches the SPIFFE bundle of `trustDomain` from the bundle endpoint at `url` (spec §7.3): one
 * GET over HTTPS, authenticated with the configured profile before any request is sent. The
 * response must be 200 with a body no larger than `maxBodySize`, parsed as a SPIFFE bundle bound
 * to `trustDomain`. Redirects are followed to https URLs only, with the same checks.
 *
 * Every failure is ERR_FEDERATION_FETCH naming the URL, the trust domain and what failed (the
 * underlying error as `cause`); an abort through `signal` is ERR_ABORTED. A wrong argument type
 * is a TypeError.
 */
export async function fetchBundle(
  trustDomain: TrustDomain,
  url: string | URL,
  options: FetchBundleOptions,
): Promise<SpiffeBundle> {
  const config = checkFetchArguments(trustDomain, url, options);
  const ctx = { trustDomain, url: config.url };
  const { signal } = options;
  if (signal?.aborted) throw aborted(ctx, signal);

  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), config.timeout);
  const combined = signal === undefined ? deadline.signal : AbortSignal.any([deadline.signal, signal]);
  try {
    let current = config.url;
    for (let redirects = 0; ; redirects++) {
      const response = await exchange(current, options, config, combined, { ...ctx, url: current });
      if (response.redirect !== undefined) {
        if (redirects >= config.maxRedirects) {
          throw fetchFailed(
            ctx,
            `stopped after ${config.maxRedirects} redirects (the last to ${response.redirect}); check the bundle endpoint URL`,
          );
        }
        current = checkEndpointUrl(
          response.redirect,
          (detail) =>
            fetchFailed({ ...ctx, url: current }, `refusing redirect to ${response.redirect}: ${detail}`),
          current,
        );
        continue;
      }
      try {
        return parseSpiffeBundle(trustDomain, response.body);
      } catch (err) {
        throw fetchFailed(
          { ...ctx, url: current },
          `the response is not a valid SPIFFE bundle: ${(err as Error).message}`,
          err,
        );
      }
    }
  } catch (err) {
    if (signal?.aborted) throw aborted(ctx, signal);
    if (deadline.signal.aborted) {
      throw fetchFailed(
        ctx,
        `timed out after ${config.timeout} ms; check that the endpoint is reachable, or raise the timeout`,
      );
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

interface FetchConfig {
  url: URL;
  timeout: number;
  maxBodySize: number;
  maxRedirects: number;
  ca: string[] | undefined;
}

interface Ctx {
  trustDomain: TrustDomain;
  url: URL;
}

/** @internal Validates fetch arguments once; wrong types are TypeErrors, a bad URL is coded. */
export function checkFetchArguments(
  trustDomain: TrustDomain,
  url: string | URL,
  options: FetchBundleOptions,
): FetchConfig {
  if (!(trustDomain instanceof TrustDomain)) {
    throw new TypeError('federation: trustDomain must be a TrustDomain (use parseTrustDomain)');
  }
  if (typeof url !== 'string' && !(url instanceof URL)) {
    throw new TypeError('federation: url must be a string or a URL');
  }
  if (typeof options !== 'object' || options === null) {
    throw new TypeError('federation: options are required and must name a profile');
  }
  let ca: string[] | undefined;
  if (options.profile === 'https_web') {
    if (options.ca !== undefined) {
      const list = typeof options.ca === 'string' ? [options.ca] : options.ca;
      if (!Array.isArray(list))
        throw new TypeError('federation: ca must be PEM text or a list of certificates');
      ca = list.map((c: unknown) => {
        if (typeof c === 'string') return c;
        if (c instanceof X509Certificate) return c.toString();
        throw new TypeError('federation: each ca entry must be PEM text or an X509Certificate');
      });
    }
  } else if (options.profile === 'https_spiffe') {
    if (!(options.endpointId instanceof SpiffeId)) {
      throw new TypeError('federation: https_spiffe needs endpointId, the SpiffeId of the endpoint server');
    }
    if (typeof options.bundleSource?.getX509BundleForTrustDomain !== 'function') {
      throw new TypeError(
        'federation: https_spiffe needs bundleSource, an X509BundleSource holding the bundle of the endpoint trust domain',
      );
    }
  } else {
    throw new TypeError(
      `federation: unknown bundle endpoint profile ${JSON.stringify((options as { profile?: unknown }).profile)}; use "https_web" or "https_spiffe"`,
    );
  }
  const timeout = positive(options.timeout, DEFAULT_FETCH_TIMEOUT_MS, 'timeout');
  const maxBodySize = positive(options.maxBodySize, DEFAULT_MAX_BUNDLE_SIZE, 'maxBodySize');
  const maxRedirects = options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  if (!Number.isSafeInteger(maxRedirects) || maxRedirects < 0) {
    throw new TypeError('federation: maxRedirects must be a whole number >= 0');
  }
  const text = String(url);
  const checked = checkEndpointUrl(text, (detail) =>
    fetchFailed({ trustDomain, url: text }, `invalid bundle endpoint URL: ${detail}`),
  );
  return { url: checked, timeout, maxBodySize, maxRedirects, ca };
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`federation: ${name} must be a positive number`);
  }
  return value;
}

/** A bundle endpoint URL: https, a host, no userinfo (spec §7.2). */
/**
 * Why `text` is not a bundle endpoint URL fetchBundle accepts (spec §7.2: https, a host, no user
 * information), or undefined when it is one. For configuration checks before any fetch.
 */
export function bundleEndpointUrlProblem(text: string): string | undefined {
  try {
    checkEndpointUrl(text, (detail) => new Error(detail));
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function checkEndpointUrl(text: string, fail: (detail: string) => Error, base?: URL): URL {
  let url: URL;
  try {
    url = new URL(text, base);
  } catch (err) {
    throw fail(`"${text}" is not a URL (${(err as Error).message})`);
  }
  if (url.protocol !== 'https:') throw fail(`the scheme is "${url.protocol.slice(0, -1)}"; it must be https`);
  if (url.username !== '' || url.password !== '') throw fail('the URL must not carry user information');
  if (url.hostname === '') throw fail('the URL has no host');
  url.hash = '';
  return url;
}

type Response = { redirect: string; body?: undefined } | { redirect?: undefined; body: Buffer };

/** One connection: TLS, authenticate the server, then GET and read the answer. */
async function exchange(
  url: URL,
  profile: BundleEndpointProfileOptions & BundleEndpointClientOptions,
  config: FetchConfig,
  signal: AbortSignal,
  ctx: Ctx,
): Promise<Response> {
  const socket = await connect(url, profile, config, signal, ctx);
  try {
    return await get(socket, url, config, signal, ctx);
  } finally {
    socket.destroy();
  }
}

function hostOf(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
}

/**
 * Opens a TLS connection and authenticates the server per profile. The socket is handed back only
 * after verification passed, so no request byte is ever written to an unverified server.
 */
function connect(
  url: URL,
  profile: BundleEndpointProfileOptions & BundleEndpointClientOptions,
  config: FetchConfig,
  signal: AbortSignal,
  ctx: Ctx,
): Promise<TLSSocket> {
  const host = hostOf(url);
  const port = url.port === '' ? 443 : Number(url.port);
  return new Promise<TLSSocket>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    // Verification is done here, on 'secureConnect', for both profiles, so that each failure
    // can say exactly what was wrong. Nothing is written to the socket before it passes.
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      ALPNProtocols: ['http/1.1'],
      ...(config.ca === undefined ? {} : { ca: config.ca }),
    });
    const cleanup = () => {
      signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
    };
    const onAbort = () => {
      cleanup();
      socket.destroy();
      reject(signal.reason);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(fetchFailed(ctx, `could not connect to ${host}:${port}: ${err.message}`, err));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      cleanup();
      try {
        if (profile.profile === 'https_web') verifyWebPki(socket, host, ctx);
        else verifySpiffe(socket, profile, ctx);
      } catch (err) {
        socket.destroy();
        reject(err);
        return;
      }
      // Errors after this point surface through the HTTP request.
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

function verifyWebPki(socket: TLSSocket, host: string, ctx: Ctx): void {
  if (socket.authorized) return;
  const reason = String(socket.authorizationError ?? 'unknown reason');
  if (reason === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const err = checkServerIdentity(host, socket.getPeerCertificate());
    throw fetchFailed(
      ctx,
      `TLS verification failed (https_web): the server certificate does not name host "${host}"` +
        (err === undefined ? '' : ` (${err.message})`),
      err,
    );
  }
  throw fetchFailed(
    ctx,
    `TLS verification failed (https_web): the server certificate is not trusted (${reason}); it must chain to a trusted web PKI root`,
  );
}

function verifySpiffe(
  socket: TLSSocket,
  profile: HttpsSpiffeProfileOptions & BundleEndpointClientOptions,
  ctx: Ctx,
) {
  const chain = peerChain(socket);
  if (chain.length === 0) {
    throw fetchFailed(ctx, 'TLS verification failed (https_spiffe): the server presented no certificate');
  }
  try {
    const now = profile.clock?.now();
    const { id } = verifyX509Svid(chain, profile.bundleSource, now === undefined ? {} : { now });
    matchId(profile.endpointId)(id);
  } catch (err) {
    throw fetchFailed(
      ctx,
      `TLS verification failed (https_spiffe): the server's X509-SVID was refused for endpoint ID "${profile.endpointId}": ${(err as Error).message}`,
      err,
    );
  }
}

/** The certificates the peer presented, leaf first, as DER. */
function peerChain(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert?.raw !== undefined && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    out.push(cert.raw);
    cert = cert.issuerCertificate;
  }
  return out;
}

/** Sends the GET on an authenticated socket and reads a 200 body or a redirect target. */
function get(
  socket: TLSSocket,
  url: URL,
  config: FetchConfig,
  signal: AbortSignal,
  ctx: Ctx,
): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      fn();
    };
    const onAbort = () => {
      settle(() => reject(signal.reason));
      req.destroy();
    };
    const req = httpsRequest({
      createConnection: () => socket,
      host: hostOf(url),
      port: url.port === '' ? 443 : Number(url.port),
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      headers: { accept: 'application/json', connection: 'close' },
    });
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) =>
      settle(() => reject(fetchFailed(ctx, `the request failed: ${err.message}`, err))),
    );
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (REDIRECT_STATUSES.has(status) && location !== undefined) {
        res.resume();
        settle(() => resolve({ redirect: location }));
        return;
      }
      if (status !== 200) {
        res.resume();
        settle(() =>
          reject(
            fetchFailed(
              ctx,
              `the server answered HTTP ${status} ${res.statusMessage ?? ''}`.trimEnd() +
                '; expected 200 with the bundle. Check the bundle endpoint URL and that the server is serving its bundle',
            ),
          ),
        );
        return;
      }
      const tooLarge = () =>
        fetchFailed(
          ctx,
          `the response body is larger than ${config.maxBodySize} bytes; a bundle endpoint answer must fit in maxBodySize`,
        );
      const length = Number(res.headers['content-length']);
      if (Number.isFinite(length) && length > config.maxBodySize) {
        res.destroy();
        settle(() => reject(tooLarge()));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > config.maxBodySize) {
          res.destroy();
          settle(() => reject(tooLarge()));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => settle(() => resolve({ body: Buffer.concat(chunks) })));
      res.on('error', (err) =>
        settle(() => reject(fetchFailed(ctx, `reading the response failed: ${err.message}`, err))),
      );
      res.on('close', () =>
        settle(() => reject(fetchFailed(ctx, 'the connection closed before the response was complete'))),
      );
    });
    req.end();
  });
}

function fetchFailed(ctx: { trustDomain: TrustDomain; url: URL | string }, detail: string, cause?: unknown) {
  return new SpiffeError(
    ErrorCode.FEDERATION_FETCH,
    `federation: cannot fetch the bundle of trust domain "${ctx.trustDomain}" from ${String(ctx.url)}: ${detail}`,
    cause === undefined ? undefined : { cause },
  );
}

function aborted(ctx: Ctx, signal: AbortSignal): SpiffeError {
  return new SpiffeError(
    ErrorCode.ABORTED,
    `federation: fetching the bundle of trust domain "${ctx.trustDomain}" from ${ctx.url} was aborted`,
    { cause: signal.reason },
  );
}
