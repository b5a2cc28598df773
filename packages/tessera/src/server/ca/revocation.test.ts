// Revoking one X509-SVID, end to end in one process over real sockets: a real server and agent,
// workloads on the agent's Workload API through the spiffe library, the `tessera x509` commands on
// the admin socket, a TLS server with the library's opt-in revocation check, tessera proxy, and
// OpenSSL's own CRL check as an outside judge.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type * as tls from 'node:tls';
import {
  authorizeAny,
  createSpiffeTlsServer,
  normalizeSerial,
  pickByHint,
  spiffeTlsConnect,
  X509Source,
  type X509Svid,
} from '@tessera/spiffe';
import {
  freePort,
  makeTempDir,
  type PostgresCluster,
  postgresAvailable,
  startPostgres,
  type TempDir,
} from '@tessera/testkit';
import type { RunningAgent } from '../../agent/run.js';
import { startTestAgent } from '../../agent/test-agent.test.util.js';
import { tessera } from '../../cli/main.test.util.js';
import { createLogger } from '../../common/log.js';
import { parseProxyConfig } from '../../proxy/config.js';
import { type RunningProxy, startProxy } from '../../proxy/run.js';
import { startTestServer } from '../api/test-server.test.util.js';
import type { RunningServer } from '../run.js';

const uid = process.getuid?.() ?? 0;
const TOKEN = 'revocation-test-token-0123456789';
const PARENT = 'spiffe://example.org/tessera/agent/join_token/revocation';
const silent = createLogger({ level: 'error', write: () => undefined });

/** Resolves with the first value `probe` returns that is not undefined, checked at each 'update' of `source`. */
function whenUpdated<T>(source: X509Source, probe: () => T | undefined, ms = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const check = () => {
      let v: T | undefined;
      try {
        v = probe();
      } catch {
        v = undefined;
      }
      if (v === undefined) return;
      clearTimeout(timer);
      source.off('update', check);
      resolve(v);
    };
    const timer = setTimeout(() => {
      source.off('update', check);
      reject(new Error(`no update satisfying the probe within ${ms} ms`));
    }, ms);
    source.on('update', check);
    check();
  });
}

/** Connects with a fixed SVID; resolves 'ok' after the server's greeting, or the error that ended the connection. */
function connectWith(svid: X509Svid, source: X509Source, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = spiffeTlsConnect(
      { svid: { getX509Svid: () => svid }, bundles: source, authorizer: authorizeAny() },
      { host: '127.0.0.1', port },
    );
    socket.setEncoding('utf8');
    socket.once('data', (d: string) => {
      socket.destroy();
      resolve(d === 'hello' ? 'ok' : `unexpected ${d}`);
    });
    socket.once('error', (e: Error) => resolve(`error: ${e.message}`));
    socket.once('close', () => resolve('closed'));
  });
}

describe('revoking one X509-SVID', () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;
  let source: X509Source;
  const socket = () => ['--socket', join(tmp.path, 'admin.sock')];
  let entryB = '';

  before(async () => {
    tmp = await makeTempDir('revocation-');
    server = await startTestServer(tmp.path, ['x509_svid_ttl: 1h']);
    await server.datastore.createJoinToken({
      token: TOKEN,
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'revocation',
    });
    const selectors = [{ type: 'unix', value: `uid:${uid}` }];
    for (const name of ['a', 'c', 'web'])
      await server.datastore.createEntry({
        spiffeId: `spiffe://example.org/${name}`,
        parentId: PARENT,
        selectors,
        hint: name,
      });
    entryB = (
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/b',
        parentId: PARENT,
        selectors,
        hint: 'b',
      })
    ).id;
    // An entry whose SVIDs live 3 s: revoked, then pruned from the CRL once expired.
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/short',
      parentId: PARENT,
      selectors,
      hint: 'short',
      x509SvidTtl: 3,
    });
    agent = await startTestAgent(server, tmp.path, TOKEN, silent);
    source = await X509Source.create({ address: `unix://${agent.socketPath}`, readyTimeoutMs: 10_000 });
    await whenUpdated(source, () => (source.getX509Svids().length === 5 ? true : undefined));
  });

  after(async () => {
    source?.close();
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  const svidOf = (hint: string) => pickByHint(hint)(source.getX509Svids());
  /** The leaf's serial as the server names it (normalizeSerial: upper case, no leading zeros). */
  const serialOf = (s: X509Svid) => normalizeSerial((s.certificates[0] as X509Certificate).serialNumber);

  it('every authority has a CRL from the start, on the Workload API; none revokes anything yet', () => {
    const crls = source.getX509Crls();
    assert.equal(crls.length, 1);
    const ca = source.getX509BundleForTrustDomain(svidOf('a').id.trustDomain)
      .authorities[0] as X509Certificate;
    assert.ok(crls[0]?.signedBy(ca), 'signed by the trust domain CA');
    assert.equal(crls[0]?.entries.size, 0);
    assert.equal(crls[0]?.nextUpdate?.getTime(), new Date(ca.validTo).getTime(), 'valid as long as its CA');
  });

  it('x509 revoke --serial: on the CRL the agent pushes within 1 s; the agent re-issues; TLS, openssl and the proxy refuse the revoked SVID', {
    timeout: 60_000,
  }, async (t) => {
    const revoked = svidOf('a');
    const good = svidOf('b');
    const serial = serialOf(revoked);
    const start = Date.now();
    const r = await tessera(
      'x509',
      'revoke',
      '--serial',
      serial.toLowerCase(),
      '--reason',
      'keyCompromise',
      ...socket(),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Revoked 1 X509-SVID:/);
    assert.match(r.stdout, /spiffe:\/\/example\.org\/a entry /);
    assert.match(r.stdout, /reason keyCompromise/);
    assert.match(r.stdout, /CRL of authority [0-9a-f]+: number 2, pushed to agents/);
    const crl = await whenUpdated(source, () =>
      source.getX509Crls().find((c) => c.entryFor(serial) !== undefined),
    );
    const pushMs = Date.now() - start;
    assert.ok(pushMs < 1000, `the CRL reached the workload in ${pushMs} ms (the revoke command included)`);
    t.diagnostic(`revoke command -> CRL in the workload's X509Source: ${pushMs} ms`);
    assert.equal(crl.entryFor(serial)?.reason, 1);
    assert.equal(crl.crlNumber, 2n);
    // The agent replaced the revoked SVID at once.
    const renewed = await whenUpdated(source, () => {
      const s = svidOf('a');
      return serialOf(s) !== serial ? s : undefined;
    });
    assert.equal(renewed.id.toString(), 'spiffe://example.org/a');

    // A TLS server with the library's revocation check refuses the revoked client, takes the good one;
    // without the check (opt-in) the revoked one still gets in.
    const servers: tls.Server[] = [];
    const listen = async (revocation: boolean) => {
      const s = createSpiffeTlsServer(
        {
          svid: { getX509Svid: () => svidOf('web') },
          bundles: source,
          authorizer: authorizeAny(),
          ...(revocation ? { revocation: source } : {}),
        },
        (sock) => sock.end('hello'),
      );
      servers.push(s);
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
      return (s.address() as AddressInfo).port;
    };
    try {
      const strict = await listen(true);
      const lax = await listen(false);
      assert.notEqual(await connectWith(revoked, source, strict), 'ok', 'revoked client refused');
      assert.equal(await connectWith(good, source, strict), 'ok');
      assert.equal(await connectWith(renewed, source, strict), 'ok', 'the re-issued SVID is accepted');
      assert.equal(
        await connectWith(revoked, source, lax),
        'ok',
        'without revocation checking nothing changes',
      );
    } finally {
      for (const s of servers) s.close();
    }

    // OpenSSL: the CRL from `tessera x509 crl --write`, the bundle, the revoked and the good leaf.
    const w = await tessera('x509', 'crl', '--write', join(tmp.path, 'crl'), ...socket());
    assert.equal(w.code, 0, w.stderr);
    const files = {
      ca: join(tmp.path, 'ca.pem'),
      crl: join(tmp.path, 'crl', 'crl.pem'),
      revoked: join(tmp.path, 'revoked.pem'),
      good: join(tmp.path, 'good.pem'),
    };
    writeFileSync(
      files.ca,
      source
        .getX509BundleForTrustDomain(revoked.id.trustDomain)
        .authorities.map((c) => c.toString())
        .join(''),
    );
    writeFileSync(files.revoked, (revoked.certificates[0] as X509Certificate).toString());
    writeFileSync(files.good, (good.certificates[0] as X509Certificate).toString());
    assert.match(readFileSync(files.crl, 'utf8'), /-----BEGIN X509 CRL-----/);
    const verify = (cert: string) =>
      spawnSync('openssl', ['verify', '-crl_check', '-CAfile', files.ca, '-CRLfile', files.crl, cert], {
        encoding: 'utf8',
      });
    const bad = verify(files.revoked);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout + bad.stderr, /certificate revoked/);
    assert.equal(verify(files.good).status, 0);

    // tessera proxy (inbound, on the agent's Workload API) refuses the revoked client at the handshake.
    const app: Server = createServer((_req, res) => res.end('app'));
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const policy = join(tmp.path, 'allow.yaml');
    writeFileSync(
      policy,
      'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: all, namespace: default}\nspec:\n  action: ALLOW\n  rules: [{}]\n',
    );
    const port = await freePort();
    let proxy: RunningProxy | undefined;
    try {
      proxy = await startProxy(
        parseProxyConfig(`
workload_api_socket: unix://${agent.socketPath}
policies: [${policy}]
inbound:
  - {name: app, listen: "127.0.0.1:${port}", upstream: "127.0.0.1:${(app.address() as AddressInfo).port}", protocol: tcp}
health: {port: 0}
`),
        { logger: silent },
      );
      const viaProxy = (svid: X509Svid) =>
        new Promise<string>((resolve) => {
          const s = spiffeTlsConnect(
            { svid: { getX509Svid: () => svid }, bundles: source, authorizer: authorizeAny() },
            { host: '127.0.0.1', port },
          );
          s.setEncoding('utf8');
          let got = '';
          s.on('secureConnect', () => s.write('GET / HTTP/1.0\r\n\r\n'));
          s.on('data', (d: string) => {
            got += d;
          });
          s.once('error', (e: Error) => resolve(`error: ${e.message}`));
          s.once('close', () => resolve(got));
        });
      assert.match(await viaProxy(good), /app$/, 'the good client reaches the app');
      const refused = await viaProxy(revoked);
      assert.doesNotMatch(refused, /app$/, 'the revoked client does not');
    } finally {
      await proxy?.stop();
      app.close();
    }
  });

  it('x509 revoke --entry-id revokes every SVID of the entry; a repeat changes nothing; x509 revoked lists them', {
    timeout: 30_000,
  }, async () => {
    const serial = serialOf(svidOf('b'));
    const r = await tessera('x509', 'revoke', '--entry-id', entryB, ...socket(), '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { revoked: { serial: string; entry_id: string; reason: string }[] };
    assert.ok(
      out.revoked.some((x) => x.serial === serial && x.entry_id === entryB && x.reason === 'unspecified'),
    );
    await whenUpdated(source, () => (serialOf(svidOf('b')) !== serial ? true : undefined));
    const again = await tessera('x509', 'revoke', '--serial', serial, ...socket());
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /Revoked 0 X509-SVIDs:\nAlready revoked \(unchanged\): 1/);
    const list = await tessera('x509', 'revoked', ...socket());
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`${serial}  spiffe://example.org/b entry ${entryB}`));
    assert.match(list.stdout, /CRLs: 1\n {2}authority [0-9a-f]+: number \d+/);
  });

  it('refuses what it cannot revoke, saying why', async () => {
    const unknown = await tessera('x509', 'revoke', '--serial', '0123ABCD', ...socket());
    assert.equal(unknown.code, 1);
    assert.match(
      unknown.stderr,
      /no unexpired X509-SVID with serial 123ABCD was issued by this trust domain's servers/,
    );
    const garbage = await tessera('x509', 'revoke', '--serial', 'xyz', ...socket());
    assert.match(garbage.stderr, /serial "xyz" is not a hexadecimal serial number/);
    const reason = await tessera('x509', 'revoke', '--serial', '01', '--reason', 'stolen', ...socket());
    assert.equal(reason.code, 2);
    assert.match(
      reason.stderr,
      /--reason "stolen" is not an RFC 5280 reason; use one of unspecified, keyCompromise/,
    );
    const both = await tessera('x509', 'revoke', ...socket());
    assert.match(both.stderr, /give either --serial .* or --entry-id/);
    const entry = await tessera('x509', 'revoke', '--entry-id', 'no-such-entry', ...socket());
    assert.match(entry.stderr, /entry "no-such-entry" has no unexpired X509-SVIDs/);
  });

  it('a revoked SVID leaves the CRL once it expired', { timeout: 30_000 }, async () => {
    const short = svidOf('short');
    const serial = serialOf(short);
    const r = await tessera('x509', 'revoke', '--serial', serial, ...socket());
    assert.equal(r.code, 0, r.stderr);
    await whenUpdated(source, () => source.getX509Crls().find((c) => c.entryFor(serial) !== undefined));
    // Its lifetime (3 s) runs out; the server's rotation loop prunes then (called here, not waited for).
    const expiry = short.expiresAt.getTime();
    while (Date.now() <= expiry) await new Promise((res) => setTimeout(res, expiry - Date.now() + 50));
    await server.revocations.prune();
    await whenUpdated(source, () =>
      source.getX509Crls().every((c) => c.entryFor(serial) === undefined) ? true : undefined,
    );
    assert.ok(
      (await server.datastore.listX509Revocations(new Date())).every((x) => x.serial !== serial),
      'the revocation record is gone',
    );
  });
});

if (postgresAvailable('revocation across servers on one PostgreSQL'))
  describe('revoking through one server an SVID another server signed (one PostgreSQL)', () => {
    let tmp: TempDir;
    let cluster: PostgresCluster;
    const servers: RunningServer[] = [];
    let agent: RunningAgent | undefined;
    let source: X509Source | undefined;
    before(async () => {
      tmp = await makeTempDir('revocation-ha-');
      cluster = await startPostgres();
    });
    after(async () => {
      source?.close();
      await agent?.stop();
      for (const s of servers.reverse()) await s.stop();
      await cluster?.stop();
      await tmp?.cleanup();
    });

    it('the server holding the key signs the CRL; the agent of the other gets it', {
      timeout: 60_000,
    }, async () => {
      const pg = `datastore: { postgres: { connection_string: "${cluster.connectionString}" } }`;
      const one = await startTestServer(join(tmp.path, 'one'), [pg]);
      servers.push(one);
      const two = await startTestServer(join(tmp.path, 'two'), [pg]);
      servers.push(two);
      await two.datastore.createJoinToken({
        token: TOKEN,
        expiresAt: new Date(Date.now() + 60_000),
        agentName: 'revocation',
      });
      await two.datastore.createEntry({
        spiffeId: 'spiffe://example.org/ha',
        parentId: PARENT,
        selectors: [{ type: 'unix', value: `uid:${uid}` }],
      });
      agent = await startTestAgent(two, join(tmp.path, 'two'), TOKEN, silent);
      const s = await X509Source.create({ address: `unix://${agent.socketPath}`, readyTimeoutMs: 10_000 });
      source = s;
      // Both servers' authorities have a CRL, whichever server the agent talks to.
      await whenUpdated(s, () => (s.getX509Crls().length === 2 ? true : undefined));
      const serial = (s.getX509Svid().certificates[0] as X509Certificate).serialNumber;
      const r = await tessera(
        'x509',
        'revoke',
        '--serial',
        serial,
        '--socket',
        join(tmp.path, 'one', 'admin.sock'),
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Revoked 1 X509-SVID:/);
      assert.match(r.stdout, /signed by the server of the trust domain that holds its key/);
      const crl = await whenUpdated(s, () => s.getX509Crls().find((c) => c.entryFor(serial) !== undefined));
      const signer = (await two.authority.list()).find(
        (a) => a.kind === 'x509' && a.status === 'active',
      )?.certificate;
      assert.ok(
        signer !== undefined && crl.signedBy(signer),
        "signed by the agent's server, which holds the key",
      );
    });
  });

describe('revoking an SVID of a key retired before a restart', () => {
  let tmp: TempDir;
  let server: RunningServer | undefined;
  before(async () => {
    tmp = await makeTempDir('revocation-restart-');
  });
  after(async () => {
    await server?.stop();
    await tmp?.cleanup();
  });

  it('is recorded, and the command says that no server may hold the key and what to do', {
    timeout: 60_000,
  }, async () => {
    server = await startTestServer(tmp.path);
    const sock = ['--socket', join(tmp.path, 'admin.sock')];
    const minted = await tessera(
      'x509',
      'mint',
      '--spiffe-id',
      'spiffe://example.org/minted',
      '--write',
      join(tmp.path, 'm'),
      ...sock,
    );
    assert.equal(minted.code, 0, minted.stderr);
    const serial = new X509Certificate(readFileSync(join(tmp.path, 'm', 'svid.pem'))).serialNumber;
    const old = (await server.authority.list()).find((a) => a.kind === 'x509' && a.status === 'active')?.id;
    await server.authority.prepare('x509');
    await server.authority.activate('x509');
    // Still held in memory: revoking now would be signed here. After a restart it is not held.
    await server.stop();
    server = await startTestServer(tmp.path);
    const r = await tessera('x509', 'revoke', '--serial', serial, ...sock);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Revoked 1 X509-SVID:/);
    assert.match(
      r.stderr,
      new RegExp(
        `warning: authority ${old} is retired: its CRL is signed only if the server that retired it has not restarted since .*\\(tessera authority taint\\|revoke --kind x509 --id ${old}`,
      ),
    );
    const list = await tessera('x509', 'revoked', ...sock);
    assert.match(
      list.stdout,
      new RegExp(`${normalizeSerial(serial)} {2}spiffe://example.org/minted \\(minted\\)`),
    );
  });
});
