/**
 * A real SPIRE v1.13.3 (spire-server and spire-agent, see spire.test.util.ts) federated with a
 * tessera server both ways over https_spiffe: SPIRE's config file names tessera's bundle endpoint
 * (`federates_with "tessera.test"`, endpoint_spiffe_id spiffe://tessera.test/tessera/server) and
 * tessera's relationship with spire.test is made with `tessera federation create`, each side
 * bootstrapped once with the other's bundle. go-spiffe workloads (test/interop/go, `x509-server`,
 * `x509-client`, `x509-bundles`) run on the SPIRE agent's socket and on two tessera agents' sockets.
 * Checked: each server fetched the other's bundle from its bundle endpoint; each federated workload
 * sees the other trust domain's roots; mTLS completes in both directions (a SPIRE workload serving a
 * tessera one and the reverse, each authorizing the other's exact ID); a tessera workload whose entry
 * does not federate with spire.test has no spire.test bundle and is refused; then a CA rotation on
 * each side (prepare, fetch, activate, taint, revoke of the old CA, fetch) and mTLS in both
 * directions again, with the old root gone from the other side's workloads.
 * Same rules as the other interop suites: without SPIRE or the Go peer (test/interop/setup.sh)
 * skipped loudly; failing with TESSERA_REQUIRE_INTEROP=1.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseTrustDomain } from '@tessera/spiffe';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { tessera } from '@tessera/tessera/dist/cli/main.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
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

const skip = spireUnavailable('SPIRE v1.13.3 federated with tessera');

const SPIRE_TD = 'spire.test';
const TESSERA_TD = 'tessera.test';
const SPIRE_WEB = `spiffe://${SPIRE_TD}/web`;
const TESSERA_API = `spiffe://${TESSERA_TD}/api`;
const TESSERA_PLAIN = `spiffe://${TESSERA_TD}/plain`;
const uid = process.getuid?.() ?? 0;
const mine = [{ type: 'unix', value: `uid:${uid}` }];
const quiet = createLogger({ level: 'error', write: () => undefined });

/** The go peer's log line for a connection it accepted from `id`: `ACCEPTED <addr> (<id>)`. */
const accepted = (id: string) => new RegExp(`^ACCEPTED \\S+ \\(${id.replace(/[.]/g, '\\.')}\\)$`);

/** Polls `check` every 200 ms (SPIRE's agent offers no event to a parent process). */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`spire federation test: ${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('SPIRE v1.13.3 and tessera federated both ways (https_spiffe)', { skip, timeout: 180_000 }, () => {
  let tmp: TempDir;
  let t: RunningServer;
  let spire: RunningSpireServer;
  let spireAgent: RunningSpireAgent;
  let fedAgent: RunningAgent;
  let plainAgent: RunningAgent;
  let tSock: string;

  const tesseraCli = (...args: string[]) => tessera(...args.slice(0, 2), '--socket', tSock, ...args.slice(2));
  const ourRoots = async () =>
    ((await t.datastore.getBundle(parseTrustDomain(TESSERA_TD)))?.x509Authorities ?? []).map(fingerprint);
  const spireRoots = async () =>
    (await spire.bundle('pem'))
      .match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)
      ?.map((p) => fingerprint(new X509Certificate(p))) ?? [];

  /** The certificate the SPIRE agent hands this process's uid now (spire-agent api fetch x509 -write). */
  async function spireSvid(): Promise<X509Certificate> {
    const dir = join(tmp.path, 'fetched');
    mkdirSync(dir, { recursive: true });
    const r = await spireAgent.cli(['api', 'fetch', 'x509', '-write', dir]);
    assert.equal(r.code, 0, r.stderr);
    const pem = readFileSync(join(dir, 'svid.0.pem'), 'utf8').match(
      /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/,
    )?.[0];
    assert.ok(pem !== undefined);
    return new X509Certificate(pem);
  }

  /** mTLS both ways between the SPIRE workload and the federated tessera workload. */
  async function bothWays(label: string): Promise<void> {
    const spireServer = await startX509Server(spireAgent.socketPath, { id: TESSERA_API });
    try {
      const r = await runX509Client(
        fedAgent.socketPath,
        spireServer.address,
        { id: SPIRE_WEB },
        { message: label },
      );
      assert.equal(r.code, 0, `${label}: tessera → SPIRE: ${r.stdout}${r.stderr}`);
      assert.equal(r.serverId, SPIRE_WEB);
      assert.match(await spireServer.nextLog(/^(ACCEPTED|REFUSED)/), accepted(TESSERA_API));
    } finally {
      await spireServer.close();
    }
    const tesseraServer = await startX509Server(fedAgent.socketPath, { id: SPIRE_WEB });
    try {
      const r = await runX509Client(
        spireAgent.socketPath,
        tesseraServer.address,
        { id: TESSERA_API },
        { message: label },
      );
      assert.equal(r.code, 0, `${label}: SPIRE → tessera: ${r.stdout}${r.stderr}`);
      assert.equal(r.serverId, TESSERA_API);
      assert.match(await tesseraServer.nextLog(/^(ACCEPTED|REFUSED)/), accepted(SPIRE_WEB));
    } finally {
      await tesseraServer.close();
    }
  }

  before(async () => {
    tmp = await makeTempDir('spfed-');
    t = await startTestServer(
      join(tmp.path, 't'),
      ['federation: { bundle_endpoint: { address: 127.0.0.1, port: 0, refresh_hint: 10s } }'],
      0,
      TESSERA_TD,
    );
    tSock = join(tmp.path, 't', 'admin.sock');
    spire = await startSpireServer({
      dir: join(tmp.path, 's'),
      trustDomain: SPIRE_TD,
      bundleEndpointPort: 0,
      bundleEndpointRefreshHint: '10s',
      federatesWith: [
        {
          trustDomain: TESSERA_TD,
          url: `https://127.0.0.1:${t.bundleEndpointPort}`,
          endpointSpiffeId: `spiffe://${TESSERA_TD}/tessera/server`,
        },
      ],
    });
    // SPIRE: tessera's bundle once (`bundle set`), then a fetch from tessera's bundle endpoint.
    const ours = await tesseraCli('bundle', 'show', '--format', 'spiffe');
    assert.equal(ours.code, 0, ours.stderr);
    await spire.cliOk(['bundle', 'set', '-format', 'spiffe', '-id', `spiffe://${TESSERA_TD}`], {
      input: ours.stdout,
    });
    await spire.cliOk(['federation', 'refresh', '-id', TESSERA_TD]);
    // tessera: SPIRE's bundle once (--trust-domain-bundle-path), then a fetch from SPIRE's endpoint.
    const spireJson = join(tmp.path, 'spire.json');
    writeFileSync(spireJson, await spire.bundle('spiffe'));
    const created = await tesseraCli(
      'federation',
      'create',
      '--trust-domain',
      SPIRE_TD,
      '--bundle-endpoint-url',
      spire.bundleEndpointUrl ?? '',
      '--bundle-endpoint-profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      spire.endpointSpiffeId,
      '--trust-domain-bundle-path',
      spireJson,
    );
    assert.equal(created.code, 0, created.stderr);
    const refreshed = await tesseraCli('federation', 'refresh', '--trust-domain', SPIRE_TD);
    assert.equal(refreshed.code, 0, refreshed.stderr);

    spireAgent = await startSpireAgent({ dir: join(tmp.path, 'sa'), server: spire });
    await createSpireEntry(spire, {
      spiffeId: SPIRE_WEB,
      parentId: spireAgent.nodeId,
      selectors: [`unix:uid:${uid}`],
      federatesWith: [TESSERA_TD],
    });
    for (const [name, id, fed] of [
      ['fed', TESSERA_API, [SPIRE_TD]],
      ['plain', TESSERA_PLAIN, []],
    ] as const) {
      await t.datastore.createJoinToken({
        token: `spire-federation-${name}-token-01234`,
        expiresAt: new Date(Date.now() + 60_000),
        agentName: name,
      });
      await t.datastore.createEntry({
        spiffeId: id,
        parentId: `spiffe://${TESSERA_TD}/tessera/agent/join_token/${name}`,
        selectors: mine,
        federatesWith: [...fed],
      });
    }
    fedAgent = await startTestAgent(t, join(tmp.path, 'fa'), 'spire-federation-fed-token-01234', quiet);
    plainAgent = await startTestAgent(t, join(tmp.path, 'pa'), 'spire-federation-plain-token-01234', quiet);
    await spireAgent.waitForSvid(SPIRE_WEB);
  });

  after(async () => {
    await plainAgent?.stop();
    await fedAgent?.stop();
    await spireAgent?.stop();
    await spire?.stop();
    await t?.stop();
    await tmp?.cleanup();
  });

  test("each server fetched the other's bundle from its bundle endpoint", async () => {
    const stored = await t.datastore.getBundle(parseTrustDomain(SPIRE_TD));
    assert.deepEqual(stored?.x509Authorities.map(fingerprint), await spireRoots());
    assert.equal(stored?.refreshHint, 10, 'the hint SPIRE serves, so the bundle came from its endpoint');
    const shown = JSON.parse(
      (await tesseraCli('federation', 'show', '--trust-domain', SPIRE_TD, '--output', 'json')).stdout,
    ) as {
      status: { last_error: string | null; last_success: string | null };
    };
    assert.equal(shown.status.last_error, null);
    assert.notEqual(shown.status.last_success, null);
    const theirs = JSON.parse(
      await spire.cliOk(['bundle', 'list', '-id', `spiffe://${TESSERA_TD}`, '-format', 'spiffe']),
    ) as { keys: { use: string; x5c?: string[] }[]; spiffe_sequence?: number };
    const x509 = theirs.keys
      .filter((k) => k.use === 'x509-svid')
      .map((k) => fingerprint(new X509Certificate(Buffer.from(k.x5c?.[0] ?? '', 'base64'))));
    assert.deepEqual(x509, await ourRoots());
    assert.ok(
      theirs.keys.some((k) => k.use === 'jwt-svid'),
      "SPIRE keeps tessera's JWT authority too",
    );
  });

  test("each federated workload sees the other trust domain's roots; the unfederated one does not", async () => {
    const onSpire = await runX509Bundles(spireAgent.socketPath, { trustDomain: TESSERA_TD, roots: 1 });
    assert.equal(onSpire.code, 0, onSpire.stderr);
    assert.deepEqual(onSpire.bundles.get(TESSERA_TD)?.fingerprints, await ourRoots());
    const onTessera = await runX509Bundles(fedAgent.socketPath, { trustDomain: SPIRE_TD, roots: 1 });
    assert.equal(onTessera.code, 0, onTessera.stderr);
    assert.deepEqual(onTessera.bundles.get(SPIRE_TD)?.fingerprints, await spireRoots());
    assert.deepEqual(onTessera.svids, [TESSERA_API]);
    const plain = await runX509Bundles(plainAgent.socketPath);
    assert.equal(plain.code, 0, plain.stderr);
    assert.deepEqual([...plain.bundles.keys()], [TESSERA_TD]);
  });

  test('mTLS completes in both directions between a SPIRE workload and a tessera workload', async () => {
    await bothWays('before rotation');
  });

  test('an unfederated pair is refused', async () => {
    const spireServer = await startX509Server(spireAgent.socketPath, { id: TESSERA_PLAIN });
    try {
      const r = await runX509Client(plainAgent.socketPath, spireServer.address, { id: SPIRE_WEB });
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.error ?? '', /spire\.test/);
    } finally {
      await spireServer.close();
    }
  });

  test("SPIRE rotates its CA: tessera's workloads follow and mTLS works both ways with the new CA", async () => {
    const old = (await showSpireX509Authorities(spire)).active;
    assert.ok(old !== undefined);
    const [oldRoot] = await spireRoots();
    const prepared = await spireX509Authority(spire, 'prepare');
    const newRoot = (await spireRoots()).find((f) => f !== oldRoot);
    assert.ok(newRoot !== undefined, 'the prepared CA is in the bundle');
    assert.equal((await tesseraCli('federation', 'refresh', '--trust-domain', SPIRE_TD)).code, 0);
    const both = await runX509Bundles(fedAgent.socketPath, { trustDomain: SPIRE_TD, roots: 2 });
    assert.equal(both.code, 0, both.stderr);
    await spireX509Authority(spire, 'activate', prepared.authorityId);
    await spireX509Authority(spire, 'taint', old.authorityId);
    // SPIRE's agent re-issues what the tainted CA signed; then the old CA can go.
    await until(
      async () => {
        const leaf = await spireSvid();
        const pems =
          (await spire.bundle('pem')).match(
            /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g,
          ) ?? [];
        const ca = pems.map((p) => new X509Certificate(p)).find((c) => fingerprint(c) === newRoot);
        return ca !== undefined && leaf.checkIssued(ca) && leaf.verify(ca.publicKey);
      },
      30_000,
      "the SPIRE workload's SVID re-issued by the new CA",
    );
    await spireX509Authority(spire, 'revoke', old.authorityId);
    assert.equal((await spireRoots()).length, 1);
    assert.equal((await tesseraCli('federation', 'refresh', '--trust-domain', SPIRE_TD)).code, 0);
    const one = await runX509Bundles(fedAgent.socketPath, { trustDomain: SPIRE_TD, roots: 1, exact: true });
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(one.bundles.get(SPIRE_TD)?.fingerprints, [newRoot]);
    await bothWays('after SPIRE rotated');
  });

  test("tessera rotates its CA: SPIRE's workloads follow and mTLS works both ways with the new CA", async () => {
    const old = (await t.authority.list()).find((a) => a.kind === 'x509' && a.status === 'active');
    assert.ok(old !== undefined);
    await t.authority.prepare('x509');
    assert.equal((await ourRoots()).length, 2);
    await spire.cliOk(['federation', 'refresh', '-id', TESSERA_TD]);
    const both = await runX509Bundles(spireAgent.socketPath, { trustDomain: TESSERA_TD, roots: 2 });
    assert.equal(both.code, 0, both.stderr);
    const agentSerial = (await t.datastore.getAgent(fedAgent.manager.id))?.serial;
    await t.authority.activate('x509');
    await t.authority.taint('x509', old.id);
    const newCa = t.authority.x509.certificate;
    // The agent renews its own SVID, signed by the tainted CA, before the old CA can go: revoking first
    // would cut the agent off from the server (an operator waits for the same).
    await until(
      async () => (await t.datastore.getAgent(fedAgent.manager.id))?.serial !== agentSerial,
      15_000,
      "the tessera agent's own SVID renewed after the taint",
    );
    await until(
      async () => fedAgent.manager.svidsFor(mine)[0]?.svid.certificates[0]?.checkIssued(newCa) === true,
      15_000,
      'the tessera workload re-issued by the new CA',
    );
    await t.authority.revoke('x509', old.id);
    assert.equal((await ourRoots()).length, 1);
    await spire.cliOk(['federation', 'refresh', '-id', TESSERA_TD]);
    const one = await runX509Bundles(spireAgent.socketPath, {
      trustDomain: TESSERA_TD,
      roots: 1,
      exact: true,
    });
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(one.bundles.get(TESSERA_TD)?.fingerprints, await ourRoots());
    await bothWays('after tessera rotated');
  });
});
