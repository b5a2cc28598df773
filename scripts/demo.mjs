#!/usr/bin/env node
// `npm run demo`: the whole system on one machine, narrated. A server (SQLite, in a temporary
// directory) and an agent start; two workloads are registered, selected by Unix uid (or, when not
// run as root, by executable path); they run as two processes that talk mTLS with the `spiffe`
// library; a certificate is renewed; the frontend's entry is deleted and its calls are refused once
// its last certificate expires. Everything is removed at the end; exits 0, or 1 saying what failed.
//   npm run build && node scripts/demo.mjs
import { spawn } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TESSERA = join(ROOT, 'packages/tessera/bin/tessera.js');
const TD = 'demo.example';
const BACKEND = `spiffe://${TD}/backend`;
const FRONTEND = `spiffe://${TD}/frontend`;
const AGENT_ID = `spiffe://${TD}/tessera/agent/join_token/demo-node`;
const SVID_TTL_S = 10;
const DEADLINE_MS = 58_000;
const isRoot = process.getuid?.() === 0;
const started = Date.now();

/** Everything the demo starts, so that cleanup() can stop it. */
const children = new Map();
let tmp;
let cleaningUp = false;
let interrupted = false;

const say = (line = '') => process.stdout.write(`${line}\n`);
const short = (serial) => `${serial.slice(0, 8)}…`;
const clock = (iso) => iso.slice(11, 19);

class DemoError extends Error {}

/** A step that did not happen: `what` says what the demo was waiting for. */
function fail(what) {
  throw new DemoError(what);
}

// ---------------------------------------------------------------------------------------------
// Child processes: the daemons (stderr kept for their logs) and the workloads (JSON lines on stdout).

/** Starts `cmd args`, keeps its stderr and (for workloads) parses each stdout line as a JSON event. */
function start(name, cmd, args, opts = {}) {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
    ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid }),
  });
  const p = { name, child, stderr: '', events: [], exited: false, waiters: new Set(), onEvent: opts.onEvent };
  const notify = () => {
    for (const w of p.waiters) w();
  };
  child.stderr.setEncoding('utf8').on('data', (d) => {
    p.stderr += d;
    notify();
  });
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      let event;
      try {
        event = JSON.parse(line);
      } catch {
        event = { type: 'text', text: line };
      }
      p.events.push(event);
      p.onEvent?.(event);
    }
    notify();
  });
  child.on('error', (err) => {
    p.stderr += `\n${name}: cannot start ${cmd}: ${err.message}\n`;
  });
  child.on('exit', (code, signal) => {
    p.exited = true;
    p.exitStatus = signal ?? code;
    notify();
    if (!cleaningUp) void report(new DemoError(`the ${name} stopped unexpectedly (${p.exitStatus})`));
  });
  children.set(name, p);
  return p;
}

/**
 * Resolves with the first truthy `check()`; re-checked on every line the process writes. Fails with
 * `what` if the process exits first or after `ms` milliseconds.
 */
function waitFor(p, check, ms, what) {
  return new Promise((resolve, reject) => {
    let timer;
    const done = (fn, v) => {
      clearTimeout(timer);
      p.waiters.delete(test);
      fn(v);
    };
    const test = () => {
      const v = check();
      if (v) return done(resolve, v);
      if (p.exited)
        return done(reject, new DemoError(`${what}: the ${p.name} exited (${p.exitStatus}) first`));
    };
    timer = setTimeout(() => done(reject, new DemoError(`${what}: nothing after ${ms / 1000} s`)), ms);
    p.waiters.add(test);
    test();
  });
}

const waitForLog = (p, re, ms, what) => waitFor(p, () => p.stderr.match(re), ms, what);

/** The first event of `p` from index `from` on that satisfies `pred`. */
const waitForEvent = (p, pred, ms, what, from = 0) =>
  waitFor(p, () => p.events.slice(from).find(pred), ms, what);

/** Runs the tessera CLI against the server's admin socket; fails with its message on a non-zero exit. */
function cli(socket, ...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TESSERA, ...args, '--socket', socket], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d) => {
      err += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new DemoError(`tessera ${args.slice(0, 2).join(' ')} exited ${code}: ${err.trim()}`));
    });
  });
}

/** A TCP port nobody listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** An unused uid for the frontend (65533 unless /etc/passwd has it). */
function unusedUid() {
  let passwd = '';
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {}
  const taken = new Set(passwd.split('\n').map((l) => Number(l.split(':')[2])));
  for (let uid = 65533; uid > 60000; uid--) if (!taken.has(uid)) return uid;
  return 65533;
}

/** A copy of the node binary at `path`: a hard link when the file system allows it, else a copy. */
function nodeBinaryAt(path) {
  try {
    linkSync(process.execPath, path);
  } catch {
    copyFileSync(process.execPath, path);
    chmodSync(path, 0o755);
  }
  return path;
}

// ---------------------------------------------------------------------------------------------
// The two workloads. Written into the temporary directory; they import the `spiffe` package of
// this repository (its URL is filled in, since a bare specifier resolves from the file's directory).

const workloadPrelude = (spiffeUrl) => `
import { authorizeId, createSpiffeHttpsServer, peerSpiffeId, spiffeHttpsAgent, X509Source } from '${spiffeUrl}';
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\\n');
const about = (svid) => ({ id: svid.id.toString(), serial: svid.leaf.serialNumber, notAfter: svid.expiresAt.toISOString() });
// Give up if no identity comes within 15 s (the signal closes the source, so it is disarmed after).
const deadline = new AbortController();
const timer = setTimeout(() => deadline.abort(), 15000);
const source = await X509Source.create({ signal: deadline.signal });
clearTimeout(timer);
emit({ type: 'svid', ...about(source.getX509Svid()) });
source.on('update', () => emit({ type: 'svid', ...about(source.getX509Svid()) }));
source.on('watchError', (err) => emit({ type: 'watchError', code: err.code, message: err.message }));
process.on('SIGTERM', () => process.exit(0));
`;

// An HTTPS server that answers only spiffe://demo.example/frontend; refusals are logged as events.
const backendScript = (spiffeUrl) => `${workloadPrelude(spiffeUrl)}
const logger = { warn: (message) => emit({ type: 'refused', message }) };
const server = createSpiffeHttpsServer(
  { svid: source, bundles: source, authorizer: authorizeId('${FRONTEND}'), logger },
  (req, res) => res.end('hello ' + peerSpiffeId(req.socket)),
);
server.listen(0, '127.0.0.1', () => emit({ type: 'listening', port: server.address().port }));
`;

// Calls the backend every second over mTLS (a new connection each time, so each call presents the
// current certificate), accepting only spiffe://demo.example/backend.
const frontendScript = (spiffeUrl, port) => `${workloadPrelude(spiffeUrl)}
import * as https from 'node:https';
const agent = spiffeHttpsAgent({ svid: source, bundles: source, authorizer: authorizeId('${BACKEND}') }, { keepAlive: false });
let n = 0;
const call = () => {
  const number = ++n;
  const serial = source.getX509Svid().leaf.serialNumber;
  https
    .get({ host: '127.0.0.1', port: ${port}, path: '/', agent, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => (body += d));
      res.on('end', () => emit({ type: 'call', n: number, ok: true, reply: body, serial }));
    })
    .on('timeout', function () { this.destroy(new Error('no answer within 3 s')); })
    .on('error', (err) => emit({ type: 'call', n: number, ok: false, error: err.message, serial, at: Date.now() }));
};
call();
setInterval(call, 1000);
`;

// ---------------------------------------------------------------------------------------------

async function main() {
  tmp = mkdtempSync(join(tmpdir(), 'tessera-demo-'));
  chmodSync(tmp, 0o755); // the workloads may run as other uids
  const spiffeUrl = import.meta.resolve('spiffe');

  say('Tessera demo: an identity server, an agent and two workloads that talk mTLS, on this machine.');
  say(`Everything lives in ${tmp} and is removed at the end.`);
  say();

  // 1. The server.
  say(`1. Starting the identity server (tessera server run) for the trust domain "${TD}".`);
  say(`   It keeps its CA and registry (SQLite) in the temporary directory. Workload certificates`);
  say(`   will live only ${SVID_TTL_S} seconds, so that you can watch one being renewed.`);
  const srvDir = join(tmp, 'server');
  mkdirSync(srvDir);
  const adminSocket = join(srvDir, 'admin.sock');
  const serverConfig = join(srvDir, 'server.yaml');
  writeFileSync(
    serverConfig,
    [
      `trust_domain: ${TD}`,
      `data_dir: ${srvDir}/data`,
      `admin_socket: ${adminSocket}`,
      `agent_api: { address: 127.0.0.1, port: ${await freePort()} }`,
      'health: { port: 0 }',
      `x509_svid_ttl: ${SVID_TTL_S}s`,
      '',
    ].join('\n'),
  );
  const server = start('server', process.execPath, [TESSERA, 'server', 'run', '--config', serverConfig]);
  const [, agentPort] = await waitForLog(
    server,
    /server started .*agent_api=127\.0\.0\.1:(\d+)/,
    15_000,
    'the server did not log "server started"',
  );
  say(`   The server is up; agents connect to it on 127.0.0.1:${agentPort}.`);
  say();

  // 2. The agent.
  say('2. Starting the agent (tessera agent run), which hands identities to processes on this machine.');
  const token = JSON.parse(
    await cli(adminSocket, 'token', 'generate', '--agent-name', 'demo-node', '--output', 'json'),
  ).token;
  say('   It proves who it is with a one-time join token from `tessera token generate`, and trusts the');
  say('   server through its CA certificate from `tessera bundle show`.');
  const agentDir = join(tmp, 'agent');
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, 'bundle.pem'), await cli(adminSocket, 'bundle', 'show'));
  const agentSocket = join(tmp, 'run', 'agent.sock');
  const agentConfig = join(agentDir, 'agent.yaml');
  writeFileSync(
    agentConfig,
    [
      `trust_domain: ${TD}`,
      'server_address: 127.0.0.1',
      `server_port: ${agentPort}`,
      `trust_bundle_path: ${agentDir}/bundle.pem`,
      `socket_path: ${agentSocket}`,
      `data_dir: ${agentDir}/data`,
      'health: { port: 0 }',
      '',
    ].join('\n'),
  );
  // `--join-token=…` in one argument: a token may begin with '-' (base64url), which the option
  // parser would otherwise take for another option.
  const agent = start('agent', process.execPath, [
    TESSERA,
    'agent',
    'run',
    '--config',
    agentConfig,
    `--join-token=${token}`,
  ]);
  await waitForLog(agent, /agent started/, 15_000, 'the agent did not log "agent started"');
  say(`   The agent is attested as ${AGENT_ID}`);
  say(`   and serves the SPIFFE Workload API on ${agentSocket}.`);
  say();

  // 3. The registrations.
  let backendRun;
  let frontendRun;
  let how;
  say('3. Registering two workloads with `tessera entry create`, both parented to that agent:');
  if (isRoot) {
    const frontendUid = unusedUid();
    backendRun = {
      cmd: process.execPath,
      uid: 65534,
      selector: 'unix:uid:65534',
      because: 'uid 65534 (nobody)',
    };
    frontendRun = {
      cmd: process.execPath,
      uid: frontendUid,
      selector: `unix:uid:${frontendUid}`,
      because: `uid ${frontendUid}`,
    };
    how =
      'The agent learns the uid of each caller from the kernel (SO_PEERCRED on the socket), not from the caller.';
  } else {
    const b = nodeBinaryAt(join(tmp, 'backend-node'));
    const f = nodeBinaryAt(join(tmp, 'frontend-node'));
    backendRun = { cmd: b, selector: `unix:path:${b}`, because: `its executable ${b}` };
    frontendRun = { cmd: f, selector: `unix:path:${f}`, because: `its executable ${f}` };
    how =
      'Not running as root, so the two workloads cannot run as uids of their own: each runs node under its\n' +
      "   own file name (a hard link, or a copy), and the agent reads the caller's executable from /proc/<pid>/exe.";
  }
  const entryIds = {};
  for (const [id, run, name] of [
    [BACKEND, backendRun, 'backend'],
    [FRONTEND, frontendRun, 'frontend'],
  ]) {
    const out = JSON.parse(
      await cli(
        adminSocket,
        'entry',
        'create',
        '--spiffe-id',
        id,
        '--parent-id',
        AGENT_ID,
        '--selector',
        run.selector,
        '--output',
        'json',
      ),
    );
    const result = out.results[0];
    if (result.status.code !== 0) fail(`registering ${id}: ${result.status.message}`);
    entryIds[name] = result.entry.id;
    say(`   ${id.padEnd(32)} for any process with selector ${run.selector}`);
  }
  say(`   ${how}`);
  say();

  // 4. The workloads.
  say('4. Starting the workloads. Each asks the agent for its identity over the Workload API');
  say('   (SPIFFE_ENDPOINT_SOCKET) and gets an X.509 certificate (an X509-SVID) and its private key.');
  const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${agentSocket}` };
  writeFileSync(join(tmp, 'backend.mjs'), backendScript(spiffeUrl));
  const backend = start('backend', backendRun.cmd, [join(tmp, 'backend.mjs')], {
    env,
    uid: backendRun.uid,
    onEvent: (e) => {
      if (e.type === 'refused') say(`   backend  | refused a caller: ${e.message}`);
    },
  });
  const bSvid = await waitForEvent(backend, (e) => e.type === 'svid', 20_000, 'the backend got no identity');
  const { port } = await waitForEvent(
    backend,
    (e) => e.type === 'listening',
    10_000,
    'the backend did not listen',
  );
  if (bSvid.id !== BACKEND) fail(`the backend got ${bSvid.id} instead of ${BACKEND}`);
  say(`   The backend got ${bSvid.id}, selected by ${backendRun.because}.`);
  say(`   It serves HTTPS on 127.0.0.1:${port} and accepts only clients that prove ${FRONTEND}.`);

  let lastSvid;
  let afterDelete = false;
  let toldNoIdentity = false;
  writeFileSync(join(tmp, 'frontend.mjs'), frontendScript(spiffeUrl, port));
  const frontend = start('frontend', frontendRun.cmd, [join(tmp, 'frontend.mjs')], {
    env,
    uid: frontendRun.uid,
    onEvent: (e) => {
      if (e.type === 'call' && e.ok)
        say(
          `   frontend | call ${e.n}: the backend replied "${e.reply}"; my certificate: ${short(e.serial)}`,
        );
      else if (e.type === 'call')
        say(`   frontend | call ${e.n}: FAILED (${e.error}); my certificate: ${short(e.serial)}`);
      else if (e.type === 'svid' && lastSvid !== undefined && e.serial !== lastSvid.serial)
        say(
          `   >> The frontend's certificate was renewed: serial ${short(lastSvid.serial)} → ${short(e.serial)}` +
            ` (valid until ${clock(e.notAfter)}), without a restart.`,
        );
      else if (e.type === 'watchError' && afterDelete && !toldNoIdentity) {
        toldNoIdentity = true;
        say(`   >> The agent told the frontend it has no identity any more (${e.code});`);
        say('      the frontend keeps asking, in case it is registered again.');
      }
      if (e.type === 'svid') lastSvid = e;
    },
  });
  const fSvid = await waitForEvent(
    frontend,
    (e) => e.type === 'svid',
    20_000,
    'the frontend got no identity',
  );
  if (fSvid.id !== FRONTEND) fail(`the frontend got ${fSvid.id} instead of ${FRONTEND}`);
  say(`   The frontend got ${fSvid.id}, selected by ${frontendRun.because}.`);
  say(
    `   Its certificate has serial ${short(fSvid.serial)} (serials are shortened to 8 hex digits here) and`,
  );
  say(
    `   expires at ${clock(fSvid.notAfter)} UTC. It calls the backend every second, over a new mTLS connection`,
  );
  say(
    '   each time. (The two workloads are the scripts backendScript and frontendScript in scripts/demo.mjs.)',
  );
  say();

  const firstOk = await waitForEvent(
    frontend,
    (e) => e.type === 'call' && e.ok,
    10_000,
    'no call of the frontend succeeded',
  );
  say(
    `   >> First successful mTLS call (call ${firstOk.n}): each side checked the other's certificate against the trust`,
  );
  say(`      domain's CA and its SPIFFE ID against what it allows.`);
  say(
    `   Waiting for the agent to renew the frontend's certificate (at about half of its ${SVID_TTL_S} s life)…`,
  );
  const fromRotation = frontend.events.indexOf(fSvid) + 1;
  await waitForEvent(
    frontend,
    (e) => e.type === 'svid' && e.serial !== fSvid.serial,
    SVID_TTL_S * 1000 + 5_000,
    "the frontend's certificate was not renewed",
    fromRotation,
  );
  await waitForEvent(
    frontend,
    (e) => e.type === 'call' && e.ok && e.serial === lastSvid.serial,
    5_000,
    'no call succeeded with the renewed certificate',
  );
  say();

  // 5. The deletion.
  let held = lastSvid;
  say(`5. Deleting the frontend's entry: tessera entry delete --entry-id ${entryIds.frontend}`);
  say("   The agent will stop renewing the frontend's certificate. A certificate already handed out cannot");
  say(
    `   be recalled, so the frontend keeps using ${short(held.serial)} until it expires at ${clock(held.notAfter)}.`,
  );
  afterDelete = true;
  const fromDelete = frontend.events.length;
  await cli(adminSocket, 'entry', 'delete', '--entry-id', entryIds.frontend);
  if (lastSvid !== held) {
    held = lastSvid;
    say(
      `   (It was renewed once more just before the deletion: ${short(held.serial)}, until ${clock(held.notAfter)}.)`,
    );
  }
  const expiry = Date.parse(held.notAfter);
  const refused = await waitForEvent(
    frontend,
    (e) => e.type === 'call' && !e.ok,
    Math.max(expiry - Date.now(), 0) + 5_000,
    "the frontend's calls were not refused after its entry was deleted and its certificate expired",
    fromDelete,
  );
  const lateOk = frontend.events.find((e) => e.type === 'call' && e.ok && e.n > refused.n);
  if (lateOk !== undefined)
    fail(`call ${lateOk.n} of the frontend succeeded after call ${refused.n} was refused`);
  const backendSaid = await waitForEvent(
    backend,
    (e) => e.type === 'refused' && e.message.includes(FRONTEND),
    3_000,
    'the backend did not log why it refused the frontend',
  ).catch(() => undefined);
  await waitForEvent(
    frontend,
    (e) => e.type === 'call' && e.n === refused.n + 1,
    3_000,
    'the frontend stopped calling',
  );
  const newSvid = frontend.events.some((e) => e.type === 'svid' && Date.parse(e.notAfter) > expiry);
  if (newSvid) fail('the frontend received a new certificate after its entry was deleted');
  if (backendSaid !== undefined && /has expired/.test(backendSaid.message)) {
    say(
      `   >> The frontend's calls are now refused: its last certificate (serial ${short(held.serial)}) expired at`,
    );
    say(
      `      ${clock(held.notAfter)} and the agent, with no entry for it any more, did not renew it. The backend`,
    );
    say(
      '      checks every client certificate, sees it has expired and closes the connection before reading the',
    );
    say(
      '      request (the frontend only sees "socket hang up"). Nothing was revoked: the short lifetime of',
    );
    say('      certificates is what bounds how long a deleted workload keeps its access.');
  } else {
    const why =
      backendSaid === undefined ? 'the backend logged no reason' : `the backend said: ${backendSaid.message}`;
    const when = refused.at < expiry ? 'before' : 'after';
    say(
      `   >> The frontend's calls are now refused, ${when} its last certificate's expiry (${clock(held.notAfter)}); ${why}.`,
    );
  }
  say();
}

/** Stops every child (SIGTERM, then SIGKILL after 3 s) and removes the temporary directory. */
async function cleanup() {
  if (cleaningUp) return;
  cleaningUp = true;
  const order = ['frontend', 'backend', 'agent', 'server'];
  for (const name of order) {
    const p = children.get(name);
    if (p === undefined || p.exited) continue;
    p.child.kill('SIGTERM');
    await new Promise((resolve) => {
      const t = setTimeout(() => {
        p.child.kill('SIGKILL');
        resolve();
      }, 3_000);
      p.waiters.add(() => {
        if (p.exited) {
          clearTimeout(t);
          resolve();
        }
      });
      if (p.exited) resolve();
    });
  }
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
}

/** The last lines a process wrote on stderr, indented. */
function tail(p, lines = 15) {
  const all = p.stderr.trimEnd().split('\n');
  return all
    .slice(-lines)
    .map((l) => `    ${l}`)
    .join('\n');
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    clearTimeout(watchdog);
    say(`\nInterrupted (${signal}): stopping everything and removing ${tmp ?? 'the temporary directory'}.`);
    cleanup().finally(() => process.exit(130));
  });
}

const watchdog = setTimeout(() => {
  void report(new DemoError(`the demo did not finish within ${DEADLINE_MS / 1000} s`));
}, DEADLINE_MS);

let reported = false;
async function report(err) {
  if (reported || interrupted) return;
  reported = true;
  clearTimeout(watchdog);
  say();
  say(`The demo FAILED: ${err instanceof DemoError ? err.message : (err?.stack ?? String(err))}`);
  for (const p of children.values()) {
    if (p.stderr.trim() === '') continue;
    say(`  last lines the ${p.name} wrote on stderr:`);
    say(tail(p));
  }
  say('Cleaning up.');
  await cleanup();
  process.exit(1);
}

try {
  await main();
  clearTimeout(watchdog);
  say(
    '6. Cleaning up: stopping the workloads, the agent and the server, and removing the temporary directory.',
  );
  await cleanup();
  say(`Done in ${Math.round((Date.now() - started) / 1000)} s.`);
  process.exit(0);
} catch (err) {
  await report(err);
}
