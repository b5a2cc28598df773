// What the narrated demos (`npm run demo`, `npm run demo:vm`) share: a run that owns a temporary
// directory and every process it starts, stops them all in reverse order at the end, on a failure
// (printing what failed and the last lines each process wrote on stderr, exit 1), on Ctrl-C, or when
// the deadline passes; waiting for a log line or an event instead of sleeping; the tessera CLI; and
// a server plus an agent (SQLite, in the temporary directory).
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

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const TESSERA = join(ROOT, 'packages/tessera/bin/tessera.js');
export const isRoot = process.getuid?.() === 0;

export const say = (line = '') => process.stdout.write(`${line}\n`);

/** An expectation of the demo that did not hold; its message is what the demo was waiting for. */
export class DemoError extends Error {}

/** A step that did not happen: `what` says what the demo was waiting for. */
export function fail(what) {
  throw new DemoError(what);
}

/**
 * One run of a demo. `run(main)` arms a watchdog of `deadlineMs` and the signal handlers, runs
 * `main`, then prints `lastStep`, stops everything and exits 0; or reports the failure and exits 1.
 */
export function createDemo({ deadlineMs, tmpPrefix = 'tessera-demo-' }) {
  const started = Date.now();
  /** Everything the demo starts, so that cleanup() can stop it. */
  const children = new Map();
  const cleanups = [];
  let tmp;
  let cleaningUp = false;
  let interrupted = false;
  let reported = false;
  let watchdog;

  /** The temporary directory, created on first use, readable by every uid (workloads may run as others). */
  function tempDir() {
    if (tmp === undefined) {
      tmp = mkdtempSync(join(tmpdir(), tmpPrefix));
      chmodSync(tmp, 0o755);
    }
    return tmp;
  }

  /** Starts `cmd args`, keeps its stderr and (for workloads) parses each stdout line as a JSON event. */
  function start(name, cmd, args, opts = {}) {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
      ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid }),
    });
    const p = {
      name,
      child,
      stderr: '',
      events: [],
      exited: false,
      waiters: new Set(),
      onEvent: opts.onEvent,
    };
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

  /** Runs `fn` at cleanup, after the processes are stopped (e.g. to close a server of the demo itself). */
  function atCleanup(fn) {
    cleanups.push(fn);
  }

  /**
   * Stops every child, the last started first (SIGTERM, then SIGKILL after 3 s), and removes the
   * temporary directory.
   */
  async function cleanup() {
    if (cleaningUp) return;
    cleaningUp = true;
    for (const p of [...children.values()].reverse()) {
      if (p.exited) continue;
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
    for (const fn of cleanups) await fn();
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  }

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

  async function run(main, { lastStep }) {
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.on(signal, () => {
        if (interrupted) return;
        interrupted = true;
        clearTimeout(watchdog);
        say(
          `\nInterrupted (${signal}): stopping everything and removing ${tmp ?? 'the temporary directory'}.`,
        );
        cleanup().finally(() => process.exit(130));
      });
    }
    watchdog = setTimeout(() => {
      void report(new DemoError(`the demo did not finish within ${deadlineMs / 1000} s`));
    }, deadlineMs);
    try {
      await main();
      clearTimeout(watchdog);
      say(lastStep);
      await cleanup();
      say(`Done in ${Math.round((Date.now() - started) / 1000)} s.`);
      process.exit(0);
    } catch (err) {
      await report(err);
    }
  }

  return { tempDir, start, atCleanup, run };
}

/** The last lines a process wrote on stderr, indented. */
function tail(p, lines = 15) {
  const all = p.stderr.trimEnd().split('\n');
  return all
    .slice(-lines)
    .map((l) => `    ${l}`)
    .join('\n');
}

/**
 * Resolves with the first truthy `check()`; re-checked on every line the process writes. Fails with
 * `what` if the process exits first or after `ms` milliseconds.
 */
export function waitFor(p, check, ms, what) {
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

export const waitForLog = (p, re, ms, what) => waitFor(p, () => p.stderr.match(re), ms, what);

/** The first event of `p` from index `from` on that satisfies `pred`. */
export const waitForEvent = (p, pred, ms, what, from = 0) =>
  waitFor(p, () => p.events.slice(from).find(pred), ms, what);

/** Runs the tessera CLI against the server's admin socket; fails with its message on a non-zero exit. */
export function cli(socket, ...args) {
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
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** An unused uid: the highest from 65533 down that /etc/passwd does not list and `except` does not hold. */
function unusedUid(except = []) {
  let passwd = '';
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {}
  const taken = new Set([...passwd.split('\n').map((l) => Number(l.split(':')[2])), ...except]);
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

/**
 * How each of `names` runs so that the agent tells them apart. As root: each as a uid of its own
 * (65534, then unused ones), selected by `unix:uid`. Otherwise: each as the node binary under a file
 * name of its own (`<tmp>/<name>-node`), selected by `unix:path`. Returns, by name, the command, the
 * uid (as root), the selector and, for the narration, what it is selected by.
 */
export function workloadRuns(demo, names) {
  const runs = {};
  const uids = [];
  for (const name of names) {
    if (isRoot) {
      const uid = uids.length === 0 ? 65534 : unusedUid(uids);
      uids.push(uid);
      runs[name] = {
        cmd: process.execPath,
        uid,
        selector: `unix:uid:${uid}`,
        because: uid === 65534 ? 'uid 65534 (nobody)' : `uid ${uid}`,
      };
    } else {
      const cmd = nodeBinaryAt(join(demo.tempDir(), `${name}-node`));
      runs[name] = { cmd, selector: `unix:path:${cmd}`, because: `its executable ${cmd}` };
    }
  }
  return runs;
}

/**
 * Creates a registration entry per `{ id, selector }` (each a child of `parentId`) and returns
 * their entry IDs in order; fails naming the SPIFFE ID the server refused.
 */
export async function createEntries(adminSocket, parentId, entries) {
  const ids = [];
  for (const { id, selector } of entries) {
    const out = JSON.parse(
      await cli(
        adminSocket,
        'entry',
        'create',
        '--spiffe-id',
        id,
        '--parent-id',
        parentId,
        '--selector',
        selector,
        '--output',
        'json',
      ),
    );
    const result = out.results[0];
    if (result.status.code !== 0) fail(`registering ${id}: ${result.status.message}`);
    ids.push(result.entry.id);
  }
  return ids;
}

/**
 * Starts `tessera server run` for `trustDomain` in `<tmp>/server` (SQLite) and waits until it is up.
 * Returns the admin socket (for `cli`) and the port agents connect to.
 */
export async function startServer(demo, { trustDomain, svidTtlS }) {
  const srvDir = join(demo.tempDir(), 'server');
  mkdirSync(srvDir);
  const adminSocket = join(srvDir, 'admin.sock');
  const serverConfig = join(srvDir, 'server.yaml');
  writeFileSync(
    serverConfig,
    [
      `trust_domain: ${trustDomain}`,
      `data_dir: ${srvDir}/data`,
      `admin_socket: ${adminSocket}`,
      `agent_api: { address: 127.0.0.1, port: ${await freePort()} }`,
      'health: { port: 0 }',
      ...(svidTtlS === undefined ? [] : [`x509_svid_ttl: ${svidTtlS}s`]),
      '',
    ].join('\n'),
  );
  const server = demo.start('server', process.execPath, [TESSERA, 'server', 'run', '--config', serverConfig]);
  const [, agentPort] = await waitForLog(
    server,
    /server started .*agent_api=127\.0\.0\.1:(\d+)/,
    15_000,
    'the server did not log "server started"',
  );
  return { adminSocket, agentPort: Number(agentPort) };
}

/**
 * Starts `tessera agent run` in `<tmp>/agent`, attested with a join token for `agentName` and
 * trusting the server's current bundle, and waits until it is up. Returns the Workload API socket
 * and the agent's SPIFFE ID (the parent of the demo's entries).
 */
export async function startAgent(demo, { trustDomain, adminSocket, agentPort, agentName }) {
  const token = JSON.parse(
    await cli(adminSocket, 'token', 'generate', '--agent-name', agentName, '--output', 'json'),
  ).token;
  const agentDir = join(demo.tempDir(), 'agent');
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, 'bundle.pem'), await cli(adminSocket, 'bundle', 'show'));
  const agentSocket = join(demo.tempDir(), 'run', 'agent.sock');
  const agentConfig = join(agentDir, 'agent.yaml');
  writeFileSync(
    agentConfig,
    [
      `trust_domain: ${trustDomain}`,
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
  const agent = demo.start('agent', process.execPath, [
    TESSERA,
    'agent',
    'run',
    '--config',
    agentConfig,
    `--join-token=${token}`,
  ]);
  await waitForLog(agent, /agent started/, 15_000, 'the agent did not log "agent started"');
  return { agentSocket, agentId: `spiffe://${trustDomain}/tessera/agent/join_token/${agentName}` };
}
