import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { JwtBundle } from '../bundle/jwt-bundle.js';
import type { X509Bundle } from '../bundle/x509-bundle.js';
import {
  type JWTBundlesResponse,
  JWTBundlesResponseSchema,
  type JWTSVIDRequest,
  JWTSVIDResponseSchema,
  JWTSVIDSchema,
  type ValidateJWTSVIDRequest,
  ValidateJWTSVIDResponseSchema,
  type X509BundlesResponse,
  X509BundlesResponseSchema,
  type X509SVIDResponse,
  X509SVIDResponseSchema,
  X509SVIDSchema,
} from '../gen/workload/workload_pb.js';
import type { X509Svid } from '../svid/x509-svid.js';
import { create, SECURITY_HEADER, workloadApiService } from './service.js';

type Stream<T> = grpc.ServerWritableStream<unknown, T>;
type MethodName =
  | 'FetchX509SVID'
  | 'FetchX509Bundles'
  | 'FetchJWTSVID'
  | 'FetchJWTBundles'
  | 'ValidateJWTSVID';

export interface FakeX509Identity {
  svid: X509Svid;
  /** The bundle of the SVID's own trust domain. */
  bundle: X509Bundle;
}

export interface FakeError {
  code: grpc.status;
  details: string;
}

/**
 * A Workload API server for tests, on a real Unix socket: it checks the security header as SPIRE
 * does, serves whatever the test sets, pushes every change to open streams, and can fail, stop
 * and restart on the same path. Exported as `spiffe/testing`; not for production.
 */
export class FakeWorkloadApi {
  readonly socketPath: string;
  readonly #dir: string | undefined;
  #server: grpc.Server | undefined;
  #x509: X509SVIDResponse | undefined;
  #x509Bundles: X509BundlesResponse | undefined;
  #jwtBundles: JWTBundlesResponse | undefined;
  #mintJwt: ((req: JWTSVIDRequest) => { spiffeId: string; svid: string; hint?: string }[]) | undefined;
  #validate: ((req: ValidateJWTSVIDRequest) => { spiffeId: string } | FakeError) | undefined;
  readonly #errors = new Map<MethodName, FakeError>();
  readonly #streams = new Map<MethodName, Set<Stream<unknown>>>();
  /** Every request seen: method and whether it carried the security header. */
  readonly requests: { method: MethodName; securityHeader: boolean }[] = [];

  private constructor(socketPath: string, dir: string | undefined) {
    this.socketPath = socketPath;
    this.#dir = dir;
  }

  /** Starts on `socketPath`, or on a fresh socket in a private temp dir. */
  static async start(socketPath?: string): Promise<FakeWorkloadApi> {
    let dir: string | undefined;
    let path = socketPath;
    if (path === undefined) {
      dir = await mkdtemp(join(tmpdir(), 'wlapi-'));
      path = join(dir, 'agent.sock');
    }
    const api = new FakeWorkloadApi(path, dir);
    await api.restart();
    return api;
  }

  /** `unix:///…`, for WorkloadApiClient or SPIFFE_ENDPOINT_SOCKET. */
  get address(): string {
    return `unix://${this.socketPath}`;
  }

  /** Serves these identities (first = default) and federated bundles on FetchX509SVID, and pushes them to open streams. */
  setX509Svids(identities: readonly FakeX509Identity[], federated: readonly X509Bundle[] = []): void {
    this.setX509Response(
      create(X509SVIDResponseSchema, {
        svids: identities.map(({ svid, bundle }) => {
          const raw = svid.marshalRaw();
          return create(X509SVIDSchema, {
            spiffeId: svid.id.toString(),
            x509Svid: raw.certificates,
            x509SvidKey: raw.privateKey,
            bundle: bundle.toDer(),
            hint: svid.hint,
          });
        }),
        federatedBundles: Object.fromEntries(federated.map((b) => [b.trustDomain.idString(), b.toDer()])),
      }),
    );
    const all = [...identities.map((i) => i.bundle), ...federated];
    this.setX509Bundles(all);
  }

  /** A raw response, for malformed-message tests. */
  setX509Response(resp: X509SVIDResponse): void {
    this.#x509 = resp;
    this.#push('FetchX509SVID', resp);
  }

  setX509Bundles(bundles: readonly X509Bundle[]): void {
    const resp = create(X509BundlesResponseSchema, {
      bundles: Object.fromEntries(bundles.map((b) => [b.trustDomain.idString(), b.toDer()])),
    });
    this.#x509Bundles = resp;
    this.#push('FetchX509Bundles', resp);
  }

  setJwtBundles(bundles: readonly JwtBundle[]): void {
    const resp = create(JWTBundlesResponseSchema, {
      bundles: Object.fromEntries(
        bundles.map((b) => [b.trustDomain.idString(), new Uint8Array(b.marshal())]),
      ),
    });
    this.setJwtBundlesResponse(resp);
  }

  setJwtBundlesResponse(resp: JWTBundlesResponse): void {
    this.#jwtBundles = resp;
    this.#push('FetchJWTBundles', resp);
  }

  /** How FetchJWTSVID answers: a function of the request. */
  setJwtSvidMinter(mint: (req: JWTSVIDRequest) => { spiffeId: string; svid: string; hint?: string }[]): void {
    this.#mintJwt = mint;
  }

  setJwtValidator(validate: (req: ValidateJWTSVIDRequest) => { spiffeId: string } | FakeError): void {
    this.#validate = validate;
  }

  /** Makes `method` fail with `error` (and ends its open streams with it); undefined clears it. */
  setError(method: MethodName, error: FakeError | undefined): void {
    if (error === undefined) {
      this.#errors.delete(method);
      return;
    }
    this.#errors.set(method, error);
    for (const call of this.#streams.get(method) ?? [])
      call.emit('error', Object.assign(new Error(error.details), error));
    this.#streams.get(method)?.clear();
  }

  /** Number of streams currently open for `method`. */
  openStreams(method: MethodName): number {
    return this.#streams.get(method)?.size ?? 0;
  }

  /** Stops serving (open streams are cut); restart() serves again on the same socket path. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server === undefined) return;
    server.forceShutdown();
    for (const set of this.#streams.values()) set.clear();
  }

  async restart(): Promise<void> {
    if (this.#server !== undefined) return;
    const server = new grpc.Server();
    server.addService(workloadApiService, {
      FetchX509SVID: (call: Stream<unknown>) => this.#stream('FetchX509SVID', call, () => this.#x509),
      FetchX509Bundles: (call: Stream<unknown>) =>
        this.#stream('FetchX509Bundles', call, () => this.#x509Bundles),
      FetchJWTBundles: (call: Stream<unknown>) =>
        this.#stream('FetchJWTBundles', call, () => this.#jwtBundles),
      FetchJWTSVID: (call: grpc.ServerUnaryCall<JWTSVIDRequest, unknown>, cb: grpc.sendUnaryData<unknown>) =>
        this.#unary('FetchJWTSVID', call, cb, () => {
          if (call.request.audience.length === 0)
            return { code: grpc.status.INVALID_ARGUMENT, details: 'audience must be specified' };
          const minted = this.#mintJwt?.(call.request) ?? [];
          if (minted.length === 0)
            return { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' };
          return create(JWTSVIDResponseSchema, {
            svids: minted.map((m) => create(JWTSVIDSchema, { ...m, hint: m.hint ?? '' })),
          });
        }),
      ValidateJWTSVID: (
        call: grpc.ServerUnaryCall<ValidateJWTSVIDRequest, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) =>
        this.#unary('ValidateJWTSVID', call, cb, () => {
          if (call.request.audience === '')
            return { code: grpc.status.INVALID_ARGUMENT, details: 'audience must be specified' };
          if (call.request.svid === '')
            return { code: grpc.status.INVALID_ARGUMENT, details: 'svid must be specified' };
          const r = this.#validate?.(call.request) ?? {
            code: grpc.status.INVALID_ARGUMENT,
            details: 'no validator configured',
          };
          return 'code' in r ? r : create(ValidateJWTSVIDResponseSchema, { spiffeId: r.spiffeId });
        }),
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${this.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err === null ? resolve() : reject(err),
      ),
    );
    this.#server = server;
  }

  /** Stops and removes the temp dir it created. */
  async close(): Promise<void> {
    await this.stop();
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true });
  }

  #admit(method: MethodName, metadata: grpc.Metadata): FakeError | undefined {
    const values = metadata.get(SECURITY_HEADER);
    const ok = values.length === 1 && values[0] === 'true';
    this.requests.push({ method, securityHeader: ok });
    if (!ok) return { code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' };
    return this.#errors.get(method);
  }

  #stream(method: MethodName, call: Stream<unknown>, current: () => unknown): void {
    const refused = this.#admit(method, call.metadata);
    if (refused !== undefined) {
      call.emit('error', Object.assign(new Error(refused.details), refused));
      return;
    }
    let set = this.#streams.get(method);
    if (set === undefined) {
      set = new Set();
      this.#streams.set(method, set);
    }
    set.add(call);
    call.on('cancelled', () => set.delete(call));
    call.on('close', () => set.delete(call));
    const value = current();
    if (value !== undefined) call.write(value);
  }

  #unary(
    method: MethodName,
    call: grpc.ServerUnaryCall<unknown, unknown>,
    cb: grpc.sendUnaryData<unknown>,
    answer: () => unknown,
  ): void {
    const refused = this.#admit(method, call.metadata);
    if (refused !== undefined) {
      cb(refused);
      return;
    }
    const r = answer();
    if (typeof r === 'object' && r !== null && 'code' in r && 'details' in r) cb(r as FakeError);
    else cb(null, r);
  }

  #push(method: MethodName, value: unknown): void {
    for (const call of this.#streams.get(method) ?? []) call.write(value);
  }
}
