// The agent's brain: it attests (or resumes from data_dir), keeps the push stream from the server
// open, holds the entries this node is entitled to, generates each workload's key in memory, has
// the server sign CSRs in batches, renews every SVID (its own included) at about half its life, and
// tells the endpoints when anything a workload can see changed ('update'). With several servers it
// talks to one at a time and moves to the next when that one fails (server-rotation.ts).

import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import {
  type JwtBundle,
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  parseX509Crl,
  type SpiffeBundle,
  type TrustDomain,
  type X509Bundle,
  type X509Crl,
  X509Svid,
  type X509SvidSource,
} from '@tessera/spiffe';
import { createCsr } from '../common/csr.js';
import { errorCodeOf, grpcErrorText } from '../common/grpc.js';
import type { DaemonLogger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { keyIdentifier, spkiOf } from '../common/x509.js';
import type { SyncResponse } from '../gen/tessera/agent/v1/agent_pb.js';
import type { Bundle, Entry } from '../gen/tessera/common/v1/types_pb.js';
import type { Selector } from '../server/datastore/types.js';
import { generateKeyPairOfType } from '../server/keymanager/generate.js';
import type { KeyType } from '../server/keymanager/key-manager.js';
import { ServerClient } from './server-client.js';
import { ServerRotation } from './server-rotation.js';
import { type AgentState, saveAgentSvid, saveBundle } from './state.js';

/** How often due renewals and expiries are checked. */
const TICK_MS = 1000;
/** Most CSRs per BatchNewX509SVID call (the server's limit). */
const BATCH = 500;
/** After a failed issuance, when to try that entry again. */
const RETRY_MS = 5000;

/** A workload SVID the agent holds, with when to renew it. */
export interface CachedSvid {
  readonly entry: Entry;
  readonly svid: X509Svid;
  /** The chain and PKCS#8 key as the Workload API sends them, encoded once for every stream. */
  readonly raw: { readonly certificates: Uint8Array; readonly privateKey: Uint8Array };
  readonly expiresAt: number;
  readonly renewAt: number;
}

/**
 * Renewal time: about half-way between receipt and expiry, with ±5% jitter so a fleet does not
 * renew together. Counted from receipt, not NotBefore: NotBefore is backdated for clock skew.
 */
export function renewalTime(
  receivedAt: number,
  notAfter: number,
  random: () => number = Math.random,
): number {
  return receivedAt + (notAfter - receivedAt) * (0.45 + 0.1 * random());
}

/** Live sources for the mTLS channel to the server: they emit 'update' when the SVID or bundle changes. */
class LiveSvid extends EventEmitter implements X509SvidSource {
  constructor(public svid: X509Svid) {
    super();
  }
  getX509Svid(): X509Svid {
    return this.svid;
  }
  set(svid: X509Svid): void {
    this.svid = svid;
    this.emit('update');
  }
}

class LiveBundle extends EventEmitter {
  constructor(public bundle: X509Bundle) {
    super();
  }
  getX509BundleForTrustDomain(): X509Bundle {
    return this.bundle;
  }
  list(): X509Bundle[] {
    return [this.bundle];
  }
  set(bundle: X509Bundle): void {
    this.bundle = bundle;
    this.emit('update');
  }
}

export interface AgentManagerOptions {
  trustDomain: TrustDomain;
  /**
   * The servers' agent API addresses (`host:port`, IPv6 as `[addr]:port`), in order. The agent
   * talks to one at a time, starting at a random one, and moves to the next when it fails.
   */
  servers: readonly string[];
  /**
   * The servers again, looked up afresh (DNS names): called each time every server has failed, so
   * a change in DNS is picked up. Default: the list stays as it is.
   */
  resolveServers?: () => Promise<readonly string[]>;
  /** Randomness for the starting server and the jittered waits; default Math.random. */
  random?: () => number;
  dataDir: string;
  /** The agent's identity: resumed from data_dir or just attested. */
  state: AgentState;
  workloadKeyType: KeyType;
  logger: DaemonLogger;
  metrics: Metrics;
  now?: () => number;
}

/**
 * Why the server will not deal with this agent any more: every server says the same (they share
 * the datastore), so it is not a server failure to fail over from. `banned`: an operator banned it
 * (it stays so until evicted); `evicted`: its record was deleted (it may attest again); `untrusted`:
 * its SVID no longer verifies on the server — the CA that signed it was revoked while the agent was
 * away, or it expired — so it must attest again; `refused`: its SVID was refused otherwise (e.g. a
 * later attestation of the same agent ID replaced it).
 */
export interface AgentRefusal {
  readonly kind: 'banned' | 'evicted' | 'untrusted' | 'refused';
  /** The server's words. */
  readonly reason: string;
}

/** A PERMISSION_DENIED from the agent API on the push stream or a renewal is about the agent itself. */
export function agentRefusalOf(err: unknown): AgentRefusal | undefined {
  const e = err as Partial<grpc.ServiceError>;
  if (e.code !== grpc.status.PERMISSION_DENIED) return undefined;
  const reason = grpcErrorText(err);
  if (errorCodeOf(err) === 'ERR_AGENT_BANNED' || /\bbanned\b/.test(reason)) return { kind: 'banned', reason };
  if (/\bevicted\b|not attested/.test(reason)) return { kind: 'evicted', reason };
  // The server's TLS verification of the agent SVID (the spiffe library's words): no reconnecting
  // can help, a new attestation can.
  if (/peer refused: x509svid: .*(does not chain to an authority|has expired|was revoked)/.test(reason))
    return { kind: 'untrusted', reason };
  return { kind: 'refused', reason };
}

function selectorKey(s: { type: string; value: string }): string {
  return `${s.type}:${s.value}`;
}

export class AgentManager extends EventEmitter<{ update: []; refused: [AgentRefusal] }> {
  readonly #o: AgentManagerOptions;
  readonly #now: () => number;
  readonly #svid: LiveSvid;
  readonly #bundleSource: LiveBundle;
  #bundle: SpiffeBundle;
  readonly #federated = new Map<string, SpiffeBundle>();
  readonly #entries = new Map<string, Entry>();
  readonly #svids = new Map<string, CachedSvid>();
  readonly #jwt = new Map<string, { token: string; expiresAt: number; renewAt: number }>();
  readonly #pending = new Set<string>();
  readonly #retryAt = new Map<string, number>();
  #tainted = new Set<string>();
  /** The trust domain's CRLs as the server last pushed them. */
  #crls: readonly X509Crl[] = [];
  /** A digest of #crls, for change keys. */
  #crlsKey = '';
  /** #crls as PEM (what SDS sends), encoded once per change. */
  #crlsPem: Uint8Array = new Uint8Array(0);
  readonly #rotation: ServerRotation;
  #client: ServerClient;
  /** A failover is looking the servers up again; further failures of the old server are the same one. */
  #switching = false;
  #stream: grpc.ClientReadableStream<SyncResponse> | undefined;
  /** Entry IDs of the snapshot a new stream is sending; entries not in it were removed meanwhile. */
  #snapshot: Set<string> | undefined;
  #synced = false;
  #refusal: AgentRefusal | undefined;
  #closed = false;
  #connected = false;
  #agentRenewAt: number;
  #renewingAgent = false;
  #issuing = false;
  #timer: NodeJS.Timeout | undefined;
  #reconnect: NodeJS.Timeout | undefined;

  constructor(options: AgentManagerOptions) {
    super();
    // One 'update' listener per open Workload API stream: thousands are normal.
    this.setMaxListeners(0);
    this.#o = options;
    this.#now = options.now ?? Date.now;
    const { chain, key, bundle } = options.state;
    this.#svid = new LiveSvid(this.#toSvid(chain, key));
    this.#bundle = bundle;
    this.#bundleSource = new LiveBundle(bundle.x509Bundle());
    this.#agentRenewAt = renewalTime(this.#now(), new Date((chain[0] as X509Certificate).validTo).getTime());
    this.#rotation = new ServerRotation(options.servers, options.random);
    this.#client = this.#newClient();
    options.metrics.gaugeFn(
      'tessera_agent_svids_cached',
      'Workload X509-SVIDs held by the agent.',
      () => this.#svids.size,
    );
    options.metrics.gaugeFn(
      'tessera_agent_entries',
      'Entries this agent is entitled to.',
      () => this.#entries.size,
    );
    options.metrics.gaugeFn(
      'tessera_agent_server_connected',
      '1 when the push stream from the server is open.',
      () => (this.#connected ? 1 : 0),
    );
  }

  /** The server the agent talks to now (or will try next, while it has none). */
  get server(): string {
    return this.#rotation.current;
  }

  /** The agent's SPIFFE ID. */
  get id(): string {
    return this.#svid.svid.id.toString();
  }

  /** The trust domain's bundle (X.509 and JWT authorities). */
  get bundle(): SpiffeBundle {
    return this.#bundle;
  }

  /** The trust domain's CRLs (one per X.509 authority), as the server last pushed them. */
  get crls(): readonly X509Crl[] {
    return this.#crls;
  }

  /** Changes whenever the CRLs do (a digest of them). */
  get crlsKey(): string {
    return this.#crlsKey;
  }

  /** The CRLs as concatenated PEM blocks (empty when there are none). */
  get crlsPem(): Uint8Array {
    return this.#crlsPem;
  }

  /** Federated bundles the node's entries federate with, by trust domain name. */
  get federatedBundles(): ReadonlyMap<string, SpiffeBundle> {
    return this.#federated;
  }

  /** Why the agent stopped serving identities (the server's words: banned, evicted, …), if it did. */
  get banned(): string | undefined {
    return this.#refusal?.reason;
  }

  /** Why the server will not deal with this agent any more, if so (until resume()). */
  get refusal(): AgentRefusal | undefined {
    return this.#refusal;
  }

  /** True once the first snapshot from the server arrived (or was never needed: see start()). */
  get synced(): boolean {
    return this.#synced;
  }

  /**
   * Resolves true once the first snapshot from the server is in; false after `ms` without it, or
   * as soon as the server refuses the agent (see `refusal`).
   */
  whenSynced(ms: number): Promise<boolean> {
    if (this.#synced || this.#refusal !== undefined) return Promise.resolve(this.#synced);
    return new Promise((resolve) => {
      const done = (v: boolean) => {
        clearTimeout(t);
        this.off('update', check);
        resolve(v);
      };
      const check = () => {
        if (this.#synced || this.#refusal !== undefined) done(this.#synced);
      };
      const t = setTimeout(() => done(false), ms);
      this.on('update', check);
    });
  }

  /** Starts the push stream and the renewal loop. Resolves once the first snapshot is in or failed once. */
  start(): void {
    this.#openStream();
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#reconnect) clearTimeout(this.#reconnect);
    this.#stream?.cancel();
    this.#client.close();
  }

  /** Entries whose selectors are all among the workload's, oldest first (the first is the default SVID). */
  entriesFor(selectors: readonly Selector[]): Entry[] {
    if (this.#refusal !== undefined) return [];
    const have = new Set(selectors.map(selectorKey));
    return [...this.#entries.values()]
      .filter((e) => e.selectors.length > 0 && e.selectors.every((s) => have.has(selectorKey(s))))
      .filter((e) => e.expiresAt === 0n || Number(e.expiresAt) * 1000 > this.#now())
      .sort((a, b) => Number(a.createdAt - b.createdAt) || a.id.localeCompare(b.id));
  }

  /** The SVIDs a workload with these selectors gets now (entries without a current SVID are left out). */
  svidsFor(selectors: readonly Selector[]): CachedSvid[] {
    const now = this.#now();
    return this.entriesFor(selectors).flatMap((e) => {
      const c = this.#svids.get(e.id);
      return c !== undefined && c.expiresAt > now ? [c] : [];
    });
  }

  /**
   * A JWT-SVID for an entry and audience, from the cache until half its life, else minted by the
   * server; while no server can be reached, the cached one until it expires.
   */
  async jwtSvid(entry: Entry, audience: readonly string[]): Promise<{ token: string; expiresAt: number }> {
    const key = `${entry.id}\n${[...audience].sort().join('\n')}`;
    const now = this.#now();
    const hit = this.#jwt.get(key);
    if (hit !== undefined && now < hit.renewAt) return hit;
    const client = this.#client;
    let r: Awaited<ReturnType<ServerClient['newJwtSvid']>>;
    try {
      r = await client.newJwtSvid(entry.id, [...audience]);
    } catch (err) {
      this.#callFailed(client, err);
      const code = (err as Partial<grpc.ServiceError>).code;
      const unreachable = code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED;
      if (unreachable && hit !== undefined && this.#now() < hit.expiresAt) return hit;
      throw err;
    }
    const expiresAt = Number(r.expiresAt) * 1000;
    const fresh = { token: r.token, expiresAt, renewAt: renewalTime(now, expiresAt) };
    this.#jwt.set(key, fresh);
    return fresh;
  }

  #toSvid(chain: readonly X509Certificate[], key: KeyObject): X509Svid {
    return new X509Svid(
      parseSpiffeId(chain[0]?.subjectAltName?.match(/URI:([^,\s]+)/)?.[1] ?? ''),
      chain,
      key,
    );
  }

  #newClient(): ServerClient {
    return new ServerClient({
      address: this.#rotation.current,
      trustDomain: this.#o.trustDomain,
      bundle: this.#bundleSource.bundle,
      svid: this.#svid,
      bundleSource: this.#bundleSource,
    });
  }

  #openStream(): void {
    if (this.#closed || this.#refusal !== undefined) return;
    const client = this.#client;
    const server = this.#rotation.current;
    const stream = client.sync();
    this.#stream = stream;
    this.#snapshot = new Set();
    stream.on('data', (m: SyncResponse) => {
      if (!this.#connected) {
        this.#connected = true;
        this.#rotation.succeeded();
        this.#o.logger.info('agent: connected to the server', { server });
      }
      try {
        this.#apply(m);
      } catch (err) {
        this.#o.logger.error('agent: cannot apply an update from the server', {
          error: (err as Error).message,
        });
      }
    });
    stream.on('error', (err: grpc.ServiceError) => this.#streamEnded(stream, client, err));
    stream.on('end', () => this.#streamEnded(stream, client, undefined));
  }

  #streamEnded(
    stream: grpc.ClientReadableStream<SyncResponse>,
    client: ServerClient,
    err: grpc.ServiceError | undefined,
  ): void {
    if (stream !== this.#stream) return; // a stream the agent replaced itself
    this.#stream = undefined;
    const wasConnected = this.#connected;
    this.#connected = false;
    if (this.#closed || err?.code === grpc.status.CANCELLED) return;
    this.#o.metrics.inc(
      'tessera_agent_sync_errors_total',
      'Push streams from the server that ended or failed.',
    );
    const refusal = agentRefusalOf(err);
    if (refusal !== undefined) {
      // Every server says the same (they share the datastore): no failover, no reconnecting (and
      // no "lost the push stream"); an evicted agent may be given a new identity (resume()).
      this.#refuse(refusal);
      return;
    }
    const error = err === undefined ? 'stream ended' : grpcErrorText(err);
    if (wasConnected)
      this.#o.logger.warn(
        'agent: lost the push stream from the server; serving cached SVIDs until they expire',
        { server: this.#rotation.current, error },
      );
    this.#failover(client, error);
  }

  /**
   * A unary call failed. UNAVAILABLE from the server the push stream is connected to means that
   * server is going away: move on at once rather than wait for the stream to notice. (While not
   * connected, the push stream's own attempts decide where to go.)
   */
  #callFailed(client: ServerClient, err: unknown): void {
    if ((err as Partial<grpc.ServiceError>).code === grpc.status.UNAVAILABLE && this.#connected)
      this.#failover(client, grpcErrorText(err));
  }

  /**
   * Leaves the server `from` talks to for the next one: quickly within a round, after a back-off
   * (and a fresh look-up of the names) once every server has failed in turn. A failure of a client
   * the agent has already left is the same failure seen twice (stream and call), and is ignored.
   */
  #failover(from: ServerClient, error: string): void {
    if (this.#closed || this.#switching || from !== this.#client) return;
    this.#switching = true;
    const failed = this.#rotation.current;
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.cancel();
    this.#connected = false;
    const next = this.#rotation.failed();
    void this.#lookUpAgain(next.roundOver).then(() => {
      this.#switching = false;
      if (this.#closed) return;
      const address = this.#rotation.current;
      this.#o.metrics.inc(
        'tessera_agent_server_failovers_total',
        'Times the agent left a server that failed for the next one in its list.',
      );
      this.#o.logger.warn(`agent: server ${failed} unreachable; trying ${address}`, {
        server: failed,
        next: address,
        error,
        retry_in_ms: next.delayMs,
        ...(next.roundOver ? { every_server_failed: true } : {}),
      });
      this.#client = this.#newClient();
      from.close();
      this.#reconnect = setTimeout(() => this.#openStream(), next.delayMs);
      this.#reconnect.unref();
    });
  }

  /** After a whole round of failures, the names again (a DNS change is picked up); a failed look-up keeps the list. */
  async #lookUpAgain(roundOver: boolean): Promise<void> {
    const resolve = this.#o.resolveServers;
    if (!roundOver || resolve === undefined) return;
    try {
      const before = this.#rotation.addresses.join(',');
      this.#rotation.replace(await resolve());
      const after = this.#rotation.addresses.join(',');
      if (after !== before)
        this.#o.logger.info('agent: the server list changed', { servers: after, was: before });
    } catch (err) {
      this.#o.logger.warn('agent: cannot look the servers up again; keeping the list', {
        servers: this.#rotation.addresses.join(','),
        error: (err as Error).message,
      });
    }
  }

  #refuse(refusal: AgentRefusal): void {
    if (this.#refusal !== undefined) return;
    this.#refusal = refusal;
    this.#entries.clear();
    this.#svids.clear();
    this.#jwt.clear();
    this.#pending.clear();
    this.#retryAt.clear();
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.cancel();
    this.#connected = false;
    const id = this.id;
    const reason = refusal.reason;
    if (refusal.kind === 'banned')
      this.#o.logger.error(
        `agent: the server banned this agent (${id}); no identity is served any more. To let this host back, evict it on the server (tessera agent evict --spiffe-id ${id}), then restart the agent so that it attests again (a join_token agent with a new token: tessera token generate)`,
        { reason },
      );
    else if (refusal.kind === 'evicted')
      this.#o.logger.warn(
        `agent: the server evicted this agent (${id}); no identity is served until it attests again`,
        {
          reason,
        },
      );
    else if (refusal.kind === 'untrusted')
      this.#o.logger.warn(
        `agent: the server no longer trusts this agent's SVID (${id}): the CA that signed it was revoked while the agent was away, or it expired; no identity is served until it attests again`,
        { reason },
      );
    else
      this.#o.logger.error(
        `agent: the server refused this agent's SVID (${id}); no identity is served any more. Restart the agent to attest again (evict it first if the server says it was replaced)`,
        { reason },
      );
    this.emit('refused', refusal);
    this.emit('update');
  }

  /**
   * Takes a new identity (after attesting again, e.g. once evicted): the SVID, key and bundle of
   * `state`, a new connection and push stream. Workloads wait for its first snapshot.
   */
  resume(state: AgentState): void {
    if (this.#closed) return;
    const { chain, key, bundle } = state;
    this.#svid.set(this.#toSvid(chain, key));
    this.#agentRenewAt = renewalTime(this.#now(), new Date((chain[0] as X509Certificate).validTo).getTime());
    this.#bundle = bundle;
    this.#bundleSource.set(bundle.x509Bundle());
    this.#refusal = undefined;
    this.#synced = false;
    if (this.#reconnect) clearTimeout(this.#reconnect);
    const old = this.#client;
    this.#client = this.#newClient();
    old.close();
    this.#o.logger.info('agent: serving again with a new agent SVID', { spiffe_id: this.id });
    this.#openStream();
    this.emit('update');
  }

  #apply(m: SyncResponse): void {
    let changed = false;
    if (m.bundle !== undefined && m.bundle.spiffeBundle.length > 0)
      changed = this.#setBundle(m.bundle) || changed;
    for (const b of m.federatedBundles) {
      if (b.spiffeBundle.length === 0) changed = this.#federated.delete(b.trustDomain) || changed;
      else {
        this.#federated.set(
          b.trustDomain,
          parseSpiffeBundle(parseTrustDomain(b.trustDomain), Buffer.from(b.spiffeBundle).toString()),
        );
        changed = true;
      }
    }
    for (const e of m.upserted) {
      const before = this.#entries.get(e.id);
      this.#entries.set(e.id, e);
      if (before === undefined || before.revision !== e.revision) this.#pending.add(e.id);
      changed = true;
    }
    for (const id of m.removedEntryIds) changed = this.#forget(id) || changed;
    if (m.taintedAuthorities.length > 0) this.#taint(m.taintedAuthorities);
    if (m.x509Crls !== undefined) changed = this.#setCrls(m.x509Crls.crls) || changed;
    if (this.#snapshot !== undefined) {
      for (const e of m.upserted) this.#snapshot.add(e.id);
      if (m.synced) {
        // The snapshot is complete: whatever the agent holds beyond it was removed while it was away.
        for (const id of [...this.#entries.keys()])
          if (!this.#snapshot.has(id)) changed = this.#forget(id) || changed;
        this.#snapshot = undefined;
      }
    }
    if (m.synced && !this.#synced) {
      this.#synced = true;
      changed = true;
    }
    if (changed) this.emit('update');
    this.#scheduleIssue();
  }

  /** Drops an entry the agent is no longer entitled to, with its SVID and JWT-SVIDs. */
  #forget(id: string): boolean {
    const had = this.#entries.delete(id);
    this.#pending.delete(id);
    this.#retryAt.delete(id);
    this.#svids.delete(id);
    for (const k of this.#jwt.keys()) if (k.startsWith(`${id}\n`)) this.#jwt.delete(k);
    return had;
  }

  #setBundle(b: Bundle): boolean {
    const next = parseSpiffeBundle(this.#o.trustDomain, Buffer.from(b.spiffeBundle).toString());
    if (next.equals(this.#bundle)) return false;
    this.#bundle = next;
    this.#bundleSource.set(next.x509Bundle());
    try {
      saveBundle(this.#o.dataDir, next);
    } catch (err) {
      this.#o.logger.error('agent: cannot save the bundle', { error: (err as Error).message });
    }
    return true;
  }

  /** Replaces the CRLs; re-issues at once every cached SVID they revoke. True when they changed. */
  #setCrls(ders: readonly Uint8Array[]): boolean {
    const crls: X509Crl[] = [];
    for (const der of ders) {
      try {
        crls.push(parseX509Crl(der));
      } catch (err) {
        this.#o.logger.error('agent: the server sent a CRL that cannot be parsed; ignoring it', {
          error: (err as Error).message,
        });
      }
    }
    const digest = createHash('sha256');
    for (const c of crls) digest.update(createHash('sha256').update(c.raw).digest());
    const key = crls.length === 0 ? '' : digest.digest('base64');
    if (key === this.#crlsKey) return false;
    this.#crls = crls;
    this.#crlsKey = key;
    this.#crlsPem = Buffer.from(crls.map((c) => c.toPem()).join(''));
    const revoked: string[] = [];
    for (const [id, c] of this.#svids) {
      const serial = c.svid.certificates[0]?.serialNumber;
      if (serial !== undefined && crls.some((crl) => crl.entryFor(serial) !== undefined)) {
        this.#pending.add(id);
        this.#retryAt.delete(id);
        revoked.push(`${c.svid.id}#${serial}`);
      }
    }
    if (revoked.length > 0)
      this.#o.logger.warn('agent: X509-SVIDs were revoked; re-issuing them now', {
        svids: revoked.join(','),
      });
    return true;
  }

  /** Re-issues at once every SVID (and the agent's own) signed by a tainted X.509 authority. */
  #taint(ids: readonly string[]): void {
    const fresh = ids.filter((id) => !this.#tainted.has(id));
    this.#tainted = new Set(ids);
    const skis = new Set(fresh.filter((id) => id.startsWith('x509:')).map((id) => id.slice(5)));
    if (fresh.some((id) => id.startsWith('jwt:'))) this.#jwt.clear();
    if (skis.size === 0) return;
    const ski = (c: X509Certificate) => Buffer.from(keyIdentifier(spkiOf(c.publicKey))).toString('hex');
    const taintedCas = this.#bundle.x509Authorities.filter((c) => skis.has(ski(c)));
    // Signed by a tainted CA of the bundle, or chained through a tainted intermediate (Tessera's CA
    // under an upstream authority, which is not in the bundle: the upstream root is).
    const signedByTainted = (chain: readonly X509Certificate[]) =>
      chain.slice(1).some((c) => skis.has(ski(c))) ||
      taintedCas.some((ca) => chain.some((c) => c.checkIssued(ca) && c.verify(ca.publicKey)));
    for (const [id, c] of this.#svids) if (signedByTainted(c.svid.certificates)) this.#pending.add(id);
    if (signedByTainted(this.#svid.svid.certificates)) this.#agentRenewAt = 0;
    this.#o.logger.warn('agent: an authority was tainted; re-issuing what it signed', {
      authorities: [...skis].join(','),
    });
  }

  #tick(): void {
    const now = this.#now();
    let expired = false;
    for (const [id, c] of this.#svids) {
      if (c.expiresAt <= now) {
        this.#svids.delete(id);
        this.#pending.add(id);
        expired = true;
      } else if (c.renewAt <= now) this.#pending.add(id);
    }
    for (const [k, j] of this.#jwt) if (j.expiresAt <= now) this.#jwt.delete(k);
    if (expired) this.emit('update');
    if (now >= this.#agentRenewAt) this.#renewAgent();
    this.#scheduleIssue();
  }

  /** Issuance waits while no server is connected: the first message of the next stream starts it again. */
  #scheduleIssue(): void {
    if (this.#issuing || this.#pending.size === 0 || this.#refusal !== undefined || !this.#connected) return;
    this.#issuing = true;
    setImmediate(() => {
      this.#issue()
        .catch((err: unknown) =>
          this.#o.logger.warn('agent: cannot get SVIDs from the server; will retry', {
            error: grpcErrorText(err),
          }),
        )
        .finally(() => {
          this.#issuing = false;
          if ([...this.#pending].some((id) => (this.#retryAt.get(id) ?? 0) <= this.#now()))
            this.#scheduleIssue();
        });
    });
  }

  async #issue(): Promise<void> {
    const now = this.#now();
    const due = [...this.#pending].filter(
      (id) => this.#entries.has(id) && (this.#retryAt.get(id) ?? 0) <= now,
    );
    for (const id of this.#pending) if (!this.#entries.has(id)) this.#pending.delete(id);
    for (let i = 0; i < due.length; i += BATCH) {
      const slice = due.slice(i, i + BATCH);
      const keys = slice.map(() => generateKeyPairOfType(this.#o.workloadKeyType).privateKey);
      const client = this.#client;
      let res: Awaited<ReturnType<ServerClient['batchNewX509Svid']>>;
      try {
        res = await client.batchNewX509Svid(
          slice.map((entryId, j) => ({ entryId, csr: createCsr(keys[j] as KeyObject) })),
        );
      } catch (err) {
        // Unreachable: the next server is tried, and these on the next tick; refused: in a while.
        const unreachable = (err as Partial<grpc.ServiceError>).code === grpc.status.UNAVAILABLE;
        for (const id of slice) this.#retryAt.set(id, this.#now() + (unreachable ? TICK_MS : RETRY_MS));
        this.#callFailed(client, err);
        throw err;
      }
      let changed = false;
      res.results.forEach((r, j) => {
        const id = slice[j] as string;
        const entry = this.#entries.get(id);
        if (entry === undefined) return;
        if (r.code !== grpc.status.OK) {
          this.#retryAt.set(id, this.#now() + RETRY_MS);
          this.#o.logger.warn('agent: the server refused an SVID', {
            entry_id: id,
            spiffe_id: entry.spiffeId,
            error: r.message,
          });
          return;
        }
        const chain = r.certChain.map((d) => new X509Certificate(d));
        const leaf = chain[0] as X509Certificate;
        const expiresAt = new Date(leaf.validTo).getTime();
        const svid = new X509Svid(parseSpiffeId(r.spiffeId), chain, keys[j] as KeyObject, entry.hint);
        this.#svids.set(id, {
          entry,
          svid,
          raw: svid.marshalRaw(),
          expiresAt,
          renewAt: renewalTime(this.#now(), expiresAt),
        });
        this.#pending.delete(id);
        this.#retryAt.delete(id);
        changed = true;
      });
      if (changed) this.emit('update');
    }
  }

  #renewAgent(): void {
    if (this.#renewingAgent || this.#refusal !== undefined || !this.#connected) return;
    this.#renewingAgent = true;
    const key = generateKeyPairOfType('ec-p256').privateKey;
    const client = this.#client;
    client
      .renewAgent(createCsr(key))
      .then((ders) => {
        const chain = ders.map((d) => new X509Certificate(d));
        saveAgentSvid(this.#o.dataDir, chain, key);
        this.#svid.set(this.#toSvid(chain, key));
        const leaf = chain[0] as X509Certificate;
        this.#agentRenewAt = renewalTime(this.#now(), new Date(leaf.validTo).getTime());
        this.#o.logger.info('agent: renewed the agent SVID', { expires: leaf.validTo });
        // An open HTTP/2 connection keeps the certificate of its handshake: move to a new channel so
        // the server sees the new SVID before the old one expires. (A failover under way makes a
        // new channel anyway.)
        if (this.#switching || this.#closed) return;
        if (this.#reconnect) clearTimeout(this.#reconnect);
        const old = this.#client;
        this.#client = this.#newClient();
        const stream = this.#stream;
        this.#stream = undefined;
        stream?.cancel();
        this.#openStream();
        old.close();
      })
      .catch((err: grpc.ServiceError) => {
        const unreachable = err.code === grpc.status.UNAVAILABLE;
        this.#agentRenewAt = this.#now() + (unreachable ? TICK_MS : RETRY_MS);
        const refusal = agentRefusalOf(err);
        if (refusal !== undefined) this.#refuse(refusal);
        else {
          this.#o.logger.warn('agent: cannot renew the agent SVID; will retry', {
            server: this.#rotation.current,
            error: grpcErrorText(err),
          });
          this.#callFailed(client, err);
        }
      })
      .finally(() => {
        this.#renewingAgent = false;
      });
  }

  /** JWT bundles a workload may use: the own trust domain's and the federated ones. */
  jwtBundles(): JwtBundle[] {
    return [this.#bundle.jwtBundle(), ...[...this.#federated.values()].map((b) => b.jwtBundle())];
  }
}
