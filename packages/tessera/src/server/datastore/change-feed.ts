// The change feed: how every server sharing a datastore learns of every write, in commit order.
//
// Each write records its changes as events in its own transaction, numbered from a counter row
// that the transaction bumps as its last statement (change_revision). The row lock serialises the
// bump, so revisions are gapless and commit in revision order: a reader that sees revision N+1 has
// N visible too (PostgreSQL makes a commit visible before it releases the transaction's locks). No
// event can be skipped the way auto-increment IDs that commit out of order are (SPIRE's
// skipped-event problems, spire #5341/#5342/#6876). A follower reads the events after the last
// revision it told, and checks that they follow on: a gap (events pruned while it was away) makes
// it tell `resync`, after which listeners re-read what they hold. Wake-ups (LISTEN/NOTIFY on
// PostgreSQL, the write itself in this process) only say "read now"; the events are the truth.
import type { Logger } from '@tessera/spiffe';
import type { DatastoreChange, RegistrationEntry } from './types.js';

/** The part of the SQL driver the feed uses (the full SqlDriver satisfies it). */
export interface FeedDb {
  readonly dialect: 'sqlite' | 'postgres';
  query(sql: string, params?: readonly unknown[]): Promise<Record<string, unknown>[]>;
  execute(sql: string, params?: readonly unknown[]): Promise<number>;
}

/** A change before it has a revision: what a write records. */
export type ChangeInput = DatastoreChange extends infer C
  ? C extends DatastoreChange
    ? Omit<C, 'revision'>
    : never
  : never;

/** The PostgreSQL channel whose notifications wake followers; the payload is the last revision. */
export const NOTIFY_CHANNEL = 'tessera_changes';

/** Events read per query. */
const PAGE = 1000;

interface EntryJson extends Omit<RegistrationEntry, 'expiresAt' | 'createdAt' | 'updatedAt'> {
  expiresAt: number | null;
  createdAt: number;
  updatedAt: number;
}

function entryJson(e: RegistrationEntry): EntryJson {
  return {
    ...e,
    expiresAt: e.expiresAt?.getTime() ?? null,
    createdAt: e.createdAt.getTime(),
    updatedAt: e.updatedAt.getTime(),
  };
}

function entryFromJson(j: EntryJson): RegistrationEntry {
  return {
    ...j,
    expiresAt: j.expiresAt === null ? undefined : new Date(j.expiresAt),
    createdAt: new Date(j.createdAt),
    updatedAt: new Date(j.updatedAt),
  };
}

/** An event row's columns; only entry events carry data (the whole entry), never a secret. */
function encode(c: ChangeInput): { kind: string; op: string; subject: string; data: string } {
  switch (c.kind) {
    case 'entry':
      return { kind: c.kind, op: c.op, subject: c.entry.id, data: JSON.stringify(entryJson(c.entry)) };
    case 'agent':
      return { kind: c.kind, op: c.op, subject: c.spiffeId, data: '' };
    case 'join_token':
      return { kind: c.kind, op: c.op, subject: '', data: '' };
    case 'bundle':
    case 'federation':
      return { kind: c.kind, op: c.op, subject: c.trustDomain, data: '' };
    case 'authority':
      return { kind: c.kind, op: c.op, subject: `${c.authorityKind}:${c.id}`, data: '' };
    case 'revocation':
    case 'crl':
      return { kind: c.kind, op: c.op, subject: c.authorityId, data: '' };
    case 'resync':
      throw new TypeError('datastore: resync is told by the feed, never recorded');
  }
}

function decode(row: Record<string, unknown>): DatastoreChange {
  const revision = Number(row.revision);
  const kind = String(row.kind);
  const op = String(row.op);
  const subject = String(row.subject);
  switch (kind) {
    case 'entry':
      return {
        revision,
        kind,
        op: op as 'upsert' | 'delete',
        entry: entryFromJson(JSON.parse(String(row.data)) as EntryJson),
      };
    case 'agent':
      return { revision, kind, op: op as 'upsert' | 'ban' | 'delete', spiffeId: subject };
    case 'join_token':
      return { revision, kind, op: op as 'create' | 'use' };
    case 'bundle':
      return { revision, kind, op: op as 'update' | 'delete', trustDomain: subject };
    case 'federation':
      return { revision, kind, op: op as 'upsert' | 'delete', trustDomain: subject };
    case 'authority': {
      const i = subject.indexOf(':');
      return {
        revision,
        kind,
        op: op as 'record' | 'taint' | 'revoke',
        authorityKind: subject.slice(0, i) as 'x509' | 'jwt',
        id: subject.slice(i + 1),
      };
    }
    case 'revocation':
      return { revision, kind, op: op as 'revoke' | 'prune', authorityId: subject };
    case 'crl':
      return { revision, kind, op: 'update', authorityId: subject };
    default:
      throw new Error(`unknown change kind ${JSON.stringify(kind)} at revision ${revision}`);
  }
}

/**
 * Records `changes` in the transaction `tx`; call it as the transaction's last step (the counter's
 * row lock is then held only until the commit, and never while waiting for another lock). Returns
 * the revision of the last change.
 */
export async function recordChanges(tx: FeedDb, changes: readonly ChangeInput[]): Promise<number> {
  const rows = await tx.query(
    'UPDATE change_revision SET revision = revision + ? WHERE id = 1 RETURNING revision',
    [changes.length],
  );
  const last = Number(rows[0]?.revision);
  let revision = last - changes.length;
  const now = Date.now();
  // Up to 500 events a statement (3,000 parameters, within SQLite's and PostgreSQL's limits).
  for (let i = 0; i < changes.length; i += 500) {
    const chunk = changes.slice(i, i + 500);
    const params = chunk.flatMap((c) => {
      const e = encode(c);
      return [++revision, e.kind, e.op, e.subject, e.data, now];
    });
    await tx.execute(
      `INSERT INTO change_events (revision, kind, op, subject, data, created_at) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}`,
      params,
    );
  }
  if (tx.dialect === 'postgres') await tx.execute(`SELECT pg_notify('${NOTIFY_CHANNEL}', ?)`, [String(last)]);
  return last;
}

/** The revision of the last committed change. */
export async function headRevision(db: FeedDb): Promise<number> {
  const rows = await db.query('SELECT revision FROM change_revision WHERE id = 1');
  return Number(rows[0]?.revision ?? 0);
}

export interface ChangeFeedOptions {
  /** Where events are kept for a follower that was away: older ones are pruned. Default 1 h. */
  retentionMs?: number;
  logger?: Logger;
}

/**
 * Follows the event table from `start` and tells listeners each change once, in revision order.
 * `poll()` reads what is new; concurrent calls share reads, and one made while a read runs gets a
 * read that starts after it. A failed read is retried a second later.
 */
export class ChangeFeed {
  readonly #db: FeedDb;
  readonly #logger: Logger;
  readonly #retentionMs: number;
  readonly #listeners = new Set<(change: DatastoreChange) => void>();
  #applied: number;
  #requested = 0;
  #loop: Promise<void> | undefined;
  readonly #waiters: { want: number; resolve: () => void }[] = [];
  #retry: NodeJS.Timeout | undefined;
  #lastPrune = Date.now();
  #closed = false;
  /** Reads that found a gap and told resync; for metrics and tests. */
  resyncs = 0;

  constructor(db: FeedDb, start: number, options: ChangeFeedOptions = {}) {
    this.#db = db;
    this.#applied = start;
    this.#logger = options.logger ?? {};
    this.#retentionMs = options.retentionMs ?? 3_600_000;
  }

  /** The revision of the last change told. */
  get revision(): number {
    return this.#applied;
  }

  onChange(listener: (change: DatastoreChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A wake-up with the revision it announces (if known): reads unless that is already told. */
  wake(announced?: number): void {
    if (announced !== undefined && announced <= this.#applied) return;
    void this.poll();
  }

  /** Resolves once everything up to `revision` was told (or a read after it failed; it is retried). */
  async caughtUp(revision: number): Promise<void> {
    if (revision <= this.#applied) return;
    await this.poll();
  }

  /** Reads and tells every change committed before the call. */
  poll(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    const want = ++this.#requested;
    const done = new Promise<void>((resolve) => this.#waiters.push({ want, resolve }));
    this.#loop ??= this.#drive();
    return done;
  }

  close(): void {
    this.#closed = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    for (const w of this.#waiters.splice(0)) w.resolve();
    this.#listeners.clear();
  }

  async #drive(): Promise<void> {
    let completed = 0;
    while (completed < this.#requested && !this.#closed) {
      const target = this.#requested;
      try {
        await this.#readAll();
        await this.#maybePrune();
      } catch (err) {
        this.#logger.error?.('datastore: reading the change feed failed; retrying in 1s', {
          error: (err as Error).message,
          revision: this.#applied,
        });
        if (this.#retry === undefined && !this.#closed) {
          this.#retry = setTimeout(() => {
            this.#retry = undefined;
            void this.poll();
          }, 1000);
          this.#retry.unref();
        }
      }
      completed = target;
      for (let i = this.#waiters.length - 1; i >= 0; i--) {
        const w = this.#waiters[i] as { want: number; resolve: () => void };
        if (w.want <= target) {
          this.#waiters.splice(i, 1);
          w.resolve();
        }
      }
    }
    this.#loop = undefined;
    // A poll() that raced the loop's end starts a new loop.
    if (this.#waiters.length > 0 && !this.#closed) this.#loop = this.#drive();
  }

  async #readAll(): Promise<void> {
    for (;;) {
      // The head first: every event up to it committed with it, so the read after it sees them
      // all. An event missing below the head is a real gap (pruned), never one still committing.
      const head = await headRevision(this.#db);
      if (head <= this.#applied) return;
      const rows = await this.#db.query(
        'SELECT revision, kind, op, subject, data FROM change_events WHERE revision > ? AND revision <= ? ORDER BY revision LIMIT ?',
        [this.#applied, head, PAGE],
      );
      for (const row of rows) {
        const revision = Number(row.revision);
        if (this.#closed) return;
        if (revision !== this.#applied + 1) {
          this.#resync(head, `the next event found was ${revision}, not ${this.#applied + 1}`);
          return;
        }
        let change: DatastoreChange;
        try {
          change = decode(row);
        } catch (err) {
          this.#resync(head, (err as Error).message);
          return;
        }
        this.#applied = revision;
        this.#tell(change);
      }
      if (rows.length < PAGE && this.#applied < head) {
        this.#resync(head, `the events after ${this.#applied} up to ${head} are gone (pruned)`);
        return;
      }
    }
  }

  #resync(head: number, why: string): void {
    this.resyncs++;
    this.#logger.warn?.('datastore: the change feed is inconsistent; reloading everything', {
      revision: this.#applied,
      head,
      reason: why,
    });
    this.#applied = Math.max(head, this.#applied);
    this.#tell({ revision: this.#applied, kind: 'resync' });
  }

  #tell(change: DatastoreChange): void {
    for (const l of this.#listeners) {
      try {
        l(change);
      } catch (err) {
        // A listener's bug must not undo or hide a committed write, nor stop the others.
        this.#logger.error?.('datastore: a change listener failed', {
          error: (err as Error).message,
          revision: change.revision,
        });
      }
    }
  }

  /** At most every 10 minutes: drops events older than the retention. */
  async #maybePrune(): Promise<void> {
    const now = Date.now();
    if (now - this.#lastPrune < 600_000) return;
    this.#lastPrune = now;
    await this.#db.execute('DELETE FROM change_events WHERE created_at < ?', [now - this.#retentionMs]);
  }
}
