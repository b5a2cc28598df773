/**
 * The go-spiffe and py-spiffe workloads (workload-peers.ts) against FakeWorkloadApi on a real Unix
 * socket: they must report exactly the SVIDs, serials and trust domains served, follow a rotation,
 * and build a working mTLS pair. The same programs are pointed at the Tessera agent by its tests.
 * Same rules as interop.test.ts: without the peers (test/interop/setup.sh) the suite is skipped
 * loudly, unless TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  parseJwtBundle,
  parseTrustDomain,
  parseX509SvidRaw,
  X509Bundle,
  type X509Svid,
} from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { makeTempDir, type TempDir, TestCa, TestJwtAuthority } from '@tessera/testkit';
import { interopUnavailable } from './verdicts.js';
import { linesOf, runGoMtlsPair, runGoWorkload, runPythonWorkload, type SvidSeen } from './workload-peers.js';

const skip = interopUnavailable('interop workload peers');
const TIMEOUT = 60_000;

const ca = TestCa.create({ trustDomain: 'example.org' });
const intermediate = ca.createIntermediate();
const nextCa = TestCa.create({ trustDomain: 'example.org' });
const partner = TestCa.create({ trustDomain: 'partner.example' });
const td = parseTrustDomain('example.org');
const bundle = new X509Bundle(td, [ca.root]);
const partnerBundle = new X509Bundle(parseTrustDomain('partner.example'), [partner.root]);
const jwtAuthority = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'key-1' });
const partnerJwt = TestJwtAuthority.create({ trustDomain: 'partner.example', kid: 'p-1' });

function svid(issuer: TestCa, id: string, hint = ''): X509Svid {
  const s = issuer.issueX509Svid(id);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, hint);
}

/** What a peer should report for `s`. */
function expected(s: X509Svid, withHint: boolean): SvidSeen {
  return {
    spiffe_id: s.id.toString(),
    ...(withHint ? { hint: s.hint } : {}),
    serial: s.leaf.serialNumber,
    expires_at: Math.floor(s.expiresAt.getTime() / 1000),
  };
}

describe('go-spiffe and py-spiffe as workloads of a Workload API', { skip, timeout: TIMEOUT }, () => {
  let tmp: TempDir;
  let api: FakeWorkloadApi;
  let web: X509Svid;
  let db: X509Svid;
  /** The rotation a test pushes: web renewed by the next CA, whose root joins the bundle. */
  let rotated: X509Svid;
  const rotatedBundle = bundle.withAuthority(nextCa.root);

  const rotate = () => api.setX509Svids([{ svid: rotated, bundle: rotatedBundle }], [partnerBundle]);

  before(async () => {
    tmp = await makeTempDir('wl-peers-');
    api = await FakeWorkloadApi.start(join(tmp.path, 'agent.sock'));
  });
  after(async () => {
    await api?.close();
    await tmp?.cleanup();
  });
  beforeEach(() => {
    web = svid(ca, 'spiffe://example.org/web');
    db = svid(intermediate, 'spiffe://example.org/db', 'db');
    rotated = svid(nextCa, 'spiffe://example.org/web');
    api.setX509Svids(
      [
        { svid: web, bundle },
        { svid: db, bundle },
      ],
      [partnerBundle],
    );
    api.setJwtBundles([
      parseJwtBundle(td, jwtAuthority.jwks()),
      parseJwtBundle(partnerBundle.trustDomain, partnerJwt.jwks()),
    ]);
    api.setJwtSvidMinter((req) => {
      const id = req.spiffeId === '' ? 'spiffe://example.org/web' : req.spiffeId;
      return [{ spiffeId: id, svid: jwtAuthority.sign({ sub: id, aud: req.audience }), hint: 'web-jwt' }];
    });
    for (const m of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles', 'FetchJWTSVID'] as const)
      api.setError(m, undefined);
  });

  test('go-spiffe: the SVIDs, serials, trust domains and JWT-SVID served, then a rotation seen by the watch and the X509Source', async () => {
    const run = await runGoWorkload(api.socketPath, {
      audience: ['db', 'cache'],
      updates: 2,
      onLine: (line) => {
        if (line.kind === 'x509' && line.update === 1) rotate();
      },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(linesOf(run.lines, 'error'), []);
    const [first, second, ...more] = linesOf(run.lines, 'x509');
    assert.deepEqual(more, []);
    assert.deepEqual(first, {
      kind: 'x509',
      update: 1,
      svids: [expected(web, true), expected(db, true)],
      bundles: { 'example.org': 1, 'partner.example': 1 },
      source: { spiffe_id: 'spiffe://example.org/web', serial: web.leaf.serialNumber },
    });
    assert.deepEqual(second, {
      kind: 'x509',
      update: 2,
      svids: [expected(rotated, true)],
      bundles: { 'example.org': 2, 'partner.example': 1 },
      source: { spiffe_id: 'spiffe://example.org/web', serial: rotated.leaf.serialNumber },
    });
    assert.deepEqual(linesOf(run.lines, 'bundles'), [
      {
        kind: 'bundles',
        x509: { 'example.org': 1, 'partner.example': 1 },
        jwt: { 'example.org': 1, 'partner.example': 1 },
        jwt_source: { 'example.org': 1, 'partner.example': 1 },
      },
    ]);
    const [jwt] = linesOf(run.lines, 'jwt');
    assert.equal(jwt?.spiffe_id, 'spiffe://example.org/web');
    assert.equal(jwt?.hint, 'web-jwt');
    assert.deepEqual(jwt?.audience, ['db', 'cache']);
    assert.ok(Math.abs((jwt?.expires_at ?? 0) - (Date.now() / 1000 + 300)) < 60);
    // The order the helper documents: the sources, the JWT-SVID, then the updates.
    assert.deepEqual(
      run.lines.map((l) => l.kind),
      ['bundles', 'jwt', 'x509', 'x509'],
    );
  });

  test('py-spiffe: the one-shot fetches and the stream report what was served, and the stream follows a rotation', async () => {
    const run = await runPythonWorkload(api.socketPath, {
      audience: ['db'],
      updates: 2,
      onLine: (line) => {
        if (line.kind === 'x509' && line.update === 1) rotate();
      },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(run.lines, [
      {
        kind: 'x509-context',
        svids: [expected(web, false), expected(db, false)],
        bundles: { 'example.org': 1, 'partner.example': 1 },
      },
      { kind: 'x509-bundles', bundles: { 'example.org': 1, 'partner.example': 1 } },
      { kind: 'jwt-bundles', bundles: { 'example.org': 1, 'partner.example': 1 } },
      {
        kind: 'jwt',
        spiffe_id: 'spiffe://example.org/web',
        audience: ['db'],
        expires_at: (run.lines[3] as { expires_at: number }).expires_at,
      },
      {
        kind: 'x509',
        update: 1,
        svids: [expected(web, false), expected(db, false)],
        bundles: { 'example.org': 1, 'partner.example': 1 },
      },
      {
        kind: 'x509',
        update: 2,
        svids: [expected(rotated, false)],
        bundles: { 'example.org': 2, 'partner.example': 1 },
      },
    ]);
  });

  test('go-spiffe mTLS pair on SVIDs from the socket: both sides handshake and name each other', async () => {
    const same = await runGoMtlsPair(api.socketPath);
    assert.equal(same.code, 0, same.stderr);
    assert.deepEqual(same.line, {
      kind: 'mtls',
      ok: true,
      server: { self: 'spiffe://example.org/web', peer: 'spiffe://example.org/web' },
      client: { self: 'spiffe://example.org/web', peer: 'spiffe://example.org/web' },
      reply: 'spiffe://example.org/web hello',
    });
    // Picked by hint: the server presents db's SVID, whose chain has an intermediate.
    const byHint = await runGoMtlsPair(api.socketPath, { serverHint: 'db' });
    assert.equal(byHint.code, 0, byHint.stderr);
    assert.deepEqual(byHint.line?.server, {
      self: 'spiffe://example.org/db',
      peer: 'spiffe://example.org/web',
    });
    assert.deepEqual(byHint.line?.client, {
      self: 'spiffe://example.org/web',
      peer: 'spiffe://example.org/db',
    });
  });

  test('go-spiffe mTLS pair: a client of another trust domain is refused by authorization, not let through', async () => {
    const foreign = svid(partner, 'spiffe://partner.example/client', 'foreign');
    api.setX509Svids([
      { svid: web, bundle },
      { svid: foreign, bundle: partnerBundle },
    ]);
    const r = await runGoMtlsPair(api.socketPath, { clientHint: 'foreign' });
    assert.equal(r.code, 1);
    assert.equal(r.line?.ok, false);
    assert.equal(r.line?.client.self, 'spiffe://partner.example/client');
    assert.match(`${r.line?.server.error} ${r.line?.client.error}`, /unexpected trust domain/);
  });

  test('no identity: both peers report PermissionDenied with its code and give up at their timeout', async () => {
    for (const m of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles', 'FetchJWTSVID'] as const)
      api.setError(m, { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const [go, python] = await Promise.all([
      runGoWorkload(api.socketPath, { audience: ['db'], timeoutMs: 2000 }),
      runPythonWorkload(api.socketPath, { audience: ['db'], timeoutMs: 2000 }),
    ]);
    assert.equal(go.code, 1);
    assert.deepEqual(linesOf(go.lines, 'x509'), []);
    const goErrors = linesOf(go.lines, 'error');
    assert.ok(goErrors.length > 0, go.stderr);
    assert.deepEqual(
      goErrors.map((e) => [e.where, e.code]),
      goErrors.map(() => ['watch', 'PermissionDenied']),
    );
    assert.match(go.stderr, /X509Source: context deadline exceeded/);
    assert.equal(python.code, 1);
    assert.deepEqual(linesOf(python.lines, 'x509'), []);
    assert.deepEqual(
      linesOf(python.lines, 'error').map((e) => [e.where, e.code]),
      [
        ['fetch_x509_context', 'PermissionDenied'],
        ['fetch_x509_bundles', 'PermissionDenied'],
        ['fetch_jwt_bundles', 'PermissionDenied'],
        ['fetch_jwt_svid', 'PermissionDenied'],
      ],
    );
  });
});
