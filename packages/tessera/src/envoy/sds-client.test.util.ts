// An Envoy SDS v3 client for tests and benchmarks, built on grpc-js and the generated Envoy API
// types: it subscribes on StreamSecrets (state of the world) as Envoy's secret subscriptions do,
// checks every response as Envoy would and ACKs it — or NACKs it with the problem, or when told to —
// changes its resource names within the stream, reconnects with its last accepted version, and
// makes FetchSecrets calls. What it received is decoded into plain values (`SdsSecret`).
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { create, createRegistry } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import { type Any, anyUnpack } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { idFromCertificate, parseTrustDomain, parseX509BundlePem } from '@tessera/spiffe';
import { ServiceClient } from '../common/grpc.js';
import { type DataSource, NodeSchema } from '../gen/envoy/config/core/v3/base_pb.js';
import { type Secret, SecretSchema } from '../gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { SPIFFECertValidatorConfigSchema } from '../gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config_pb.js';
import {
  DeltaDiscoveryRequestSchema,
  type DiscoveryRequest,
  DiscoveryRequestSchema,
  type DiscoveryResponse,
} from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../gen/envoy/service/secret/v3/sds_pb.js';
import { StatusSchema } from '../gen/google/rpc/status_pb.js';

type SdsMethods = typeof SecretDiscoveryService extends GenService<infer S> ? S : never;

export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
export const SPIFFE_VALIDATOR_NAME = 'envoy.tls.cert_validator.spiffe';

const registry = createRegistry(SecretSchema, SPIFFECertValidatorConfigSchema);

/** A Secret as the client understood it; `error` says why Envoy would refuse it. */
export type SdsSecret =
  | {
      name: string;
      kind: 'tls_certificate';
      /** The leaf's URI SAN, its serial (upper-case hex, as node prints it) and notAfter. */
      spiffeId: string;
      serial: string;
      notAfter: Date;
      /** Certificates in certificate_chain, leaf first. */
      chainLength: number;
      certificatesPem: string;
      privateKeyPem: string;
    }
  | {
      name: string;
      kind: 'validation_context';
      trustedCaPem: string;
      authorities: number;
      /** The trust domains the CA certificates' URI SANs name. */
      caTrustDomains: string[];
    }
  | {
      name: string;
      kind: 'spiffe_validator';
      /** Trust domain name → its bundle (PEM) and the number of authorities in it, in the order sent. */
      trustDomains: Record<string, { pem: string; authorities: number }>;
    }
  | { name: string; kind: 'invalid'; error: string };

/** One DiscoveryResponse and what the client did with it. */
export interface SdsUpdate {
  /** 1, 2, … over every stream of this client. */
  n: number;
  /** 1 for the first stream, +1 at each reconnect. */
  stream: number;
  /** `now()` when it arrived. */
  receivedAt: number;
  versionInfo: string;
  nonce: string;
  typeUrl: string;
  secrets: SdsSecret[];
  /** 'ACK' or 'NACK'; `reason` is the NACK's error_detail message. */
  verdict: 'ACK' | 'NACK';
  reason?: string;
  response: DiscoveryResponse;
}

/** A request the client sent, as sent. */
export interface SdsRequestSent {
  stream: number;
  versionInfo: string;
  responseNonce: string;
  names: string[];
  errorDetail?: string;
}

export interface SdsClientOptions {
  /** The SDS server's Unix socket (the agent's socket). */
  socketPath: string;
  /** Resource names to subscribe to. */
  names: readonly string[];
  /**
   * Decides a response's fate once it passed Envoy's checks: return a message to NACK it with.
   * Default: ACK. A response Envoy would refuse is NACKed whatever this says.
   */
  reject?: (update: SdsUpdate) => string | undefined;
  /** Called with every response after it was ACKed or NACKed. */
  onUpdate?: (update: SdsUpdate) => void;
  /** The node Envoy names itself with in every request. */
  node?: { id: string; cluster: string };
  /** Clock for `receivedAt` (default performance.now). */
  now?: () => number;
  channelOptions?: grpc.ChannelOptions;
}

interface Waiter {
  resolve: (u: SdsUpdate) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

function inline(ds: DataSource | undefined, what: string): string {
  if (ds === undefined) throw new Error(`${what} is missing`);
  switch (ds.specifier.case) {
    case 'inlineBytes':
      return Buffer.from(ds.specifier.value).toString('utf8');
    case 'inlineString':
      return ds.specifier.value;
    case undefined:
      throw new Error(`${what} is empty`);
    default:
      throw new Error(`${what} is a ${ds.specifier.case}, not inline`);
  }
}

function pemCertificates(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${what} holds no PEM certificate`);
  return blocks.map((b) => new X509Certificate(b));
}

function caTrustDomains(certs: readonly X509Certificate[]): string[] {
  const out: string[] = [];
  for (const c of certs) {
    for (const m of (c.subjectAltName ?? '').matchAll(/URI:spiffe:\/\/([^/,\s]+)/g)) {
      if (m[1] !== undefined) out.push(m[1]);
    }
  }
  return out.sort();
}

/** Decodes one Secret, throwing what Envoy would refuse it for. */
function decodeSecret(secret: Secret): SdsSecret {
  const name = secret.name;
  if (name === '') throw new Error('the secret has no name');
  switch (secret.type.case) {
    case 'tlsCertificate': {
      const tc = secret.type.value;
      const certificatesPem = inline(tc.certificateChain, 'certificate_chain');
      const privateKeyPem = inline(tc.privateKey, 'private_key');
      const chain = pemCertificates(certificatesPem, 'certificate_chain');
      const leaf = chain[0] as X509Certificate;
      const key = createPrivateKey(privateKeyPem);
      if (!leaf.checkPrivateKey(key)) throw new Error('the private key does not go with the certificate');
      return {
        name,
        kind: 'tls_certificate',
        spiffeId: idFromCertificate(leaf).toString(),
        serial: leaf.serialNumber.toUpperCase(),
        notAfter: new Date(leaf.validTo),
        chainLength: chain.length,
        certificatesPem,
        privateKeyPem,
      };
    }
    case 'validationContext': {
      const vc = secret.type.value;
      const custom = vc.customValidatorConfig;
      if (custom !== undefined) {
        if (custom.name !== SPIFFE_VALIDATOR_NAME)
          throw new Error(
            `custom_validator_config ${JSON.stringify(custom.name)} is not ${SPIFFE_VALIDATOR_NAME}`,
          );
        if (vc.trustedCa !== undefined) throw new Error('trusted_ca is set beside the SPIFFE validator');
        const typed = custom.typedConfig;
        const config = typed === undefined ? undefined : anyUnpack(typed, SPIFFECertValidatorConfigSchema);
        if (config === undefined)
          throw new Error(`typed_config is ${typed?.typeUrl ?? 'missing'}, not a SPIFFECertValidatorConfig`);
        if (config.trustDomains.length === 0) throw new Error('the SPIFFE validator lists no trust domain');
        const trustDomains: Record<string, { pem: string; authorities: number }> = {};
        for (const t of config.trustDomains) {
          if (trustDomains[t.name] !== undefined) throw new Error(`trust domain ${t.name} is listed twice`);
          const pem = inline(t.trustBundle, `trust_bundle of ${t.name}`);
          const bundle = parseX509BundlePem(parseTrustDomain(t.name), pem);
          trustDomains[t.name] = { pem, authorities: bundle.authorities.length };
        }
        return { name, kind: 'spiffe_validator', trustDomains };
      }
      const trustedCaPem = inline(vc.trustedCa, 'trusted_ca');
      const cas = pemCertificates(trustedCaPem, 'trusted_ca');
      return {
        name,
        kind: 'validation_context',
        trustedCaPem,
        authorities: cas.length,
        caTrustDomains: caTrustDomains(cas),
      };
    }
    default:
      throw new Error(
        `a ${secret.type.case ?? 'secret of no type'}, neither tls_certificate nor validation_context`,
      );
  }
}

/** Decodes a response's resources; `problems` is what Envoy would NACK it for. */
export function decodeSdsResponse(res: DiscoveryResponse): { secrets: SdsSecret[]; problems: string[] } {
  const problems: string[] = [];
  if (res.typeUrl !== SECRET_TYPE_URL)
    problems.push(`type_url ${JSON.stringify(res.typeUrl)} is not ${SECRET_TYPE_URL}`);
  const secrets: SdsSecret[] = [];
  const names = new Set<string>();
  res.resources.forEach((a: Any, i) => {
    const msg = a.typeUrl === SECRET_TYPE_URL ? anyUnpack(a, registry) : undefined;
    if (msg === undefined || msg.$typeName !== SecretSchema.typeName) {
      problems.push(`resource ${i} has type ${JSON.stringify(a.typeUrl)}`);
      return;
    }
    const secret = msg as Secret;
    let decoded: SdsSecret;
    try {
      decoded = decodeSecret(secret);
    } catch (err) {
      decoded = { name: secret.name, kind: 'invalid', error: (err as Error).message };
    }
    if (names.has(secret.name)) decoded = { name: secret.name, kind: 'invalid', error: 'duplicate name' };
    names.add(secret.name);
    if (decoded.kind === 'invalid') problems.push(`secret ${JSON.stringify(decoded.name)}: ${decoded.error}`);
    secrets.push(decoded);
  });
  return { secrets, problems };
}

/**
 * One Envoy-like SDS subscription. `start()` opens the stream; every response is ACKed or NACKed
 * at once, as Envoy does, then queued for `next()`. Errors of the stream reject the waiting and
 * later `next()` calls; `close()` ends everything and is idempotent.
 */
export class SdsClient {
  readonly #options: SdsClientOptions;
  readonly #now: () => number;
  #client: ServiceClient<SdsMethods> | undefined;
  #call: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> | undefined;
  #names: string[];
  #accepted = '';
  #lastNonce = '';
  #stream = 0;
  #cursor = 0;
  #error: Error | undefined;
  #closed = false;
  readonly #waiters: Waiter[] = [];
  /** Every response so far, in order. */
  readonly updates: SdsUpdate[] = [];
  /** Every request sent so far, in order. */
  readonly requests: SdsRequestSent[] = [];
  /** The secrets of the last ACKed response, by name. */
  accepted: ReadonlyMap<string, SdsSecret> = new Map();

  constructor(options: SdsClientOptions) {
    this.#options = options;
    this.#names = [...options.names];
    this.#now = options.now ?? (() => performance.now());
  }

  /** The names currently subscribed to. */
  get names(): readonly string[] {
    return this.#names;
  }

  /** version_info of the last ACKed response ('' before the first). */
  get acceptedVersion(): string {
    return this.#accepted;
  }

  /** Opens the stream and sends the first request. */
  start(): this {
    if (this.#closed) throw new Error('sds-client: start() after close()');
    if (this.#call !== undefined) return this;
    this.#open();
    return this;
  }

  #open(): void {
    this.#client = new ServiceClient(
      SecretDiscoveryService,
      `unix://${this.#options.socketPath}`,
      grpc.credentials.createInsecure(),
      // Its own connection, as each Envoy has: a reconnect is a new connection, not a shared one.
      { 'grpc.use_local_subchannel_pool': 1, ...this.#options.channelOptions },
    );
    this.#stream++;
    this.#lastNonce = '';
    const call = this.#client.bidiStream(SecretDiscoveryService.method.streamSecrets);
    this.#call = call;
    call.on('data', (res: DiscoveryResponse) => this.#onResponse(res));
    call.on('error', (err: Error) => {
      if (this.#call !== call) return; // a stream closed by reconnect() or close()
      this.#fail(err);
    });
    call.on('end', () => {
      if (this.#call !== call) return;
      this.#fail(new Error('sds-client: the server ended the stream'));
    });
    // The first request of a stream: the names, the last accepted version, no nonce.
    this.#send('', undefined);
  }

  #send(nonce: string, nack: string | undefined): void {
    const request = create(DiscoveryRequestSchema, {
      versionInfo: this.#accepted,
      node: create(NodeSchema, this.#options.node ?? { id: 'interop-ts', cluster: 'interop' }),
      resourceNames: this.#names,
      typeUrl: SECRET_TYPE_URL,
      responseNonce: nonce,
      ...(nack === undefined
        ? {}
        : { errorDetail: create(StatusSchema, { code: grpc.status.INVALID_ARGUMENT, message: nack }) }),
    });
    this.requests.push({
      stream: this.#stream,
      versionInfo: this.#accepted,
      responseNonce: nonce,
      names: [...this.#names],
      ...(nack === undefined ? {} : { errorDetail: nack }),
    });
    this.#call?.write(request);
  }

  #onResponse(res: DiscoveryResponse): void {
    const { secrets, problems } = decodeSdsResponse(res);
    const update: SdsUpdate = {
      n: this.updates.length + 1,
      stream: this.#stream,
      receivedAt: this.#now(),
      versionInfo: res.versionInfo,
      nonce: res.nonce,
      typeUrl: res.typeUrl,
      secrets,
      verdict: 'ACK',
      response: res,
    };
    const reason = problems.length > 0 ? problems.join('; ') : this.#options.reject?.(update);
    if (reason === undefined) {
      this.#accepted = res.versionInfo;
      this.accepted = new Map(secrets.map((s) => [s.name, s]));
    } else {
      update.verdict = 'NACK';
      update.reason = reason;
    }
    this.#lastNonce = res.nonce;
    this.#send(res.nonce, reason);
    this.updates.push(update);
    this.#options.onUpdate?.(update);
    this.#wake();
  }

  #fail(err: Error): void {
    this.#error ??= err;
    this.#wake();
  }

  #wake(): void {
    while (this.#waiters.length > 0) {
      const next = this.updates[this.#cursor];
      if (next === undefined && this.#error === undefined) return;
      const w = this.#waiters.shift() as Waiter;
      clearTimeout(w.timer);
      if (next !== undefined) {
        this.#cursor++;
        w.resolve(next);
      } else w.reject(this.#error as Error);
    }
  }

  /** The next response not yet returned by next(), waiting up to `timeoutMs` for it. */
  next(timeoutMs = 15_000): Promise<SdsUpdate> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.findIndex((w) => w.timer === timer);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(
          new Error(`sds-client: no response within ${timeoutMs} ms (got ${this.updates.length} so far)`),
        );
      }, timeoutMs);
      this.#waiters.push({ resolve, reject, timer });
      this.#wake();
    });
  }

  /** Every response not yet returned by next() that arrives within `ms` (and those already in). */
  async collect(ms: number): Promise<SdsUpdate[]> {
    await new Promise((r) => setTimeout(r, ms));
    if (this.#error !== undefined && this.#cursor >= this.updates.length) throw this.#error;
    const out = this.updates.slice(this.#cursor);
    this.#cursor = this.updates.length;
    return out;
  }

  /** Subscribes to other names within the stream (with the last accepted version and nonce). */
  setNames(names: readonly string[]): void {
    if (this.#call === undefined) throw new Error('sds-client: setNames() before start()');
    this.#names = [...names];
    this.#send(this.#lastNonce, undefined);
  }

  /**
   * Drops the stream and its connection and opens new ones, as Envoy does after losing the server:
   * the first request carries the names and the last accepted version.
   */
  reconnect(): void {
    this.#drop();
    this.#error = undefined;
    this.#open();
  }

  #drop(): void {
    const call = this.#call;
    this.#call = undefined;
    call?.cancel();
    this.#client?.close();
    this.#client = undefined;
  }

  /** One FetchSecrets call on a connection of its own. */
  static async fetch(
    socketPath: string,
    names: readonly string[],
    options: { deadline?: Date } = {},
  ): Promise<{ response: DiscoveryResponse; secrets: SdsSecret[]; problems: string[] }> {
    const client = new ServiceClient(
      SecretDiscoveryService,
      `unix://${socketPath}`,
      grpc.credentials.createInsecure(),
      { 'grpc.use_local_subchannel_pool': 1 },
    );
    try {
      const response = await client.unary(
        SecretDiscoveryService.method.fetchSecrets,
        {
          node: { id: 'interop-ts', cluster: 'interop' },
          resourceNames: [...names],
          typeUrl: SECRET_TYPE_URL,
        },
        { deadline: options.deadline ?? new Date(Date.now() + 10_000) },
      );
      return { response, ...decodeSdsResponse(response) };
    } finally {
      client.close();
    }
  }

  /** Opens DeltaSecrets, subscribes to `names` and resolves with how the server ended the call. */
  static deltaSecrets(socketPath: string, names: readonly string[]): Promise<grpc.ServiceError | undefined> {
    const client = new ServiceClient(
      SecretDiscoveryService,
      `unix://${socketPath}`,
      grpc.credentials.createInsecure(),
      { 'grpc.use_local_subchannel_pool': 1 },
    );
    return new Promise((resolve) => {
      const call = client.bidiStream(SecretDiscoveryService.method.deltaSecrets);
      const done = (err: grpc.ServiceError | undefined) => {
        call.cancel();
        client.close();
        resolve(err);
      };
      call.on('data', () => done(undefined));
      call.on('error', (err: grpc.ServiceError) => done(err));
      call.write(
        create(DeltaDiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNamesSubscribe: [...names] }),
      );
    });
  }

  /** Ends the stream and the connection; pending next() calls reject. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#drop();
    this.#fail(new Error('sds-client: closed'));
  }
}
