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
export class EntryIndex extends EventEmitter<{ change: [EntryChange] }> {
  readonly #serverId: string;
  readonly #byId = new Map<string, RegistrationEntry>();
  readonly #byParent = new Map<string, Set<string>>();
  readonly #unsubscribe: () => void;

  private constructor(serverId: string, datastore: Datastore) {
    super();
    this.#serverId = serverId;
    this.#unsubscribe = datastore.onChange((c) => this.#apply(c));
  }

  /** Subscribes first, then loads every entry, so no change between the two is lost. */
  static async load(datastore: Datastore, serverId: string): Promise<EntryIndex> {
    const index = new EntryIndex(serverId, datastore);
    let pageToken: string | undefined;
    do {
      const page = await datastore.listEntries({ pageSize: 1000, ...(pageToken ? { pageToken } : {}) });
      for (const e of page.entries) if (!index.#byId.has(e.id)) index.#put(e);
      pageToken = page.nextPageToken;
    } while (pageToken !== undefined);
    return index;
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
    if (c.kind !== 'entry') return;
    const before = this.#byId.get(c.entry.id);
    // A change can only move forward: an older revision arriving late is ignored.
    if (c.op === 'upsert' && before !== undefined && before.revision >= c.entry.revision) return;
    if (before !== undefined) this.#remove(before);
    if (c.op === 'upsert') this.#put(c.entry);
    if (before === undefined && c.op === 'delete') return;
    this.emit('change', { before, after: c.op === 'upsert' ? c.entry : undefined });
  }
}
