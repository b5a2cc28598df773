// The registry in memory: every entry, indexed by parent, kept current from the datastore's change
// feed (servers never poll the datastore). It answers the question the agent API asks on every call:
// which entries is this agent entitled to?
import { EventEmitter } from 'node:events';
import type { Datastore, DatastoreChange, RegistrationEntry, Selector } from '../datastore/types.js';

const key = (s: Selector) => `${s.type}:${s.value}`;

export interface EntryChange {
  /** The entry before the change (absent for a creation). */
  readonly before: RegistrationEntry | undefined;
  /** The entry after the change (absent for a deletion). */
  readonly after: RegistrationEntry | undefined;
}

/**
 * Entitlement, as in SPIRE: an agent gets the entries whose parent is its own SPIFFE ID or the
 * SPIFFE ID of a node alias it matches (an entry parented to the server ID whose selectors are all
 * among the agent's node selectors), and, recursively, the entries parented to any SPIFFE ID it got.
 * Expired entries are not served. Emits 'change' (EntryChange) after each applied change.
 */
export class EntryIndex extends EventEmitter<{ change: [EntryChange]; reloadError: [Error] }> {
  readonly #serverId: string;
  readonly #datastore: Datastore;
  /** The feed revision the index is current at: changes up to it are in it. */
  #revision = 0;
  #reloading: Promise<void> | undefined;
  /** Changes that arrived during a reload, applied after it when newer than its snapshot. */
  #held: DatastoreChange[] | undefined;
  #retry: NodeJS.Timeout | undefined;
  readonly #byId = new Map<string, RegistrationEntry>();
  readonly #byParent = new Map<string, Set<string>>();
  readonly #unsubscribe: () => void;

  private constructor(serverId: string, datastore: Datastore) {
    super();
    this.#serverId = serverId;
    this.#datastore = datastore;
    this.#unsubscribe = datastore.onChange((c) => this.#apply(c));
  }

  /**
   * Subscribes first, then loads every entry from one snapshot; changes the snapshot already holds
   * (by revision) are skipped, so none is lost or applied twice.
   */
  static async load(datastore: Datastore, serverId: string): Promise<EntryIndex> {
    const index = new EntryIndex(serverId, datastore);
    // Changes told while the snapshot is read are held, then applied if newer than it.
    index.#held = [];
    try {
      const { entries, revision } = await datastore.snapshotEntries();
      for (const e of entries) index.#put(e);
      index.#revision = revision;
    } catch (err) {
      index.close();
      throw err;
    }
    const held = index.#held;
    index.#held = undefined;
    for (const c of held) index.#apply(c);
    return index;
  }

  /** The feed revision the index is current at. */
  get revision(): number {
    return this.#revision;
  }

  /**
   * Reads every entry again and applies the difference as changes (the feed said it was
   * inconsistent); concurrent calls share one reload. Changes told meanwhile are held, then applied
   * if newer than the snapshot. A failed read is retried every second ('reloadError' says why).
   */
  reload(): Promise<void> {
    this.#reloading ??= (async () => {
      this.#held ??= [];
      try {
        const { entries, revision } = await this.#datastore.snapshotEntries();
        const fresh = new Map(entries.map((e) => [e.id, e]));
        for (const before of [...this.#byId.values()])
          if (!fresh.has(before.id)) {
            this.#remove(before);
            this.emit('change', { before, after: undefined });
          }
        for (const after of entries) {
          const before = this.#byId.get(after.id);
          if (before !== undefined && before.revision === after.revision) continue;
          if (before !== undefined) this.#remove(before);
          this.#put(after);
          this.emit('change', { before, after });
        }
        this.#revision = Math.max(this.#revision, revision);
        const held = this.#held;
        this.#held = undefined;
        for (const c of held) this.#apply(c);
      } catch (err) {
        this.emit('reloadError', err as Error);
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          void this.reload();
        }, 1000);
        this.#retry.unref();
      } finally {
        this.#reloading = undefined;
      }
    })();
    return this.#reloading;
  }

  get size(): number {
    return this.#byId.size;
  }

  get(id: string): RegistrationEntry | undefined {
    return this.#byId.get(id);
  }

  /** Entries directly under a parent SPIFFE ID. */
  children(parentId: string): RegistrationEntry[] {
    return [...(this.#byParent.get(parentId) ?? [])].flatMap((id) => {
      const e = this.#byId.get(id);
      return e === undefined ? [] : [e];
    });
  }

  /** Whether an unexpired entry for `spiffeId` is marked admin (its SVIDs may call the admin API). */
  isAdmin(spiffeId: string, now: Date): boolean {
    for (const e of this.#byId.values())
      if (e.admin && e.spiffeId === spiffeId && (e.expiresAt === undefined || e.expiresAt > now)) return true;
    return false;
  }

  /** The SPIFFE IDs an agent acts for: its own and those of the node aliases its selectors match. */
  roots(agentId: string, nodeSelectors: readonly Selector[]): string[] {
    const have = new Set(nodeSelectors.map(key));
    const aliases = this.children(this.#serverId)
      .filter((a) => a.selectors.every((s) => have.has(key(s))))
      .map((a) => a.spiffeId);
    return [agentId, ...new Set(aliases)];
  }

  /** Every entry the agent is entitled to at `now`, by entry ID. */
  entitled(agentId: string, nodeSelectors: readonly Selector[], now: Date): Map<string, RegistrationEntry> {
    const out = new Map<string, RegistrationEntry>();
    const seen = new Set<string>();
    const queue = this.roots(agentId, nodeSelectors);
    const t = now.getTime();
    while (queue.length > 0) {
      const parent = queue.pop() as string;
      if (seen.has(parent)) continue;
      seen.add(parent);
      for (const e of this.children(parent)) {
        if (e.expiresAt !== undefined && e.expiresAt.getTime() <= t) continue;
        out.set(e.id, e);
        if (!seen.has(e.spiffeId)) queue.push(e.spiffeId);
      }
    }
    return out;
  }

  close(): void {
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    this.#unsubscribe();
    this.removeAllListeners();
  }

  #put(e: RegistrationEntry): void {
    this.#byId.set(e.id, e);
    let set = this.#byParent.get(e.parentId);
    if (set === undefined) {
      set = new Set();
      this.#byParent.set(e.parentId, set);
    }
    set.add(e.id);
  }

  #remove(e: RegistrationEntry): void {
    this.#byId.delete(e.id);
    const set = this.#byParent.get(e.parentId);
    set?.delete(e.id);
    if (set?.size === 0) this.#byParent.delete(e.parentId);
  }

  #apply(c: DatastoreChange): void {
    if (c.kind === 'resync') {
      void this.reload();
      return;
    }
    if (this.#held !== undefined) {
      this.#held.push(c);
      return;
    }
    if (c.kind !== 'entry' || c.revision <= this.#revision) return;
    this.#revision = c.revision;
    const before = this.#byId.get(c.entry.id);
    // A change can only move forward: an older revision arriving late is ignored.
    if (c.op === 'upsert' && before !== undefined && before.revision >= c.entry.revision) return;
    if (before !== undefined) this.#remove(before);
    if (c.op === 'upsert') this.#put(c.entry);
    if (before === undefined && c.op === 'delete') return;
    this.emit('change', { before, after: c.op === 'upsert' ? c.entry : undefined });
  }
}
