/**
 * Real Envoys (1.40) across two federated trust domains. Two tessera servers run in this process,
 * example.org and partner.org, each with a bundle endpoint (https_spiffe) and a relationship with the
 * other created with `tessera federation create`, each with an agent. An outbound Envoy on the
 * partner.org agent (ORDERS) calls an inbound Envoy on the example.org agent (CATALOGUE); both were
 * printed by `tessera envoy bootstrap --federated`, so each validates the other with SDS `ALL`
 * through Envoy's SPIFFE certificate validator (one trust_domains entry per trust domain). Checked: a
 * GET through both reaches the app and the inbound Envoy names the partner.org caller; a look-alike
 * partner.org CA is refused; partner.org rotates its CA (prepare, refresh on example.org, activate,
 * taint) and traffic keeps flowing with the new one, no Envoy restarted; deleting the relationship
 * takes partner.org out of the inbound Envoy's `ALL` and its callers are refused.
 * Same rules as interop.test.ts: without Envoy (test/interop/setup.sh) the suite is skipped loudly,
 * unless TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import { parseTrustDomain } from '@tessera/spiffe';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { tessera } from '@tessera/tessera/dist/cli/main.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import {
  ENVOY_BINARY,
  envoyBootstrap,
  freePort,
  httpGet,
  type RunningEnvoy,
  startEnvoy,
  untilEnvoy,
  whenAgent,
} from './envoy-peer.js';
import { interopUnavailable } from './verdicts.js';

const skip = interopUnavailable('real Envoys across federated trust domains', [ENVOY_BINARY]);

const uid = process.getuid?.() ?? 0;
const mine = [{ type: 'unix', value: `uid:${uid}` }];
const ORDERS = 'spiffe://partner.org/orders';
const CATALOGUE = 'spiffe://example.org/catalogue';
const PARTNER = parseTrustDomain('partner.org');
const quiet = createLogger({ level: 'error', write: () => undefined });

describe('real Envoys across federated trust domains (SDS ALL, SPIFFE validator)', {
  skip,
  timeout: 120_000,
}, () => {
  let tmp: TempDir;
  let home: RunningServer;
  let partner: RunningServer;
  let homeAgent: RunningAgent;
  let partnerAgent: RunningAgent;
  let app: Server;
  let inbound: RunningEnvoy | undefined;
  let outbound: RunningEnvoy | undefined;
  let outPort: number;
  let inPort: number;
  const appSaw: string[] = [];
  const sock = (name: string) => join(tmp.path, name, 'admin.sock');

  /** `tessera federation create` on `on` for the other server's trust domain, then a first fetch. */
  async function federate(on: string, td: string, other: RunningServer): Promise<void> {
    const file = join(tmp.path, `${td}.bundle.json`);
    writeFileSync(file, (await other.datastore.getBundle(parseTrustDomain(td)))?.marshal() ?? '');
    const created = await tessera(
      'federation',
      'create',
      '--socket',
      sock(on),
      '--trust-domain',
      td,
      '--bundle-endpoint-url',
      `https://127.0.0.1:${other.bundleEndpointPort}`,
      '--bundle-endpoint-profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      `spiffe://${td}/tessera/server`,
      '--trust-domain-bundle-path',
      file,
    );
    assert.equal(created.code, 0, created.stderr);
    const refreshed = await tessera('federation', 'refresh', '--socket', sock(on), '--trust-domain', td);
    assert.equal(refreshed.code, 0, refreshed.stderr);
  }

  before(async () => {
    tmp = await makeTempDir('envoy-federation-');
    const endpoint = 'federation: { bundle_endpoint: { address: 127.0.0.1, port: 0 } }';
    home = await startTestServer(join(tmp.path, 'home'), [endpoint], 0, 'example.org');
    partner = await startTestServer(join(tmp.path, 'partner'), [endpoint], 0, 'partner.org');
    await federate('home', 'partner.org', partner);
    await federate('partner', 'example.org', home);
    for (const [server, name, td, id, fed] of [
      [home, 'home', 'example.org', CATALOGUE, 'partner.org'],
      [partner, 'partner', 'partner.org', ORDERS, 'example.org'],
    ] as const) {
      await server.datastore.createJoinToken({
        token: `envoy-federation-${name}-token-0123`,
        expiresAt: new Date(Date.now() + 60_000),
        agentName: name,
      });
      await server.datastore.createEntry({
        spiffeId: id,
        parentId: `spiffe://${td}/tessera/agent/join_token/${name}`,
        selectors: mine,
        federatesWith: [fed],
      });
    }
    homeAgent = await startTestAgent(
      home,
      join(tmp.path, 'home-agent'),
      'envoy-federation-home-token-0123',
      quiet,
    );
    partnerAgent = await startTestAgent(
      partner,
      join(tmp.path, 'partner-agent'),
      'envoy-federation-partner-token-0123',
      quiet,
    );
    for (const [agent, fed] of [
      [homeAgent, 'partner.org'],
      [partnerAgent, 'example.org'],
    ] as const)
      await whenAgent(
        agent,
        () => agent.manager.svidsFor(mine).length === 1 && agent.manager.federatedBundles.has(fed),
        20_000,
        `the SVID and the ${fed} bundle reaching the agent`,
      );

    app = createServer((req, res) => {
      appSaw.push(req.url ?? '');
      res.end(`catalogue app: ${req.method} ${req.url}`);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as AddressInfo).port;
    [outPort, inPort] = [await freePort(), await freePort()];
    const [outAdmin, inAdmin] = [await freePort(), await freePort()];
    const inboundYaml = await envoyBootstrap([
      '--spiffe-id',
      CATALOGUE,
      '--inbound',
      `127.0.0.1:${inPort}=127.0.0.1:${appPort}`,
      '--allow',
      ORDERS,
      '--federated',
      '--agent-socket',
      homeAgent.socketPath,
      '--admin',
      `127.0.0.1:${inAdmin}`,
    ]);
    const outboundYaml = await envoyBootstrap([
      '--spiffe-id',
      ORDERS,
      '--outbound',
      `127.0.0.1:${outPort}=127.0.0.1:${inPort}@${CATALOGUE}`,
      '--federated',
      '--agent-socket',
      partnerAgent.socketPath,
      '--admin',
      `127.0.0.1:${outAdmin}`,
    ]);
    const started = await Promise.allSettled([
      startEnvoy({
        name: 'inbound',
        bootstrap: inboundYaml,
        adminPort: inAdmin,
        dir: tmp.path,
        logFlushMs: 100,
      }),
      startEnvoy({
        name: 'outbound',
        bootstrap: outboundYaml,
        adminPort: outAdmin,
        dir: tmp.path,
        logFlushMs: 100,
      }),
    ]);
    [inbound, outbound] = started.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
    for (const r of started) if (r.status === 'rejected') throw r.reason;
  });

  after(async () => {
    await Promise.all([outbound?.stop(), inbound?.stop()]);
    await new Promise((r) => (app === undefined ? r(undefined) : app.close(r)));
    await partnerAgent?.stop();
    await homeAgent?.stop();
    await partner?.stop();
    await home?.stop();
    await tmp?.cleanup();
  });

  const inboundSsl = (what: string) => `listener.127.0.0.1_${inPort}.ssl.${what}`;

  test('a partner.org caller reaches an example.org app through both Envoys', async () => {
    const answer = await httpGet(outPort, '/items/7');
    assert.deepEqual(answer, { status: 200, body: 'catalogue app: GET /items/7' });
    const inLog = await (inbound as RunningEnvoy).nextLog(/^\[.*\] inbound_/);
    assert.match(inLog, new RegExp(`peer=${ORDERS} `));
  });

  test('a look-alike partner.org CA is refused by the inbound Envoy', async () => {
    const seen = appSaw.length;
    const fake = TestCa.create({ trustDomain: 'partner.org' }).issueX509Svid(ORDERS);
    const before = await (inbound as RunningEnvoy).counter(inboundSsl('fail_verify_error'));
    const error = await new Promise<string | undefined>((resolve) => {
      let err: string | undefined;
      const s = tls.connect(
        {
          host: '127.0.0.1',
          port: inPort,
          cert: fake.certificatesPem,
          key: fake.privateKeyPem,
          rejectUnauthorized: false,
        },
        () => s.write('GET /fake HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n'),
      );
      s.on('data', () => undefined);
      s.on('error', (e) => {
        err ??= e.message;
      });
      s.on('close', () => resolve(err ?? 'closed'));
    });
    assert.ok(error !== undefined);
    assert.equal(appSaw.length, seen);
    assert.equal(await (inbound as RunningEnvoy).counter(inboundSsl('fail_verify_error')), before + 1);
  });

  test("partner.org's CA rotation reaches the inbound Envoy's ALL by federation, with no failed request", async () => {
    const prepared = await partner.authority.prepare('x509');
    const newRoot = prepared.certificate?.fingerprint256;
    assert.ok(newRoot !== undefined);
    // The home server fetches partner.org's bundle (now with both roots) and its agent gets it.
    const refreshed = await tessera(
      'federation',
      'refresh',
      '--socket',
      sock('home'),
      '--trust-domain',
      'partner.org',
    );
    assert.equal(refreshed.code, 0, refreshed.stderr);
    await whenAgent(
      homeAgent,
      () =>
        homeAgent.manager.federatedBundles
          .get('partner.org')
          ?.x509Authorities.some((c) => c.fingerprint256 === newRoot) === true,
      10_000,
      'the new partner.org root reaching the home agent',
    );
    const old = (await partner.authority.list()).find((a) => a.kind === 'x509' && a.status === 'active');
    assert.ok(old !== undefined);
    await partner.authority.activate('x509');
    await partner.authority.taint('x509', old.id);
    // The partner agent re-issues ORDERS under the new CA at once (taint), and the outbound Envoy takes it.
    await whenAgent(
      partnerAgent,
      () => {
        const leaf = partnerAgent.manager.svidsFor(mine)[0]?.svid.certificates[0];
        const root = partner.authority.x509.certificate;
        return leaf !== undefined && root.fingerprint256 === newRoot && leaf.checkIssued(root);
      },
      15_000,
      'ORDERS re-issued by the new partner.org CA',
    );
    await untilEnvoy(
      async () => {
        const certs = await (outbound as RunningEnvoy).certs();
        const serial = partnerAgent.manager
          .svidsFor(mine)[0]
          ?.svid.certificates[0]?.serialNumber.toLowerCase();
        return certs.some((c) =>
          c.cert_chain.some(
            (x) => x.serial_number.toLowerCase().replace(/^0+/, '') === serial?.replace(/^0+/, ''),
          ),
        );
      },
      10_000,
      'the outbound Envoy holding the new ORDERS SVID',
    );
    for (let i = 0; i < 5; i++) assert.equal((await httpGet(outPort, `/after-rotation/${i}`)).status, 200);
  });

  test("deleting the relationship takes partner.org out of the inbound Envoy's ALL: its callers are refused", async () => {
    const del = await tessera(
      'federation',
      'delete',
      '--socket',
      sock('home'),
      '--trust-domain',
      'partner.org',
    );
    assert.equal(del.code, 0, del.stderr);
    await whenAgent(
      homeAgent,
      () => !homeAgent.manager.federatedBundles.has(PARTNER.name),
      10_000,
      'partner.org leaving the home agent',
    );
    const before = appSaw.length;
    // Envoy applies the new validation context to new connections; it has no event to wait on.
    await untilEnvoy(
      async () => {
        const r = await httpGet(outPort, '/after-delete').catch(() => ({ status: 0, body: '' }));
        return r.status !== 200;
      },
      10_000,
      'the inbound Envoy refusing partner.org callers',
    );
    const r = await httpGet(outPort, '/after-delete-2').catch(() => ({ status: 0, body: '' }));
    assert.notEqual(r.status, 200);
    assert.ok(!appSaw.slice(before).includes('/after-delete-2'));
  });
});
