// `tessera helper` end to end: a real server and agent (in this process, 6 s X509-SVIDs and 4 s
// JWT-SVIDs so renewals come within seconds), the helper as a real `tessera helper run` process
// attested by its uid. One-shot exit codes; files, modes and formats; renewal; modes re-applied
// after a chmod; no reader ever sees a partial file; a child that is signalled on renewal, gets
// SIGTERM forwarded, and whose exit status the helper exits with; /live and /ready.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { idFromCertificate, parseX509Crls } from '@tessera/spiffe';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { freePort, makeTempDir, type TempDir } from '@tessera/testkit';
import {
  spawnTessera,
  spawnTesseraAs,
  type TesseraProcess,
  waitForLog,
  waitForLogCount,
} from './tessera-process.js';

const uid = process.getuid?.() ?? 0;
const quiet = createLogger({ level: 'error', write: () => undefined });
const WEB = 'spiffe://example.org/web';
const mode = (p: string) => statSync(p).mode & 0o7777;
const serialOf = (p: string) => new X509Certificate(readFileSync(p)).serialNumber;

/** Polls `cond` (a file's content: no event says when another process wrote it) until true or the deadline. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

describe('tessera helper against a real agent', { timeout: 120_000 }, () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;
  const helpers: TesseraProcess[] = [];
  let n = 0;
  /** Writes a helper config (agent_address and cert_dir filled in) and returns its path. */
  const config = (lines: string[], certDir = tmp.path): string => {
    const file = join(tmp.path, `helper-${++n}.yaml`);
    writeFileSync(file, [`agent_address: ${agent.socketPath}`, `cert_dir: ${certDir}`, ...lines].join('\n'));
    return file;
  };
  const helper = (...args: string[]) => {
    const p = spawnTessera('helper', ...args);
    helpers.push(p);
    return p;
  };

  before(async () => {
    tmp = await makeTempDir('helper-e2e-');
    chmodSync(tmp.path, 0o755); // a helper run as another uid reaches the agent's socket
    server = await startTestServer(tmp.path, ['x509_svid_ttl: 6s', 'jwt_svid_ttl: 4s']);
    await server.datastore.createJoinToken({
      token: 'helper-agent-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'helper',
    });
    await server.datastore.createEntry({
      spiffeId: WEB,
      parentId: 'spiffe://example.org/tessera/agent/join_token/helper',
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
      hint: 'web',
    });
    agent = await startTestAgent(server, tmp.path, 'helper-agent-token-0123', quiet);
  });

  after(async () => {
    // SIGTERM first: a helper running a child forwards it, so no child outlives the test.
    for (const h of helpers) h.child.kill('SIGTERM');
    await Promise.race([Promise.all(helpers.map((h) => h.exit)), new Promise((r) => setTimeout(r, 5000))]);
    for (const h of helpers) h.child.kill('SIGKILL');
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  test('one-shot: every file written with its mode and format, then exit 0', async () => {
    const file = config([
      'daemon_mode: false',
      'svid_file_name: svid.pem',
      'svid_key_file_name: svid_key.pem',
      'svid_bundle_file_name: svid_bundle.pem',
      'svid_combined_file_name: combined.pem',
      'crl_file_name: crl.pem',
      'jwt_bundle_file_name: jwt_bundle.json',
      'jwt_svids: [{ jwt_audience: db, jwt_extra_audiences: [cache], jwt_svid_file_name: db.token }]',
      'cert_file_mode: 0640',
    ]);
    const p = helper('run', '--config', file);
    assert.equal(await p.exit, 0, p.stderr());
    const cert = new X509Certificate(readFileSync(join(tmp.path, 'svid.pem')));
    assert.equal(idFromCertificate(cert).toString(), WEB);
    const key = createPrivateKey(readFileSync(join(tmp.path, 'svid_key.pem')));
    assert.ok(cert.checkPrivateKey(key), 'the key file holds the key of the certificate');
    const ca = new X509Certificate(readFileSync(join(tmp.path, 'svid_bundle.pem')));
    assert.ok(cert.verify(ca.publicKey), 'the bundle holds the CA that signed the SVID');
    const combined = readFileSync(join(tmp.path, 'combined.pem'), 'utf8');
    assert.match(combined, /^-----BEGIN PRIVATE KEY-----[\s\S]+-----BEGIN CERTIFICATE-----/);
    assert.equal(mode(join(tmp.path, 'svid.pem')), 0o640);
    assert.equal(mode(join(tmp.path, 'svid_bundle.pem')), 0o640);
    assert.equal(mode(join(tmp.path, 'svid_key.pem')), 0o600);
    assert.equal(mode(join(tmp.path, 'combined.pem')), 0o600);
    // The trust domain's CRL, signed by the bundle's CA: OpenSSL checks the SVID against both files.
    const crls = parseX509Crls(readFileSync(join(tmp.path, 'crl.pem'), 'utf8'));
    assert.equal(crls.length, 1);
    assert.ok(crls[0]?.signedBy(ca));
    assert.equal(mode(join(tmp.path, 'crl.pem')), 0o640);
    const verified = spawnSync(
      'openssl',
      [
        'verify',
        '-crl_check',
        '-CAfile',
        join(tmp.path, 'svid_bundle.pem'),
        '-CRLfile',
        join(tmp.path, 'crl.pem'),
        join(tmp.path, 'svid.pem'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    assert.equal(mode(join(tmp.path, 'db.token')), 0o600);
    assert.equal(mode(join(tmp.path, 'jwt_bundle.json')), 0o600);
    const token = readFileSync(join(tmp.path, 'db.token'), 'utf8');
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString());
    assert.equal(claims.sub, WEB);
    assert.deepEqual([claims.aud].flat().sort(), ['cache', 'db']);
    // spiffe-helper's JWT bundle file: trust domain → base64 of its JWKS.
    const bundles = JSON.parse(readFileSync(join(tmp.path, 'jwt_bundle.json'), 'utf8'));
    assert.deepEqual(Object.keys(bundles), ['example.org']);
    const jwks = JSON.parse(Buffer.from(bundles['example.org'], 'base64').toString());
    assert.ok(jwks.keys.length >= 1 && typeof jwks.keys[0].kid === 'string');
  });

  test('one-shot: no agent, or no SVID with the hint, is exit 1 with a message naming the input', async () => {
    const gone = join(tmp.path, 'no-agent.sock');
    const file = join(tmp.path, 'no-agent.yaml');
    writeFileSync(
      file,
      `agent_address: ${gone}\ncert_dir: ${tmp.path}\ndaemon_mode: false\nfetch_timeout: 1s\njwt_bundle_file_name: never.json\n`,
    );
    const p = helper('run', '--config', file);
    assert.equal(await p.exit, 1);
    assert.match(p.stderr(), /no JWT bundles from the Workload API within fetch_timeout \(1000 ms\)/);
    assert.ok(p.stderr().includes(gone), p.stderr());
    const q = helper(
      'run',
      '--config',
      config(['daemon_mode: false', 'hint: api', 'svid_combined_file_name: never.pem']),
    );
    assert.equal(await q.exit, 1);
    assert.match(q.stderr(), /no X509-SVID has the hint "api" .*the hints "web"/);
    assert.throws(() => statSync(join(tmp.path, 'never.pem')));
    if (uid === 0) {
      // A process the agent has no entry for: the Workload API's answer, with the selector to register.
      const nobody = spawnTesseraAs(
        65534,
        'helper',
        'run',
        '--config',
        config(['daemon_mode: false', 'fetch_timeout: 2s', 'svid_combined_file_name: never.pem']),
      );
      helpers.push(nobody);
      assert.equal(await nobody.exit, 1);
      assert.match(nobody.stderr(), /no X509-SVID from the Workload API within fetch_timeout \(2000 ms\)/);
      assert.match(
        nobody.stderr(),
        /issued no identity to this process .*register an entry .*unix:uid:65534/,
      );
    }
    const bad = helper('run', '--config', config(['svid_combined_file_name: a.pem', 'key_file_mod: 0600']));
    assert.equal(await bad.exit, 1);
    assert.match(bad.stderr(), /key_file_mod: unknown key; did you mean key_file_mode\?/);
  });

  test('daemon: renewed files, modes re-applied after a chmod, never a partial file, /live and /ready', async () => {
    const dir = join(tmp.path, 'daemon');
    mkdirSync(dir);
    const port = await freePort();
    const file = config(
      [
        'svid_file_name: svid.pem',
        'svid_key_file_name: svid_key.pem',
        'svid_bundle_file_name: svid_bundle.pem',
        'jwt_svids: [{ jwt_audience: db, jwt_svid_file_name: db.token }]',
        `health_checks: { listener_enabled: true, bind_port: ${port}, readiness_path: /readyz }`,
      ],
      dir,
    );
    const p = helper('run', '--config', file);
    const [, first] = await waitForLog(p, /X\.509 files written spiffe_id=\S+ serial=(\w+)/);
    assert.equal(serialOf(join(dir, 'svid.pem')), first);
    await waitForLog(p, /JWT-SVID written/);
    assert.equal(await httpStatus(port, '/readyz'), 200);
    assert.equal(await httpStatus(port, '/live'), 200);
    assert.equal(await httpStatus(port, '/ready'), 404);

    // Someone widens the key's mode; the next write puts 0600 back.
    chmodSync(join(dir, 'svid_key.pem'), 0o644);
    const writesSoFar = [...p.stderr().matchAll(/X\.509 files written/g)].length;
    const inode = statSync(join(dir, 'svid_key.pem')).ino;
    // Meanwhile a reader reads the files as fast as it can: every read must parse.
    let reads = 0;
    let stop = false;
    const reader = (async () => {
      while (!stop) {
        const cert = new X509Certificate(readFileSync(join(dir, 'svid.pem')));
        createPrivateKey(readFileSync(join(dir, 'svid_key.pem')));
        new X509Certificate(readFileSync(join(dir, 'svid_bundle.pem')));
        assert.ok(cert.serialNumber.length > 0);
        reads++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    try {
      await waitForLogCount(p, /X\.509 files written/, writesSoFar + 1);
      assert.equal(mode(join(dir, 'svid_key.pem')), 0o600);
      // Replaced by a rename (a new inode), never rewritten in place.
      assert.notEqual(statSync(join(dir, 'svid_key.pem')).ino, inode);
      const [, second] = await waitForLog(
        p,
        new RegExp(`X\\.509 files written spiffe_id=\\S+ serial=(?!${first})(\\w+)`),
      );
      assert.notEqual(second, first);
      // And one more renewal under the reader.
      await waitForLog(
        p,
        new RegExp(`X\\.509 files written spiffe_id=\\S+ serial=(?!${first}|${second})\\w+`),
      );
    } finally {
      stop = true;
      await reader;
    }
    assert.ok(reads > 100, `the reader read ${reads} times`);
    // JWT-SVIDs are fetched again before they expire (4 s TTL: at half their remaining lifetime).
    await waitForLogCount(p, /JWT-SVID written/, 3);
    const token = readFileSync(join(dir, 'db.token'), 'utf8');
    const exp = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).exp as number;
    assert.ok(exp * 1000 > Date.now(), 'the token on disk has not expired');
    p.child.kill('SIGTERM');
    assert.equal(await p.exit, 0, p.stderr());
    // No temporary file left behind by any of the writes.
    assert.deepEqual(readdirSync(dir).sort(), ['db.token', 'svid.pem', 'svid_bundle.pem', 'svid_key.pem']);
  });

  test('child mode: renew_signal to the child on renewal, SIGTERM forwarded, the child status is the exit status', async () => {
    const dir = join(tmp.path, 'child');
    mkdirSync(dir);
    const log = join(dir, 'child.log');
    const script = join(dir, 'child.mjs');
    writeFileSync(
      script,
      [
        "import { appendFileSync } from 'node:fs';",
        `const log = ${JSON.stringify(log)};`,
        "process.on('SIGUSR1', () => appendFileSync(log, 'SIGUSR1\\n'));",
        "process.on('SIGTERM', () => { appendFileSync(log, 'SIGTERM\\n'); process.exit(42); });",
        "appendFileSync(log, 'started\\n');",
        'setInterval(() => {}, 1000);',
      ].join('\n'),
    );
    const file = config(
      [
        'svid_combined_file_name: combined.pem',
        `cmd: ${process.execPath}`,
        `cmd_args: "${script}"`,
        'renew_signal: SIGUSR1',
      ],
      dir,
    );
    const p = helper('run', '--config', file);
    await waitForLog(p, /cmd started/);
    await waitForLog(p, /cmd signalled .*signal=SIGUSR1/);
    await until(() => readFileSync(log, 'utf8').includes('SIGUSR1'), 5000, 'the child logs SIGUSR1');
    assert.match(readFileSync(log, 'utf8'), /^started\n(SIGUSR1\n)+$/);
    p.child.kill('SIGTERM');
    assert.equal(await p.exit, 42, p.stderr());
    assert.match(readFileSync(log, 'utf8'), /SIGTERM\n$/);
  });
});
