// The agent API (tessera.agent.v1.Agent) over TLS: node attestation, agent SVID renewal, batch
// X509-SVID signing, JWT-SVID minting, the bundle, and the server-to-agent push stream. Every call
// but Attest needs the agent's current SVID; a banned or evicted agent is cut off at once.
import type { X509Certificate } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import {
  authorizeMemberOf,
  grpcServerCredentials,
  type Logger,
  normalizeSerial,
  parseTrustDomain,
  peerSpiffeIdOfCall,
  type SpiffeBundle,
  type TrustDomain,
  type X509CrlSource,
} from '@tessera/spiffe';
import type { AuditLog } from '../../common/audit.js';
import { isTesseraError, TesseraError, TesseraErrorCode } from '../../common/errors.js';
import {
  endWithError,
  grpcImplementation,
  grpcServiceDefinition,
  MAX_MESSAGE_BYTES,
  toGrpcStatus,
} from '../../common/grpc.js';
import type { Metrics } from '../../common/metrics.js';
import {
  Agent,
  type AttestRequest,
  type AttestResponse,
  AttestResponseSchema,
  type SyncRequest,
  type SyncResponse,
  SyncResponseSchema,
} from '../../gen/tessera/agent/v1/agent_pb.js';
import { type Bundle, BundleSchema } from '../../gen/tessera/common/v1/types_pb.js';
import type { NodeAttestor } from '../attestation/types.js';
import { isAgentId } from '../attestation/types.js';
import type { AuthorityManager } from '../ca/manager.js';
import type { SigningPool } from '../ca/signing-pool.js';
import type { IssuedX509Svid } from '../ca/x509-authority.js';
import type { AttestedAgent, Datastore, DatastoreChange, RegistrationEntry } from '../datastore/types.js';
import type { EntryChange, EntryIndex } from '../registry/entry-index.js';
import { bundleToProto, entryToProto } from '../registry/entry-proto.js';
import type { ServerIdentity } from './server-identity.js';
import { serverId } from './server-identity.js';

/** Most CSRs in one BatchNewX509SVID call. */
export const MAX_BATCH = 500;
/** Entries per message of the initial sync. */
export const SYNC_PAGE = 500;
/** How long an attestation may take, challenges included. */
export const ATTEST_TIMEOUT_MS = 30_000;

export interface AgentApiOptions {
  trustDomain: TrustDomain;
  datastore: Datastore;
  authority: AuthorityManager;
  index: EntryIndex;
  identity: ServerIdentity;
  /** Where batches of X509-SVIDs are signed (worker threads, or the main thread). */
  signing: SigningPool;
  /** The trust domain's CRLs, pushed to agents (absent: agents get none). */
  crls?: CrlSet;
  attestors: ReadonlyMap<string, NodeAttestor>;
  x509SvidTtlMs: number;
  jwtSvidTtlMs: number;
  agentSvidTtlMs: number;
  audit: AuditLog;
  logger: Required<Logger>;
  metrics: Metrics;
  now: () => Date;
}

/** What the agent API needs of the revocations: the current CRLs and word of a change. */
export interface CrlSet extends X509CrlSource {
  crls(): readonly { der: Buffer }[];
  onChange(listener: () => void): () => void;
}

function denied(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.PERMISSION_DENIED, message);
}

function invalid(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.INVALID_ARGUMENT, message);
}

interface AgentStream {
  agent: AttestedAgent;
  call: grpc.ServerWritableStream<SyncRequest, SyncResponse>;
  /** Entry ID → revision the agent holds. */
  sent: Map<string, number>;
  /** SPIFFE IDs whose children the agent gets: its own, its aliases', its entries'. */
  parents: Set<string>;
  /** Federated trust domains its entries federate with. */
  federated: Set<string>;
}

const seconds = (d: Date) => BigInt(Math.floor(d.getTime() / 1000));

/** The agent API's handlers and push hub; `listen()` serves them. */
export class AgentApi {
  readonly #o: AgentApiOptions;
  readonly #streams = new Map<string, Set<AgentStream>>();
  readonly #dirty = new Set<AgentStream>();
  #flushScheduled = false;
  readonly #unsubscribe: () => void;
  readonly #onIndexChange = (c: EntryChange) => this.#entryChanged(c);
  #server: grpc.Server | undefined;

  constructor(options: AgentApiOptions) {
    this.#o = options;
    options.index.on('change', this.#onIndexChange);
    const offChange = options.datastore.onChange((c) => this.#datastoreChanged(c));
    const offTaint = options.authority.onTaint(() => this.#broadcastTainted());
    const offCrls = options.crls?.onChange(() => this.#broadcastCrls());
    this.#unsubscribe = () => {
      offChange();
      offTaint();
      offCrls?.();
    };
  }

  /** Agents with an open sync stream to this server. */
  connectedAgents(): string[] {
    return [...this.#streams.keys()];
  }

  /**
   * Serves the API on `address:port` (0 = any free port); resolves with the bound port. `admin`, when
   * given, is served on the same port to callers whose SVID belongs to an entry marked admin.
   */
  async listen(
    address: string,
    port: number,
    admin?: { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation },
  ): Promise<number> {
    const server = new grpc.Server({
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.keepalive_permit_without_calls': 1,
    });
    server.addService(
      grpcServiceDefinition(Agent),
      grpcImplementation(Agent, this.#handlers(), (method, err) => this.#logError(method, err)),
    );
    if (admin !== undefined) server.addService(admin.definition, this.#adminOnly(admin.implementation));
    const credentials = grpcServerCredentials(
      {
        svid: this.#o.identity,
        bundles: this.#o.identity,
        authorizer: authorizeMemberOf(this.#o.trustDomain),
        // A revoked SVID (an admin workload's) is refused at the handshake.
        ...(this.#o.crls === undefined ? {} : { revocation: this.#o.crls }),
        logger: this.#o.logger,
      },
      { clientCertificate: 'optional' },
    );
    const bound = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${address}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
    ).catch((err: Error) => {
      throw new TesseraError(
        TesseraErrorCode.STARTUP,
        /EADDRINUSE|address already in use/i.test(err.message)
          ? `server: agent API port ${address}:${port} is already in use; choose another in the configuration`
          : `server: the agent API cannot listen on ${address}:${port}: ${err.message}`,
        { cause: err },
      );
    });
    this.#server = server;
    return bound;
  }

  /** Stops accepting calls, ends every sync stream (UNAVAILABLE, so agents reconnect elsewhere). */
  async close(): Promise<void> {
    this.#o.index.off('change', this.#onIndexChange);
    this.#unsubscribe();
    for (const set of this.#streams.values())
      for (const s of set)
        s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'server shutting down' });
    this.#streams.clear();
    const server = this.#server;
    if (server === undefined) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 5000);
      server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Wraps the admin API's unary handlers: only SVIDs of entries marked admin get through. */
  #adminOnly(impl: grpc.UntypedServiceImplementation): grpc.UntypedServiceImplementation {
    const out: grpc.UntypedServiceImplementation = {};
    for (const [name, handler] of Object.entries(impl)) {
      out[name] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const peer = peerSpiffeIdOfCall(call);
        const id = peer?.id.toString();
        if (id === undefined || !this.#o.index.isAdmin(id, this.#o.now())) {
          const err = denied(
            id === undefined
              ? 'admin API: over TLS, the admin API needs an X509-SVID of an entry marked admin'
              : `admin API: "${id}" is not an admin identity (no unexpired entry for it is marked admin)`,
          );
          this.#o.audit.record('admin.denied', { caller_id: id ?? '', peer: call.getPeer(), method: name });
          const s = toGrpcStatus(err);
          callback({ code: s.code, details: s.details, metadata: s.metadata });
          return;
        }
        (handler as (c: unknown, cb: unknown) => void)(call, callback);
      }) as grpc.UntypedHandleCall;
    }
    return out;
  }

  #logError(method: string, err: unknown): void {
    if (isTesseraError(err))
      this.#o.logger.info(`agent API: ${method} refused: ${err.message}`, { code: err.code });
    else this.#o.logger.error(`agent API: ${method} failed`, { error: (err as Error).message });
  }

  /** The calling agent: a verified SVID of an attested, unbanned agent, with its current serial. */
  async #agentOf(call: { getAuthContext(): { sslPeerCertificate?: unknown } }): Promise<AttestedAgent> {
    const peer = peerSpiffeIdOfCall(call);
    if (peer === undefined) throw denied('agent API: this call needs the agent SVID (mTLS); attest first');
    const id = peer.id.toString();
    if (!isAgentId(this.#o.trustDomain, id)) throw denied(`agent API: "${id}" is not an agent ID`);
    const agent = await this.#o.datastore.getAgent(id);
    if (agent === undefined)
      throw denied(`agent API: agent "${id}" is not attested (evicted?); attest again`);
    if (agent.banned) throw denied(`agent API: agent "${id}" is banned`);
    const serial = serialOf(peer.leaf);
    if (serial !== agent.serial && serial !== agent.previousSerial)
      throw denied(`agent API: agent "${id}" presented SVID serial ${serial}, which is not its current one`);
    return agent;
  }

  #handlers() {
    const o = this.#o;
    return {
      attest: (call: grpc.ServerDuplexStream<AttestRequest, AttestResponse>) => this.#attest(call),
      renewAgent: async (req: { csr: Uint8Array }, call: grpc.ServerUnaryCall<unknown, unknown>) => {
        const agent = await this.#agentOf(call);
        const presented = serialOf(peerSpiffeIdOfCall(call)?.leaf as X509Certificate);
        const issued = o.authority.x509.issueX509Svid({
          csr: req.csr,
          spiffeId: agent.spiffeId,
          ttlMs: o.agentSvidTtlMs,
          now: o.now(),
        });
        const serial = issued.serial;
        await o.datastore.renewAgent(agent.spiffeId, presented, serial, issued.expiresAt);
        o.audit.record('svid.issued', {
          spiffe_id: agent.spiffeId,
          serial,
          agent: agent.spiffeId,
          expires_at: issued.expiresAt.toISOString(),
          kind: 'agent-renewal',
        });
        o.metrics.inc('tessera_svids_issued_total', 'SVIDs issued.', { type: 'x509', kind: 'agent' });
        return { svidChain: [...issued.chainDer] };
      },
      batchNewX509SVID: async (
        req: { params: { entryId: string; csr: Uint8Array }[] },
        call: grpc.ServerUnaryCall<unknown, unknown>,
      ) => {
        const agent = await this.#agentOf(call);
        if (req.params.length > MAX_BATCH)
          throw invalid(`agent API: ${req.params.length} CSRs in one batch; at most ${MAX_BATCH}`);
        const now = o.now();
        const entitled = o.index.entitled(agent.spiffeId, agent.selectors, now);
        const authority = o.authority.x509;
        const wanted = req.params.map((p) => ({ p, entry: entitled.get(p.entryId) }));
        const toIssue = wanted.flatMap(({ p, entry }) =>
          entry === undefined
            ? []
            : [
                {
                  csr: p.csr,
                  spiffeId: entry.spiffeId,
                  dnsNames: entry.dnsNames,
                  ttlMs: entry.x509SvidTtl > 0 ? entry.x509SvidTtl * 1000 : o.x509SvidTtlMs,
                },
              ],
        );
        const issuedAll = await o.signing.issue(authority, toIssue, now);
        // Recorded before any is handed out, so each can be revoked by serial or entry.
        // issuedAll[i] is the SVID of the i-th entitled request, as toIssue listed them.
        const records = wanted
          .flatMap(({ entry }) => (entry === undefined ? [] : [entry]))
          .flatMap((entry, i) => {
            const issued = issuedAll[i];
            return issued === undefined || issued instanceof Error
              ? []
              : [
                  {
                    serial: normalizeSerial(issued.serial),
                    authorityId: authority.id,
                    spiffeId: entry.spiffeId,
                    entryId: entry.id,
                    expiresAt: issued.expiresAt,
                  },
                ];
          });
        await o.datastore.recordX509Svids(records);
        let next = 0;
        const results = wanted.map(({ p, entry }) => {
          if (entry === undefined) {
            o.audit.record('svid.denied', {
              agent: agent.spiffeId,
              entry_id: p.entryId,
              reason: 'not entitled',
            });
            o.metrics.inc('tessera_svids_denied_total', 'SVID requests refused (not entitled).');
            return {
              code: grpc.status.PERMISSION_DENIED,
              message: `agent "${agent.spiffeId}" is not entitled to entry ${JSON.stringify(p.entryId)}`,
              entryId: p.entryId,
            };
          }
          const issued = issuedAll[next++] as IssuedX509Svid | Error;
          if (issued instanceof Error) {
            const s = toGrpcStatus(issued);
            if (s.code === grpc.status.INTERNAL) this.#logError('BatchNewX509SVID', issued);
            return { code: s.code, message: s.details, entryId: entry.id };
          }
          o.audit.record('svid.issued', {
            spiffe_id: entry.spiffeId,
            serial: issued.serial,
            agent: agent.spiffeId,
            entry_id: entry.id,
            expires_at: issued.expiresAt.toISOString(),
          });
          o.metrics.inc('tessera_svids_issued_total', 'SVIDs issued.', { type: 'x509', kind: 'workload' });
          return {
            code: grpc.status.OK,
            entryId: entry.id,
            spiffeId: entry.spiffeId,
            certChain: [...issued.chainDer],
            expiresAt: seconds(issued.expiresAt),
          };
        });
        return { results };
      },
      newJWTSVID: async (
        req: { entryId: string; audience: string[] },
        call: grpc.ServerUnaryCall<unknown, unknown>,
      ) => {
        const agent = await this.#agentOf(call);
        if (req.audience.length === 0 || req.audience.some((a) => a === ''))
          throw invalid('agent API: a JWT-SVID needs at least one non-empty audience');
        const now = o.now();
        const entry = o.index.entitled(agent.spiffeId, agent.selectors, now).get(req.entryId);
        if (entry === undefined) {
          o.audit.record('svid.denied', {
            agent: agent.spiffeId,
            entry_id: req.entryId,
            reason: 'not entitled',
          });
          throw denied(`agent "${agent.spiffeId}" is not entitled to entry ${JSON.stringify(req.entryId)}`);
        }
        const minted = await o.authority.jwt.mint({
          spiffeId: entry.spiffeId,
          audience: req.audience,
          ttlMs: entry.jwtSvidTtl > 0 ? entry.jwtSvidTtl * 1000 : o.jwtSvidTtlMs,
          now,
        });
        o.audit.record('svid.issued', {
          spiffe_id: entry.spiffeId,
          agent: agent.spiffeId,
          entry_id: entry.id,
          type: 'jwt',
          audience: req.audience.join(' '),
          expires_at: minted.expiresAt.toISOString(),
        });
        o.metrics.inc('tessera_svids_issued_total', 'SVIDs issued.', { type: 'jwt', kind: 'workload' });
        return { token: minted.token, spiffeId: entry.spiffeId, expiresAt: seconds(minted.expiresAt) };
      },
      getBundle: async (_req: unknown, call: grpc.ServerUnaryCall<unknown, unknown>) => {
        const agent = await this.#agentOf(call);
        const entitled = o.index.entitled(agent.spiffeId, agent.selectors, o.now());
        return {
          bundle: bundleToProto(o.identity.bundle),
          federatedBundles: await this.#federatedBundles(federatesWith(entitled.values())),
        };
      },
      sync: (call: grpc.ServerWritableStream<SyncRequest, SyncResponse>) => {
        this.#sync(call).catch((err: unknown) => {
          this.#logError('Sync', err);
          endWithError(call, err);
        });
      },
    };
  }

  #attest(call: grpc.ServerDuplexStream<AttestRequest, AttestResponse>): void {
    const o = this.#o;
    let started = false;
    let answer: ((b: Uint8Array) => void) | undefined;
    let abort: ((e: Error) => void) | undefined;
    const peer = call.getPeer();
    const fail = (err: unknown, attestor: string) => {
      const reason = (err as Error).message;
      o.audit.record('attestation.failure', { attestor, peer, reason });
      o.metrics.inc('tessera_attestation_failures_total', 'Node attestations refused.', { attestor });
      this.#logError('Attest', err);
      endWithError(call, err);
    };
    const timer = setTimeout(
      () =>
        abort?.(
          new TesseraError(TesseraErrorCode.ATTESTATION_FAILED, 'attest: timed out waiting for the agent'),
        ),
      ATTEST_TIMEOUT_MS,
    );
    const aborted = new Promise<never>((_, reject) => {
      abort = reject;
    });
    aborted.catch(() => undefined);
    call.on('cancelled', () =>
      abort?.(new TesseraError(TesseraErrorCode.ATTESTATION_FAILED, 'attest: the agent went away')),
    );
    call.on('end', () => {
      if (answer !== undefined)
        abort?.(
          new TesseraError(
            TesseraErrorCode.ATTESTATION_FAILED,
            'attest: the agent closed the stream before answering the challenge',
          ),
        );
    });
    call.on('error', () => undefined);
    call.on('data', (req: AttestRequest) => {
      if (!started) {
        started = true;
        if (req.step.case !== 'params') {
          clearTimeout(timer);
          fail(invalid('attest: the first message must carry params'), '');
          return;
        }
        const params = req.step.value;
        const attestor = o.attestors.get(params.type);
        const run = async () => {
          if (attestor === undefined)
            throw new TesseraError(
              TesseraErrorCode.ATTESTATION_FAILED,
              `attest: node attestor ${JSON.stringify(params.type)} is not enabled on this server (enabled: ${[...o.attestors.keys()].join(', ') || 'none'})`,
            );
          const now = o.now();
          const result = await Promise.race([
            attestor.attest(
              params.payload,
              (bytes) =>
                Promise.race([
                  new Promise<Uint8Array>((resolve) => {
                    answer = (b) => {
                      answer = undefined;
                      resolve(b);
                    };
                    call.write(create(AttestResponseSchema, { step: { case: 'challenge', value: bytes } }));
                  }),
                  aborted,
                ]),
              now,
            ),
            aborted,
          ]);
          const issued = o.authority.x509.issueX509Svid({
            csr: params.csr,
            spiffeId: result.spiffeId,
            ttlMs: o.agentSvidTtlMs,
            now,
          });
          const serial = issued.serial;
          await o.datastore.attestAgent({
            spiffeId: result.spiffeId,
            attestor: params.type,
            selectors: result.selectors,
            serial,
            expiresAt: issued.expiresAt,
          });
          o.audit.record('attestation.success', {
            attestor: params.type,
            agent: result.spiffeId,
            serial,
            peer,
            expires_at: issued.expiresAt.toISOString(),
          });
          if (params.type === 'join_token') o.audit.record('join_token.used', { agent: result.spiffeId });
          o.metrics.inc('tessera_svids_issued_total', 'SVIDs issued.', { type: 'x509', kind: 'agent' });
          call.write(
            create(AttestResponseSchema, {
              step: {
                case: 'result',
                value: {
                  spiffeId: result.spiffeId,
                  svidChain: [...issued.chainDer],
                  selectors: result.selectors.map((x) => ({ type: x.type, value: x.value })),
                  bundle: bundleToProto(o.identity.bundle),
                },
              },
            }),
          );
          call.end();
        };
        run()
          .catch((err: unknown) => {
            if (params.type === 'join_token' && isTesseraError(err, TesseraErrorCode.ATTESTATION_FAILED))
              o.audit.record('join_token.refused', { peer, reason: err.message });
            fail(err, params.type);
          })
          .finally(() => clearTimeout(timer));
        return;
      }
      if (req.step.case === 'challengeResponse' && answer !== undefined) {
        answer(req.step.value);
        return;
      }
      abort?.(invalid('attest: unexpected message; send params first, then one response per challenge'));
    });
  }

  async #sync(call: grpc.ServerWritableStream<SyncRequest, SyncResponse>): Promise<void> {
    const agent = await this.#agentOf(call);
    const o = this.#o;
    const stream: AgentStream = { agent, call, sent: new Map(), parents: new Set(), federated: new Set() };
    const entitled = o.index.entitled(agent.spiffeId, agent.selectors, o.now());
    this.#track(stream, entitled);
    let set = this.#streams.get(agent.spiffeId);
    if (set === undefined) {
      set = new Set();
      this.#streams.set(agent.spiffeId, set);
    }
    set.add(stream);
    const forget = () => {
      this.#dirty.delete(stream);
      const s = this.#streams.get(agent.spiffeId);
      s?.delete(stream);
      if (s?.size === 0) this.#streams.delete(agent.spiffeId);
    };
    call.on('cancelled', forget);
    call.on('close', forget);
    call.on('error', forget);
    const entries = [...entitled.values()];
    const federated = await this.#federatedBundles(stream.federated);
    for (let i = 0; i === 0 || i < entries.length; i += SYNC_PAGE) {
      const page = entries.slice(i, i + SYNC_PAGE);
      const last = i + SYNC_PAGE >= entries.length;
      call.write(
        create(SyncResponseSchema, {
          upserted: page.map(entryToProto),
          ...(i === 0
            ? {
                bundle: bundleToProto(o.identity.bundle),
                federatedBundles: federated,
                taintedAuthorities: o.authority.tainted(),
                x509Crls: this.#crlsMessage(),
              }
            : {}),
          synced: last,
        }),
      );
    }
  }

  /** Records what the stream now holds, and the parents and trust domains that matter to it. */
  #track(stream: AgentStream, entitled: Map<string, RegistrationEntry>): void {
    stream.sent = new Map([...entitled].map(([id, e]) => [id, e.revision]));
    stream.parents = new Set([
      ...this.#o.index.roots(stream.agent.spiffeId, stream.agent.selectors),
      ...[...entitled.values()].map((e) => e.spiffeId),
    ]);
    stream.federated = federatesWith(entitled.values());
  }

  #entryChanged(c: EntryChange): void {
    const alias = serverId(this.#o.trustDomain);
    for (const set of this.#streams.values())
      for (const s of set) {
        const affected =
          (c.before !== undefined && (s.sent.has(c.before.id) || c.before.parentId === alias)) ||
          (c.after !== undefined && (s.parents.has(c.after.parentId) || c.after.parentId === alias));
        if (affected) this.#dirty.add(s);
      }
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#dirty.size === 0) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush().catch((err: unknown) => this.#logError('Sync', err));
    });
  }

  /** Sends each dirty stream what changed for it since its last message. */
  async #flush(): Promise<void> {
    const now = this.#o.now();
    const streams = [...this.#dirty];
    this.#dirty.clear();
    for (const s of streams) {
      const entitled = this.#o.index.entitled(s.agent.spiffeId, s.agent.selectors, now);
      const upserted = [...entitled.values()].filter((e) => s.sent.get(e.id) !== e.revision);
      const removed = [...s.sent.keys()].filter((id) => !entitled.has(id));
      const newFederated = [...federatesWith(entitled.values())].filter((td) => !s.federated.has(td));
      this.#track(s, entitled);
      if (upserted.length === 0 && removed.length === 0) continue;
      const federatedBundles =
        newFederated.length > 0 ? await this.#federatedBundles(new Set(newFederated)) : [];
      s.call.write(
        create(SyncResponseSchema, {
          upserted: upserted.map(entryToProto),
          removedEntryIds: removed,
          federatedBundles,
          synced: true,
        }),
      );
    }
  }

  #datastoreChanged(c: DatastoreChange): void {
    if (c.kind === 'resync') {
      this.#resync().catch((err: unknown) => this.#logError('Sync', err));
      return;
    }
    if (c.kind === 'agent') {
      const set = this.#streams.get(c.spiffeId);
      if (set === undefined) return;
      if (c.op === 'ban' || c.op === 'delete') {
        this.#streams.delete(c.spiffeId);
        const why = c.op === 'ban' ? 'banned' : 'evicted';
        for (const s of set) {
          this.#dirty.delete(s);
          endWithError(s.call, denied(`agent API: agent "${c.spiffeId}" was ${why}`));
        }
        this.#o.logger.info(`agent API: cut off ${set.size} stream(s) of ${why} agent`, {
          agent: c.spiffeId,
        });
        return;
      }
      // Re-attested (selectors may have changed): re-read it and recompute what it gets.
      this.#o.datastore
        .getAgent(c.spiffeId)
        .then((a) => {
          if (a === undefined) return;
          for (const s of set) {
            s.agent = a;
            this.#dirty.add(s);
          }
          this.#scheduleFlush();
        })
        .catch((err: unknown) => this.#logError('Sync', err));
      return;
    }
    if (c.kind === 'bundle')
      this.#bundleChanged(c.trustDomain).catch((err: unknown) => this.#logError('Sync', err));
  }

  /**
   * The change feed found itself inconsistent, so changes may have been missed: every connected
   * agent is checked again (cut off if banned or evicted meanwhile) and sent the current bundles.
   * Entries are reloaded by the index, whose changes reach the streams as usual.
   */
  async #resync(): Promise<void> {
    for (const [id, set] of [...this.#streams]) {
      const agent = await this.#o.datastore.getAgent(id);
      const change =
        agent === undefined
          ? ({ revision: 0, kind: 'agent', op: 'delete', spiffeId: id } as const)
          : agent.banned
            ? ({ revision: 0, kind: 'agent', op: 'ban', spiffeId: id } as const)
            : undefined;
      if (change !== undefined) {
        this.#datastoreChanged(change);
        continue;
      }
      for (const s of set) {
        s.agent = agent as AttestedAgent;
        this.#dirty.add(s);
      }
    }
    this.#scheduleFlush();
    const federated = new Set<string>();
    for (const set of this.#streams.values())
      for (const s of set) for (const td of s.federated) federated.add(td);
    for (const td of [this.#o.trustDomain.name, ...federated]) await this.#bundleChanged(td);
  }

  async #bundleChanged(trustDomain: string): Promise<void> {
    const own = trustDomain === this.#o.trustDomain.name;
    let bundle: Bundle | undefined;
    if (own) {
      await this.#o.identity.refreshBundle();
      bundle = bundleToProto(this.#o.identity.bundle);
    } else {
      const b = await this.#o.datastore.getBundle(parseTrustDomain(trustDomain));
      bundle = b === undefined ? create(BundleSchema, { trustDomain }) : bundleToProto(b);
    }
    for (const set of this.#streams.values())
      for (const s of set) {
        if (!own && !s.federated.has(trustDomain)) continue;
        s.call.write(
          create(
            SyncResponseSchema,
            own ? { bundle, synced: true } : { federatedBundles: [bundle], synced: true },
          ),
        );
      }
  }

  #crlsMessage() {
    return { crls: (this.#o.crls?.crls() ?? []).map((c) => c.der) };
  }

  /** Pushes the trust domain's CRLs to every agent (the whole set: it replaces what they hold). */
  #broadcastCrls(): void {
    const x509Crls = this.#crlsMessage();
    for (const set of this.#streams.values())
      for (const s of set) s.call.write(create(SyncResponseSchema, { x509Crls, synced: true }));
  }

  /** Pushes the tainted authorities to every agent. */
  #broadcastTainted(): void {
    const taintedAuthorities = this.#o.authority.tainted();
    for (const set of this.#streams.values())
      for (const s of set) s.call.write(create(SyncResponseSchema, { taintedAuthorities, synced: true }));
  }

  async #federatedBundles(trustDomains: Iterable<string>): Promise<Bundle[]> {
    const out: Bundle[] = [];
    for (const name of trustDomains) {
      let b: SpiffeBundle | undefined;
      try {
        b = await this.#o.datastore.getBundle(parseTrustDomain(name));
      } catch {
        b = undefined;
      }
      if (b !== undefined) out.push(bundleToProto(b));
    }
    return out;
  }
}

function federatesWith(entries: Iterable<RegistrationEntry>): Set<string> {
  const out = new Set<string>();
  for (const e of entries) for (const td of e.federatesWith) out.add(td);
  return out;
}

/** A certificate's serial as the datastore keeps it: upper-case hex, as node:crypto prints it. */
export function serialOf(cert: X509Certificate): string {
  return cert.serialNumber.toUpperCase();
}
