/**
 * The SPIRE harness (spire.test.util.ts) against a real SPIRE v1.13.3: two servers, `spire.test`
 * (one agent, join token, unix workload attestor) and `spire.peer` (a bundle endpoint only), with
 * spire.test federating with spire.peer as the config file's `federates_with` (https_spiffe) —
 * the shape a test of SPIRE federating with tessera takes. One entry for this process's uid; the
 * go-spiffe peer's `x509-server` and `x509-client` both take that SVID from the agent's socket.
 * Checked: the mTLS exchange passes both ways (`OK <server id>`, `ACCEPTED`), each authorizer
 * refuses an ID it was not given, `x509-bundles` lists spire.test's bundle and, after a bundle
 * bootstrap and `federation refresh`, spire.peer's — with the CA spire.peer prepared after the
 * bootstrap, which only a fetch from its bundle endpoint brings. Runs in some 4 s. Same rule as the other interop suites: without
 * SPIRE or the Go peer (test/interop/setup.sh) skipped loudly; failing with TESSERA_REQUIRE_INTEROP=1.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, makeTempDir, type TempDir } from '@tessera/testkit';
import type { GoServer } from './go-peer.js';
import {
  createSpireEntry,
  fingerprint,
  type RunningSpireAgent,
  type RunningSpireServer,
  runX509Bundles,
  runX509Client,
  showSpireX509Authorities,
  spireUnavailable,
  spireX509Authority,
  startSpireAgent,
  startSpireServer,
  startX509Server,
} from './spire.test.util.js';

const skip = spireUnavailable('SPIRE harness (spire-server, spire-agent, go-spiffe on its Workload API)');

const TD = 'spire.test';
const PEER_TD = 'spire.peer';
const WORKLOAD = `spiffe://${TD}/workload`;
const uid = process.getuid?.() ?? 0;

describe('SPIRE v1.13.3 harness', { skip, timeout: 60_000 }, () => {
  let tmp: TempDir;
  let server: RunningSpireServer;
  let peer: RunningSpireServer;
  let agent: RunningSpireAgent | undefined;
  let echo: GoServer | undefined;

  before(async () => {
    tmp = await makeTempDir('spire-');
    const peerBundlePort = await freePort();
    // Both at once: spire.test's federates_with names spire.peer's endpoint before it listens
    // (SPIRE retries; the test bootstraps and refreshes below).
    [peer, server] = await Promise.all([
      startSpireServer({
        dir: join(tmp.path, 'p'),
        trustDomain: PEER_TD,
        bundleEndpointPort: peerBundlePort,
      }),
      startSpireServer({
        dir: join(tmp.path, 's'),
        trustDomain: TD,
        bundleEndpointPort: 0,
        federatesWith: [
          {
            trustDomain: PEER_TD,
            url: `https://127.0.0.1:${peerBundlePort}`,
            endpointSpiffeId: `spiffe://${PEER_TD}/spire/server`,
          },
        ],
      }),
    ]);
    agent = await startSpireAgent({ dir: join(tmp.path, 'a'), server });
    await createSpireEntry(server, {
      spiffeId: WORKLOAD,
      parentId: agent.nodeId,
      selectors: [`unix:uid:${uid}`],
    });
    await agent.waitForSvid(WORKLOAD);
    echo = await startX509Server(agent.socketPath, { id: WORKLOAD });
  });

  after(async () => {
    await echo?.close();
    await agent?.stop();
    await Promise.all([server?.stop(), peer?.stop()]);
    await tmp?.cleanup();
  });

  test('x509-client and x509-server, both on the SPIRE agent socket: mTLS with the SPIRE-issued SVID', async () => {
    const a = agent as RunningSpireAgent;
    const s = echo as GoServer;
    const r = await runX509Client(a.socketPath, s.address, { id: WORKLOAD }, { message: 'hello' });
    assert.equal(r.code, 0, `x509-client: ${r.stdout}${r.stderr}`);
    assert.equal(r.serverId, WORKLOAD);
    assert.equal(r.reply, `${WORKLOAD} hello`);
    assert.match(await s.nextLog(/^ACCEPTED /, 5_000), new RegExp(`\\(${WORKLOAD}\\)$`));
  });

  test('each side refuses a peer ID it was not told to authorize', async () => {
    const a = agent as RunningSpireAgent;
    const s = echo as GoServer;
    const wrongServer = await runX509Client(a.socketPath, s.address, { id: `spiffe://${TD}/other` });
    assert.equal(wrongServer.code, 1);
    assert.match(wrongServer.error ?? '', /unexpected ID "spiffe:\/\/spire\.test\/workload"/);

    const strict = await startX509Server(a.socketPath, { id: `spiffe://${TD}/other` });
    try {
      const refused = await runX509Client(a.socketPath, strict.address, { id: WORKLOAD });
      assert.equal(refused.code, 1, refused.stdout);
      assert.match(
        await strict.nextLog(/^REFUSED /, 5_000),
        /unexpected ID "spiffe:\/\/spire\.test\/workload"/,
      );
    } finally {
      await strict.close();
    }
  });

  test('x509-bundles lists spire.test with the roots spire-server shows, and the SVID', async () => {
    const a = agent as RunningSpireAgent;
    const r = await runX509Bundles(a.socketPath, { trustDomain: TD, roots: 1 });
    assert.equal(r.code, 0, r.stderr);
    const roots = await bundleRoots(server);
    assert.deepEqual(r.bundles.get(TD), { roots: roots.length, fingerprints: roots.map(fingerprint) });
    assert.deepEqual(r.svids, [WORKLOAD]);

    const absent = await runX509Bundles(a.socketPath, { trustDomain: 'absent.test', timeoutMs: 1_000 });
    assert.equal(absent.code, 1);
    assert.match(
      absent.stderr,
      /no bundle of absent\.test with at least 0 roots within 1s; last context:\nBUNDLE spire\.test 1 /,
    );
  });

  test('bundle show -format spiffe is a SPIFFE bundle (JWKS with x509-svid keys)', async () => {
    const doc = JSON.parse(await peer.bundle('spiffe')) as { keys?: { use?: string; x5c?: string[] }[] };
    assert.ok(Array.isArray(doc.keys) && doc.keys.length > 0, JSON.stringify(doc));
    assert.ok(doc.keys.some((k) => k.use === 'x509-svid' && k.x5c?.length === 1));
    assert.ok(peer.bundleEndpointUrl?.startsWith('https://127.0.0.1:'));
    assert.equal(peer.endpointSpiffeId, 'spiffe://spire.peer/spire/server');
  });

  test('federation: spire.test fetches spire.peer from its bundle endpoint; a federated entry gets it', async () => {
    const a = agent as RunningSpireAgent;
    // https_spiffe authenticates spire.peer's endpoint with spire.peer's bundle: none yet, no fetch.
    const unboot = await server.cli(['federation', 'refresh', '-id', PEER_TD]);
    assert.equal(unboot.code, 1, unboot.stdout);
    assert.match(unboot.stderr, /local copy of bundle not found/);
    await server.cliOk(['bundle', 'set', '-format', 'spiffe', '-id', `spiffe://${PEER_TD}`], {
      input: await peer.bundle('spiffe'),
    });
    // Synchronous: exit 0 once the endpoint answered (over mTLS, as spire.peer/spire/server) and
    // the bundle it served is stored.
    await server.cliOk(['federation', 'refresh', '-id', PEER_TD]);
    const federated = `spiffe://${TD}/federated`;
    await createSpireEntry(server, {
      spiffeId: federated,
      parentId: a.nodeId,
      selectors: [`unix:uid:${uid}`],
      federatesWith: [PEER_TD],
    });
    const first = await runX509Bundles(a.socketPath, { trustDomain: PEER_TD, roots: 1, timeoutMs: 15_000 });
    assert.equal(first.code, 0, first.stderr);
    assert.ok(first.svids.includes(federated), first.stdout);
    assert.ok(first.bundles.has(TD));

    // What only a fetch from the endpoint can bring: spire.peer's next CA, prepared after the bootstrap.
    const before = (await bundleRoots(peer)).length;
    const next = await spireX509Authority(peer, 'prepare');
    assert.equal((await showSpireX509Authorities(peer)).prepared?.authorityId, next.authorityId);
    await server.cliOk(['federation', 'refresh', '-id', PEER_TD]);
    const r = await runX509Bundles(a.socketPath, {
      trustDomain: PEER_TD,
      roots: before + 1,
      timeoutMs: 15_000,
    });
    assert.equal(r.code, 0, r.stderr);
    const roots = await bundleRoots(peer);
    assert.equal(roots.length, before + 1);
    assert.deepEqual(r.bundles.get(PEER_TD), { roots: roots.length, fingerprints: roots.map(fingerprint) });
  });
});

/** The X.509 roots of a server's own bundle, as `spire-server bundle show` prints them. */
async function bundleRoots(s: RunningSpireServer): Promise<X509Certificate[]> {
  const pem = await s.bundle('pem');
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (c) => new X509Certificate(c),
  );
}
