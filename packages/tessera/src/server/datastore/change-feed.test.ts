// The change feed across servers: several datastores on one throwaway PostgreSQL cluster, each as a
// server would hold it. Every change made through one is told to all, once, in the same order; a
// killed LISTEN connection, long and short transactions together, a gap and a late start lose
// nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseTrustDomain } from '@tessera/spiffe';
import { type PostgresCluster, postgresAvailable, startPostgres, TestCa } from '@tessera/testkit';
import pg from 'pg';
import { EntryIndex } from '../registry/entry-index.js';
import { headRevision } from './change-feed.js';
import { FEED_APPLICATION_NAME, openPostgresDatastore } from './postgres.js';
import type { SqlDatastore } from './sql-datastore.js';
import type { DatastoreChange, EntryInput } from './types.js';

const AGENT = 'spiffe://example.org/tessera/agent/join_token/feed';

function entry(path: string, extra: Partial<EntryInput> = {}): EntryInput {
  return {
    spiffeId: `spiffe://example.org${path}`,
    parentId: AGENT,
    selectors: [{ type: 'unix', value: 'uid:1000' }],
    ...extra,
  };
}

/** What a listener was told, as comparable strings. */
function describeChange(c: DatastoreChange): string {
  switch (c.kind) {
    case 'entry':
      return `${c.revision} entry ${c.op} ${c.entry.spiffeId}@${c.entry.revision}`;
    case 'agent':
      return `${c.revision} agent ${c.op} ${c.spiffeId}`;
    case 'bundle':
      return `${c.revision} bundle ${c.op} ${c.trustDomain}`;
    case 'federation':
      return `${c.revision} federation ${c.op} ${c.trustDomain}`;
    case 'authority':
      return `${c.revision} authority ${c.op} ${c.authorityKind}:${c.id}`;
    case 'join_token':
      return `${c.revision} join_token ${c.op}`;
    case 'revocation':
    case 'crl':
      return `${c.revision} ${c.kind} ${c.op} ${c.authorityId}`;
    case 'resync':
      return `${c.revision} resync`;
  }
}

/** Records what `ds` is told. */
function record(ds: SqlDatastore): { seen: DatastoreChange[]; off: () => void } {
  const seen: DatastoreChange[] = [];
  const off = ds.onChange((c) => seen.push(c));
  return { seen, off };
}

/** Resolves once `ds` has told every change up to `revision`; fails after `ms`. */
function toldUpTo(ds: SqlDatastore, revision: number, ms = 10_000): Promise<void> {
  if (ds.revision >= revision) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`the feed stayed at revision ${ds.revision}, never reached ${revision}`));
    }, ms);
    const off = ds.onChange(() => {
      if (ds.revision >= revision) {
        clearTimeout(t);
        off();
        resolve();
      }
    });
  });
}

if (postgresAvailable('change feed')) {
  describe('change feed across servers on one PostgreSQL', () => {
    let cluster: PostgresCluster;
    let admin: pg.Client;
    const open: SqlDatastore[] = [];
    // A long safety interval: what arrives must come by notification or by catch-up.
    const server = async (pollIntervalMs = 60_000) => {
      const ds = await openPostgresDatastore(cluster.connectionString, { pollIntervalMs });
      open.push(ds);
      return ds;
    };
    const head = () => headRevision({ dialect: 'postgres', query: adminQuery, execute: async () => 0 });
    const adminQuery = async (sql: string, params: readonly unknown[] = []) => {
      let n = 0;
      return (
        await admin.query(
          sql.replace(/\?/g, () => `$${++n}`),
          params as unknown[],
        )
      ).rows;
    };

    before(async () => {
      cluster = await startPostgres();
      admin = new pg.Client({ connectionString: cluster.connectionString });
      await admin.connect();
    });
    after(async () => {
      for (const ds of open) await ds.close();
      await admin.end();
      await cluster.stop();
    });

    it('every change made through any server is told to every server once, in one order', async () => {
      const [a, b, c] = [await server(), await server(), await server()];
      const onB = record(b);
      const onC = record(c);
      const onA = record(a);
      const e = await a.createEntry(entry('/feed/web'));
      await c.updateEntry(e.id, e.revision, entry('/feed/web', { hint: 'moved' }));
      const agent = await b.attestAgent({
        spiffeId: AGENT,
        attestor: 'join_token',
        selectors: [],
        serial: '01',
        expiresAt: new Date(Date.now() + 3_600_000),
      });
      await a.createJoinToken({
        token: 'a-token-of-sixteen-chars',
        expiresAt: new Date(Date.now() + 60_000),
      });
      await c.consumeJoinToken('a-token-of-sixteen-chars', new Date());
      const td = parseTrustDomain('partner.example');
      await c.updateBundle(td, (cur) =>
        cur.with({ x509Authorities: [TestCa.create({ trustDomain: td.name }).root] }),
      );
      await a.taintAuthority({
        kind: 'jwt',
        id: 'kid-1',
        notAfter: new Date(Date.now() + 60_000),
        certificate: '',
      });
      await b.banAgent(agent.spiffeId);
      await a.deleteEntry(e.id);
      const last = await head();
      await Promise.all([toldUpTo(a, last), toldUpTo(b, last), toldUpTo(c, last)]);
      const expected = onA.seen.map(describeChange);
      assert.deepEqual(
        expected.map((line) => line.replace(/^\d+ /, '')),
        [
          'entry upsert spiffe://example.org/feed/web@1',
          'entry upsert spiffe://example.org/feed/web@2',
          `agent upsert ${AGENT}`,
          'join_token create',
          'join_token use',
          'bundle update partner.example',
          'authority taint jwt:kid-1',
          `agent ban ${AGENT}`,
          'entry delete spiffe://example.org/feed/web@2',
        ],
      );
      const revisions = onA.seen.map((x) => x.revision);
      assert.deepEqual(
        revisions,
        revisions.map((_, i) => (revisions[0] as number) + i),
        'gapless revisions',
      );
      assert.deepEqual(
        onB.seen.map(describeChange),
        expected,
        'server B was told the same, in the same order',
      );
      assert.deepEqual(
        onC.seen.map(describeChange),
        expected,
        'server C was told the same, in the same order',
      );
      for (const x of [onA, onB, onC]) x.off();
    });

    it('a killed LISTEN connection is re-established and no change is lost', async () => {
      const [a, b] = [await server(), await server()];
      const onB = record(b);
      await toldUpTo(b, await head());
      await waitUntil(() => b.follower?.connected === true);
      const killed = await admin.query(
        'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1',
        [FEED_APPLICATION_NAME],
      );
      assert.ok(killed.rows.length >= 2, 'the listening connections were found and terminated');
      // Written while B's listener is down or reconnecting: B catches up when it is back.
      const during = await a.createEntry(entry('/feed/during-outage'));
      await toldUpTo(b, await head());
      const reconnected = b.follower?.reconnects ?? 0;
      assert.ok(reconnected >= 1, `B reconnected (${reconnected})`);
      // Once listening again, a notification (not the 60 s safety check) brings the next change.
      await waitUntil(() => b.follower?.connected === true);
      const later = await a.createEntry(entry('/feed/after-outage'));
      await toldUpTo(b, await head(), 5000);
      const ids = onB.seen.flatMap((c) => (c.kind === 'entry' ? [c.entry.id] : []));
      assert.deepEqual(ids, [during.id, later.id]);
      onB.off();
    });

    it('long and short transactions committing together: every change is told, none skipped', async () => {
      const [a, b, c] = [await server(), await server(), await server()];
      const onB = record(b);
      const start = b.revision;
      // One long transaction (a 3,000-entry batch) while 200 short ones commit beside it.
      const long = a.createEntries(Array.from({ length: 3000 }, (_, i) => entry(`/feed/long-${i}`)));
      const short = (async () => {
        const ids: string[] = [];
        for (let i = 0; i < 200; i++) ids.push((await c.createEntry(entry(`/feed/short-${i}`))).id);
        return ids;
      })();
      const [longEntries, shortIds] = await Promise.all([long, short]);
      await toldUpTo(b, await head(), 30_000);
      const told = onB.seen.flatMap((x) => (x.kind === 'entry' ? [x.entry.id] : []));
      assert.equal(told.length, 3200);
      assert.deepEqual(new Set(told), new Set([...longEntries.map((e) => e.id), ...shortIds]));
      assert.deepEqual(
        onB.seen.map((x) => x.revision),
        onB.seen.map((_, i) => start + 1 + i),
        'revisions gapless from where B started',
      );
      assert.equal(
        onB.seen.some((x) => x.kind === 'resync'),
        false,
      );
      onB.off();
    });

    it('a gap in the events (pruned while away) is found: resync, and the entry index reloads', async () => {
      const [a, b] = [await server(), await server()];
      const index = await EntryIndex.load(b, 'spiffe://example.org/tessera/server');
      try {
        const kept = await a.createEntry(entry('/feed/kept'));
        await toldUpTo(b, await head());
        // An entry written behind the feed's back, its event gone: as if pruned while B was away.
        await admin.query('BEGIN');
        await admin.query(
          `INSERT INTO registration_entries (id, spiffe_id, parent_id, selectors_key, x509_svid_ttl, jwt_svid_ttl,
             dns_names, federates_with, admin, downstream, hint, expires_at, metadata, revision, created_at, updated_at)
           VALUES ('hidden-entry', 'spiffe://example.org/feed/hidden', $1, 'unix:uid:1000', 0, 0, '[]', '[]', 0, 0, '',
             NULL, '{}', 1, 0, 0)`,
          [AGENT],
        );
        await admin.query("INSERT INTO entry_selectors VALUES ('hidden-entry', 'unix', 'uid:1000')");
        await admin.query('DELETE FROM registration_entries WHERE id = $1', [kept.id]);
        await admin.query('UPDATE change_revision SET revision = revision + 2 WHERE id = 1');
        await admin.query('COMMIT');
        const changes: string[] = [];
        index.on('change', (c) =>
          changes.push(`${c.before?.spiffeId ?? '-'} -> ${c.after?.spiffeId ?? '-'}`),
        );
        const resynced = new Promise<void>((resolve) => {
          const off = b.onChange((c) => {
            if (c.kind === 'resync') {
              off();
              resolve();
            }
          });
        });
        const before = b.feed.resyncs;
        await b.feed.poll();
        await resynced;
        assert.equal(b.feed.resyncs, before + 1);
        assert.equal(b.revision, await head());
        await index.reload(); // joins the reload the resync started
        assert.equal(index.get('hidden-entry')?.spiffeId, 'spiffe://example.org/feed/hidden');
        assert.equal(index.get(kept.id), undefined);
        assert.deepEqual(changes.sort(), [
          '- -> spiffe://example.org/feed/hidden',
          'spiffe://example.org/feed/kept -> -',
        ]);
        // The feed goes on from the head: the next write arrives as usual.
        const next = await a.createEntry(entry('/feed/after-resync'));
        await toldUpTo(b, await head());
        assert.equal(index.get(next.id)?.spiffeId, 'spiffe://example.org/feed/after-resync');
      } finally {
        index.close();
      }
    });

    it('a server started while others write catches up and holds what the database holds', async () => {
      const [a, c] = [await server(), await server()];
      let late: { ds: SqlDatastore; index: EntryIndex } | undefined;
      const writes = (async () => {
        const ids: string[] = [];
        for (let i = 0; i < 300; i++) {
          const w = i % 2 === 0 ? a : c;
          const e = await w.createEntry(entry(`/feed/busy-${i}`));
          ids.push(e.id);
          if (i % 3 === 0) await w.deleteEntry(ids.shift() as string);
          if (i % 5 === 0) {
            const cur = await w.getEntry(ids.at(-1) as string);
            if (cur !== undefined)
              await w.updateEntry(cur.id, cur.revision, entry(`/feed/busy-${i}`, { hint: 'x' }));
          }
          if (i === 100) {
            const ds = await server();
            late = { ds, index: await EntryIndex.load(ds, 'spiffe://example.org/tessera/server') };
          }
        }
      })();
      await writes;
      assert.ok(late !== undefined);
      try {
        await toldUpTo(late.ds, await head());
        const truth = await a.snapshotEntries();
        const held = truth.entries.map((e) => `${e.id}@${e.revision}`).sort();
        const inIndex = truth.entries.flatMap((e) => {
          const x = late?.index.get(e.id);
          return x === undefined ? [] : [`${x.id}@${x.revision}`];
        });
        assert.equal(late.index.size, truth.entries.length, 'no deleted entry left in the late index');
        assert.deepEqual(inIndex.sort(), held);
      } finally {
        late.index.close();
      }
    });
  });
}

async function waitUntil(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
