import { setTimeout as delay } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { parseJwtBundle } from '../bundle/jwt-bundle.js';
import { JwtBundleSet, X509BundleSet } from '../bundle/set.js';
import { parseX509BundleDer } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError, SpiffeError } from '../errors.js';
import type {
  JWTBundlesResponse,
  JWTSVIDResponse,
  X509BundlesResponse,
  X509SVIDResponse,
} from '../gen/workload/workload_pb.js';
import {
  JWTBundlesRequestSchema,
  JWTSVIDRequestSchema,
  ValidateJWTSVIDRequestSchema,
  X509BundlesRequestSchema,
  X509SVIDRequestSchema,
} from '../gen/workload/workload_pb.js';
import { type Logger, silentLogger } from '../logger.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { type JwtSvid, parseInsecureJwtSvid } from '../svid/jwt-svid.js';
import type { JwtSvidParams } from '../svid/source.js';
import { parseX509Crl, type X509Crl } from '../svid/x509-crl.js';
import { parseX509SvidRaw, type X509Svid } from '../svid/x509-svid.js';
import {
  grpcTarget,
  resolveWorkloadApiAddress,
  type WorkloadApiAddress,
  workloadApiAddressOrigin,
} from './address.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { create, SECURITY_HEADER, workloadApiMethods } from './service.js';

/** What FetchX509SVID delivers: the SVIDs (first = default) and the X.509 bundles to verify peers with. */
export interface X509Context {
  readonly svids: readonly X509Svid[];
  readonly bundles: X509BundleSet;
  /** The CRLs the agent sent (X509SVIDResponse.crl); empty from an agent that sends none (SPIRE). */
  readonly crls: readonly X509Crl[];
}

/** Receives each snapshot of a watch, and the errors the watch recovers from. */
export interface Watcher<T> {
  onUpdate(value: T): void;
  /** A failed connection or a malformed message; the watch keeps going (reconnecting with back-off). */
  onError?(err: SpiffeError): void;
}

export interface WorkloadApiClientOptions {
  /**
   * `unix:///path` or `tcp://ip:port`; default SPIFFE_ENDPOINT_SOCKET, else
   * `unix:///run/tessera/agent.sock` (DEFAULT_WORKLOAD_API_SOCKET).
   */
  address?: string;
  /**
   * Where watches say why they are not getting updates: at warn once per distinct reason (again
   * when it changes), repeats at debug, and at info when updates arrive again. Default: nothing.
   */
  logger?: Logger;
  /** Reconnect back-off for watches (exponential with jitter, 1 s .. 30 s by default). */
  backoff?: BackoffOptions;
}

export interface CallOptions {
  signal?: AbortSignal;
}

type Method = (typeof workloadApiMethods)[keyof typeof workloadApiMethods];

function responseError(what: string, detail: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.WORKLOADAPI_RESPONSE,
    `workloadapi: ${what}: ${detail}`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * A client of the SPIFFE Workload API (spec §5) over a Unix socket or loopback TCP. Every request
 * carries the `workload.spiffe.io: true` header. Fetches are one-shot; watches keep a stream open,
 * deliver every snapshot, and reconnect with back-off until their signal aborts or the client closes.
 */
export class WorkloadApiClient {
  readonly address: WorkloadApiAddress;
  /** Where the address came from, for messages. */
  readonly #origin: string;
  readonly #client: grpc.Client;
  readonly #logger: Logger;
  readonly #backoff: BackoffOptions;
  readonly #closing = new AbortController();

  constructor(options: WorkloadApiClientOptions = {}) {
    this.address = resolveWorkloadApiAddress(options.address);
    this.#origin = workloadApiAddressOrigin(options.address);
    this.#logger = options.logger ?? silentLogger;
    this.#backoff = options.backoff ?? {};
    this.#client = new grpc.Client(grpcTarget(this.address), grpc.credentials.createInsecure(), {
      'grpc.enable_retries': 0,
    });
  }

  /** The SVIDs and bundles for this process, once. */
  async fetchX509Context(options: CallOptions = {}): Promise<X509Context> {
    const resp = await this.#first(
      workloadApiMethods.FetchX509SVID,
      create(X509SVIDRequestSchema),
      'fetch X.509 context',
      options,
    );
    return parseX509Context(resp as X509SVIDResponse);
  }

  /** The default (first) X509-SVID. */
  async fetchX509Svid(options: CallOptions = {}): Promise<X509Svid> {
    return (await this.fetchX509Context(options)).svids[0] as X509Svid;
  }

  async fetchX509Svids(options: CallOptions = {}): Promise<readonly X509Svid[]> {
    return (await this.fetchX509Context(options)).svids;
  }

  async fetchX509Bundles(options: CallOptions = {}): Promise<X509BundleSet> {
    const resp = await this.#first(
      workloadApiMethods.FetchX509Bundles,
      create(X509BundlesRequestSchema),
      'fetch X.509 bundles',
      options,
    );
    return parseX509BundlesResponse(resp as X509BundlesResponse);
  }

  async fetchJwtBundles(options: CallOptions = {}): Promise<JwtBundleSet> {
    const resp = await this.#first(
      workloadApiMethods.FetchJWTBundles,
      create(JWTBundlesRequestSchema),
      'fetch JWT bundles',
      options,
    );
    return parseJwtBundlesResponse(resp as JWTBundlesResponse);
  }

  /** The first JWT-SVID minted for `audience` (and `subject`, when given). */
  async fetchJwtSvid(params: JwtSvidParams, options: CallOptions = {}): Promise<JwtSvid> {
    return (await this.fetchJwtSvids(params, options))[0] as JwtSvid;
  }

  /** Every JWT-SVID this process may have for `audience` (or only `subject`'s). */
  async fetchJwtSvids(params: JwtSvidParams, options: CallOptions = {}): Promise<JwtSvid[]> {
    const audience = [...params.audience];
    if (audience.length === 0 || audience.some((a) => typeof a !== 'string' || a === '')) {
      throw new TypeError('workloadapi: fetchJwtSvid needs a non-empty audience list of non-empty strings');
    }
    const req = create(JWTSVIDRequestSchema, { audience, spiffeId: params.subject?.toString() ?? '' });
    const resp = (await this.#unary(
      workloadApiMethods.FetchJWTSVID,
      req,
      'fetch JWT-SVID',
      options,
    )) as JWTSVIDResponse;
    return parseJwtSvidResponse(resp, audience);
  }

  /**
   * Asks the Workload API to validate `token` for `audience`, then parses it locally (without the
   * signature, which the API checked), as go-spiffe does. A token the API refuses is ERR_JWTSVID_VERIFY.
   */
  async validateJwtSvid(token: string, audience: string, options: CallOptions = {}): Promise<JwtSvid> {
    if (typeof token !== 'string' || token === '')
      throw new TypeError('workloadapi: validateJwtSvid needs a token');
    if (typeof audience !== 'string' || audience === '')
      throw new TypeError('workloadapi: validateJwtSvid needs an audience');
    try {
      await this.#unary(
        workloadApiMethods.ValidateJWTSVID,
        create(ValidateJWTSVIDRequestSchema, { audience, svid: token }),
        'validate JWT-SVID',
        options,
      );
    } catch (err) {
      if (
        isSpiffeError(err, ErrorCode.WORKLOADAPI_RESPONSE) &&
        (err.cause as grpc.ServiceError | undefined)?.code === grpc.status.INVALID_ARGUMENT
      ) {
        throw new SpiffeError(
          ErrorCode.JWTSVID_VERIFY,
          `workloadapi: the Workload API refused the JWT-SVID: ${(err.cause as grpc.ServiceError).details}`,
          { cause: err },
        );
      }
      throw err;
    }
    return parseInsecureJwtSvid(token, [audience]);
  }

  /** Streams X.509 contexts until `signal` aborts or the client closes; see Watcher. */
  watchX509Context(watcher: Watcher<X509Context>, signal?: AbortSignal): Promise<void> {
    return this.#watch(
      workloadApiMethods.FetchX509SVID,
      create(X509SVIDRequestSchema),
      'watch X.509 context',
      (r) => parseX509Context(r as X509SVIDResponse),
      watcher,
      signal,
    );
  }

  watchX509Bundles(watcher: Watcher<X509BundleSet>, signal?: AbortSignal): Promise<void> {
    return this.#watch(
      workloadApiMethods.FetchX509Bundles,
      create(X509BundlesRequestSchema),
      'watch X.509 bundles',
      (r) => parseX509BundlesResponse(r as X509BundlesResponse),
      watcher,
      signal,
    );
  }

  watchJwtBundles(watcher: Watcher<JwtBundleSet>, signal?: AbortSignal): Promise<void> {
    return this.#watch(
      workloadApiMethods.FetchJWTBundles,
      create(JWTBundlesRequestSchema),
      'watch JWT bundles',
      (r) => parseJwtBundlesResponse(r as JWTBundlesResponse),
      watcher,
      signal,
    );
  }

  /** Stops every watch and closes the connection. Idempotent. */
  close(): void {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    this.#client.close();
  }

  #metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(SECURITY_HEADER, 'true');
    return md;
  }

  #signal(signal: AbortSignal | undefined): AbortSignal {
    return signal === undefined ? this.#closing.signal : AbortSignal.any([signal, this.#closing.signal]);
  }

  #check(op: string, signal: AbortSignal): void {
    if (signal.aborted) throw aborted(op, this.#closing.signal.aborted);
  }

  #mapError(err: grpc.ServiceError, op: string, signal?: AbortSignal): SpiffeError {
    const where = `the Workload API at ${this.address.uri}`;
    const details = cleanDetails(err.details);
    switch (err.code) {
      case grpc.status.PERMISSION_DENIED: {
        // An agent that says more than SPIRE's "no identity issued" (e.g. that it was banned by its
        // server) is quoted as it is: advice to register an entry would send the reader astray.
        if (!NO_IDENTITY_DETAILS.has(details))
          return new SpiffeError(
            ErrorCode.WORKLOADAPI_PERMISSION_DENIED,
            `workloadapi: ${op}: no identity: ${where} refused this process (${processIdentity()}): ${details}`,
            { cause: err },
          );
        const uid = process.getuid?.();
        return new SpiffeError(
          ErrorCode.WORKLOADAPI_PERMISSION_DENIED,
          `workloadapi: ${op}: no identity: ${where} issued no identity to this process (${processIdentity()}) ` +
            `(PermissionDenied: ${details}); register an entry whose selectors match this process` +
            `${uid === undefined ? ' (its uid, gid or binary path)' : ` (e.g. unix:uid:${uid})`}, or run it as the user an entry names`,
          { cause: err },
        );
      }
      case grpc.status.CANCELLED:
      case grpc.status.UNAVAILABLE:
        // A cancellation we did not ask for is the server going away: retried like UNAVAILABLE.
        if (err.code === grpc.status.CANCELLED && signal?.aborted === true)
          return aborted(op, this.#closing.signal.aborted, err);
        return new SpiffeError(
          ErrorCode.WORKLOADAPI_UNAVAILABLE,
          `workloadapi: ${op}: ${this.#unreachable(details)}`,
          { cause: err },
        );
      default:
        return responseError(op, `${where} answered ${grpc.status[err.code] ?? err.code}: ${details}`, err);
    }
  }

  /** Why the Workload API cannot be reached, from the connection error grpc-js reports. */
  #unreachable(details: string): string {
    const a = this.address;
    const at = a.kind === 'unix' ? a.path : `${a.host}:${a.port}`;
    const origin = `(${a.uri}, from ${this.#origin})`;
    if (/\bENOENT\b/.test(details))
      return `no Workload API socket at ${at} ${origin}: is the agent running, and is this its socket_path?`;
    if (/\bECONNREFUSED\b/.test(details))
      return `nothing is listening on ${at} ${origin}: is the agent running?`;
    if (/\b(EACCES|EPERM)\b/.test(details))
      return `cannot connect to ${at} ${origin}: permission denied for this process (${processIdentity()}); the socket and every directory above it must be open to it`;
    return `cannot reach the Workload API at ${a.uri} (${details}); check that the agent is running and that the socket exists and is accessible`;
  }

  /** Runs one server stream: `onData` per message; resolves with the error that ended it, if any. */
  #stream(
    method: Method,
    req: unknown,
    signal: AbortSignal,
    onData: (resp: unknown, cancel: () => void) => void,
  ): Promise<grpc.ServiceError | undefined> {
    return new Promise((resolve) => {
      let settled = false;
      const call = this.#client.makeServerStreamRequest(
        method.path,
        method.requestSerialize as (v: unknown) => Buffer,
        method.responseDeserialize as (b: Buffer) => unknown,
        req,
        this.#metadata(),
      );
      const cancel = () => call.cancel();
      signal.addEventListener('abort', cancel, { once: true });
      const settle = (err: grpc.ServiceError | undefined) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', cancel);
        resolve(err);
      };
      call.on('data', (resp: unknown) => onData(resp, cancel));
      call.on('error', (err: grpc.ServiceError) => settle(err));
      call.on('end', () => settle(undefined));
    });
  }

  /** The first message of a stream, then the stream is cancelled (go-spiffe's one-shot fetches). */
  async #first(method: Method, req: unknown, op: string, options: CallOptions): Promise<unknown> {
    const signal = this.#signal(options.signal);
    this.#check(op, signal);
    let first: { value: unknown } | undefined;
    const ended = await this.#stream(method, req, signal, (resp, cancel) => {
      if (first !== undefined) return;
      first = { value: resp };
      cancel();
    });
    if (first !== undefined) return first.value;
    if (ended !== undefined) throw this.#mapError(ended, op, signal);
    throw responseError(op, 'the stream ended before the first message');
  }

  #unary(method: Method, req: unknown, op: string, options: CallOptions): Promise<unknown> {
    const signal = this.#signal(options.signal);
    this.#check(op, signal);
    return new Promise((resolve, reject) => {
      const call = this.#client.makeUnaryRequest(
        method.path,
        method.requestSerialize as (v: unknown) => Buffer,
        method.responseDeserialize as (b: Buffer) => unknown,
        req,
        this.#metadata(),
        (err: grpc.ServiceError | null, resp?: unknown) => {
          signal.removeEventListener('abort', onAbort);
          if (err !== null) reject(this.#mapError(err, op, signal));
          else resolve(resp);
        },
      );
      const onAbort = () => call.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async #watch<T>(
    method: Method,
    req: unknown,
    op: string,
    parse: (resp: unknown) => T,
    watcher: Watcher<T>,
    userSignal: AbortSignal | undefined,
  ): Promise<void> {
    const signal = this.#signal(userSignal);
    const backoff = new Backoff(this.#backoff);
    // A watch retrying through one problem says so once; repeats go to debug.
    let reported: string | undefined;
    const report = (err: SpiffeError) => {
      const fields = { code: err.code, address: this.address.uri };
      if (err.message === reported) this.#logger.debug?.(err.message, fields);
      else this.#logger.warn?.(err.message, fields);
      reported = err.message;
      try {
        watcher.onError?.(err);
      } catch (cbErr) {
        this.#logger.error?.(`workloadapi: ${op}: the watcher's onError threw`, { error: String(cbErr) });
      }
    };
    while (!signal.aborted) {
      const ended = await this.#stream(method, req, signal, (resp) => {
        backoff.reset();
        let value: T;
        try {
          value = parse(resp);
        } catch (err) {
          report(isSpiffeError(err) ? err : responseError(op, String(err), err));
          return;
        }
        if (reported !== undefined) {
          this.#logger.info?.(`workloadapi: ${op}: updates from ${this.address.uri} again`, {
            address: this.address.uri,
          });
          reported = undefined;
        }
        try {
          watcher.onUpdate(value);
        } catch (cbErr) {
          this.#logger.error?.(`workloadapi: ${op}: the watcher's onUpdate threw`, { error: String(cbErr) });
        }
      });
      if (signal.aborted) return;
      if (ended?.code === grpc.status.INVALID_ARGUMENT) {
        // The server refuses the request itself; retrying cannot help (spec §5.2).
        const err = this.#mapError(ended, op);
        report(err);
        throw err;
      }
      report(
        ended === undefined
          ? new SpiffeError(
              ErrorCode.WORKLOADAPI_UNAVAILABLE,
              `workloadapi: ${op}: the Workload API at ${this.address.uri} closed the stream; reconnecting`,
            )
          : this.#mapError(ended, op, signal),
      );
      try {
        await delay(backoff.next(), undefined, { signal });
      } catch {
        return;
      }
    }
  }
}

/** This process as a workload attestor sees it, for messages: `uid 1000, gid 1000`. */
function processIdentity(): string {
  return typeof process.getuid === 'function'
    ? `uid ${process.getuid()}, gid ${process.getgid?.()}`
    : `pid ${process.pid}`;
}

/** gRPC status details without grpc-js's empty `Resolution note: ` tail. */
/** What an agent says when no entry matches the caller (SPIRE's words, and Tessera's). */
const NO_IDENTITY_DETAILS = new Set(['no identity issued', '(no details)']);

function cleanDetails(details: string): string {
  return details.replace(/\.? *Resolution note: *$/, '').trim() || '(no details)';
}

function aborted(op: string, closed: boolean, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.ABORTED,
    `workloadapi: ${op}: ${closed ? 'the client was closed' : 'aborted by the caller'}`,
    cause === undefined ? undefined : { cause },
  );
}

/** Creates a Workload API client; `address` defaults to SPIFFE_ENDPOINT_SOCKET, else DEFAULT_WORKLOAD_API_SOCKET. */
export function createWorkloadApiClient(options: WorkloadApiClientOptions = {}): WorkloadApiClient {
  return new WorkloadApiClient(options);
}

/** @internal Parses an X509SVIDResponse as go-spiffe does (spec §5.4, §8.1). */
export function parseX509Context(resp: X509SVIDResponse): X509Context {
  const what = 'X.509 context response';
  if (resp.svids.length === 0) throw responseError(what, 'no SVIDs in response');
  const seenHints = new Set<string>();
  const svids: X509Svid[] = [];
  const bundles = new X509BundleSet();
  resp.svids.forEach((s, i) => {
    if (s.hint !== '') {
      if (seenHints.has(s.hint)) return; // the first SVID with a hint wins
      seenHints.add(s.hint);
    }
    let svid: X509Svid;
    try {
      svid = parseX509SvidRaw(s.x509Svid, s.x509SvidKey, s.hint);
    } catch (err) {
      throw responseError(what, `SVID ${i} ("${s.spiffeId}") is invalid: ${(err as Error).message}`, err);
    }
    if (svid.id.toString() !== s.spiffeId) {
      throw responseError(
        what,
        `SVID ${i}: spiffe_id "${s.spiffeId}" does not match the certificate's ID "${svid.id}"`,
      );
    }
    try {
      bundles.add(parseX509BundleDer(svid.id.trustDomain, s.bundle));
    } catch (err) {
      throw responseError(what, `the bundle of SVID ${i} is invalid: ${(err as Error).message}`, err);
    }
    svids.push(svid);
  });
  for (const [key, der] of Object.entries(resp.federatedBundles)) {
    try {
      bundles.add(parseX509BundleDer(parseTrustDomain(key), der));
    } catch (err) {
      throw responseError(what, `federated bundle "${key}" is invalid: ${(err as Error).message}`, err);
    }
  }
  let crls: X509Crl[];
  try {
    crls = resp.crl.map((der) => parseX509Crl(der));
  } catch (err) {
    throw responseError(what, `a CRL is invalid: ${(err as Error).message}`, err);
  }
  return { svids, bundles, crls };
}

function parseX509BundlesResponse(resp: X509BundlesResponse): X509BundleSet {
  const set = new X509BundleSet();
  for (const [key, der] of Object.entries(resp.bundles)) {
    try {
      set.add(parseX509BundleDer(parseTrustDomain(key), der));
    } catch (err) {
      throw responseError(
        'X.509 bundles response',
        `bundle "${key}" is invalid: ${(err as Error).message}`,
        err,
      );
    }
  }
  if (set.size === 0) throw responseError('X.509 bundles response', 'no bundles in response');
  return set;
}

function parseJwtBundlesResponse(resp: JWTBundlesResponse): JwtBundleSet {
  const set = new JwtBundleSet();
  for (const [key, jwks] of Object.entries(resp.bundles)) {
    try {
      set.add(parseJwtBundle(parseTrustDomain(key), jwks));
    } catch (err) {
      throw responseError(
        'JWT bundles response',
        `bundle "${key}" is invalid: ${(err as Error).message}`,
        err,
      );
    }
  }
  if (set.size === 0) throw responseError('JWT bundles response', 'no bundles in response');
  return set;
}

function parseJwtSvidResponse(resp: JWTSVIDResponse, audience: readonly string[]): JwtSvid[] {
  const what = 'JWT-SVID response';
  if (resp.svids.length === 0) throw responseError(what, 'there were no SVIDs in the response');
  const seenHints = new Set<string>();
  const out: JwtSvid[] = [];
  resp.svids.forEach((s, i) => {
    if (s.hint !== '') {
      if (seenHints.has(s.hint)) return;
      seenHints.add(s.hint);
    }
    let svid: JwtSvid;
    try {
      svid = parseInsecureJwtSvid(s.svid, audience, s.hint);
    } catch (err) {
      throw responseError(what, `SVID ${i} ("${s.spiffeId}") is invalid: ${(err as Error).message}`, err);
    }
    if (svid.id.toString() !== s.spiffeId) {
      throw responseError(
        what,
        `SVID ${i}: spiffe_id "${s.spiffeId}" does not match the token subject "${svid.id}"`,
      );
    }
    out.push(svid);
  });
  return out;
}
