/**
 * Interop against implementations nobody here wrote: go-spiffe v2.9.0 and py-spiffe 0.3.2.
 * Build them with test/interop/setup.sh. Without them the suite is skipped loudly, unless
 * TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { runGoClient, startGoServer } from './go-peer.js';
import { GO_SPIFFE_DIVERGENCES, PY_SPIFFE_DIVERGENCES } from './known-divergences.js';
import { createMtlsFixtures, type MtlsFixtures, TD } from './mtls-fixtures.js';
import { ourClientExchange, startOurServer } from './our-tls.js';
import { tesseraVectors } from './tessera-vectors.js';
import { buildVectors, type Vector, type VectorKind, type Verdict } from './vectors.js';
import {
  type Disagreement,
  disagreements,
  interopUnavailable,
  ourVerdict,
  peerVerdicts,
  table,
} from './verdicts.js';

const skip = interopUnavailable('interop verdicts');
// Each test that waits on a peer process is bounded, so a wedged peer fails the test instead of the run.
const TIMEOUT = 60_000;

const KINDS: readonly VectorKind[] = [
  'spiffeid',
  'trustdomain',
  'x509bundle',
  'jwtbundle',
  'spiffebundle',
  'x509svid-verify',
  'x509svid-parse',
  'jwtsvid-validate',
];

describe('interop verdicts', { skip, timeout: TIMEOUT }, () => {
  let tmp: TempDir | undefined;
  let vectors: Vector[] = [];
  const ours = new Map<string, Verdict>();
  let go = new Map<string, Verdict>();
  let python = new Map<string, Verdict>();

  before(async () => {
    tmp = await makeTempDir('tessera-interop-');
    vectors = [...buildVectors(), ...(await tesseraVectors())];
    for (const v of vectors) ours.set(v.id, await ourVerdict(v));
    ({ go, python } = await peerVerdicts(vectors, tmp.path));
  });
  after(async () => {
    await tmp?.cleanup();
  });

  test('every vector got a verdict from every implementation', () => {
    assert.ok(vectors.length > 200, `expected the full vector set, got ${vectors.length}`);
    const lacking = vectors
      .filter((v) => !ours.has(v.id) || !go.has(v.id) || !python.has(v.id))
      .map((v) => v.id);
    assert.deepEqual(lacking, []);
  });

  test('go-spiffe accepts every vector meant to be valid (the fixtures are right)', () => {
    const bad = vectors
      .filter((v) => /\/valid[-/]/.test(v.id) || /^spiffeid\/valid-/.test(v.id))
      .filter((v) => go.get(v.id)?.ok !== true)
      .map((v) => `${v.id}: ${go.get(v.id)?.error ?? 'no verdict'}`);
    assert.deepEqual(bad, []);
  });

  test('go-spiffe refuses every vector meant to be invalid', () => {
    const bad = vectors
      .filter((v) => /^spiffeid\/invalid-/.test(v.id))
      .filter((v) => go.get(v.id)?.ok !== false)
      .map((v) => v.id);
    assert.deepEqual(bad, []);
  });

  const peers: [string, () => Map<string, Verdict>, Readonly<Record<string, string>>][] = [
    ['go-spiffe', () => go, GO_SPIFFE_DIVERGENCES],
    ['py-spiffe', () => python, PY_SPIFFE_DIVERGENCES],
  ];
  for (const [peer, verdicts, known] of peers) {
    for (const kind of KINDS) {
      test(`${peer} agrees with us on ${kind}`, (t) => {
        const ofKind = vectors.filter((v) => v.kind === kind);
        assert.ok(ofKind.length > 0, `no ${kind} vectors`);
        const theirs = verdicts();
        const judged = ofKind.filter((v) => theirs.get(v.id)?.skipped !== true);
        if (judged.length === 0) {
          t.diagnostic(`${peer} has no API for ${kind}; nothing to compare`);
          return;
        }
        const diffs = disagreements(ofKind, ours, theirs);
        const unexpected = diffs.filter((d) => known[d.id] === undefined);
        const diffIds = new Set(diffs.map((d: Disagreement) => d.id));
        const stale = ofKind.filter((v) => known[v.id] !== undefined && !diffIds.has(v.id)).map((v) => v.id);
        for (const d of diffs.filter((x) => known[x.id] !== undefined)) {
          t.diagnostic(`known divergence ${d.id}: ${known[d.id]}`);
        }
        const problems: string[] = [];
        if (unexpected.length > 0) {
          problems.push(
            `${unexpected.length} of ${judged.length} ${kind} vectors disagree:\n${table(unexpected, peer)}`,
          );
        }
        if (stale.length > 0) {
          problems.push(
            `listed as known divergences but now agree (remove them from known-divergences.ts): ${stale.join(', ')}`,
          );
        }
        if (problems.length > 0) assert.fail(problems.join('\n'));
      });
    }
  }
});

describe('interop mTLS', { skip, timeout: TIMEOUT }, () => {
  let tmp: TempDir | undefined;
  let f: MtlsFixtures;

  before(async () => {
    tmp = await makeTempDir('tessera-interop-tls-');
    f = await createMtlsFixtures(tmp.path);
  });
  after(async () => {
    await tmp?.cleanup();
  });

  test('baseline: go-spiffe client and go-spiffe server accept each other, and refuse a wrong ID', async () => {
    const server = await startGoServer(f.go.server, { id: f.ids.goClient });
    try {
      const ok = await runGoClient(f.go.client, { id: f.ids.goServer }, server.address, 'hello');
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.equal(ok.stdout, `${f.ids.goClient} hello\n`);

      const refusedByClient = await runGoClient(f.go.client, { id: f.ids.nobody }, server.address, 'x');
      assert.equal(refusedByClient.code, 1);
      assert.match(refusedByClient.stdout, /^ERROR .*unexpected ID/);

      const foreign = await runGoClient(f.go.foreignClient, { id: f.ids.goServer }, server.address, 'x');
      assert.equal(foreign.code, 1);
      assert.match(foreign.stdout, /^ERROR /);
      await server.nextLog(/^REFUSED .*unexpected ID "spiffe:\/\/other\.org\/client"/);
    } finally {
      await server.close();
    }
  });

  // ---- go-spiffe client -> our server ----

  test('go-spiffe client and our server accept each other with the right IDs', async () => {
    const server = await startOurServer(f.svids.ourServer, f.bundles, { id: f.ids.goClient });
    try {
      const r = await runGoClient(f.go.client, { id: f.ids.ourServer }, server.address, 'hello');
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, `${f.ids.goClient} hello\n`);
      assert.deepEqual(server.accepted, [f.ids.goClient]);
    } finally {
      await server.close();
    }
  });

  test('our server refuses a go-spiffe client with the wrong ID', async () => {
    const server = await startOurServer(f.svids.ourServer, f.bundles, { id: f.ids.nobody });
    try {
      const r = await runGoClient(f.go.client, { id: f.ids.ourServer }, server.address, 'hello');
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /^ERROR /);
      assert.deepEqual(server.accepted, []);
      // authorizeId trusts only its trust domain's roots; the go client is in it, so the refusal is
      // the authorizer's, and the log names the client.
      await server.nextRefusal(/spiffe:\/\/example\.org\/go-client/);
    } finally {
      await server.close();
    }
  });

  test('our server refuses a go-spiffe client from another trust domain', async () => {
    const server = await startOurServer(f.svids.ourServer, f.bundles, { memberOf: TD });
    try {
      const r = await runGoClient(f.go.foreignClient, { id: f.ids.ourServer }, server.address, 'hello');
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /^ERROR /);
      assert.deepEqual(server.accepted, []);
      await server.nextRefusal(/./);
    } finally {
      await server.close();
    }
  });

  test('go-spiffe client refuses our server when its ID is not the one authorized', async () => {
    const server = await startOurServer(f.svids.ourServer, f.bundles, { id: f.ids.goClient });
    try {
      const r = await runGoClient(f.go.client, { id: f.ids.nobody }, server.address, 'hello');
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /^ERROR .*unexpected ID "spiffe:\/\/example\.org\/our-server"/);
      assert.deepEqual(server.accepted, []);
    } finally {
      await server.close();
    }
  });

  test('go-spiffe client refuses our server from another trust domain', async () => {
    const server = await startOurServer(f.svids.foreign, f.bundles, { id: f.ids.goClient });
    try {
      const r = await runGoClient(f.go.client, { memberOf: TD }, server.address, 'hello');
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /^ERROR .*unexpected trust domain "other\.org"/);
      const noBundle = await runGoClient(
        f.go.clientTrustingOnlyOurTd,
        { id: f.ids.foreign },
        server.address,
        'x',
      );
      assert.equal(noBundle.code, 1, noBundle.stdout + noBundle.stderr);
      assert.match(noBundle.stdout, /^ERROR .*no X\.509 bundle/);
      assert.deepEqual(server.accepted, []);
    } finally {
      await server.close();
    }
  });

  // ---- our client -> go-spiffe server ----

  test('our client and the go-spiffe server accept each other with the right IDs', async () => {
    const server = await startGoServer(f.go.server, { id: f.ids.ourClient });
    try {
      const r = await ourClientExchange(
        f.svids.ourClient,
        f.bundles,
        { id: f.ids.goServer },
        server.address,
        'hi',
      );
      assert.deepEqual(r, { ok: true, reply: `${f.ids.ourClient} hi`, serverId: f.ids.goServer });
      await server.nextLog(/^ACCEPTED .*\(spiffe:\/\/example\.org\/our-client\)/);
    } finally {
      await server.close();
    }
  });

  test('the go-spiffe server refuses our client with the wrong ID', async () => {
    const server = await startGoServer(f.go.server, { id: f.ids.nobody });
    try {
      const r = await ourClientExchange(
        f.svids.ourClient,
        f.bundles,
        { id: f.ids.goServer },
        server.address,
        'hi',
      );
      assert.equal(r.ok, false, JSON.stringify(r));
      await server.nextLog(/^REFUSED .*unexpected ID "spiffe:\/\/example\.org\/our-client"/);
    } finally {
      await server.close();
    }
  });

  test('the go-spiffe server refuses our client from another trust domain', async () => {
    const server = await startGoServer(f.go.server, { memberOf: TD });
    try {
      const r = await ourClientExchange(
        f.svids.foreign,
        f.bundles,
        { id: f.ids.goServer },
        server.address,
        'hi',
      );
      assert.equal(r.ok, false, JSON.stringify(r));
      await server.nextLog(/^REFUSED .*unexpected trust domain "other\.org"/);
    } finally {
      await server.close();
    }
  });

  test('our client refuses the go-spiffe server when its ID is not the one authorized', async () => {
    const server = await startGoServer(f.go.server, { id: f.ids.ourClient });
    try {
      const r = await ourClientExchange(
        f.svids.ourClient,
        f.bundles,
        { id: f.ids.nobody },
        server.address,
        'hi',
      );
      assert.equal(r.ok, false, JSON.stringify(r));
      assert.match(
        r.ok ? '' : [r.error, ...r.log].join('\n'),
        /unexpected ID "spiffe:\/\/example\.org\/go-server"/,
      );
      await server.nextLog(/^REFUSED /);
    } finally {
      await server.close();
    }
  });

  test('our client refuses a go-spiffe server from another trust domain', async () => {
    const server = await startGoServer(f.go.foreignServer, { id: f.ids.ourClient });
    try {
      const r = await ourClientExchange(f.svids.ourClient, f.bundles, { memberOf: TD }, server.address, 'hi');
      assert.equal(r.ok, false, JSON.stringify(r));
      // authorizeMemberOf gives OpenSSL only example.org's roots, so the refusal is a chain failure in
      // the handshake rather than the authorizer's "unexpected trust domain"; either is a refusal.
      assert.match(
        r.ok ? '' : [r.error, ...r.log].join('\n'),
        /unable to verify|unexpected trust domain "other\.org"/,
      );
      // Trusting only example.org, any other.org server fails chain verification in the handshake.
      const onlyOurTd = { [TD]: f.bundles[TD] ?? [] };
      const noBundle = await ourClientExchange(
        f.svids.ourClient,
        onlyOurTd,
        { any: true },
        server.address,
        'x',
      );
      assert.equal(noBundle.ok, false, JSON.stringify(noBundle));
    } finally {
      await server.close();
    }
  });
});
