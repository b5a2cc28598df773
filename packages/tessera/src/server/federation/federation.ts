// The bundle endpoint client side of federation (SPIFFE Federation §7.3): for every relationship,
// fetch the foreign trust domain's bundle from its endpoint, store it when it changed (the change
// feed then pushes it to every agent whose entries federate with it, and agents to workloads), and
// fetch again after the bundle's refresh hint, with jitter. A failed fetch keeps the last good
// bundle and is retried sooner, backing off up to the refresh interval.
//
// Every server sharing a datastore runs this for every relationship, as SPIRE's servers do: each
// stores what it fetched (equal bundles are not rewritten), so losing a server loses no refresh.
// With https_spiffe, the endpoint is authenticated with the stored bundle of its trust domain: the
// operator's bootstrap bundle first, then the last one fetched (self-serving endpoints roll their
// trust forward that way, spec §7.3), so a peer rotates its roots without anyone here acting.
import { fetchBundle, isSpiffeError, type SpiffeBundle, type TrustDomain } from '@tessera/spiffe';
import { isTesseraError, TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { DaemonLogger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { Datastore, DatastoreChange, StoredFederationRelationship } from '../datastore/types.js';
import {
  checkRelationship,
  type FederationRelationship,
  type RelationshipSource,
  sameRelationship,
} from './relationship.js';

export interface FederationTiming {
  /** Without a refresh hint in the bundle: SPIFFE's default, 5 minutes. */
  defaultRefreshMs: number;
  /** Never more often than this, whatever the hint says (SPIRE: 1 minute). */
  minRefreshMs: number;
  /** Never less often than this. */
  maxRefreshMs: number;
  /** First retry after a failure, doubled on each further failure up to the refresh interval. */
  retryMs: number;
  /** One fetch, from connect to the last byte. */
  fetchTimeoutMs: number;
}

export const DEFAULT_FEDERATION_TIMING: FederationTiming = {
  defaultRefreshMs: 5 * 60_000,
  minRefreshMs: 60_000,
  maxRefreshMs: 24 * 3600_000,
  retryMs: 5_000,
  fetchTimeoutMs: 10_000,
};

/** What this server saw of one relationship's refreshes. */
export interface RefreshStatus {
  readonly lastAttempt?: Date;
  readonly lastSuccess?: Date;
  /** Of the last attempt; undefined when it succeeded. */
  readonly lastError?: string;
  readonly nextRefresh?: Date;
  /** Failed attempts since the last success. */
  readonly failures: number;
}

export interface FederationView {
  readonly relationship: FederationRelationship;
  readonly source: RelationshipSource;
  readonly status: RefreshStatus;
}

interface State {
  readonly relationship: FederationRelationship;
  readonly source: RelationshipSource;
  status: {
    lastAttempt?: Date;
    lastSuccess?: Date;
    lastError?: string;
    nextRefresh?: Date;
    failures: number;
  };
  hint?: number;
  timer?: NodeJS.Timeout;
  running?: Promise<void>;
}

export interface FederationOptions {
  trustDomain: TrustDomain;
  datastore: Datastore;
  /** server.yaml's federation.federates_with. */
  configured: readonly FederationRelationship[];
  logger: DaemonLogger;
  metrics?: Metrics;
  timing?: Partial<FederationTiming>;
  now?: () => Date;
  /** A number in [0, 1) for the jitter; default Math.random. */
  random?: () => number;
}

/** A stored relationship as checked; one that no longer checks is logged and left out. */
export function relationshipFromStored(
  r: StoredFederationRelationship,
  own: TrustDomain,
): FederationRelationship {
  return checkRelationship(
    {
      trustDomain: r.trustDomain,
      bundleEndpointUrl: r.bundleEndpointUrl,
      profile: r.profile,
      ...(r.endpointSpiffeId === '' ? {} : { endpointSpiffeId: r.endpointSpiffeId }),
      ...(r.caBundlePem === '' ? {} : { caBundlePem: r.caBundlePem }),
    },
    own,
  );
}

export class Federation {
  readonly #o: FederationOptions;
  readonly #timing: FederationTiming;
  readonly #now: () => Date;
  readonly #random: () => number;
  readonly #states = new Map<string, State>();
  readonly #abort = new AbortController();
  readonly #unsubscribe: () => void;
  /** Applies feed changes one at a time, in order. */
  #changes: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(o: FederationOptions) {
    this.#o = o;
    this.#timing = { ...DEFAULT_FEDERATION_TIMING, ...o.timing };
    this.#now = o.now ?? (() => new Date());
    this.#random = o.random ?? Math.random;
    for (const rel of o.configured) this.#states.set(rel.trustDomain.name, this.#newState(rel, 'config'));
    this.#unsubscribe = o.datastore.onChange((c) => this.#changed(c));
    const metrics = o.metrics;
    if (metrics !== undefined) {
      const labelled = (value: (s: State) => number | undefined) => () =>
        [...this.#states.values()].flatMap((s) => {
          const v = value(s);
          return v === undefined
            ? []
            : [{ labels: { trust_domain: s.relationship.trustDomain.name }, value: v }];
        });
      metrics.gaugesFn(
        'tessera_federation_bundle_age_seconds',
        'Seconds since the federated bundle was last fetched successfully (absent until the first success).',
        labelled((s) =>
          s.status.lastSuccess === undefined
            ? undefined
            : Math.max(0, Math.floor((this.#now().getTime() - s.status.lastSuccess.getTime()) / 1000)),
        ),
      );
      metrics.gaugesFn(
        'tessera_federation_last_success_timestamp_seconds',
        'When the federated bundle was last fetched successfully, in Unix seconds.',
        labelled((s) =>
          s.status.lastSuccess === undefined ? undefined : Math.floor(s.status.lastSuccess.getTime() / 1000),
        ),
      );
      metrics.gaugesFn(
        'tessera_federation_refresh_failures',
        'Failed fetches of the federated bundle since the last success (0 when the last one succeeded).',
        labelled((s) => s.status.failures),
      );
    }
  }

  /** Loads the stored relationships beside the configured ones and starts fetching every bundle. */
  static async start(o: FederationOptions): Promise<Federation> {
    const f = new Federation(o);
    try {
      await f.#loadStored(undefined, false);
    } catch (err) {
      f.close();
      throw err;
    }
    for (const s of f.#states.values()) f.#schedule(s, 0);
    return f;
  }

  /** Resolves once the relationship changes told so far (by the change feed) are applied. */
  settled(): Promise<void> {
    return this.#changes;
  }

  list(): FederationView[] {
    return [...this.#states.values()]
      .sort((a, b) => a.relationship.trustDomain.name.localeCompare(b.relationship.trustDomain.name))
      .map((s) => this.#view(s));
  }

  get(trustDomain: string): FederationView | undefined {
    const s = this.#states.get(trustDomain);
    return s === undefined ? undefined : this.#view(s);
  }

  /**
   * Fetches the trust domain's bundle now (after one already under way) and resolves with the
   * outcome in the status; ERR_FEDERATION_NOT_FOUND when no relationship names it.
   */
  async refresh(trustDomain: string): Promise<FederationView> {
    await this.#changes;
    const s = this.#states.get(trustDomain);
    if (s === undefined)
      throw new TesseraError(
        TesseraErrorCode.FEDERATION_NOT_FOUND,
        `federation: no relationship with "${trustDomain}" (tessera federation list shows them all)`,
      );
    if (s.running !== undefined) await s.running;
    await this.#run(s);
    return this.#view(s);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#abort.abort();
    for (const s of this.#states.values()) clearTimeout(s.timer);
  }

  #newState(relationship: FederationRelationship, source: RelationshipSource): State {
    return { relationship, source, status: { failures: 0 } };
  }

  #view(s: State): FederationView {
    return { relationship: s.relationship, source: s.source, status: { ...s.status } };
  }

  async #loadStored(only: string | undefined, schedule = true): Promise<void> {
    const ds = this.#o.datastore;
    const stored =
      only === undefined
        ? await ds.listFederationRelationships()
        : [await ds.getFederationRelationship(only)].filter((r) => r !== undefined);
    const seen = new Set<string>();
    for (const r of stored) {
      seen.add(r.trustDomain);
      const current = this.#states.get(r.trustDomain);
      if (current?.source === 'config') {
        this.#o.logger.warn(
          'federation: a stored relationship names a trust domain that server.yaml federates with; the one in server.yaml is used',
          { trust_domain: r.trustDomain },
        );
        continue;
      }
      let rel: FederationRelationship;
      try {
        rel = relationshipFromStored(r, this.#o.trustDomain);
      } catch (err) {
        this.#o.logger.error('federation: a stored relationship is invalid and is not used', {
          trust_domain: r.trustDomain,
          error: (err as Error).message,
        });
        continue;
      }
      if (current !== undefined && sameRelationship(current.relationship, rel)) continue;
      if (current !== undefined) clearTimeout(current.timer);
      const s = this.#newState(rel, 'datastore');
      this.#states.set(r.trustDomain, s);
      this.#o.logger.info(
        current === undefined ? 'federation: relationship added' : 'federation: relationship changed',
        {
          trust_domain: r.trustDomain,
          bundle_endpoint_url: rel.bundleEndpointUrl,
          profile: rel.profile,
        },
      );
      if (schedule) this.#schedule(s, 0);
    }
    // Stored relationships that are gone (deleted through any server).
    for (const [td, s] of this.#states) {
      if (s.source !== 'datastore' || seen.has(td) || (only !== undefined && td !== only)) continue;
      clearTimeout(s.timer);
      this.#states.delete(td);
      this.#o.logger.info('federation: relationship deleted; its bundle is no longer fetched', {
        trust_domain: td,
      });
    }
  }

  #changed(c: DatastoreChange): void {
    if (c.kind !== 'federation' && c.kind !== 'resync') return;
    const only = c.kind === 'federation' ? c.trustDomain : undefined;
    this.#changes = this.#changes
      .then(() => (this.#closed ? undefined : this.#loadStored(only)))
      .catch((err: unknown) =>
        this.#o.logger.error('federation: reading the stored relationships failed', {
          error: (err as Error).message,
        }),
      );
  }

  #schedule(s: State, delayMs: number): void {
    if (this.#closed || this.#states.get(s.relationship.trustDomain.name) !== s) return;
    clearTimeout(s.timer);
    s.status.nextRefresh = new Date(this.#now().getTime() + delayMs);
    s.timer = setTimeout(() => {
      s.timer = undefined;
      if (s.running === undefined) void this.#run(s);
    }, delayMs);
    s.timer.unref();
  }

  /** The delay after a success (by the hint, clamped) less up to 10% of jitter, so servers spread out. */
  #interval(hint: number | undefined): number {
    const t = this.#timing;
    const wanted = hint === undefined || hint <= 0 ? t.defaultRefreshMs : hint * 1000;
    const clamped = Math.min(Math.max(wanted, t.minRefreshMs), t.maxRefreshMs);
    return Math.round(clamped * (1 - 0.1 * this.#random()));
  }

  #run(s: State): Promise<void> {
    const run = this.#fetch(s).finally(() => {
      if (s.running === run) s.running = undefined;
    });
    s.running = run;
    return run;
  }

  async #fetch(s: State): Promise<void> {
    const rel = s.relationship;
    const td = rel.trustDomain.name;
    clearTimeout(s.timer);
    s.status.lastAttempt = this.#now();
    try {
      const bundle = await fetchBundle(rel.trustDomain, rel.bundleEndpointUrl, {
        ...(await this.#profileOptions(rel)),
        timeout: this.#timing.fetchTimeoutMs,
        signal: this.#abort.signal,
      });
      if (this.#closed || this.#states.get(td) !== s) return;
      const changed = await this.#o.datastore.storeFetchedBundle(bundle);
      s.hint = bundle.refreshHint;
      const recovered = s.status.failures > 0;
      s.status = { ...s.status, lastSuccess: this.#now(), lastError: undefined, failures: 0 };
      if (changed || recovered)
        this.#o.logger.info(
          changed
            ? 'federation: stored a new bundle from the bundle endpoint'
            : 'federation: the bundle endpoint answers again',
          bundleFields(td, bundle),
        );
      this.#schedule(s, this.#interval(s.hint));
    } catch (err) {
      if (this.#closed) return;
      const message = fetchErrorText(err);
      s.status = { ...s.status, lastError: message, failures: s.status.failures + 1 };
      this.#o.metrics?.inc(
        'tessera_federation_refresh_errors_total',
        'Failed fetches of federated bundles from their bundle endpoints.',
        { trust_domain: td },
      );
      const retry = Math.min(
        this.#timing.retryMs * 2 ** Math.min(s.status.failures - 1, 20),
        this.#interval(s.hint),
      );
      const delay = Math.round(retry * (1 - 0.1 * this.#random()));
      this.#o.logger.warn('federation: fetching the bundle failed; the last good bundle stays in use', {
        trust_domain: td,
        bundle_endpoint_url: rel.bundleEndpointUrl,
        error: message,
        failures: s.status.failures,
        retry_in_ms: delay,
      });
      if (this.#states.get(td) === s) this.#schedule(s, delay);
    }
  }

  /** How to authenticate the endpoint: for https_spiffe, the stored bundle of the endpoint's trust domain. */
  async #profileOptions(rel: FederationRelationship): Promise<Parameters<typeof fetchBundle>[2]> {
    if (rel.profile === 'https_web')
      return rel.caBundlePem === undefined
        ? { profile: 'https_web' }
        : { profile: 'https_web', ca: rel.caBundlePem };
    const endpointId = rel.endpointSpiffeId;
    if (endpointId === undefined) throw new TypeError('federation: https_spiffe without endpoint_spiffe_id');
    const endpointTd = endpointId.trustDomain;
    const bundle = await this.#o.datastore.getBundle(endpointTd);
    if (bundle === undefined || bundle.x509Authorities.length === 0)
      throw new TesseraError(
        TesseraErrorCode.FEDERATION_FETCH,
        `no bundle of "${endpointTd.name}" is stored to authenticate the bundle endpoint ${endpointId} (https_spiffe); ` +
          `set it once from the peer (tessera bundle set --id ${endpointTd.name} --format spiffe --path <file>; ` +
          'the file from `spire-server bundle show -format spiffe` or `tessera bundle show --format spiffe` there), ' +
          'or give --trust-domain-bundle-path to tessera federation create',
      );
    return { profile: 'https_spiffe', endpointId, bundleSource: bundle };
  }
}

function bundleFields(td: string, b: SpiffeBundle): Record<string, unknown> {
  return {
    trust_domain: td,
    sequence: b.sequenceNumber === undefined ? undefined : String(b.sequenceNumber),
    refresh_hint_s: b.refreshHint,
    x509_authorities: b.x509Authorities.length,
    jwt_authorities: b.jwtAuthorities.size,
  };
}

/** The message of a failed fetch: the library's names the URL and what failed. */
function fetchErrorText(err: unknown): string {
  if (isSpiffeError(err) || isTesseraError(err)) {
    const cause = (err as Error).cause;
    const detail = cause instanceof Error && !err.message.includes(cause.message) ? `: ${cause.message}` : '';
    return `${err.message}${detail}`;
  }
  return (err as Error).message ?? String(err);
}
