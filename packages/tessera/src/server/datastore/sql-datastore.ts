import { createHash, randomUUID } from 'node:crypto';
import {
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  SpiffeBundle,
  type TrustDomain,
} from '@tessera/spiffe';
import { isDnsName } from '../../common/dns-name.js';
import { isTesseraError, TesseraError, TesseraErrorCode } from '../../common/errors.js';
import {
  ChangeFeed,
  type ChangeFeedOptions,
  type ChangeInput,
  headRevision,
  recordChanges,
} from './change-feed.js';
import type {
  AgentAttestationInput,
  AgentPage,
  AttestedAgent,
  AuthorityRecord,
  ConsumedJoinToken,
  Datastore,
  DatastoreChange,
  EntryInput,
  EntryPage,
  JoinTokenInput,
  ListAgentsOptions,
  ListEntriesOptions,
  RegistrationEntry,
  Selector,
  StoredFederationRelationship,
  StoredX509Crl,
  X509Revocation,
  X509SvidRecord,
} from './types.js';

export type Row = Record<string, unknown>;

/** What the datastore needs from a database: `?` placeholders, rows as objects, transactions. */
export interface SqlDriver {
  readonly dialect: 'sqlite' | 'postgres';
  query(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** Rows changed by an INSERT/UPDATE/DELETE. */
  execute(sql: string, params?: readonly unknown[]): Promise<number>;
  /** Runs `fn` in one transaction; rolls back if it throws. */
  transaction<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T>;
  /** Runs `fn` in one read-only transaction that sees one consistent snapshot of the database. */
  snapshot<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Wakes a change feed for writes made by other servers (change-feed.ts). */
export interface FeedFollower {
  /** Whether it is listening now. */
  readonly connected: boolean;
  /** Connections lost and re-established since start. */
  readonly reconnects: number;
  close(): Promise<void>;
}

/** Versioned schema; each migration runs once, in order, inside a transaction. Never edit a released one. */
export const MIGRATIONS: readonly { version: number; statements: readonly string[] }[] = [
  {
    version: 1,
    statements: [
      `CREATE TABLE registration_entries (
        id TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        selectors_key TEXT NOT NULL,
        x509_svid_ttl INTEGER NOT NULL,
        jwt_svid_ttl INTEGER NOT NULL,
        dns_names TEXT NOT NULL,
        federates_with TEXT NOT NULL,
        admin INTEGER NOT NULL,
        downstream INTEGER NOT NULL,
        hint TEXT NOT NULL,
        expires_at BIGINT,
        metadata TEXT NOT NULL,
        revision BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (spiffe_id, parent_id, selectors_key)
      )`,
      'CREATE INDEX registration_entries_parent ON registration_entries (parent_id)',
      `CREATE TABLE entry_selectors (
        entry_id TEXT NOT NULL REFERENCES registration_entries (id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (entry_id, type, value)
      )`,
      'CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value)',
      `CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        agent_name TEXT,
        created_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    version: 2,
    statements: [
      // One SPIFFE bundle document per trust domain (own and federated); the sequence is kept as
      // text because spiffe_sequence is a uint64 and SQL integers are signed 64-bit.
      `CREATE TABLE bundles (
        trust_domain TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        sequence TEXT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    version: 3,
    statements: [
      // Attested agents. Selectors are newline-joined `type:value` (values cannot hold a newline).
      `CREATE TABLE agents (
        spiffe_id TEXT PRIMARY KEY,
        attestor TEXT NOT NULL,
        selectors TEXT NOT NULL,
        serial TEXT NOT NULL,
        previous_serial TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        banned INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    version: 4,
    statements: [
      // The change feed (change-feed.ts): one counter row, bumped by every write's transaction, and
      // the events it numbered.
      'CREATE TABLE change_revision (id INTEGER PRIMARY KEY, revision BIGINT NOT NULL)',
      'INSERT INTO change_revision (id, revision) VALUES (1, 0)',
      `CREATE TABLE change_events (
        revision BIGINT PRIMARY KEY,
        kind TEXT NOT NULL,
        op TEXT NOT NULL,
        subject TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      'CREATE INDEX change_events_created ON change_events (created_at)',
      // Every signing key of the trust domain, whichever server holds it, with its taint and
      // revocation: shared state, so an operator acting through any server acts for all.
      `CREATE TABLE authorities (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        not_after BIGINT NOT NULL,
        certificate TEXT NOT NULL,
        tainted INTEGER NOT NULL,
        revoked INTEGER NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (kind, id)
      )`,
    ],
  },
  {
    version: 5,
    statements: [
      // Federation relationships created through the admin API (server.yaml's are not stored).
      `CREATE TABLE federation_relationships (
        trust_domain TEXT PRIMARY KEY,
        bundle_endpoint_url TEXT NOT NULL,
        profile TEXT NOT NULL,
        endpoint_spiffe_id TEXT NOT NULL,
        ca_bundle TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    version: 6,
    statements: [
      // Attestation evidence already used (a token, a signed document), by attestor and digest,
      // until it would have expired anyway: a replay is refused on every server sharing the datastore.
      `CREATE TABLE used_evidence (
        attestor TEXT NOT NULL,
        digest TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (attestor, digest)
      )`,
      'CREATE INDEX used_evidence_expires ON used_evidence (expires_at)',
    ],
  },
  {
    version: 7,
    statements: [
      // X509-SVIDs issued, until they expire: what `tessera x509 revoke` finds by serial or entry.
      `CREATE TABLE x509_svids (
        serial TEXT PRIMARY KEY,
        authority_id TEXT NOT NULL,
        spiffe_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL
      )`,
      'CREATE INDEX x509_svids_entry ON x509_svids (entry_id)',
      'CREATE INDEX x509_svids_expires ON x509_svids (expires_at)',
      // Revoked ones, on their authority's CRL until they expire.
      `CREATE TABLE x509_revocations (
        serial TEXT PRIMARY KEY,
        authority_id TEXT NOT NULL,
        spiffe_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        reason INTEGER NOT NULL,
        revoked_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
      )`,
      'CREATE INDEX x509_revocations_authority ON x509_revocations (authority_id)',
      // Each X.509 authority's current CRL (base64 DER), signed by the server holding its key.
      `CREATE TABLE x509_crls (
        authority_id TEXT PRIMARY KEY,
        crl_number BIGINT NOT NULL,
        der TEXT NOT NULL,
        not_after BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
    ],
  },
];

/** Creates the version table and applies every migration not yet applied. */
export async function migrate(driver: SqlDriver): Promise<number> {
  await driver.execute(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
  );
  const rows = await driver.query('SELECT MAX(version) AS v FROM schema_migrations');
  const current = Number(rows[0]?.v ?? 0);
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  if (current > latest) {
    throw new TesseraError(
      TesseraErrorCode.DATASTORE,
      `datastore: schema version ${current} is newer than this tessera understands (${latest}); run a newer tessera`,
    );
  }
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    await driver.transaction(async (tx) => {
      for (const s of m.statements) await tx.execute(s);
      await tx.execute('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [
        m.version,
        Date.now(),
      ]);
    });
  }
  return latest;
}

function invalid(message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.ENTRY_INVALID,
    `entry: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

const SELECTOR_PART = /^[A-Za-z0-9_.-]+$/;

/** Checks an entry and returns it with defaults and selectors sorted and de-duplicated. */
export function normalizeEntry(
  input: EntryInput,
): Required<Omit<EntryInput, 'expiresAt'>> & { expiresAt?: Date } {
  const id = (field: string, value: string) => {
    try {
      return parseSpiffeId(value).toString();
    } catch (err) {
      throw invalid(`${field} ${JSON.stringify(value)} is not a SPIFFE ID: ${(err as Error).message}`, err);
    }
  };
  const spiffeId = id('spiffeId', input.spiffeId);
  const parentId = id('parentId', input.parentId);
  if (spiffeId === parentId)
    throw invalid(`spiffeId and parentId are both "${spiffeId}"; an entry cannot be its own parent`);
  if (input.selectors.length === 0) throw invalid('at least one selector is required');
  const seen = new Map<string, Selector>();
  for (const s of input.selectors) {
    if (!SELECTOR_PART.test(s.type))
      throw invalid(`selector type ${JSON.stringify(s.type)} must be letters, digits, ".", "_" or "-"`);
    if (s.value === '' || s.value.length > 1024)
      throw invalid(`selector "${s.type}" needs a value of 1 to 1024 characters`);
    seen.set(`${s.type}:${s.value}`, { type: s.type, value: s.value });
  }
  const selectors = [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
  const ttl = (field: string, v: number | undefined) => {
    const n = v ?? 0;
    if (!Number.isSafeInteger(n) || n < 0)
      throw invalid(`${field} ${v} must be a whole number of seconds (0 = server default)`);
    return n;
  };
  for (const d of input.dnsNames ?? [])
    if (!isDnsName(d)) throw invalid(`DNS name ${JSON.stringify(d)} is not a valid host name`);
  const federatesWith = (input.federatesWith ?? []).map((t) => {
    try {
      return parseTrustDomain(t).name;
    } catch (err) {
      throw invalid(
        `federatesWith ${JSON.stringify(t)} is not a trust domain: ${(err as Error).message}`,
        err,
      );
    }
  });
  const hint = input.hint ?? '';
  if (hint.length > 1024) throw invalid('hint is longer than 1024 characters');
  const out = {
    spiffeId,
    parentId,
    selectors,
    x509SvidTtl: ttl('x509SvidTtl', input.x509SvidTtl),
    jwtSvidTtl: ttl('jwtSvidTtl', input.jwtSvidTtl),
    dnsNames: [...(input.dnsNames ?? [])],
    federatesWith: [...new Set(federatesWith)].sort(),
    admin: input.admin ?? false,
    downstream: input.downstream ?? false,
    hint,
    metadata: { ...(input.metadata ?? {}) },
  };
  return input.expiresAt === undefined ? out : { ...out, expiresAt: input.expiresAt };
}

function selectorsKey(selectors: readonly Selector[]): string {
  return selectors.map((s) => `${s.type}:${s.value}`).join('\n');
}

function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return (
    e.code === '23505' || e.code === 'SQLITE_CONSTRAINT_UNIQUE' || e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
  );
}

function wrap(op: string, err: unknown): never {
  if (isTesseraError(err)) throw err;
  throw new TesseraError(TesseraErrorCode.DATASTORE, `datastore: ${op} failed: ${(err as Error).message}`, {
    cause: err,
  });
}

/** The registry on any SqlDriver: the same SQL and behaviour on SQLite and PostgreSQL. */
export class SqlDatastore implements Datastore {
  readonly #db: SqlDriver;
  readonly #feed: ChangeFeed;
  /** What wakes the feed for other servers' writes; none on SQLite (one server per file). */
  readonly follower: FeedFollower | undefined;
  #closed = false;

  private constructor(driver: SqlDriver, feed: ChangeFeed, follower: FeedFollower | undefined) {
    this.#db = driver;
    this.#feed = feed;
    this.follower = follower;
  }

  /**
   * A datastore on a migrated driver, its change feed starting at the current revision. `follow`
   * starts what wakes the feed for other servers' writes (LISTEN/NOTIFY on PostgreSQL) and returns
   * its stop function.
   */
  static async create(
    driver: SqlDriver,
    options: ChangeFeedOptions & { follow?: (feed: ChangeFeed) => FeedFollower } = {},
  ): Promise<SqlDatastore> {
    const feed = new ChangeFeed(driver, await headRevision(driver), options);
    return new SqlDatastore(driver, feed, options.follow?.(feed));
  }

  onChange(listener: (change: DatastoreChange) => void): () => void {
    return this.#feed.onChange(listener);
  }

  get revision(): number {
    return this.#feed.revision;
  }

  /** The feed itself (for the server's metrics and the tests). */
  get feed(): ChangeFeed {
    return this.#feed;
  }

  /**
   * Runs a write transaction that records `changes(result)` as its last step, then waits until
   * this server's feed told them, so a write is seen by this server's listeners when it resolves.
   */
  async #write<T>(
    fn: (tx: SqlDriver) => Promise<T>,
    changes: (result: T) => readonly ChangeInput[],
  ): Promise<T> {
    let revision = 0;
    const result = await this.#db.transaction(async (tx) => {
      const r = await fn(tx);
      const c = changes(r);
      if (c.length > 0) revision = await recordChanges(tx, c);
      return r;
    });
    if (revision > 0) await this.#feed.caughtUp(revision);
    return result;
  }

  async snapshotEntries(): Promise<{ entries: RegistrationEntry[]; revision: number }> {
    try {
      return await this.#db.snapshot(async (tx) => {
        const revision = await headRevision(tx);
        const rows = await tx.query('SELECT * FROM registration_entries ORDER BY id');
        const selectors = await tx.query(
          'SELECT entry_id, type, value FROM entry_selectors ORDER BY entry_id, type, value',
        );
        const byEntry = groupSelectors(selectors);
        return { revision, entries: rows.map((r) => toEntry(r, byEntry.get(String(r.id)) ?? [])) };
      });
    } catch (err) {
      wrap('read every entry', err);
    }
  }

  async createEntry(input: EntryInput): Promise<RegistrationEntry> {
    return (await this.createEntries([input]))[0] as RegistrationEntry;
  }

  /**
   * Creates entries in one transaction: all of them or none. Each is validated first (the error
   * names its index); a duplicate (of a stored entry or within the batch) fails the batch, naming it.
   */
  async createEntries(inputs: readonly EntryInput[]): Promise<RegistrationEntry[]> {
    const normalized = inputs.map((input, i) => {
      try {
        return normalizeEntry(input);
      } catch (err) {
        if (inputs.length > 1 && isTesseraError(err))
          throw new TesseraError(err.code, `entry ${i + 1} of ${inputs.length}: ${err.message}`, {
            cause: err,
          });
        throw err;
      }
    });
    const now = Date.now();
    const created = normalized.map((e) => ({ id: randomUUID(), e }));
    const at = new Date(now);
    const entries = created.map(({ id, e }) => ({
      ...e,
      id,
      expiresAt: e.expiresAt,
      revision: 1,
      createdAt: at,
      updatedAt: at,
    }));
    let current: (typeof created)[number] | undefined;
    try {
      await this.#write(
        async (tx) => {
          for (const c of created) {
            current = c;
            await tx.execute(
              `INSERT INTO registration_entries (id, spiffe_id, parent_id, selectors_key, x509_svid_ttl, jwt_svid_ttl, dns_names,
               federates_with, admin, downstream, hint, expires_at, metadata, revision, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
              [c.id, ...this.#columns(c.e), now, now],
            );
            await this.#insertSelectors(tx, c.id, c.e.selectors);
          }
          current = undefined;
        },
        () => entries.map((entry) => ({ kind: 'entry', op: 'upsert', entry }) as const),
      );
    } catch (err) {
      if (isUniqueViolation(err) && current !== undefined) {
        throw new TesseraError(
          TesseraErrorCode.ENTRY_DUPLICATE,
          `entry: an entry for "${current.e.spiffeId}" with parent "${current.e.parentId}" and the same selectors already exists`,
          { cause: err },
        );
      }
      wrap('create entries', err);
    }
    return entries;
  }

  async getEntry(id: string): Promise<RegistrationEntry | undefined> {
    try {
      return await readEntry(this.#db, id);
    } catch (err) {
      wrap('get entry', err);
    }
  }

  async updateEntry(id: string, revision: number, input: EntryInput): Promise<RegistrationEntry> {
    const e = normalizeEntry(input);
    try {
      return await this.#write(
        async (tx) => {
          const changed = await tx.execute(
            `UPDATE registration_entries SET spiffe_id = ?, parent_id = ?, selectors_key = ?, x509_svid_ttl = ?, jwt_svid_ttl = ?,
             dns_names = ?, federates_with = ?, admin = ?, downstream = ?, hint = ?, expires_at = ?, metadata = ?,
             revision = revision + 1, updated_at = ?
           WHERE id = ? AND revision = ?`,
            [...this.#columns(e), Date.now(), id, revision],
          );
          if (changed === 0) {
            const rows = await tx.query('SELECT revision FROM registration_entries WHERE id = ?', [id]);
            if (rows[0] === undefined) throw notFound(id);
            throw new TesseraError(
              TesseraErrorCode.REVISION_CONFLICT,
              `entry: ${id} is at revision ${Number(rows[0].revision)}, not ${revision}; it changed since it was read — read it again and re-apply the change`,
            );
          }
          await tx.execute('DELETE FROM entry_selectors WHERE entry_id = ?', [id]);
          await this.#insertSelectors(tx, id, e.selectors);
          return (await readEntry(tx, id)) as RegistrationEntry;
        },
        (entry) => [{ kind: 'entry', op: 'upsert', entry }],
      );
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new TesseraError(
          TesseraErrorCode.ENTRY_DUPLICATE,
          `entry: another entry for "${e.spiffeId}" with parent "${e.parentId}" and the same selectors exists`,
          {
            cause: err,
          },
        );
      }
      wrap('update entry', err);
    }
  }

  async deleteEntry(id: string): Promise<void> {
    let entry: RegistrationEntry | undefined;
    try {
      entry = await this.#write(
        async (tx) => {
          const found = await readEntry(tx, id);
          if (found === undefined) return undefined;
          await tx.execute('DELETE FROM entry_selectors WHERE entry_id = ?', [id]);
          await tx.execute('DELETE FROM registration_entries WHERE id = ?', [id]);
          return found;
        },
        (found) => (found === undefined ? [] : [{ kind: 'entry', op: 'delete', entry: found }]),
      );
    } catch (err) {
      wrap('delete entry', err);
    }
    if (entry === undefined) throw notFound(id);
  }

  async listEntries(options: ListEntriesOptions = {}): Promise<EntryPage> {
    const pageSize = Math.min(1000, Math.max(1, options.pageSize ?? 100));
    const where: string[] = [];
    const params: unknown[] = [];
    if (options.bySpiffeId !== undefined) {
      where.push('e.spiffe_id = ?');
      params.push(options.bySpiffeId);
    }
    if (options.byParentId !== undefined) {
      where.push('e.parent_id = ?');
      params.push(options.byParentId);
    }
    if (options.bySelector !== undefined) {
      where.push(
        'EXISTS (SELECT 1 FROM entry_selectors s WHERE s.entry_id = e.id AND s.type = ? AND s.value = ?)',
      );
      params.push(options.bySelector.type, options.bySelector.value);
    }
    if (options.pageToken !== undefined && options.pageToken !== '') {
      where.push('e.id > ?');
      params.push(options.pageToken);
    }
    try {
      const rows = await this.#db.query(
        `SELECT e.* FROM registration_entries e ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY e.id LIMIT ?`,
        [...params, pageSize + 1],
      );
      const page = rows.slice(0, pageSize);
      const ids = page.map((r) => String(r.id));
      const selectors =
        ids.length === 0
          ? []
          : await this.#db.query(
              `SELECT entry_id, type, value FROM entry_selectors WHERE entry_id IN (${ids.map(() => '?').join(', ')}) ORDER BY entry_id, type, value`,
              ids,
            );
      const byEntry = groupSelectors(selectors);
      const entries = page.map((r) => toEntry(r, byEntry.get(String(r.id)) ?? []));
      const last = ids.at(-1);
      return rows.length > pageSize && last !== undefined ? { entries, nextPageToken: last } : { entries };
    } catch (err) {
      wrap('list entries', err);
    }
  }

  async getBundle(trustDomain: TrustDomain): Promise<SpiffeBundle | undefined> {
    try {
      const rows = await this.#db.query('SELECT document FROM bundles WHERE trust_domain = ?', [
        trustDomain.name,
      ]);
      const doc = rows[0]?.document;
      return doc === undefined ? undefined : parseSpiffeBundle(trustDomain, String(doc));
    } catch (err) {
      wrap('get bundle', err);
    }
  }

  async updateBundle(
    trustDomain: TrustDomain,
    change: (current: SpiffeBundle) => SpiffeBundle,
  ): Promise<SpiffeBundle> {
    let changed = false;
    try {
      return await this.#write(
        async (tx) => {
          if (tx.dialect === 'postgres')
            await tx.execute('SELECT pg_advisory_xact_lock(hashtext(?))', [`bundle:${trustDomain.name}`]);
          const rows = await tx.query('SELECT document FROM bundles WHERE trust_domain = ?', [
            trustDomain.name,
          ]);
          const doc = rows[0]?.document;
          const current =
            doc === undefined
              ? new SpiffeBundle({ trustDomain, sequenceNumber: 0n })
              : parseSpiffeBundle(trustDomain, String(doc));
          const proposed = change(current);
          if (!proposed.trustDomain.equals(trustDomain))
            throw new TypeError('datastore: a bundle update cannot change the trust domain');
          const same = proposed.with({ sequenceNumber: current.sequenceNumber }).equals(current);
          if (same && doc !== undefined) return current;
          const next = proposed.with({ sequenceNumber: (current.sequenceNumber ?? 0n) + 1n });
          const params = [next.marshal(), String(next.sequenceNumber), Date.now(), trustDomain.name];
          if (doc === undefined) {
            await tx.execute(
              'INSERT INTO bundles (document, sequence, updated_at, trust_domain) VALUES (?, ?, ?, ?)',
              params,
            );
          } else {
            await tx.execute(
              'UPDATE bundles SET document = ?, sequence = ?, updated_at = ? WHERE trust_domain = ?',
              params,
            );
          }
          changed = true;
          return next;
        },
        () => (changed ? [{ kind: 'bundle', op: 'update', trustDomain: trustDomain.name }] : []),
      );
    } catch (err) {
      wrap('update bundle', err);
    }
  }

  async listBundles(): Promise<SpiffeBundle[]> {
    try {
      const rows = await this.#db.query('SELECT trust_domain, document FROM bundles ORDER BY trust_domain');
      return rows.map((r) => parseSpiffeBundle(parseTrustDomain(String(r.trust_domain)), String(r.document)));
    } catch (err) {
      wrap('list bundles', err);
    }
  }

  async deleteBundle(trustDomain: TrustDomain): Promise<boolean> {
    let n: number;
    try {
      n = await this.#write(
        (tx) => tx.execute('DELETE FROM bundles WHERE trust_domain = ?', [trustDomain.name]),
        (deleted) => (deleted > 0 ? [{ kind: 'bundle', op: 'delete', trustDomain: trustDomain.name }] : []),
      );
    } catch (err) {
      wrap('delete bundle', err);
    }
    return n > 0;
  }

  async storeFetchedBundle(bundle: SpiffeBundle): Promise<boolean> {
    const td = bundle.trustDomain;
    let changed = false;
    try {
      await this.#write(
        async (tx) => {
          if (tx.dialect === 'postgres')
            await tx.execute('SELECT pg_advisory_xact_lock(hashtext(?))', [`bundle:${td.name}`]);
          const rows = await tx.query('SELECT document FROM bundles WHERE trust_domain = ?', [td.name]);
          const doc = rows[0]?.document;
          if (doc !== undefined && parseSpiffeBundle(td, String(doc)).equals(bundle)) return;
          const params = [bundle.marshal(), String(bundle.sequenceNumber ?? 0n), Date.now(), td.name];
          await tx.execute(
            doc === undefined
              ? 'INSERT INTO bundles (document, sequence, updated_at, trust_domain) VALUES (?, ?, ?, ?)'
              : 'UPDATE bundles SET document = ?, sequence = ?, updated_at = ? WHERE trust_domain = ?',
            params,
          );
          changed = true;
        },
        () => (changed ? [{ kind: 'bundle', op: 'update', trustDomain: td.name }] : []),
      );
    } catch (err) {
      wrap('store fetched bundle', err);
    }
    return changed;
  }

  async listFederationRelationships(): Promise<StoredFederationRelationship[]> {
    try {
      const rows = await this.#db.query('SELECT * FROM federation_relationships ORDER BY trust_domain');
      return rows.map(relationshipFromRow);
    } catch (err) {
      wrap('list federation relationships', err);
    }
  }

  async getFederationRelationship(trustDomain: string): Promise<StoredFederationRelationship | undefined> {
    try {
      const rows = await this.#db.query('SELECT * FROM federation_relationships WHERE trust_domain = ?', [
        trustDomain,
      ]);
      return rows[0] === undefined ? undefined : relationshipFromRow(rows[0]);
    } catch (err) {
      wrap('get federation relationship', err);
    }
  }

  async putFederationRelationship(
    rel: Omit<StoredFederationRelationship, 'createdAt' | 'updatedAt'>,
    mode: 'create' | 'update',
    bundle?: SpiffeBundle,
  ): Promise<StoredFederationRelationship> {
    if (bundle !== undefined && bundle.trustDomain.name !== rel.trustDomain)
      throw new TypeError('datastore: the bundle of a relationship must be of its trust domain');
    let stored: StoredFederationRelationship | undefined;
    try {
      stored = await this.#write(
        async (tx) => {
          const rows = await tx.query('SELECT * FROM federation_relationships WHERE trust_domain = ?', [
            rel.trustDomain,
          ]);
          const existing = rows[0] === undefined ? undefined : relationshipFromRow(rows[0]);
          if (mode === 'create' && existing !== undefined) return undefined;
          if (mode === 'update' && existing === undefined) return undefined;
          const now = Date.now();
          const params = [
            rel.bundleEndpointUrl,
            rel.profile,
            rel.endpointSpiffeId,
            rel.caBundlePem,
            now,
            rel.trustDomain,
          ];
          if (existing === undefined)
            await tx.execute(
              `INSERT INTO federation_relationships
                 (bundle_endpoint_url, profile, endpoint_spiffe_id, ca_bundle, updated_at, trust_domain, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)`,
              [...params, now],
            );
          else
            await tx.execute(
              `UPDATE federation_relationships SET bundle_endpoint_url = ?, profile = ?, endpoint_spiffe_id = ?,
                 ca_bundle = ?, updated_at = ? WHERE trust_domain = ?`,
              params,
            );
          if (bundle !== undefined) {
            const doc = (
              await tx.query('SELECT 1 AS x FROM bundles WHERE trust_domain = ?', [rel.trustDomain])
            )[0];
            await tx.execute(
              doc === undefined
                ? 'INSERT INTO bundles (document, sequence, updated_at, trust_domain) VALUES (?, ?, ?, ?)'
                : 'UPDATE bundles SET document = ?, sequence = ?, updated_at = ? WHERE trust_domain = ?',
              [bundle.marshal(), String(bundle.sequenceNumber ?? 0n), now, rel.trustDomain],
            );
          }
          return {
            ...rel,
            createdAt: existing?.createdAt ?? new Date(now),
            updatedAt: new Date(now),
          };
        },
        (r) =>
          r === undefined
            ? []
            : [
                ...(bundle === undefined
                  ? []
                  : [{ kind: 'bundle' as const, op: 'update' as const, trustDomain: rel.trustDomain }]),
                { kind: 'federation', op: 'upsert', trustDomain: rel.trustDomain },
              ],
      );
    } catch (err) {
      wrap(`${mode} federation relationship`, err);
    }
    if (stored === undefined)
      throw mode === 'create'
        ? new TesseraError(
            TesseraErrorCode.FEDERATION_EXISTS,
            `federation: a relationship with "${rel.trustDomain}" exists already; change it with tessera federation update`,
          )
        : federationNotFound(rel.trustDomain);
    return stored;
  }

  async deleteFederationRelationship(trustDomain: string): Promise<void> {
    let n: number;
    try {
      n = await this.#write(
        async (tx) => {
          const deleted = await tx.execute('DELETE FROM federation_relationships WHERE trust_domain = ?', [
            trustDomain,
          ]);
          if (deleted > 0) await tx.execute('DELETE FROM bundles WHERE trust_domain = ?', [trustDomain]);
          return deleted;
        },
        (deleted) =>
          deleted > 0
            ? [
                { kind: 'federation', op: 'delete', trustDomain },
                { kind: 'bundle', op: 'delete', trustDomain },
              ]
            : [],
      );
    } catch (err) {
      wrap('delete federation relationship', err);
    }
    if (n === 0) throw federationNotFound(trustDomain);
  }

  async attestAgent(input: AgentAttestationInput): Promise<AttestedAgent> {
    const now = Date.now();
    const selectors = selectorsKey(input.selectors);
    try {
      await this.#write(
        async (tx) => {
          const rows = await tx.query('SELECT banned FROM agents WHERE spiffe_id = ?', [input.spiffeId]);
          if (rows[0] === undefined) {
            await tx.execute(
              `INSERT INTO agents (spiffe_id, attestor, selectors, serial, previous_serial, expires_at, banned, created_at, updated_at)
             VALUES (?, ?, ?, ?, '', ?, 0, ?, ?)`,
              [input.spiffeId, input.attestor, selectors, input.serial, input.expiresAt.getTime(), now, now],
            );
            return;
          }
          if (Number(rows[0].banned) === 1) throw banned(input.spiffeId);
          await tx.execute(
            `UPDATE agents SET attestor = ?, selectors = ?, serial = ?, previous_serial = '', expires_at = ?, updated_at = ?
           WHERE spiffe_id = ?`,
            [input.attestor, selectors, input.serial, input.expiresAt.getTime(), now, input.spiffeId],
          );
        },
        () => [{ kind: 'agent', op: 'upsert', spiffeId: input.spiffeId }],
      );
    } catch (err) {
      wrap('record attested agent', err);
    }
    return (await this.getAgent(input.spiffeId)) as AttestedAgent;
  }

  async renewAgent(
    spiffeId: string,
    presentedSerial: string,
    newSerial: string,
    expiresAt: Date,
  ): Promise<AttestedAgent> {
    try {
      await this.#db.transaction(async (tx) => {
        const rows = await tx.query(
          'SELECT serial, previous_serial, banned FROM agents WHERE spiffe_id = ?',
          [spiffeId],
        );
        const row = rows[0];
        if (row === undefined) throw agentNotFound(spiffeId);
        if (Number(row.banned) === 1) throw banned(spiffeId);
        if (
          presentedSerial === '' ||
          (row.serial !== presentedSerial && row.previous_serial !== presentedSerial)
        )
          throw new TesseraError(
            TesseraErrorCode.PERMISSION_DENIED,
            `agent: "${spiffeId}" presented SVID serial ${presentedSerial}, which is not its current one; re-attest the agent`,
          );
        await tx.execute(
          'UPDATE agents SET serial = ?, previous_serial = ?, expires_at = ?, updated_at = ? WHERE spiffe_id = ?',
          [newSerial, presentedSerial, expiresAt.getTime(), Date.now(), spiffeId],
        );
      });
    } catch (err) {
      wrap('renew agent', err);
    }
    // No change event: a renewal changes no entitlement, and every call reads the current serial.
    return (await this.getAgent(spiffeId)) as AttestedAgent;
  }

  async getAgent(spiffeId: string): Promise<AttestedAgent | undefined> {
    try {
      const rows = await this.#db.query('SELECT * FROM agents WHERE spiffe_id = ?', [spiffeId]);
      return rows[0] === undefined ? undefined : toAgent(rows[0]);
    } catch (err) {
      wrap('get agent', err);
    }
  }

  async listAgents(options: ListAgentsOptions = {}): Promise<AgentPage> {
    const pageSize = Math.min(1000, Math.max(1, options.pageSize ?? 100));
    const bannedFilter = options.banned === undefined ? '' : `AND banned = ${options.banned ? 1 : 0}`;
    const want =
      options.bySelector === undefined ? undefined : `${options.bySelector.type}:${options.bySelector.value}`;
    try {
      const agents: AttestedAgent[] = [];
      let after = options.pageToken ?? '';
      // Selectors are one column, so a selector filter is applied here: read until the page is full.
      for (;;) {
        const rows = await this.#db.query(
          `SELECT * FROM agents WHERE spiffe_id > ? ${bannedFilter} ORDER BY spiffe_id LIMIT ?`,
          [after, pageSize + 1],
        );
        for (const r of rows) {
          const a = toAgent(r);
          if (want === undefined || a.selectors.some((x) => `${x.type}:${x.value}` === want)) agents.push(a);
          if (agents.length > pageSize) break;
        }
        if (agents.length > pageSize || rows.length <= pageSize) break;
        after = String(rows.at(-1)?.spiffe_id);
      }
      const page = agents.slice(0, pageSize);
      const last = page.at(-1)?.spiffeId;
      return agents.length > pageSize && last !== undefined
        ? { agents: page, nextPageToken: last }
        : { agents: page };
    } catch (err) {
      wrap('list agents', err);
    }
  }

  async countAgents(): Promise<number> {
    try {
      const rows = await this.#db.query('SELECT COUNT(*) AS n FROM agents');
      return Number(rows[0]?.n ?? 0);
    } catch (err) {
      wrap('count agents', err);
    }
  }

  async banAgent(spiffeId: string): Promise<void> {
    let n: number;
    try {
      n = await this.#write(
        (tx) =>
          tx.execute(
            "UPDATE agents SET banned = 1, serial = '', previous_serial = '', updated_at = ? WHERE spiffe_id = ?",
            [Date.now(), spiffeId],
          ),
        (changed) => (changed > 0 ? [{ kind: 'agent', op: 'ban', spiffeId }] : []),
      );
    } catch (err) {
      wrap('ban agent', err);
    }
    if (n === 0) throw agentNotFound(spiffeId);
  }

  async deleteAgent(spiffeId: string): Promise<void> {
    let n: number;
    try {
      n = await this.#write(
        (tx) => tx.execute('DELETE FROM agents WHERE spiffe_id = ?', [spiffeId]),
        (deleted) => (deleted > 0 ? [{ kind: 'agent', op: 'delete', spiffeId }] : []),
      );
    } catch (err) {
      wrap('evict agent', err);
    }
    if (n === 0) throw agentNotFound(spiffeId);
  }

  async countEntries(): Promise<number> {
    try {
      const rows = await this.#db.query('SELECT COUNT(*) AS n FROM registration_entries');
      return Number(rows[0]?.n ?? 0);
    } catch (err) {
      wrap('count entries', err);
    }
  }

  async createJoinToken(input: JoinTokenInput): Promise<void> {
    if (input.token.length < 16) throw new TypeError('join token must be at least 16 characters');
    try {
      await this.#write(
        (tx) =>
          tx.execute(
            'INSERT INTO join_tokens (token_hash, expires_at, agent_name, created_at) VALUES (?, ?, ?, ?)',
            [hashToken(input.token), input.expiresAt.getTime(), input.agentName ?? null, Date.now()],
          ),
        () => [{ kind: 'join_token', op: 'create' }],
      );
    } catch (err) {
      wrap('create join token', err);
    }
  }

  async useEvidence(attestor: string, digest: string, expiresAt: Date, now: Date): Promise<boolean> {
    try {
      return await this.#db.transaction(async (tx) => {
        await tx.execute('DELETE FROM used_evidence WHERE expires_at <= ?', [now.getTime()]);
        // One row per piece of evidence: of two servers inserting it at once, one inserts, the
        // other (after the first commits) inserts nothing and is told so.
        const inserted = await tx.execute(
          'INSERT INTO used_evidence (attestor, digest, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
          [attestor, digest, expiresAt.getTime()],
        );
        return inserted === 1;
      });
    } catch (err) {
      wrap('record used attestation evidence', err);
    }
  }

  async consumeJoinToken(token: string, now: Date): Promise<ConsumedJoinToken> {
    // Looked up by SHA-256: the stored value is never the secret, and the comparison the database
    // does is on the hash, which leaks nothing useful about the token through timing.
    const hash = hashToken(token);
    let row: Row | undefined;
    try {
      row = await this.#write(
        async (tx) => {
          const rows = await tx.query('SELECT expires_at, agent_name FROM join_tokens WHERE token_hash = ?', [
            hash,
          ]);
          if (rows[0] === undefined) return undefined;
          const deleted = await tx.execute('DELETE FROM join_tokens WHERE token_hash = ?', [hash]);
          return deleted === 1 ? rows[0] : undefined;
        },
        (used) => (used === undefined ? [] : [{ kind: 'join_token', op: 'use' }]),
      );
    } catch (err) {
      wrap('use join token', err);
    }
    if (row === undefined) {
      throw new TesseraError(
        TesseraErrorCode.JOIN_TOKEN_INVALID,
        'join token: unknown or already used; generate a new one',
      );
    }
    const expiresAt = new Date(Number(row.expires_at));
    if (now.getTime() >= expiresAt.getTime()) {
      throw new TesseraError(
        TesseraErrorCode.JOIN_TOKEN_INVALID,
        `join token: expired at ${expiresAt.toISOString()}; generate a new one`,
      );
    }
    return {
      expiresAt,
      agentName: row.agent_name === null || row.agent_name === undefined ? undefined : String(row.agent_name),
    };
  }

  async recordAuthority(a: Omit<AuthorityRecord, 'tainted' | 'revoked'>): Promise<void> {
    try {
      await this.#write(
        (tx) =>
          tx.execute(
            `INSERT INTO authorities (kind, id, status, not_after, certificate, tainted, revoked, updated_at)
             VALUES (?, ?, ?, ?, ?, 0, 0, ?)
             ON CONFLICT (kind, id) DO UPDATE SET status = excluded.status, not_after = excluded.not_after,
               certificate = excluded.certificate, updated_at = excluded.updated_at`,
            [a.kind, a.id, a.status, a.notAfter.getTime(), a.certificate, Date.now()],
          ),
        () => [{ kind: 'authority', op: 'record', authorityKind: a.kind, id: a.id }],
      );
    } catch (err) {
      wrap('record authority', err);
    }
  }

  async listAuthorities(): Promise<AuthorityRecord[]> {
    try {
      const rows = await this.#db.query('SELECT * FROM authorities ORDER BY kind, not_after, id');
      return rows.map((r) => ({
        kind: String(r.kind) as 'x509' | 'jwt',
        id: String(r.id),
        status: String(r.status) as AuthorityRecord['status'],
        notAfter: new Date(Number(r.not_after)),
        certificate: String(r.certificate),
        tainted: Number(r.tainted) === 1,
        revoked: Number(r.revoked) === 1,
      }));
    } catch (err) {
      wrap('list authorities', err);
    }
  }

  async taintAuthority(a: Omit<AuthorityRecord, 'tainted' | 'revoked' | 'status'>): Promise<void> {
    try {
      await this.#write(
        (tx) =>
          tx.execute(
            `INSERT INTO authorities (kind, id, status, not_after, certificate, tainted, revoked, updated_at)
             VALUES (?, ?, 'old', ?, ?, 1, 0, ?)
             ON CONFLICT (kind, id) DO UPDATE SET tainted = 1, updated_at = excluded.updated_at`,
            [a.kind, a.id, a.notAfter.getTime(), a.certificate, Date.now()],
          ),
        () => [{ kind: 'authority', op: 'taint', authorityKind: a.kind, id: a.id }],
      );
    } catch (err) {
      wrap('taint authority', err);
    }
  }

  async revokeAuthority(kind: 'x509' | 'jwt', id: string): Promise<void> {
    let n: number;
    try {
      n = await this.#write(
        (tx) =>
          tx.execute(
            'UPDATE authorities SET revoked = 1, updated_at = ? WHERE kind = ? AND id = ? AND tainted = 1',
            [Date.now(), kind, id],
          ),
        (changed) => (changed > 0 ? [{ kind: 'authority', op: 'revoke', authorityKind: kind, id }] : []),
      );
    } catch (err) {
      wrap('revoke authority', err);
    }
    if (n === 0)
      throw new TesseraError(
        TesseraErrorCode.INVALID_ARGUMENT,
        `authority: ${kind} authority ${id} is not tainted; taint it first so agents move away from it`,
      );
  }

  async recordX509Svids(records: readonly X509SvidRecord[]): Promise<void> {
    if (records.length === 0) return;
    try {
      await this.#db.transaction(async (tx) => {
        // Multi-row inserts of up to 100 rows (500 parameters): a batch of SVIDs is one statement.
        for (let i = 0; i < records.length; i += 100) {
          const chunk = records.slice(i, i + 100);
          await tx.execute(
            `INSERT INTO x509_svids (serial, authority_id, spiffe_id, entry_id, expires_at)
             VALUES ${chunk.map(() => '(?, ?, ?, ?, ?)').join(', ')} ON CONFLICT DO NOTHING`,
            chunk.flatMap((r) => [r.serial, r.authorityId, r.spiffeId, r.entryId, r.expiresAt.getTime()]),
          );
        }
      });
    } catch (err) {
      wrap('record issued X509-SVIDs', err);
    }
  }

  async findX509Svids(query: { serial: string } | { entryId: string }, now: Date): Promise<X509SvidRecord[]> {
    const [column, value] = 'serial' in query ? ['serial', query.serial] : ['entry_id', query.entryId];
    try {
      const rows = await this.#db.query(
        `SELECT serial, authority_id, spiffe_id, entry_id, expires_at FROM x509_svids
         WHERE ${column} = ? AND expires_at > ? ORDER BY expires_at`,
        [value, now.getTime()],
      );
      return rows.map(svidRecordFromRow);
    } catch (err) {
      wrap('find issued X509-SVIDs', err);
    }
  }

  async revokeX509Svids(revocations: readonly X509Revocation[]): Promise<X509Revocation[]> {
    try {
      return await this.#write(
        async (tx) => {
          const fresh: X509Revocation[] = [];
          for (const r of revocations) {
            const n = await tx.execute(
              `INSERT INTO x509_revocations (serial, authority_id, spiffe_id, entry_id, reason, revoked_at, expires_at)
               VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
              [
                r.serial,
                r.authorityId,
                r.spiffeId,
                r.entryId,
                r.reason,
                r.revokedAt.getTime(),
                r.expiresAt.getTime(),
              ],
            );
            if (n === 1) fresh.push(r);
          }
          return fresh;
        },
        (fresh) =>
          [...new Set(fresh.map((r) => r.authorityId))].map((authorityId) => ({
            kind: 'revocation' as const,
            op: 'revoke' as const,
            authorityId,
          })),
      );
    } catch (err) {
      wrap('revoke X509-SVIDs', err);
    }
  }

  async listX509Revocations(now: Date, authorityId?: string): Promise<X509Revocation[]> {
    try {
      const rows = await this.#db.query(
        `SELECT serial, authority_id, spiffe_id, entry_id, reason, revoked_at, expires_at FROM x509_revocations
         WHERE expires_at > ?${authorityId === undefined ? '' : ' AND authority_id = ?'} ORDER BY revoked_at, serial`,
        authorityId === undefined ? [now.getTime()] : [now.getTime(), authorityId],
      );
      return rows.map((r) => ({
        ...svidRecordFromRow(r),
        reason: Number(r.reason),
        revokedAt: new Date(Number(r.revoked_at)),
      }));
    } catch (err) {
      wrap('list revoked X509-SVIDs', err);
    }
  }

  async putX509Crl(crl: Omit<StoredX509Crl, 'updatedAt'>): Promise<boolean> {
    try {
      return await this.#write(
        async (tx) =>
          (await tx.execute(
            `INSERT INTO x509_crls (authority_id, crl_number, der, not_after, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (authority_id) DO UPDATE SET crl_number = excluded.crl_number, der = excluded.der,
               not_after = excluded.not_after, updated_at = excluded.updated_at
             WHERE x509_crls.crl_number < excluded.crl_number`,
            [
              crl.authorityId,
              Number(crl.number),
              crl.der.toString('base64'),
              crl.notAfter.getTime(),
              Date.now(),
            ],
          )) === 1,
        (stored) => (stored ? [{ kind: 'crl', op: 'update', authorityId: crl.authorityId }] : []),
      );
    } catch (err) {
      wrap('store CRL', err);
    }
  }

  async listX509Crls(now: Date): Promise<StoredX509Crl[]> {
    try {
      const rows = await this.#db.query(
        'SELECT authority_id, crl_number, der, not_after, updated_at FROM x509_crls WHERE not_after > ? ORDER BY authority_id',
        [now.getTime()],
      );
      return rows.map((r) => ({
        authorityId: String(r.authority_id),
        number: BigInt(String(r.crl_number)),
        der: Buffer.from(String(r.der), 'base64'),
        notAfter: new Date(Number(r.not_after)),
        updatedAt: new Date(Number(r.updated_at)),
      }));
    } catch (err) {
      wrap('list CRLs', err);
    }
  }

  async pruneX509(now: Date): Promise<string[]> {
    const t = now.getTime();
    try {
      return await this.#write(
        async (tx) => {
          const rows = await tx.query(
            'SELECT DISTINCT authority_id FROM x509_revocations WHERE expires_at <= ? ORDER BY authority_id',
            [t],
          );
          await tx.execute('DELETE FROM x509_revocations WHERE expires_at <= ?', [t]);
          await tx.execute('DELETE FROM x509_svids WHERE expires_at <= ?', [t]);
          await tx.execute('DELETE FROM x509_crls WHERE not_after <= ?', [t]);
          return rows.map((r) => String(r.authority_id));
        },
        (ids) =>
          ids.map((authorityId) => ({ kind: 'revocation' as const, op: 'prune' as const, authorityId })),
      );
    } catch (err) {
      wrap('prune expired X509-SVID records', err);
    }
  }

  /** Stops following the feed and closes the database; later calls do nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.follower?.close();
    this.#feed.close();
    await this.#db.close();
  }

  #columns(e: ReturnType<typeof normalizeEntry>): unknown[] {
    return [
      e.spiffeId,
      e.parentId,
      selectorsKey(e.selectors),
      e.x509SvidTtl,
      e.jwtSvidTtl,
      JSON.stringify(e.dnsNames),
      JSON.stringify(e.federatesWith),
      e.admin ? 1 : 0,
      e.downstream ? 1 : 0,
      e.hint,
      e.expiresAt?.getTime() ?? null,
      JSON.stringify(e.metadata),
    ];
  }

  async #insertSelectors(tx: SqlDriver, id: string, selectors: readonly Selector[]): Promise<void> {
    for (const s of selectors)
      await tx.execute('INSERT INTO entry_selectors (entry_id, type, value) VALUES (?, ?, ?)', [
        id,
        s.type,
        s.value,
      ]);
  }
}

function notFound(id: string): TesseraError {
  return new TesseraError(TesseraErrorCode.ENTRY_NOT_FOUND, `entry: no entry with ID ${JSON.stringify(id)}`);
}

function agentNotFound(spiffeId: string): TesseraError {
  return new TesseraError(TesseraErrorCode.AGENT_NOT_FOUND, `agent: no attested agent "${spiffeId}"`);
}

function banned(spiffeId: string): TesseraError {
  return new TesseraError(
    TesseraErrorCode.AGENT_BANNED,
    `agent: "${spiffeId}" is banned; evict it (tessera agent evict) before it can attest again`,
  );
}

async function readEntry(db: SqlDriver, id: string): Promise<RegistrationEntry | undefined> {
  const rows = await db.query('SELECT * FROM registration_entries WHERE id = ?', [id]);
  const row = rows[0];
  if (row === undefined) return undefined;
  const sel = await db.query(
    'SELECT entry_id, type, value FROM entry_selectors WHERE entry_id = ? ORDER BY type, value',
    [id],
  );
  return toEntry(row, sel);
}

function groupSelectors(selectors: readonly Row[]): Map<string, Row[]> {
  const byEntry = new Map<string, Row[]>();
  for (const s of selectors) {
    const k = String(s.entry_id);
    const list = byEntry.get(k);
    if (list === undefined) byEntry.set(k, [s]);
    else list.push(s);
  }
  return byEntry;
}

function toAgent(row: Row): AttestedAgent {
  const sel = String(row.selectors);
  return {
    spiffeId: String(row.spiffe_id),
    attestor: String(row.attestor),
    selectors:
      sel === ''
        ? []
        : sel.split('\n').map((s) => {
            const i = s.indexOf(':');
            return { type: s.slice(0, i), value: s.slice(i + 1) };
          }),
    serial: String(row.serial),
    previousSerial: String(row.previous_serial),
    expiresAt: new Date(Number(row.expires_at)),
    banned: Number(row.banned) === 1,
    createdAt: new Date(Number(row.created_at)),
    updatedAt: new Date(Number(row.updated_at)),
  };
}

function toEntry(row: Row, selectors: readonly Row[]): RegistrationEntry {
  return {
    id: String(row.id),
    spiffeId: String(row.spiffe_id),
    parentId: String(row.parent_id),
    selectors: selectors.map((s) => ({ type: String(s.type), value: String(s.value) })),
    x509SvidTtl: Number(row.x509_svid_ttl),
    jwtSvidTtl: Number(row.jwt_svid_ttl),
    dnsNames: JSON.parse(String(row.dns_names)) as string[],
    federatesWith: JSON.parse(String(row.federates_with)) as string[],
    admin: Number(row.admin) === 1,
    downstream: Number(row.downstream) === 1,
    hint: String(row.hint),
    expiresAt:
      row.expires_at === null || row.expires_at === undefined ? undefined : new Date(Number(row.expires_at)),
    metadata: JSON.parse(String(row.metadata)) as Record<string, string>,
    revision: Number(row.revision),
    createdAt: new Date(Number(row.created_at)),
    updatedAt: new Date(Number(row.updated_at)),
  };
}

function svidRecordFromRow(r: Row): X509SvidRecord {
  return {
    serial: String(r.serial),
    authorityId: String(r.authority_id),
    spiffeId: String(r.spiffe_id),
    entryId: String(r.entry_id),
    expiresAt: new Date(Number(r.expires_at)),
  };
}

function relationshipFromRow(r: Row): StoredFederationRelationship {
  return {
    trustDomain: String(r.trust_domain),
    bundleEndpointUrl: String(r.bundle_endpoint_url),
    profile: String(r.profile) as StoredFederationRelationship['profile'],
    endpointSpiffeId: String(r.endpoint_spiffe_id),
    caBundlePem: String(r.ca_bundle),
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
  };
}

function federationNotFound(trustDomain: string): TesseraError {
  return new TesseraError(
    TesseraErrorCode.FEDERATION_NOT_FOUND,
    `federation: no stored relationship with "${trustDomain}" (tessera federation list shows them all)`,
  );
}
