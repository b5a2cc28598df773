import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseAndValidateJwtSvid, parseTrustDomain, verifyX509Svid } from '@tessera/spiffe';
import { createCsr, FakeClock, generateKey, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { openSqliteDatastore } from '../datastore/sqlite.js';
import type { Datastore } from '../datastore/types.js';
import { DiskKeyManager } from '../keymanager/disk.js';
import { MemoryKeyManager } from '../keymanager/memory.js';
import { AuthorityManager, authorityKeyId } from './manager.js';

const td = parseTrustDomain('example.org');
const HOUR = 3600_000;

/** A manager with disk keys and a journal under `dir`, a 24 h P-256 CA, on a fake clock. */
function diskOptions(dir: string, ds: Datastore, clock: FakeClock) {
  return {
    trustDomain: td,
    keyManager: new DiskKeyManager(join(dir, 'keys')),
    datastore: ds,
    journalPath: join(dir, 'journal.json'),
    caKeyType: 'ec-p256' as const,
    jwtKeyType: 'ec-p256' as const,
    caTtlMs: 24 * HOUR,
    subject: { country: 'US', organization: 'SPIFFE' },
    now: () => clock.now(),
  };
}

describe('AuthorityManager rotation', () => {
  let tmp: TempDir;
  let ds: Datastore;
  before(async () => {
    tmp = await makeTempDir('mgr-');
    ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
  });
  after(async () => {
    await ds.close();
    await tmp.cleanup();
  });

  it('prepares and publishes the next keys before activating them; an SVID from the new CA verifies against a bundle fetched before activation', async () => {
    const clock = new FakeClock(new Date('2026-06-01T00:00:00Z'));
    const opts = diskOptions(tmp.path, ds, clock);
    const m = new AuthorityManager(opts);
    await m.init();
    assert.equal(statSync(opts.journalPath).mode & 0o777, 0o600);
    const b0 = await ds.getBundle(td);
    assert.equal(b0?.x509Authorities.length, 1);
    assert.equal(b0?.jwtAuthorities.size, 1);
    const firstCa = m.x509.certificate.fingerprint256;
    const firstKid = m.jwt.kid;

    clock.advance(11 * HOUR);
    assert.deepEqual(await m.rotate(), { x509: 'none', jwt: 'none' });
    clock.advance(2 * HOUR); // 13 h: past half-life
    assert.deepEqual(await m.rotate(), { x509: 'prepare', jwt: 'prepare' });
    assert.equal(m.x509.certificate.fingerprint256, firstCa, 'still signing with the first CA');
    const bundleBeforeActivation = await ds.getBundle(td);
    assert.equal(bundleBeforeActivation?.x509Authorities.length, 2);
    assert.equal(bundleBeforeActivation?.jwtAuthorities.size, 2);

    clock.advance(8 * HOUR); // 21 h: past 5/6 of the lifetime
    assert.deepEqual(await m.rotate(), { x509: 'activate', jwt: 'activate' });
    assert.notEqual(m.x509.certificate.fingerprint256, firstCa);
    assert.notEqual(m.jwt.kid, firstKid);

    // Signed after activation, verified with the bundle an agent fetched at 13 h.
    const key = generateKey();
    const { chain } = m.x509.issueX509Svid({
      csr: createCsr(key.publicKey, key.privateKey),
      spiffeId: 'spiffe://example.org/w',
      ttlMs: HOUR,
      now: clock.now(),
    });
    assert.ok(bundleBeforeActivation !== undefined);
    assert.equal(
      verifyX509Svid(
        chain.map((c) => c.raw),
        bundleBeforeActivation,
        { now: clock.now() },
      ).id.path,
      '/w',
    );
    const { token } = await m.jwt.mint({
      spiffeId: 'spiffe://example.org/w',
      audience: ['a'],
      ttlMs: 60_000,
      now: clock.now(),
    });
    assert.equal(
      parseAndValidateJwtSvid(token, bundleBeforeActivation, ['a'], { now: clock.now() }).id.path,
      '/w',
    );

    // A restart picks up the same keys from the journal and key files.
    const restarted = new AuthorityManager(opts);
    await restarted.init();
    assert.equal(restarted.x509.certificate.fingerprint256, m.x509.certificate.fingerprint256);
    assert.equal(restarted.jwt.kid, m.jwt.kid);

    // The first CA and JWT key stay in the bundle until they expire, then prune removes them.
    const kept = await restarted.prune();
    assert.equal(kept.x509Authorities.length, 2);
    assert.ok(kept.jwtAuthorities.has(firstKid));
    clock.advance(4 * HOUR); // 25 h: the first CA has expired
    const pruned = await restarted.prune();
    assert.equal(pruned.x509Authorities.length, 1);
    assert.ok(!pruned.x509Authorities.some((c) => c.fingerprint256 === firstCa));
    assert.ok(!pruned.jwtAuthorities.has(firstKid), 'the retired JWT key is pruned after its expiry');
    assert.ok(pruned.jwtAuthorities.has(restarted.jwt.kid));
  });
});

describe('AuthorityManager: one change of the slots at a time', () => {
  it('the rotation loop and an operator preparing at the same moment prepare one key, not two', async () => {
    const tmp = await makeTempDir('mgr-serial-');
    const ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
    try {
      const clock = new FakeClock(new Date('2026-06-01T00:00:00Z'));
      const m = new AuthorityManager(diskOptions(tmp.path, ds, clock));
      await m.init();
      clock.advance(13 * HOUR); // past half-life: the schedule prepares
      const [loop, operator] = await Promise.allSettled([m.rotate(), m.prepare('x509')]);
      assert.equal(loop.status === 'fulfilled' && loop.value.x509, 'prepare');
      assert.equal(operator.status, 'rejected');
      assert.match(String((operator as PromiseRejectedResult).reason), /already prepared/);
      assert.equal((await ds.getBundle(td))?.x509Authorities.length, 2, 'one new CA published');
      m.close();
    } finally {
      await ds.close();
      await tmp.cleanup();
    }
  });
});

describe('AuthorityManager on an idle server', () => {
  it('prune() with nothing expired writes nothing and reads the bundle once; after a change it reads it again', async () => {
    const tmp = await makeTempDir('mgr-idle-');
    const ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
    try {
      const clock = new FakeClock(new Date('2026-06-01T00:00:00Z'));
      const m = new AuthorityManager(diskOptions(tmp.path, ds, clock));
      await m.init();
      const calls = { get: 0, update: 0 };
      const get = ds.getBundle.bind(ds);
      const update = ds.updateBundle.bind(ds);
      ds.getBundle = (td) => {
        calls.get++;
        return get(td);
      };
      ds.updateBundle = (td, change) => {
        calls.update++;
        return update(td, change);
      };
      for (let i = 0; i < 5; i++) await m.prune();
      assert.deepEqual(calls, { get: 1, update: 0 }, 'the rotation loop of an idle server costs no query');
      clock.advance(13 * HOUR);
      await m.prepare('x509'); // changes the bundle
      const afterPrepare = { ...calls };
      await m.prune();
      await m.prune();
      assert.equal(calls.get, afterPrepare.get + 1, 'the changed bundle is read again, once');
      assert.equal(calls.update, afterPrepare.update);
      clock.advance(12 * HOUR); // the first CA expired, the prepared one not
      const pruned = await m.prune();
      assert.equal(calls.update, afterPrepare.update + 1);
      assert.equal(pruned.x509Authorities.length, 1);
      m.close();
    } finally {
      await ds.close();
      await tmp.cleanup();
    }
  });
});

describe('AuthorityManager under an upstream authority', () => {
  it('signs its CA with the upstream key; the bundle holds the upstream root; SVIDs chain through Tessera’s CA', async () => {
    const tmp = await makeTempDir('up-');
    const ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
    try {
      const org = TestCa.create({ trustDomain: 'example.org', keyType: 'ec-p384' });
      const m = new AuthorityManager({
        trustDomain: td,
        keyManager: new MemoryKeyManager(),
        datastore: ds,
        caKeyType: 'ec-p256',
        jwtKeyType: 'ec-p256',
        caTtlMs: 12 * HOUR,
        subject: { country: 'US', organization: 'SPIFFE' },
        upstream: { certificate: org.certificate, privateKey: org.privateKey, roots: [org.root] },
        now: () => new Date(),
      });
      await m.init();
      const bundle = await ds.getBundle(td);
      assert.deepEqual(
        bundle?.x509Authorities.map((c) => c.fingerprint256),
        [org.root.fingerprint256],
      );
      assert.ok(m.x509.certificate.verify(org.root.publicKey), 'Tessera’s CA is signed by the upstream key');
      const key = generateKey();
      const { chain } = m.x509.issueX509Svid({
        publicKey: key.publicKey,
        spiffeId: 'spiffe://example.org/w',
        ttlMs: HOUR,
        now: new Date(),
      });
      assert.equal(chain.length, 2);
      assert.equal(chain[1]?.fingerprint256, m.x509.certificate.fingerprint256);
      assert.ok(bundle !== undefined);
      assert.equal(
        verifyX509Svid(
          chain.map((c) => c.raw),
          bundle,
        ).verifiedChain.length,
        3,
      );
    } finally {
      await ds.close();
      await tmp.cleanup();
    }
  });
});

describe('AuthorityManager operator commands (compromised key)', () => {
  let tmp: TempDir;
  let ds: Datastore;
  before(async () => {
    tmp = await makeTempDir('mgr-ops-');
    ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
  });
  after(async () => {
    await ds.close();
    await tmp.cleanup();
  });

  it('prepare, activate, taint (told to listeners, kept across restarts), then revoke removes the key from the bundle', async () => {
    const clock = new FakeClock(new Date('2026-06-01T00:00:00Z'));
    const opts = diskOptions(tmp.path, ds, clock);
    const m = new AuthorityManager(opts);
    await m.init();
    const [active] = (await m.list()).filter((a) => a.kind === 'x509');
    assert.equal(active?.status, 'active');
    const oldId = active?.id as string;
    await assert.rejects(m.taint('x509', oldId), /is the active one; prepare and activate a new one/);
    await assert.rejects(m.activate('x509'), /no x509 authority is prepared/);
    const steps: string[] = [];
    m.onRotation((kind, step, _id, trigger) => steps.push(`${kind} ${step} ${trigger}`));
    const prepared = await m.prepare('x509');
    assert.equal(prepared.status, 'prepared');
    await assert.rejects(m.prepare('x509'), /already prepared/);
    await assert.rejects(m.revoke('x509', oldId), /not tainted; taint it first/);
    const activated = await m.activate('x509');
    assert.equal(activated.id, prepared.id);
    assert.deepEqual(steps, ['x509 prepared operator', 'x509 activated operator']);
    const told: string[] = [];
    m.onTaint((kind, id) => told.push(`${kind}:${id}`));
    const tainted = await m.taint('x509', oldId);
    assert.equal(tainted.tainted, true);
    assert.deepEqual(told, [`x509:${oldId}`]);
    assert.deepEqual(m.tainted(), [`x509:${oldId}`]);

    const restarted = new AuthorityManager(opts);
    await restarted.init();
    assert.deepEqual(restarted.tainted(), [`x509:${oldId}`], 'the taint survives a restart');
    assert.equal((await ds.getBundle(td))?.x509Authorities.length, 2);
    await restarted.revoke('x509', oldId);
    const after = await ds.getBundle(td);
    assert.equal(after?.x509Authorities.length, 1);
    assert.equal(after?.x509Authorities[0]?.fingerprint256, restarted.x509.certificate.fingerprint256);
    assert.deepEqual(restarted.tainted(), []);

    // JWT: the same flow on kids.
    const oldKid = restarted.jwt.kid;
    await restarted.prepare('jwt');
    await restarted.activate('jwt');
    await restarted.taint('jwt', oldKid);
    await restarted.revoke('jwt', oldKid);
    assert.equal((await ds.getBundle(td))?.jwtAuthorities.has(oldKid), false);
    await assert.rejects(restarted.taint('jwt', 'nope'), /no jwt authority "nope"/);
  });
});

describe('AuthorityManager: taints shared by every server of the trust domain', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('mgr-ha-');
  });
  after(() => tmp.cleanup());

  /** Two servers' managers on one datastore (SQLite here; the feed is the same on PostgreSQL). */
  async function twoServers(ds: Datastore, clock: FakeClock, upstream?: TestCa) {
    const opts = (name: string) => ({
      ...diskOptions(join(tmp.path, name), ds, clock),
      ...(upstream === undefined
        ? {}
        : {
            upstream: {
              certificate: upstream.certificate,
              privateKey: upstream.privateKey,
              roots: [upstream.root],
            },
          }),
    });
    const a = new AuthorityManager(opts(`a-${upstream === undefined ? 'self' : 'up'}`));
    const b = new AuthorityManager(opts(`b-${upstream === undefined ? 'self' : 'up'}`));
    await a.init();
    await b.init();
    return { a, b };
  }

  it('a taint through one server is told to the other; another server’s active key can be tainted and that server rotates at once', async () => {
    const ds = await openSqliteDatastore(join(tmp.path, 'shared.db'));
    const clock = new FakeClock(new Date('2026-06-01T00:00:00Z'));
    const { a, b } = await twoServers(ds, clock);
    try {
      const toldB: string[] = [];
      let secondTaint: () => void = () => {};
      const toldTwice = new Promise<void>((resolve) => {
        secondTaint = resolve;
      });
      b.onTaint((kind, id) => {
        if (toldB.push(`${kind}:${id}`) === 2) secondTaint();
      });
      const aFirst = (await a.list()).find((x) => x.kind === 'x509' && x.status === 'active')?.id as string;
      const bActive = (await b.list()).find((x) => x.kind === 'x509' && x.status === 'active')?.id as string;
      // From A, B's key is listed with B's status, not as an anonymous bundle root.
      const seenFromA = (await a.list()).find((x) => x.id === bActive);
      assert.equal(seenFromA?.status, 'active');
      await a.prepare('x509');
      await a.activate('x509');
      assert.equal(
        (await b.list()).find((x) => x.id === aFirst)?.status,
        'old',
        'B sees A’s retired key as old',
      );
      await a.taint('x509', aFirst);
      assert.deepEqual(toldB, [`x509:${aFirst}`], 'B’s listeners (its agent API) were told');
      assert.ok(b.tainted().includes(`x509:${aFirst}`));
      await assert.rejects(a.taint('x509', aFirst), /already tainted/);

      // B's active key tainted from A: B replaces it now, so nothing new is signed by it.
      const bSigning = b.x509.certificate.fingerprint256;
      await a.taint('x509', bActive);
      await toldTwice;
      assert.equal(toldB[1], `x509:${bActive}`);
      assert.notEqual(b.x509.certificate.fingerprint256, bSigning, 'B signs with a new key');
      const bNow = (await a.list()).find((x) => x.id === bActive);
      assert.equal(bNow?.status, 'old');
      assert.equal(bNow?.tainted, true);
      // Revoked through B: it leaves the shared bundle.
      await b.revoke('x509', bActive);
      const bundle = await ds.getBundle(td);
      assert.ok(!bundle?.x509Authorities.some((c) => authorityKeyId(c) === bActive));
      assert.equal(
        (await a.list()).find((x) => x.id === bActive),
        undefined,
        'revoked keys are not listed',
      );
      // A restarted server reads the taints from the datastore, not from its journal.
      const restarted = new AuthorityManager(diskOptions(join(tmp.path, 'a-self'), ds, clock));
      await restarted.init();
      assert.ok(restarted.tainted().includes(`x509:${aFirst}`));
      restarted.close();
    } finally {
      a.close();
      b.close();
      await ds.close();
    }
  });

  it('under an upstream authority an old intermediate can be tainted and revoked, and stays tainted for agents', async () => {
    const ds = await openSqliteDatastore(join(tmp.path, 'upstream.db'));
    const clock = new FakeClock(new Date('2026-06-01T00:00:00Z'));
    const org = TestCa.create({ trustDomain: 'example.org' });
    const { a, b } = await twoServers(ds, clock, org);
    try {
      const first = authorityKeyId(a.x509.certificate);
      await a.prepare('x509');
      await a.activate('x509');
      const old = (await b.list()).find((x) => x.id === first);
      assert.equal(old?.status, 'old', 'the retired intermediate is still listed');
      assert.equal(
        old?.certificate?.fingerprint256,
        (await a.list()).find((x) => x.id === first)?.certificate?.fingerprint256,
      );
      await b.taint('x509', first);
      assert.ok(a.tainted().includes(`x509:${first}`));
      await a.revoke('x509', first);
      const bundle = await ds.getBundle(td);
      assert.deepEqual(
        bundle?.x509Authorities.map((c) => c.fingerprint256),
        [org.root.fingerprint256],
        'the bundle keeps the upstream root',
      );
      assert.ok(a.tainted().includes(`x509:${first}`), 'still pushed as tainted: the root vouches for it');
      assert.equal(
        (await a.list()).find((x) => x.id === first),
        undefined,
      );
    } finally {
      a.close();
      b.close();
      await ds.close();
    }
  });
});
