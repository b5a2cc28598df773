/**
 * Envoy SDS v3 against the Tessera agent, from two clients that behave as Envoy does: the
 * TypeScript SdsClient (grpc-js and the generated Envoy API types) and go-control-plane's Go types
 * (`go/bin/interop sds`). A real server and agent run in this process (real TLS, a real Unix
 * socket), with 8 s SVIDs so that rotations come every few seconds. Callers are attested by uid:
 * this process's uid has web and api (web federates with partner.org), uid 65534 has backend.
 * Both clients subscribe, ACK, NACK, change names, reconnect, and make a real mTLS handshake from
 * the secrets they received — with another workload's secrets, and refused by a peer of a trust
 * domain they do not trust. The Go part follows the interop rule (interopUnavailable).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import {
  authorizeAny,
  idFromCertificate,
  parseTrustDomain,
  parseX509BundlePem,
  parseX509Svid,
  SpiffeBundle,
  spiffeTlsConnect,
  X509BundleSet,
} from '@tessera/spiffe';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import {
  SdsClient,
  type SdsSecret,
  type SdsUpdate,
} from '@tessera/tessera/dist/envoy/sds-client.test.util.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { type GoServer, startGoServer, writePeerFiles } from './go-peer.js';
import {
  type GoHandshakeLine,
  type GoSdsLine,
  type GoSdsRequestLine,
  type GoSdsResponseLine,
  type GoSecretSeen,
  runGoSds,
  startGoSdsListener,
} from './sds-peers.js';
import { interopUnavailable } from './verdicts.js';
import { linesOf } from './workload-peers.js';

const uid = process.getuid?.() ?? 0;
const NOBODY = 65534;
const asRoot = uid === 0;
const WEB = 'spiffe://example.org/web';
const API = 'spiffe://example.org/api';
const BACKEND = 'spiffe://example.org/backend';
const mine = [{ type: 'unix', value: `uid:${uid}` }];
const nobody = [{ type: 'unix', value: `uid:${NOBODY}` }];

let tmp: TempDir;
let server: RunningServer;
let agent: RunningAgent;
const logs: string[] = [];
const partnerCa = TestCa.create({ trustDomain: 'partner.org' });
const otherCa = TestCa.create({ trustDomain: 'other.org' });

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`sds test: ${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The serial (upper-case hex) the agent holds now for `id` among `selectors`' SVIDs. */
function heldSerial(id: string, selectors = mine): string | undefined {
  return agent.manager
    .svidsFor(selectors)
    .find((s) => s.svid.id.toString() === id)
    ?.svid.certificates[0]?.serialNumber.toUpperCase();
}

/** Every SVID the agent held for this uid, by ID: serial and since when (performance.now()). */
const history = new Map<string, { serial: string; since: number }[]>();
function recordSerials(): void {
  for (const s of agent.manager.svidsFor(mine)) {
    const id = s.svid.id.toString();
    const serial = s.svid.certificates[0]?.serialNumber.toUpperCase() ?? '';
    const list = history.get(id) ?? [];
    if (list.at(-1)?.serial !== serial) list.push({ serial, since: performance.now() });
    history.set(id, list);
  }
}

/**
 * Whether `serial` was the agent's SVID for `id` at some moment between `from` and `to`
 * (performance.now() ms): what a client received then was current, even if a rotation (every few
 * seconds here) has replaced it since.
 */
function currentDuring(
  id: string,
  serial: string | undefined,
  from: number,
  to = performance.now(),
): boolean {
  const list = history.get(id) ?? [];
  return list.some(
    (h, i) => h.serial === serial && h.since <= to && (list[i + 1]?.since ?? Infinity) >= from,
  );
}

/** The ID `default` stands for: the caller's first SVID. */
function firstId(selectors = mine): string | undefined {
  return agent.manager.svidsFor(selectors)[0]?.svid.id.toString();
}

function bundlePem(): string {
  return agent.manager.bundle.x509Authorities.map((c) => c.toString()).join('');
}

before(async () => {
  tmp = await makeTempDir('sds-interop-');
  chmodSync(tmp.path, 0o755); // so that a uid-65534 workload can reach the agent's socket
  server = await startTestServer(tmp.path, ['x509_svid_ttl: 8s']);
  await server.datastore.createJoinToken({
    token: 'sds-interop-agent-token-0123',
    expiresAt: new Date(Date.now() + 60_000),
    agentName: 'sds-interop',
  });
  const partner = parseTrustDomain('partner.org');
  await server.datastore.updateBundle(
    partner,
    () => new SpiffeBundle({ trustDomain: partner, x509Authorities: [partnerCa.certificate] }),
  );
  const parentId = 'spiffe://example.org/tessera/agent/join_token/sds-interop';
  await server.datastore.createEntry({
    spiffeId: WEB,
    parentId,
    selectors: mine,
    hint: 'web',
    federatesWith: ['partner.org'],
  });
  await server.datastore.createEntry({ spiffeId: API, parentId, selectors: mine, hint: 'api' });
  await server.datastore.createEntry({ spiffeId: BACKEND, parentId, selectors: nobody });
  agent = await startTestAgent(
    server,
    tmp.path,
    'sds-interop-agent-token-0123',
    createLogger({ level: 'warn', write: (l) => logs.push(l) }),
  );
  await until(
    () =>
      agent.manager.svidsFor(mine).length === 2 &&
      agent.manager.svidsFor(nobody).length === 1 &&
      agent.manager.federatedBundles.has('partner.org'),
    20_000,
    'the SVIDs and the federated bundle reaching the agent',
  );
  recordSerials();
  agent.manager.on('update', recordSerials);
});

after(async () => {
  agent?.manager.off('update', recordSerials);
  await agent?.stop();
  await server?.stop();
  await tmp?.cleanup();
});

/** A node mTLS server (OpenSSL chain checks against `ca`) echoing "<peer id> <line>". */
async function nodePeer(
  cert: string,
  key: string,
  ca: string,
): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = tls.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true }, (socket) => {
    socket.setTimeout(10_000, () => socket.destroy());
    const peer = idFromCertificate(new X509Certificate(socket.getPeerCertificate().raw)).toString();
    createInterface({ input: socket }).once('line', (line) => socket.end(`${peer} ${line}\n`));
    socket.on('error', () => undefined);
  });
  srv.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as AddressInfo).port,
    close: () => new Promise((r) => srv.close(() => r())),
  };
}

interface Handshake {
  ok: boolean;
  peer?: string;
  reply?: string;
  error?: string;
}

/**
 * An mTLS handshake from what an SdsClient accepted, as Envoy would make it: the first
 * tls_certificate; a validation_context's trusted_ca as plain chain verification, or the SPIFFE
 * validator choosing the bundle of the peer's trust domain.
 */
function handshakeFrom(secrets: ReadonlyMap<string, SdsSecret>, port: number): Promise<Handshake> {
  const list = [...secrets.values()];
  const cert = list.find((s) => s.kind === 'tls_certificate');
  const validation = list.find((s) => s.kind === 'validation_context' || s.kind === 'spiffe_validator');
  assert.ok(cert?.kind === 'tls_certificate' && validation !== undefined, JSON.stringify(list));
  const socket =
    validation.kind === 'spiffe_validator'
      ? spiffeTlsConnect(
          {
            svid: parseX509Svid(cert.certificatesPem, cert.privateKeyPem),
            bundles: new X509BundleSet(
              Object.entries(validation.trustDomains).map(([td, b]) =>
                parseX509BundlePem(parseTrustDomain(td), b.pem),
              ),
            ),
            authorizer: authorizeAny(),
          },
          { host: '127.0.0.1', port },
        )
      : tls.connect({
          host: '127.0.0.1',
          port,
          cert: cert.certificatesPem,
          key: cert.privateKeyPem,
          ca: validation.kind === 'validation_context' ? validation.trustedCaPem : [],
          rejectUnauthorized: true,
          checkServerIdentity: () => undefined, // Envoy checks names only with SAN matchers
        });
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish({ ok: false, error: 'timed out' }), 10_000);
    let done = false;
    function finish(h: Handshake) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(h);
    }
    socket.once('secureConnect', () => {
      const peer = idFromCertificate(new X509Certificate(socket.getPeerCertificate().raw)).toString();
      socket.write('hi\n');
      createInterface({ input: socket }).once('line', (reply) => finish({ ok: true, peer, reply }));
      socket.once('end', () => finish({ ok: false, peer, error: 'the peer closed the connection' }));
    });
    socket.on('error', (err) => finish({ ok: false, error: err.message }));
  });
}

function byName(u: SdsUpdate): Map<string, SdsSecret> {
  return new Map(u.secrets.map((s) => [s.name, s]));
}

async function withClient<T>(
  names: readonly string[],
  body: (c: SdsClient) => Promise<T>,
  reject?: (u: SdsUpdate) => string | undefined,
): Promise<T> {
  const c = new SdsClient({
    socketPath: agent.socketPath,
    names,
    ...(reject === undefined ? {} : { reject }),
  }).start();
  try {
    return await body(c);
  } finally {
    c.close();
  }
}

describe('Envoy SDS: the TypeScript client against the agent', { timeout: 120_000 }, () => {
  test('default and ROOTCA: the first SVID as a tls_certificate, the own bundle as a validation context; ACKed with its version and nonce', async () => {
    await withClient(['default', 'ROOTCA'], async (c) => {
      const u = await c.next();
      assert.equal(u.verdict, 'ACK', u.reason);
      assert.ok(u.versionInfo !== '' && u.nonce !== '', JSON.stringify(u.response));
      assert.deepEqual(
        u.secrets.map((s) => [s.name, s.kind]),
        [
          ['default', 'tls_certificate'],
          ['ROOTCA', 'validation_context'],
        ],
      );
      const def = byName(u).get('default');
      assert.ok(def?.kind === 'tls_certificate');
      assert.equal(def.spiffeId, firstId());
      assert.ok([WEB, API].includes(def.spiffeId));
      assert.ok(currentDuring(def.spiffeId, def.serial, u.receivedAt - 50, u.receivedAt), def.serial);
      assert.match(def.privateKeyPem, /^-----BEGIN PRIVATE KEY-----/); // PKCS#8
      const root = byName(u).get('ROOTCA');
      assert.ok(root?.kind === 'validation_context');
      assert.equal(root.trustedCaPem, bundlePem());
      assert.deepEqual(root.caTrustDomains, ['example.org']);
      // The first request, then the ACK of this response.
      assert.deepEqual(
        c.requests.map((r) => [r.versionInfo, r.responseNonce, r.errorDetail]),
        [
          ['', '', undefined],
          [u.versionInfo, u.nonce, undefined],
        ],
      );
    });
  });

  test('ALL is the SPIFFE validator with the own and the federated trust domain; spiffe://<td> and a SPIFFE ID name one bundle and one SVID', async () => {
    await withClient(['ALL', 'spiffe://partner.org', 'spiffe://example.org', API], async (c) => {
      const u = await c.next();
      assert.equal(u.verdict, 'ACK', u.reason);
      const s = byName(u);
      const all = s.get('ALL');
      assert.ok(all?.kind === 'spiffe_validator', JSON.stringify(all));
      assert.deepEqual(Object.keys(all.trustDomains).sort(), ['example.org', 'partner.org']);
      assert.equal(all.trustDomains['example.org']?.pem, bundlePem());
      assert.equal(all.trustDomains['partner.org']?.pem, partnerCa.certificate.toString());
      const partner = s.get('spiffe://partner.org');
      assert.ok(partner?.kind === 'validation_context');
      assert.deepEqual(partner.caTrustDomains, ['partner.org']);
      const own = s.get('spiffe://example.org');
      assert.ok(own?.kind === 'validation_context');
      assert.equal(own.trustedCaPem, bundlePem());
      const api = s.get(API);
      assert.ok(api?.kind === 'tls_certificate');
      assert.equal(api.spiffeId, API);
      assert.ok(currentDuring(API, api.serial, u.receivedAt - 50, u.receivedAt), api.serial);
    });
  });

  test('an unknown name is left out, not an error: the stream answers the others and goes on', async () => {
    await withClient(['default', 'spiffe://example.org/nope', 'bogus'], async (c) => {
      const u = await c.next();
      assert.equal(u.verdict, 'ACK', u.reason);
      assert.deepEqual(
        u.secrets.map((s) => s.name),
        ['default'],
      );
      c.setNames(['bogus', 'ROOTCA']);
      const v = await c.next();
      assert.deepEqual(
        v.secrets.map((s) => s.name),
        ['ROOTCA'],
      );
    });
    await withClient(['bogus'], async (c) => {
      // Only unknown names: an empty response or none, but the stream stays up.
      const got = await c.collect(1000);
      assert.ok(got.every((u) => u.secrets.length === 0));
      c.setNames(['ROOTCA']);
      const v = await c.next();
      assert.deepEqual(
        v.secrets.map((s) => s.name),
        ['ROOTCA'],
      );
    });
    assert.ok(logs.some((l) => /left out/.test(l) && /bogus/.test(l)));
  });

  test('an ACK moves the version: a rotation is pushed with a new version, nonce and serial; no version is sent twice', async () => {
    await withClient(['default', 'ROOTCA'], async (c) => {
      const u1 = await c.next();
      const id = (byName(u1).get('default') as { spiffeId: string }).spiffeId;
      const u2 = await c.next(15_000);
      assert.equal(u2.verdict, 'ACK');
      assert.notEqual(u2.versionInfo, u1.versionInfo);
      assert.notEqual(u2.nonce, u1.nonce);
      const d1 = byName(u1).get('default');
      const d2 = byName(u2).get('default');
      assert.ok(d1?.kind === 'tls_certificate' && d2?.kind === 'tls_certificate');
      assert.equal(d2.spiffeId, id);
      assert.notEqual(d2.serial, d1.serial);
      assert.equal(c.acceptedVersion, u2.versionInfo);
      // Each ACK carries the version it accepts and the nonce it answers.
      const acks = c.requests.slice(1);
      assert.deepEqual(
        acks.map((r) => [r.versionInfo, r.responseNonce]),
        [
          [u1.versionInfo, u1.nonce],
          [u2.versionInfo, u2.nonce],
        ],
      );
      const more = await c.collect(1500);
      const versions = [u1, u2, ...more].map((u) => u.versionInfo);
      assert.equal(new Set(versions).size, versions.length, JSON.stringify(versions));
    });
  });

  test('a NACK is logged and that version is not sent again; the next rotation comes with a new version', async () => {
    const message = 'ts: refused response 1 on purpose';
    await withClient(
      ['default', 'ROOTCA'],
      async (c) => {
        const u1 = await c.next();
        assert.equal(u1.verdict, 'NACK');
        const nack = c.requests[1];
        assert.deepEqual(nack, {
          stream: 1,
          versionInfo: '', // nothing accepted yet
          responseNonce: u1.nonce,
          names: ['default', 'ROOTCA'],
          errorDetail: message,
        });
        const u2 = await c.next(15_000);
        assert.equal(u2.verdict, 'ACK');
        assert.notEqual(u2.versionInfo, u1.versionInfo);
        const d1 = byName(u1).get('default');
        const d2 = byName(u2).get('default');
        assert.ok(d1?.kind === 'tls_certificate' && d2?.kind === 'tls_certificate');
        assert.notEqual(d2.serial, d1.serial);
        assert.equal(c.acceptedVersion, u2.versionInfo);
        await until(() => logs.some((l) => /NACK/.test(l) && l.includes(message)), 2000, 'the NACK log line');
      },
      (u) => (u.n === 1 ? message : undefined),
    );
  });

  test('names are added and dropped within a stream; a dropped name is no longer pushed', async () => {
    await withClient(['default'], async (c) => {
      const u1 = await c.next();
      assert.deepEqual(
        u1.secrets.map((s) => s.name),
        ['default'],
      );
      c.setNames(['default', 'ROOTCA']);
      const u2 = await c.next(2000);
      assert.deepEqual(
        u2.secrets.map((s) => s.name),
        ['default', 'ROOTCA'],
      );
      c.setNames(['ROOTCA']);
      const u3 = await c.next(2000);
      assert.deepEqual(
        u3.secrets.map((s) => s.name),
        ['ROOTCA'],
      );
      // The SVID behind `default` rotates (8 s TTL) while only ROOTCA, which does not change, is asked for.
      const id = firstId() as string;
      const before = heldSerial(id);
      await until(() => heldSerial(id) !== before, 15_000, 'a rotation of the default SVID');
      const after = await c.collect(500);
      assert.deepEqual(after, [], JSON.stringify(after.map((u) => u.secrets.map((s) => s.name))));
    });
  });

  test('a reconnect sends the last accepted version and gets the current state at once', async () => {
    await withClient(['default', 'ROOTCA'], async (c) => {
      const u1 = await c.next();
      c.reconnect();
      const at = performance.now();
      const u2 = await c.next(2000);
      assert.equal(u2.stream, 2);
      assert.ok(u2.receivedAt - at < 1000, `${u2.receivedAt - at} ms`);
      const first = c.requests.find((r) => r.stream === 2);
      assert.deepEqual(first, {
        stream: 2,
        versionInfo: u1.versionInfo,
        responseNonce: '',
        names: ['default', 'ROOTCA'],
      });
      const d = byName(u2).get('default');
      assert.ok(d?.kind === 'tls_certificate');
      assert.ok(currentDuring(d.spiffeId, d.serial, u2.receivedAt - 50, u2.receivedAt), d.serial);
      assert.equal(u2.verdict, 'ACK');
    });
  });

  test('FetchSecrets answers once; DeltaSecrets is unimplemented', async () => {
    const got = await SdsClient.fetch(agent.socketPath, ['default', 'ROOTCA']);
    assert.deepEqual(got.problems, []);
    assert.deepEqual(
      got.secrets.map((s) => [s.name, s.kind]),
      [
        ['default', 'tls_certificate'],
        ['ROOTCA', 'validation_context'],
      ],
    );
    assert.ok(got.response.versionInfo !== '');
    const err = await SdsClient.deltaSecrets(agent.socketPath, ['default']);
    assert.equal(err?.code, 12 /* UNIMPLEMENTED */, String(err));
    assert.match(err?.details ?? '', /DeltaSecrets/);
  });

  test("an mTLS handshake from the secrets received succeeds with another workload's secrets, and fails against a peer of an untrusted trust domain", async () => {
    const self = firstId() as string;
    const other = self === WEB ? API : WEB;
    // The peer: the other workload, its secrets from SDS too.
    const peerSecrets = await withClient([other, 'ROOTCA'], async (c) => {
      await c.next();
      return c.accepted;
    });
    const pc = peerSecrets.get(other);
    const pv = peerSecrets.get('ROOTCA');
    assert.ok(pc?.kind === 'tls_certificate' && pv?.kind === 'validation_context');
    const peer = await nodePeer(pc.certificatesPem, pc.privateKeyPem, pv.trustedCaPem);
    const untrustedSvid = otherCa.issueX509Svid('spiffe://other.org/impostor');
    const untrusted = await nodePeer(untrustedSvid.certificatesPem, untrustedSvid.privateKeyPem, bundlePem());
    const partnerSvid = partnerCa.issueX509Svid('spiffe://partner.org/svc');
    const partner = await nodePeer(partnerSvid.certificatesPem, partnerSvid.privateKeyPem, bundlePem());
    try {
      for (const validation of ['ROOTCA', 'ALL']) {
        await withClient(['default', validation], async (c) => {
          await c.next();
          const ok = await handshakeFrom(c.accepted, peer.port);
          assert.deepEqual(ok, { ok: true, peer: other, reply: `${self} hi` }, validation);
          const refused = await handshakeFrom(c.accepted, untrusted.port);
          assert.equal(refused.ok, false, validation);
          assert.match(
            refused.error ?? '',
            /unable to (get local issuer certificate|verify the first certificate)|no bundle|other\.org/i,
            validation,
          );
          // partner.org: trusted through ALL (the web entry of this uid federates with it), not through ROOTCA.
          const federated = await handshakeFrom(c.accepted, partner.port);
          assert.equal(federated.ok, validation === 'ALL', `${validation}: ${JSON.stringify(federated)}`);
        });
      }
    } finally {
      await Promise.all([peer.close(), untrusted.close(), partner.close()]);
    }
  });
});

describe('Envoy SDS: the go-control-plane client against the agent', { timeout: 180_000 }, () => {
  if (interopUnavailable('go-control-plane SDS client against the agent')) return;
  const socket = () => agent.socketPath;

  const responses = (lines: readonly GoSdsLine[]) => linesOf(lines, 'response') as GoSdsResponseLine[];
  const requests = (lines: readonly GoSdsLine[]) => linesOf(lines, 'request') as GoSdsRequestLine[];
  const secret = (r: GoSdsResponseLine | undefined, name: string): GoSecretSeen | undefined =>
    r?.secrets.find((s) => s.name === name);

  test('default and ROOTCA, ACKed: the first SVID with its serial, the own bundle', async () => {
    const from = performance.now();
    const run = await runGoSds(socket(), { names: ['default', 'ROOTCA'] });
    assert.equal(run.code, 0, run.stderr + JSON.stringify(run.lines));
    const [r] = responses(run.lines);
    assert.ok(r !== undefined);
    assert.equal(r.verdict, 'ACK', r.reason);
    assert.ok(r.version_info !== '' && r.nonce !== '');
    assert.deepEqual(r.names, ['default', 'ROOTCA']);
    const def = secret(r, 'default');
    assert.equal(def?.kind, 'tls_certificate');
    assert.equal(def?.spiffe_id, firstId());
    assert.ok(currentDuring(def?.spiffe_id ?? '', def?.serial, from), def?.serial);
    assert.equal(def?.key_pem, 'PRIVATE KEY');
    assert.deepEqual(secret(r, 'ROOTCA'), {
      name: 'ROOTCA',
      kind: 'validation_context',
      authorities: 1,
      ca_trust_domains: ['example.org'],
    });
    assert.deepEqual(
      requests(run.lines).map((q) => [q.version_info, q.response_nonce, q.error_detail]),
      [
        ['', '', undefined],
        [r.version_info, r.nonce, undefined],
      ],
    );
  });

  test('ALL through the SPIFFE validator, a trust domain, a SPIFFE ID; unknown names left out', async () => {
    const from = performance.now();
    const run = await runGoSds(socket(), {
      names: ['ALL', 'spiffe://partner.org', API, 'bogus', 'spiffe://example.org/nope'],
    });
    assert.equal(run.code, 0, run.stderr + JSON.stringify(run.lines));
    const [r] = responses(run.lines);
    assert.equal(r?.verdict, 'ACK', r?.reason);
    assert.deepEqual(r?.names, ['ALL', 'spiffe://partner.org', API]);
    assert.deepEqual(secret(r, 'ALL'), {
      name: 'ALL',
      kind: 'spiffe_validator',
      trust_domains: { 'example.org': 1, 'partner.org': 1 },
    });
    assert.deepEqual(secret(r, 'spiffe://partner.org')?.ca_trust_domains, ['partner.org']);
    assert.equal(secret(r, API)?.spiffe_id, API);
    assert.ok(currentDuring(API, secret(r, API)?.serial, from));
  });

  test('a rotation is pushed with a new version; every response is ACKed with its version and nonce', async () => {
    const run = await runGoSds(socket(), { names: ['default'], events: 2, timeoutMs: 20_000 });
    assert.equal(run.code, 0, run.stderr + JSON.stringify(run.lines));
    const [r1, r2] = responses(run.lines);
    assert.ok(r1 && r2);
    assert.notEqual(r2.version_info, r1.version_info);
    assert.notEqual(r2.nonce, r1.nonce);
    assert.equal(secret(r2, 'default')?.spiffe_id, secret(r1, 'default')?.spiffe_id);
    assert.notEqual(secret(r2, 'default')?.serial, secret(r1, 'default')?.serial);
    assert.deepEqual(
      requests(run.lines)
        .slice(1)
        .map((q) => [q.version_info, q.response_nonce]),
      [
        [r1.version_info, r1.nonce],
        [r2.version_info, r2.nonce],
      ],
    );
  });

  test('--nack 1: the NACK carries no accepted version and the error; that version is not sent again', async () => {
    const run = await runGoSds(socket(), {
      names: ['default', 'ROOTCA'],
      nack: [1],
      events: 2,
      timeoutMs: 20_000,
    });
    assert.equal(run.code, 0, run.stderr + JSON.stringify(run.lines));
    const [r1, r2] = responses(run.lines);
    assert.ok(r1 && r2);
    assert.equal(r1.verdict, 'NACK');
    assert.equal(r2.verdict, 'ACK');
    assert.notEqual(r2.version_info, r1.version_info);
    assert.notEqual(secret(r2, 'default')?.serial, secret(r1, 'default')?.serial);
    const nack = requests(run.lines)[1];
    assert.equal(nack?.version_info, '');
    assert.equal(nack?.response_nonce, r1.nonce);
    assert.match(nack?.error_detail ?? '', /NACK of response 1/);
    await until(
      () => logs.some((l) => /NACK/.test(l) && /NACK of response 1/.test(l)),
      2000,
      'the NACK log line',
    );
  });

  test('--then-names: names added, then dropped within the stream; the dropped one is no longer pushed', async () => {
    const run = await runGoSds(socket(), {
      names: ['default'],
      thenNames: { 1: ['default', 'ROOTCA'], 2: ['ROOTCA'] },
      events: 3,
      lingerMs: 9000, // longer than a rotation period of the default SVID
      timeoutMs: 30_000,
    });
    assert.equal(run.code, 0, run.stderr + JSON.stringify(run.lines));
    assert.deepEqual(
      responses(run.lines).map((r) => r.names),
      [['default'], ['default', 'ROOTCA'], ['ROOTCA']],
    );
    assert.deepEqual(
      requests(run.lines).map((q) => q.names),
      [['default'], ['default'], ['default', 'ROOTCA'], ['default', 'ROOTCA'], ['ROOTCA'], ['ROOTCA']],
    );
  });

  test('--reconnect-after 1: a new connection and stream carry the last accepted version and get the current state at once', async () => {
    const from = performance.now();
    const run = await runGoSds(socket(), { names: ['default', 'ROOTCA'], reconnectAfter: [1], events: 2 });
    assert.equal(run.code, 0, run.stderr + JSON.stringify(run.lines));
    const [r1, r2] = responses(run.lines);
    assert.ok(r1 && r2);
    assert.equal(r2.stream, 2);
    const opened = linesOf(run.lines, 'stream').find((l) => l.stream === 2);
    assert.ok(opened !== undefined && r2.at_ms - opened.at_ms < 1000, JSON.stringify([opened, r2]));
    const first = requests(run.lines).find((q) => q.stream === 2);
    assert.equal(first?.version_info, r1.version_info);
    assert.equal(first?.response_nonce, '');
    assert.equal(r2.verdict, 'ACK');
    const d = secret(r2, 'default');
    assert.ok(currentDuring(d?.spiffe_id ?? '', d?.serial, from), d?.serial);
  });

  test('--fetch answers once; --delta is Unimplemented', async () => {
    const fetched = await runGoSds(socket(), { names: ['default', 'ROOTCA'], fetch: true });
    assert.equal(fetched.code, 0, fetched.stderr + JSON.stringify(fetched.lines));
    assert.deepEqual(responses(fetched.lines)[0]?.names, ['default', 'ROOTCA']);
    const delta = await runGoSds(socket(), { names: ['default'], delta: true });
    assert.equal(delta.code, 1);
    const err = linesOf(delta.lines, 'error')[0];
    assert.equal(err?.code, 'Unimplemented', JSON.stringify(delta.lines));
  });

  test("handshakes: two workloads' SDS secrets (Go and TypeScript clients against a Go SDS listener of another uid); refused by an untrusted trust domain; partner.org only through ALL", async () => {
    // The listener is another workload: uid 65534 (backend) when this runs as root, else the
    // other SVID of this uid, named by its SPIFFE ID.
    const self = firstId() as string;
    const listenerId = asRoot ? BACKEND : self === WEB ? API : WEB;
    const listener = await startGoSdsListener(
      socket(),
      asRoot ? ['default', 'ROOTCA'] : [listenerId, 'ROOTCA'],
      asRoot ? { uid: NOBODY, gid: NOBODY } : {},
    );
    const bundleFiles = { 'example.org': agent.manager.bundle.x509Authorities };
    const untrustedFiles = await writePeerFiles(
      tmp.path,
      'other-org',
      otherCa.issueX509Svid('spiffe://other.org/impostor'),
      bundleFiles,
    );
    const partnerFiles = await writePeerFiles(
      tmp.path,
      'partner-org',
      partnerCa.issueX509Svid('spiffe://partner.org/svc'),
      bundleFiles,
    );
    const servers: GoServer[] = [];
    try {
      assert.equal(listener.self, listenerId);
      const untrusted = await startGoServer(untrustedFiles, { memberOf: 'example.org' });
      servers.push(untrusted);
      const partner = await startGoServer(partnerFiles, { memberOf: 'example.org' });
      servers.push(partner);
      const handshake = async (validation: string, addr: string) => {
        const run = await runGoSds(socket(), { names: ['default', validation], handshakeWith: addr });
        const line = linesOf(run.lines, 'handshake')[0] as GoHandshakeLine | undefined;
        assert.equal(run.code, line?.ok ? 0 : 1, run.stderr + JSON.stringify(run.lines));
        return line;
      };
      for (const validation of ['ROOTCA', 'ALL']) {
        const ok = await handshake(validation, listener.addr);
        assert.equal(ok?.ok, true, JSON.stringify(ok));
        assert.equal(ok?.peer, listenerId);
        assert.equal(ok?.reply, `${self} hi`);
        assert.equal(ok?.validation, validation === 'ALL' ? 'spiffe_validator' : 'validation_context');
        const refused = await handshake(validation, untrusted.address);
        assert.equal(refused?.ok, false);
        assert.match(
          refused?.error ?? '',
          validation === 'ALL' ? /no bundle|other\.org/i : /unknown authority/,
          JSON.stringify(refused),
        );
        // partner.org: trusted through ALL (the web entry of this uid federates with it), not through ROOTCA.
        const federated = await handshake(validation, partner.address);
        assert.equal(federated?.ok, validation === 'ALL', JSON.stringify(federated));
      }
      // The TypeScript client's secrets against the same Go listener.
      await withClient(['default', 'ROOTCA'], async (c) => {
        await c.next();
        const [host, port] = [
          listener.addr.slice(0, listener.addr.lastIndexOf(':')),
          listener.addr.split(':').pop(),
        ];
        assert.equal(host, '127.0.0.1');
        const h = await handshakeFrom(c.accepted, Number(port));
        assert.deepEqual(h, { ok: true, peer: listenerId, reply: `${self} hi` });
      });
      const accepted = () => listener.lines.flatMap((l) => (l.kind === 'accepted' ? [l.peer] : []));
      await until(() => accepted().length === 3, 2000, 'three connections accepted by the listener');
      assert.deepEqual(accepted(), [self, self, self]);
    } finally {
      await listener.close();
      await Promise.all(servers.map((s) => s.close()));
    }
  });
});
