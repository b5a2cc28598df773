// One suite, two databases: SQLite (a real file) and PostgreSQL (a throwaway cluster from the
// installed server binaries). Without the binaries the PostgreSQL half says loudly that it skipped,
// and fails when TESSERA_REQUIRE_POSTGRES=1.
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTrustDomain, SpiffeBundle } from '@tessera/spiffe';
import {
  makeTempDir,
  type PostgresCluster,
  postgresAvailable,
  startPostgres,
  type TempDir,
  TestCa,
  TestJwtAuthority,
} from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { openPostgresDatastore } from './postgres.js';
import { openSqliteDatastore } from './sqlite.js';
import type { Datastore, EntryInput } from './types.js';

const AGENT = 'spiffe://example.org/tessera/agent/join_token/abc';

function entry(path: string, extra: Partial<EntryInput> = {}): EntryInput {
  return {
    spiffeId: `spiffe://example.org${path}`,
    parentId: AGENT,
    selectors: [{ type: 'unix', value: 'uid:1000' }],
    ...extra,
  };
}

function rejectsWith(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  return assert.rejects(p, (e: unknown) => {
    assert.ok(isTesseraError(e), `expected a TesseraError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  });
}

function suite(name: string, open: () => Promise<Datastore>): void {
  describe(`datastore on ${name}`, () => {
    let ds: Datastore;
    before(async () => {
      ds = await open();
    });
    after(() => ds.close());

    it('creates, reads, updates with a revision, and deletes an entry with every field', async () => {
      const created = await ds.createEntry(
        entry('/web', {
          selectors: [
            { type: 'unix', value: 'uid:1000' },
            { type: 'unix', value: 'path:/usr/bin/web' },
            { type: 'unix', value: 'uid:1000' },
          ],
          x509SvidTtl: 3600,
          jwtSvidTtl: 300,
          dnsNames: ['web.example.org'],
          federatesWith: ['partner.org'],
          admin: true,
          hint: 'external',
          expiresAt: new Date('2030-01-01T00:00:00Z'),
          metadata: { owner: 'team-web', ticket: 'OPS-1' },
        }),
      );
      assert.equal(created.revision, 1);
      assert.deepEqual(created.selectors, [
        { type: 'unix', value: 'path:/usr/bin/web' },
        { type: 'unix', value: 'uid:1000' },
      ]);
      const read = await ds.getEntry(created.id);
      assert.deepEqual(read, created);
      assert.equal(read?.metadata.owner, 'team-web');
      assert.equal(read?.expiresAt?.toISOString(), '2030-01-01T00:00:00.000Z');
      const updated = await ds.updateEntry(
        created.id,
        1,
        entry('/web', { hint: 'internal', selectors: [{ type: 'unix', value: 'uid:1001' }] }),
      );
      assert.equal(updated.revision, 2);
      assert.equal(updated.hint, 'internal');
      assert.deepEqual(updated.selectors, [{ type: 'unix', value: 'uid:1001' }]);
      await ds.deleteEntry(created.id);
      assert.equal(await ds.getEntry(created.id), undefined);
      await rejectsWith(ds.deleteEntry(created.id), TesseraErrorCode.ENTRY_NOT_FOUND);
    });

    it('refuses a duplicate (same SPIFFE ID, parent and selectors in any order)', async () => {
      const sel = [
        { type: 'unix', value: 'uid:1' },
        { type: 'unix', value: 'gid:1' },
      ];
      const first = await ds.createEntry(entry('/dup', { selectors: sel }));
      await rejectsWith(
        ds.createEntry(entry('/dup', { selectors: [...sel].reverse() })),
        TesseraErrorCode.ENTRY_DUPLICATE,
        /already exists/,
      );
      // A different selector set is a different entry.
      const other = await ds.createEntry(entry('/dup', { selectors: [{ type: 'unix', value: 'uid:2' }] }));
      await rejectsWith(
        ds.updateEntry(other.id, 1, entry('/dup', { selectors: sel })),
        TesseraErrorCode.ENTRY_DUPLICATE,
      );
      await ds.deleteEntry(first.id);
      await ds.deleteEntry(other.id);
    });

    it('batches are all or nothing, and name the entry at fault', async () => {
      const before = await ds.countEntries();
      const batch = [entry('/b/1'), entry('/b/2'), entry('/b/1')];
      await rejectsWith(
        ds.createEntries(batch),
        TesseraErrorCode.ENTRY_DUPLICATE,
        /"spiffe:\/\/example.org\/b\/1"/,
      );
      await rejectsWith(
        ds.createEntries([entry('/b/3'), entry('/b/4', { selectors: [] })]),
        TesseraErrorCode.ENTRY_INVALID,
        /^entry 2 of 2: /,
      );
      assert.equal(await ds.countEntries(), before);
      const made = await ds.createEntries([entry('/b/5'), entry('/b/6')]);
      assert.deepEqual(await ds.getEntry(made[1]!.id), made[1]);
      for (const e of made) await ds.deleteEntry(e.id);
    });

    it('a write with a stale revision loses, and the stored entry keeps the winner’s change', async () => {
      const e = await ds.createEntry(entry('/race'));
      const results = await Promise.allSettled([
        ds.updateEntry(e.id, 1, entry('/race', { hint: 'a' })),
        ds.updateEntry(e.id, 1, entry('/race', { hint: 'b' })),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r) => r.status === 'rejected');
      assert.equal(won.length, 1);
      assert.equal(lost.length, 1);
      assert.ok(
        isTesseraError((lost[0] as PromiseRejectedResult).reason, TesseraErrorCode.REVISION_CONFLICT),
      );
      const stored = await ds.getEntry(e.id);
      assert.equal(stored?.revision, 2);
      assert.equal(stored?.hint, (won[0] as PromiseFulfilledResult<{ hint: string }>).value.hint);
      await rejectsWith(ds.updateEntry('no-such-id', 1, entry('/race')), TesseraErrorCode.ENTRY_NOT_FOUND);
      await ds.deleteEntry(e.id);
    });

    it('refuses malformed entries, naming the field', async () => {
      const cases: [Partial<EntryInput>, RegExp][] = [
        [{ spiffeId: 'spiffe://Example.org/x' }, /spiffeId .* is not a SPIFFE ID/],
        [{ parentId: 'agent-1' }, /parentId .* is not a SPIFFE ID/],
        [{ selectors: [] }, /at least one selector/],
        [{ selectors: [{ type: 'un ix', value: 'uid:1' }] }, /selector type/],
        [{ selectors: [{ type: 'unix', value: '' }] }, /needs a value/],
        [{ x509SvidTtl: -1 }, /x509SvidTtl -1/],
        [{ dnsNames: ['bad host'] }, /DNS name/],
        [{ federatesWith: ['Bad.org'] }, /federatesWith/],
        [{ spiffeId: AGENT }, /cannot be its own parent/],
      ];
      for (const [extra, pattern] of cases) {
        await rejectsWith(ds.createEntry(entry('/bad', extra)), TesseraErrorCode.ENTRY_INVALID, pattern);
      }
      assert.equal(await ds.countEntries(), 0);
    });

    it('lists with filters and pagination that visits every entry exactly once', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 25; i++) {
        const e = await ds.createEntry(
          entry(`/svc/${i}`, {
            parentId: i % 2 === 0 ? AGENT : 'spiffe://example.org/tessera/agent/x509pop/other',
            selectors: [
              { type: 'unix', value: `uid:${i}` },
              { type: 'team', value: i < 5 ? 'red' : 'blue' },
            ],
          }),
        );
        ids.push(e.id);
      }
      assert.equal(await ds.countEntries(), 25);
      const seen: string[] = [];
      let token: string | undefined;
      let pages = 0;
      do {
        const page = await ds.listEntries({
          pageSize: 7,
          ...(token === undefined ? {} : { pageToken: token }),
        });
        seen.push(...page.entries.map((e) => e.id));
        token = page.nextPageToken;
        pages++;
      } while (token !== undefined);
      assert.equal(pages, 4);
      assert.deepEqual([...seen].sort(), [...ids].sort());
      const red = await ds.listEntries({ bySelector: { type: 'team', value: 'red' } });
      assert.equal(red.entries.length, 5);
      assert.ok(red.entries.every((e) => e.selectors.length === 2));
      assert.equal((await ds.listEntries({ byParentId: AGENT })).entries.length, 13);
      assert.equal((await ds.listEntries({ bySpiffeId: 'spiffe://example.org/svc/3' })).entries.length, 1);
      for (const id of ids) await ds.deleteEntry(id);
    });

    it('join tokens: stored hashed, single use, refused when expired', async () => {
      const now = new Date();
      await ds.createJoinToken({
        token: 'tok-aaaaaaaaaaaaaaaa',
        expiresAt: new Date(now.getTime() + 60_000),
        agentName: 'edge-1',
      });
      await ds.createJoinToken({ token: 'tok-bbbbbbbbbbbbbbbb', expiresAt: new Date(now.getTime() + 1_000) });
      const used = await ds.consumeJoinToken('tok-aaaaaaaaaaaaaaaa', now);
      assert.equal(used.agentName, 'edge-1');
      await rejectsWith(
        ds.consumeJoinToken('tok-aaaaaaaaaaaaaaaa', now),
        TesseraErrorCode.JOIN_TOKEN_INVALID,
        /already used/,
      );
      await rejectsWith(
        ds.consumeJoinToken('tok-bbbbbbbbbbbbbbbb', new Date(now.getTime() + 2_000)),
        TesseraErrorCode.JOIN_TOKEN_INVALID,
        /expired/,
      );
      await rejectsWith(ds.consumeJoinToken('never-issued-token', now), TesseraErrorCode.JOIN_TOKEN_INVALID);
    });

    it('bundles: updates increment spiffe_sequence, a no-op does not, concurrent unions keep both keys', async () => {
      const td = parseTrustDomain('example.org');
      assert.equal(await ds.getBundle(td), undefined);
      const a = TestCa.create({ trustDomain: 'example.org' }).root;
      const b = TestCa.create({ trustDomain: 'example.org' }).root;
      const addX509 = (cert: typeof a) => (cur: SpiffeBundle) =>
        cur.with({ x509Authorities: [...cur.x509Authorities, cert] });
      const first = await ds.updateBundle(td, addX509(a));
      assert.equal(first.sequenceNumber, 1n);
      const same = await ds.updateBundle(td, (cur) => cur);
      assert.equal(same.sequenceNumber, 1n);
      const jwt = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'k1' });
      await Promise.all([
        ds.updateBundle(td, addX509(b)),
        ds.updateBundle(td, (cur) =>
          cur.with({ jwtAuthorities: [...cur.jwtAuthorities, ['k1', jwt.publicKey] as const] }),
        ),
      ]);
      const stored = await ds.getBundle(td);
      assert.equal(stored?.sequenceNumber, 3n);
      assert.equal(stored?.x509Authorities.length, 2);
      assert.ok(stored?.jwtAuthorities.has('k1'));
      const revoked = await ds.updateBundle(td, (cur) =>
        cur.with({
          x509Authorities: cur.x509Authorities.filter((c) => c.fingerprint256 !== a.fingerprint256),
        }),
      );
      assert.equal(revoked.sequenceNumber, 4n);
      assert.equal((await ds.getBundle(td))?.x509Authorities.length, 1);
    });

    it('X509-SVID records, revocations and CRLs: found by serial and entry, revoked once, CRL numbers only grow, pruned at expiry', async () => {
      const told: string[] = [];
      const off = ds.onChange((c) => {
        if (c.kind === 'revocation' || c.kind === 'crl') told.push(`${c.kind} ${c.op} ${c.authorityId}`);
      });
      const now = new Date('2030-01-01T00:00:00Z');
      const later = (ms: number) => new Date(now.getTime() + ms);
      const rec = (serial: string, entryId: string, authorityId: string, ttl: number) => ({
        serial,
        authorityId,
        spiffeId: `spiffe://example.org/${entryId || 'minted'}`,
        entryId,
        expiresAt: later(ttl),
      });
      await ds.recordX509Svids([
        rec('A1', 'e1', 'ca1', 60_000),
        rec('B2', 'e1', 'ca1', 120_000),
        rec('C3', 'e2', 'ca2', 60_000),
      ]);
      await ds.recordX509Svids([rec('A1', 'e1', 'ca1', 60_000)]); // a repeat is harmless
      assert.deepEqual(
        (await ds.findX509Svids({ entryId: 'e1' }, now)).map((r) => r.serial),
        ['A1', 'B2'],
      );
      assert.deepEqual(await ds.findX509Svids({ serial: 'C3' }, now), [rec('C3', 'e2', 'ca2', 60_000)]);
      assert.deepEqual(
        await ds.findX509Svids({ serial: 'A1' }, later(60_000)),
        [],
        'expired ones are not found',
      );

      const revoke = (r: ReturnType<typeof rec>, reason: number) => ({ ...r, reason, revokedAt: now });
      const fresh = await ds.revokeX509Svids([
        revoke(rec('A1', 'e1', 'ca1', 60_000), 1),
        revoke(rec('C3', 'e2', 'ca2', 60_000), 0),
      ]);
      assert.deepEqual(
        fresh.map((r) => r.serial),
        ['A1', 'C3'],
      );
      const again = await ds.revokeX509Svids([revoke(rec('A1', 'e1', 'ca1', 60_000), 4)]);
      assert.deepEqual(again, [], 'revoked once: the first revocation stays');
      assert.deepEqual(
        (await ds.listX509Revocations(now, 'ca1')).map((r) => [r.serial, r.reason, r.revokedAt.getTime()]),
        [['A1', 1, now.getTime()]],
      );
      assert.equal((await ds.listX509Revocations(now)).length, 2);

      const der = (n: number) => Buffer.from([0x30, 0x01, n]);
      assert.equal(
        await ds.putX509Crl({ authorityId: 'ca1', number: 2n, der: der(2), notAfter: later(120_000) }),
        true,
      );
      assert.equal(
        await ds.putX509Crl({ authorityId: 'ca1', number: 1n, der: der(1), notAfter: later(120_000) }),
        false,
      );
      assert.equal(
        await ds.putX509Crl({ authorityId: 'ca1', number: 2n, der: der(9), notAfter: later(120_000) }),
        false,
      );
      assert.equal(
        await ds.putX509Crl({ authorityId: 'ca2', number: 1n, der: der(1), notAfter: later(30_000) }),
        true,
      );
      const crls = await ds.listX509Crls(now);
      assert.deepEqual(
        crls.map((c) => [c.authorityId, c.number, c.der.toString('hex')]),
        [
          ['ca1', 2n, '300102'],
          ['ca2', 1n, '300101'],
        ],
      );

      // At 60 s A1, C3 (revocations and records) and ca2's CRL expire; B2 and ca1's CRL stay.
      assert.deepEqual(await ds.pruneX509(later(60_000)), ['ca1', 'ca2']);
      assert.deepEqual(await ds.listX509Revocations(later(60_000)), []);
      assert.deepEqual(
        (await ds.listX509Crls(later(30_000))).map((c) => c.authorityId),
        ['ca1'],
      );
      assert.deepEqual(
        (await ds.findX509Svids({ entryId: 'e1' }, now)).map((r) => r.serial),
        ['B2'],
      );
      assert.deepEqual(await ds.pruneX509(later(60_000)), [], 'nothing left to prune');
      off();
      assert.deepEqual(told, [
        'revocation revoke ca1',
        'revocation revoke ca2',
        'crl update ca1',
        'crl update ca2',
        'revocation prune ca1',
        'revocation prune ca2',
      ]);
    });

    it('federation relationships: create once, update, delete with the bundle, all told to the feed', async () => {
      const told: string[] = [];
      const off = ds.onChange((c) => {
        if (c.kind === 'federation' || (c.kind === 'bundle' && c.trustDomain === 'peer.test'))
          told.push(`${c.kind} ${c.op} ${c.trustDomain}`);
      });
      const td = parseTrustDomain('peer.test');
      const peer = TestCa.create({ trustDomain: 'peer.test' }).root;
      const rel = {
        trustDomain: 'peer.test',
        bundleEndpointUrl: 'https://peer.test:8443',
        profile: 'https_spiffe' as const,
        endpointSpiffeId: 'spiffe://peer.test/spire/server',
        caBundlePem: '',
      };
      const bootstrap = new SpiffeBundle({ trustDomain: td, x509Authorities: [peer], sequenceNumber: 41n });
      const made = await ds.putFederationRelationship(rel, 'create', bootstrap);
      assert.equal(made.bundleEndpointUrl, rel.bundleEndpointUrl);
      // The bootstrap bundle is stored as given, its sequence kept.
      assert.equal((await ds.getBundle(td))?.sequenceNumber, 41n);
      await rejectsWith(ds.putFederationRelationship(rel, 'create'), 'ERR_FEDERATION_EXISTS', /peer\.test/);
      await rejectsWith(
        ds.putFederationRelationship({ ...rel, trustDomain: 'nobody.test' }, 'update'),
        'ERR_FEDERATION_NOT_FOUND',
      );
      await ds.putFederationRelationship({ ...rel, bundleEndpointUrl: 'https://peer.test:9443' }, 'update');
      assert.equal(
        (await ds.getFederationRelationship('peer.test'))?.bundleEndpointUrl,
        'https://peer.test:9443',
      );
      assert.deepEqual(
        (await ds.listFederationRelationships()).map((r) => r.trustDomain),
        ['peer.test'],
      );
      // A fetched bundle is stored as served; the same again is not a change.
      const fetched = bootstrap.with({ sequenceNumber: 7n, refreshHint: 300 });
      assert.equal(await ds.storeFetchedBundle(fetched), true);
      assert.equal(await ds.storeFetchedBundle(fetched), false);
      assert.equal((await ds.getBundle(td))?.sequenceNumber, 7n);
      await ds.deleteFederationRelationship('peer.test');
      assert.equal(await ds.getBundle(td), undefined);
      assert.equal(await ds.getFederationRelationship('peer.test'), undefined);
      await rejectsWith(ds.deleteFederationRelationship('peer.test'), 'ERR_FEDERATION_NOT_FOUND');
      off();
      assert.deepEqual(told, [
        'bundle update peer.test',
        'federation upsert peer.test',
        'federation upsert peer.test',
        'bundle update peer.test',
        'federation delete peer.test',
        'bundle delete peer.test',
      ]);
    });

    it('attestation evidence is used once until it expires, also when two use it at once', async () => {
      const now = new Date();
      const later = new Date(now.getTime() + 60_000);
      assert.equal(await ds.useEvidence('jwt', 'digest-1', later, now), true);
      assert.equal(await ds.useEvidence('jwt', 'digest-1', later, now), false);
      assert.equal(await ds.useEvidence('aws_iid', 'digest-1', later, now), true, 'per attestor');
      // Once expired, the record is dropped: the evidence itself is refused by its own expiry then.
      assert.equal(await ds.useEvidence('jwt', 'digest-1', later, new Date(later.getTime() + 1)), true);
      const both = await Promise.all([
        ds.useEvidence('jwt', 'digest-2', later, now),
        ds.useEvidence('jwt', 'digest-2', later, now),
      ]);
      assert.deepEqual(both.sort(), [false, true]);
    });

    it('two concurrent uses of one token: exactly one wins', async () => {
      await ds.createJoinToken({ token: 'tok-cccccccccccccccc', expiresAt: new Date(Date.now() + 60_000) });
      const results = await Promise.allSettled([
        ds.consumeJoinToken('tok-cccccccccccccccc', new Date()),
        ds.consumeJoinToken('tok-cccccccccccccccc', new Date()),
      ]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    });

    it('records attested agents: re-attestation, renewal by serial, ban, evict, list by selector', async () => {
      const id = 'spiffe://example.org/tessera/agent/x509pop/aa';
      const expiresAt = new Date(Date.now() + 3_600_000);
      const sel = [{ type: 'x509pop', value: 'subject:cn:web-1' }];
      const a = await ds.attestAgent({
        spiffeId: id,
        attestor: 'x509pop',
        selectors: sel,
        serial: '01',
        expiresAt,
      });
      assert.deepEqual(a.selectors, sel);
      assert.equal(a.serial, '01');
      assert.equal(a.banned, false);
      await ds.attestAgent({
        spiffeId: 'spiffe://example.org/tessera/agent/join_token/zz',
        attestor: 'join_token',
        selectors: [],
        serial: '09',
        expiresAt,
      });
      await rejectsWith(ds.renewAgent(id, '7f', '02', expiresAt), TesseraErrorCode.PERMISSION_DENIED, /7f/);
      const renewed = await ds.renewAgent(id, '01', '02', expiresAt);
      assert.equal(renewed.serial, '02');
      assert.equal(renewed.previousSerial, '01');
      const bySel = await ds.listAgents({ bySelector: sel[0] });
      assert.deepEqual(
        bySel.agents.map((x) => x.spiffeId),
        [id],
      );
      assert.equal(await ds.countAgents(), 2);
      const page1 = await ds.listAgents({ pageSize: 1 });
      assert.equal(page1.agents.length, 1);
      assert.ok(page1.nextPageToken);
      const page2 = await ds.listAgents({ pageSize: 1, pageToken: page1.nextPageToken as string });
      assert.equal(page2.agents.length, 1);
      assert.equal(page2.nextPageToken, undefined);
      await ds.banAgent(id);
      const b = await ds.getAgent(id);
      assert.equal(b?.banned, true);
      assert.equal(b?.serial, '');
      await rejectsWith(ds.renewAgent(id, '02', '03', expiresAt), TesseraErrorCode.AGENT_BANNED);
      await rejectsWith(
        ds.attestAgent({ spiffeId: id, attestor: 'x509pop', selectors: sel, serial: '04', expiresAt }),
        TesseraErrorCode.AGENT_BANNED,
        /evict/,
      );
      assert.deepEqual(
        (await ds.listAgents({ banned: true })).agents.map((x) => x.spiffeId),
        [id],
      );
      await ds.deleteAgent(id);
      await rejectsWith(ds.deleteAgent(id), TesseraErrorCode.AGENT_NOT_FOUND);
      const again = await ds.attestAgent({
        spiffeId: id,
        attestor: 'x509pop',
        selectors: sel,
        serial: '05',
        expiresAt,
      });
      assert.equal(again.banned, false);
    });

    it('tells change listeners about committed writes only, in order', async () => {
      const seen: string[] = [];
      const revisions: number[] = [];
      const start = ds.revision;
      const off = ds.onChange((c) => {
        revisions.push(c.revision);
        seen.push(c.kind === 'entry' ? `${c.op}:${c.entry.spiffeId}:${c.entry.revision}` : `${c.kind}`);
      });
      const e = await ds.createEntry(entry('/feed'));
      await ds.updateEntry(e.id, e.revision, entry('/feed', { hint: 'x' }));
      await assert.rejects(ds.createEntries([entry('/feed-2'), entry('/feed-2')]));
      await assert.rejects(ds.updateEntry(e.id, e.revision, entry('/feed')));
      await ds.deleteEntry(e.id);
      const td = parseTrustDomain('feed.example');
      const ca = TestCa.create({ trustDomain: 'feed.example' });
      await ds.updateBundle(td, (cur) => cur.with({ x509Authorities: [ca.root] }));
      await ds.updateBundle(td, (cur) => cur);
      assert.equal(
        (await ds.listBundles()).some((x) => x.trustDomain.equals(td)),
        true,
      );
      assert.equal(await ds.deleteBundle(td), true);
      assert.equal(await ds.deleteBundle(td), false);
      off();
      await ds.createEntry(entry('/after-off'));
      const p = 'spiffe://example.org';
      assert.deepEqual(seen, [
        `upsert:${p}/feed:1`,
        `upsert:${p}/feed:2`,
        `delete:${p}/feed:2`,
        'bundle',
        'bundle',
      ]);
      // Gapless and in order: failed writes (rolled back) and unchanged bundles took no revision.
      assert.deepEqual(
        revisions,
        revisions.map((_, i) => start + 1 + i),
      );
      assert.equal(ds.revision, start + revisions.length + 1, 'the write after off() has the next revision');
    });
  });
}

let tmp: TempDir;
before(async () => {
  tmp = await makeTempDir('ds-');
});
after(() => tmp.cleanup());

suite('SQLite', async () => {
  const path = join(tmp.path, 'tessera.db');
  const ds = await openSqliteDatastore(path);
  assert.equal(statSync(path).mode & 0o777, 0o600, 'the database file is 0600');
  return ds;
});

describe('SQLite file', () => {
  it('reopens with its data and does not re-run migrations', async () => {
    const path = join(tmp.path, 'reopen.db');
    const a = await openSqliteDatastore(path);
    const e = await a.createEntry(entry('/kept'));
    await a.close();
    const b = await openSqliteDatastore(path);
    assert.equal((await b.getEntry(e.id))?.spiffeId, 'spiffe://example.org/kept');
    await b.close();
  });

  it('a path that cannot be created is one clear error', async () => {
    await rejectsWith(
      openSqliteDatastore('/nonexistent-dir/x/tessera.db'),
      TesseraErrorCode.DATASTORE,
      /cannot open SQLite database \/nonexistent-dir/,
    );
  });
});

if (postgresAvailable('datastore suite')) {
  let cluster: PostgresCluster;
  before(async () => {
    cluster = await startPostgres();
  });
  after(() => cluster.stop());
  suite('PostgreSQL', () => openPostgresDatastore(cluster.connectionString));
}
