/**
 * `tessera helper` with real programs that read their certificates from files and reload them:
 * nginx (Debian's, a non-daemon master with its own prefix, config and pid in a temp dir, TLS on a
 * private port) SIGHUP'ed through pid_file_name, and PostgreSQL (a throwaway cluster, ssl=on,
 * running as the postgres user with the helper as that user too, so the key file must be 0600 and
 * the postgres user's) reloaded by `pg_ctl reload` as reload_cmd. A real server and agent in this
 * process, 6 s X509-SVIDs: after a renewal, `openssl s_client` must show the NEW serial.
 * Without nginx, PostgreSQL or openssl a suite is skipped loudly, or fails with TESSERA_REQUIRE_INTEROP=1
 * (test/interop/setup-helper-consumers.sh installs them).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import {
  accessSync,
  appendFileSync,
  chmodSync,
  chownSync,
  constants,
  mkdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { delimiter, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import {
  findPostgresBin,
  freePort,
  makeTempDir,
  type PostgresCluster,
  startPostgres,
  suiteUnavailable,
  type TempDir,
} from '@tessera/testkit';
import {
  spawnTessera,
  spawnTesseraAsUser,
  type TesseraProcess,
  waitForLogCount,
} from '../e2e/tessera-process.js';

const run = promisify(execFile);
const quiet = createLogger({ level: 'error', write: () => undefined });
const AGENT_ID = 'spiffe://example.org/tessera/agent/join_token/consumers';

function which(program: string, extra: readonly string[] = []): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...extra]) {
    try {
      accessSync(join(dir, program), constants.X_OK);
      return join(dir, program);
    } catch {}
  }
  return undefined;
}

const NGINX = which('nginx', ['/usr/sbin']);
const OPENSSL = which('openssl');
const PG_BIN = findPostgresBin();

/**
 * True (the suite must skip) when a program is missing, said loudly; with TESSERA_REQUIRE_INTEROP=1
 * a failing test instead (as tpmUnavailable in swtpm.ts).
 */
function consumerUnavailable(suite: string, missing: readonly string[]): boolean {
  if (missing.length === 0) return false;
  return suiteUnavailable(
    suite,
    `${missing.join(', ')} not installed; run test/interop/setup-helper-consumers.sh as root (apt-get install -y nginx openssl postgresql)`,
    'its programs are installed',
  );
}

/** The serial of the certificate a TLS server presents, as `openssl s_client` sees it; undefined if none. */
async function servedSerial(port: number, starttls?: 'postgres'): Promise<string | undefined> {
  const args = [
    's_client',
    '-connect',
    `127.0.0.1:${port}`,
    ...(starttls === undefined ? [] : ['-starttls', starttls]),
  ];
  const child = spawn(OPENSSL as string, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await once(child, 'close');
  clearTimeout(timer);
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0];
  return pem === undefined ? undefined : new X509Certificate(pem).serialNumber;
}

/** Polls `served()` (no event says when a server has reloaded) until it shows `serial`, or fails at the deadline. */
async function untilServed(
  served: () => Promise<string | undefined>,
  serial: string,
  what: string,
): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last: string | undefined;
  for (;;) {
    last = await served();
    if (last === serial) return;
    if (Date.now() > deadline)
      assert.fail(`${what} still serves ${last ?? 'no certificate'} 15 s after the helper wrote ${serial}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Polls `served()` until a server answers TLS at all (starting, or turning TLS on); fails after 15 s with `why()`. */
async function firstServed(served: () => Promise<string | undefined>, why: () => string): Promise<string> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = await served();
    if (s !== undefined) return s;
    if (Date.now() > deadline) assert.fail(why());
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The next X.509 write whose serial differs from every one before it: resolves with that serial and the write's index. */
async function nextRenewal(p: TesseraProcess, seen: Set<string>): Promise<{ serial: string; index: number }> {
  for (let i = 1; ; i++) {
    const m = await waitForLogCount(p, /X\.509 files written spiffe_id=\S+ serial=(\w+)/, i);
    const serial = m[1] as string;
    if (!seen.has(serial)) {
      seen.add(serial);
      return { serial, index: i };
    }
  }
}

const missingNginx = [
  ...(NGINX === undefined ? ['nginx'] : []),
  ...(OPENSSL === undefined ? ['openssl'] : []),
];
const missingPg = [
  ...(PG_BIN === undefined ? ['postgresql (initdb, pg_ctl)'] : []),
  ...(OPENSSL === undefined ? ['openssl'] : []),
];
const skipNginx = consumerUnavailable('tessera helper with nginx', missingNginx);
const skipPg = consumerUnavailable('tessera helper with PostgreSQL', missingPg);

describe('tessera helper with real consumers', { skip: skipNginx && skipPg, timeout: 180_000 }, () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;
  const helpers: TesseraProcess[] = [];

  before(async () => {
    tmp = await makeTempDir('helper-io-');
    chmodSync(tmp.path, 0o755); // the PostgreSQL helper, as the postgres user, reaches the agent's socket
    server = await startTestServer(tmp.path, ['x509_svid_ttl: 6s']);
    await server.datastore.createJoinToken({
      token: 'helper-consumers-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'consumers',
    });
    agent = await startTestAgent(server, tmp.path, 'helper-consumers-token-0123', quiet);
  });

  after(async () => {
    for (const h of helpers) h.child.kill('SIGTERM');
    await Promise.race([Promise.all(helpers.map((h) => h.exit)), new Promise((r) => setTimeout(r, 5000))]);
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  test('nginx: ssl_certificate from the helper; after a renewal the helper SIGHUPs it (pid_file_name) and it serves the new serial', {
    skip: skipNginx,
  }, async () => {
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/nginx',
      parentId: AGENT_ID,
      selectors: [{ type: 'unix', value: `uid:${process.getuid?.() ?? 0}` }],
    });
    const prefix = join(tmp.path, 'nginx');
    const certs = join(prefix, 'certs');
    mkdirSync(certs, { recursive: true });
    const port = await freePort();
    const pidFile = join(prefix, 'nginx.pid');
    writeFileSync(
      join(prefix, 'nginx.conf'),
      [
        'daemon off;',
        'master_process on;',
        'worker_processes 1;',
        `pid ${pidFile};`,
        `error_log ${prefix}/error.log info;`,
        'events { worker_connections 64; }',
        'http {',
        '  access_log off;',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(
          (t) => `  ${t}_temp_path ${prefix}/${t}_temp;`,
        ),
        '  server {',
        `    listen 127.0.0.1:${port} ssl;`,
        `    ssl_certificate ${certs}/svid.pem;`,
        `    ssl_certificate_key ${certs}/svid_key.pem;`,
        '    location / { return 200 "ok\\n"; }',
        '  }',
        '}',
      ].join('\n'),
    );
    const cfg = join(prefix, 'helper.yaml');
    writeFileSync(
      cfg,
      [
        `agent_address: ${agent.socketPath}`,
        `cert_dir: ${certs}`,
        'svid_file_name: svid.pem',
        'svid_key_file_name: svid_key.pem',
        'svid_bundle_file_name: svid_bundle.pem',
        'renew_signal: SIGHUP',
        `pid_file_name: ${pidFile}`,
      ].join('\n'),
    );
    const helper = spawnTessera('helper', 'run', '--config', cfg);
    helpers.push(helper);
    const seen = new Set<string>();
    await nextRenewal(helper, seen);
    // nginx starts once its files exist (the helper's first SIGHUP found no pid file, and said so).
    let nginx: ChildProcess | undefined;
    try {
      nginx = spawn(
        NGINX as string,
        ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'error.log')],
        {
          stdio: 'ignore',
        },
      );
      const exited = once(nginx, 'exit').then(([code]) => {
        throw new Error(`nginx exited ${code}: ${readFileSync(join(prefix, 'error.log'), 'utf8')}`);
      });
      exited.catch(() => undefined);
      const first = await Promise.race([
        firstServed(
          () => servedSerial(port),
          () => `nginx never served TLS: ${readFileSync(join(prefix, 'error.log'), 'utf8')}`,
        ),
        exited,
      ]);
      assert.ok(
        seen.has(first),
        `nginx serves ${first}, a serial the helper wrote (${[...seen].join(', ')})`,
      );
      const renewed = await nextRenewal(helper, seen);
      const signalled = await waitForLogCount(
        helper,
        /process signalled pid_file_name=\S+ pid=(\d+) signal=SIGHUP/,
        1,
      );
      assert.equal(Number(signalled[1]), Number(readFileSync(pidFile, 'utf8').trim()));
      await untilServed(() => servedSerial(port), renewed.serial, 'nginx');
    } finally {
      nginx?.kill('SIGQUIT');
      if (nginx !== undefined && nginx.exitCode === null) await once(nginx, 'exit');
    }
  });

  test('PostgreSQL: ssl_cert_file/ssl_key_file from the helper (as the postgres user, key 0600); after a renewal `pg_ctl reload` (reload_cmd) makes it serve the new serial', {
    skip: skipPg,
  }, async () => {
    let pg: PostgresCluster | undefined;
    try {
      pg = await startPostgres({ listenAddresses: '127.0.0.1' });
      const user = pg.user ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/db',
        parentId: AGENT_ID,
        selectors: [{ type: 'unix', value: `uid:${user.uid}` }],
      });
      const certs = join(tmp.path, 'pg-certs');
      mkdirSync(certs, { mode: 0o700 });
      chownSync(certs, user.uid, user.gid);
      const cfg = join(tmp.path, 'pg-helper.yaml');
      writeFileSync(
        cfg,
        [
          `agent_address: ${agent.socketPath}`,
          `cert_dir: ${certs}`,
          'svid_file_name: server.crt',
          'svid_key_file_name: server.key',
          'svid_bundle_file_name: root.crt',
          `reload_cmd: ${join(pg.bin, 'pg_ctl')}`,
          `reload_cmd_args: 'reload -D "${pg.dataDir}"'`,
        ].join('\n'),
      );
      const helper = spawnTesseraAsUser(user, 'helper', 'run', '--config', cfg);
      helpers.push(helper);
      const seen = new Set<string>();
      await nextRenewal(helper, seen);
      // TLS on, with the helper's files; PostgreSQL refuses a key that is not 0600 (or 0640 root's).
      appendFileSync(
        join(pg.dataDir, 'postgresql.conf'),
        `\nssl = on\nssl_cert_file = '${certs}/server.crt'\nssl_key_file = '${certs}/server.key'\n`,
      );
      await run(join(pg.bin, 'pg_ctl'), ['reload', '-D', pg.dataDir], pg.user ?? {});
      const served = () => servedSerial(pg?.port as number, 'postgres');
      const log = join(pg.socketDir, 'log');
      const first = await firstServed(
        served,
        () => `PostgreSQL never served TLS: ${readFileSync(log, 'utf8')}`,
      );
      assert.ok(
        seen.has(first),
        `PostgreSQL serves ${first}, a serial the helper wrote (${[...seen].join(', ')})`,
      );
      const before = [...helper.stderr().matchAll(/reload_cmd ran/g)].length;
      const renewed = await nextRenewal(helper, seen);
      await waitForLogCount(helper, /reload_cmd ran/, before + 1);
      await untilServed(served, renewed.serial, 'PostgreSQL');
      assert.doesNotMatch(
        readFileSync(join(pg.socketDir, 'log'), 'utf8'),
        /private key file .* has group or world access/,
      );
    } finally {
      await pg?.stop();
    }
  });
});
