// The tessera binary as a child process, for end-to-end tests: its stderr collected, its exit
// awaited, and waiting for a log line instead of sleeping.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

export const TESSERA_BIN = fileURLToPath(
  new URL('../../../packages/tessera/bin/tessera.js', import.meta.url),
);

export interface TesseraProcess {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<number>;
}

/** Starts `tessera <args>` (e.g. `server run --config f`); stdout is ignored, stderr collected. */
export function spawnTessera(...args: string[]): TesseraProcess {
  return spawnTesseraWithEnv({}, ...args);
}

/** As spawnTessera, with extra environment variables. */
export function spawnTesseraWithEnv(env: NodeJS.ProcessEnv, ...args: string[]): TesseraProcess {
  return startTessera(args, { env });
}

/** As spawnTessera, as another uid (and a gid of the same number, unless `gid` is given). */
export function spawnTesseraAs(uid: number, ...args: string[]): TesseraProcess {
  return startTessera(args, { uid });
}

/** As spawnTessera, as uid `uid` with group `gid` (a system user's own, e.g. postgres'). */
export function spawnTesseraAsUser(user: { uid: number; gid: number }, ...args: string[]): TesseraProcess {
  return startTessera(args, user);
}

function startTessera(
  args: string[],
  o: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number },
): TesseraProcess {
  const child = spawn(process.execPath, [TESSERA_BIN, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...o.env },
    ...(o.uid === undefined ? {} : { uid: o.uid, gid: o.gid ?? o.uid }),
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exit = once(child, 'exit').then(([code]) => Number(code));
  return { child, stderr: () => err, exit };
}

/** Resolves with the first stderr match of `re`; rejects if the process exits first. */
export function waitForLog(p: TesseraProcess, re: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = p.stderr().match(re);
      if (m !== null) {
        p.child.stderr?.off('data', check);
        resolve(m);
      }
    };
    p.child.stderr?.on('data', check);
    p.exit.then((code) => reject(new Error(`exited ${code} before ${re}: ${p.stderr()}`)));
    check();
  });
}

/** Resolves with the `count`-th stderr match of `re` (1 = the first); rejects if the process exits first. */
export function waitForLogCount(p: TesseraProcess, re: RegExp, count: number): Promise<RegExpMatchArray> {
  const global = new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`);
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = [...p.stderr().matchAll(global)][count - 1];
      if (m !== undefined) {
        p.child.stderr?.off('data', check);
        resolve(m);
      }
    };
    p.child.stderr?.on('data', check);
    p.exit.then((code) => reject(new Error(`exited ${code} before match ${count} of ${re}: ${p.stderr()}`)));
    check();
  });
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to completion: `input` on stdin; optionally as another uid (and its gid), in
 * `cwd`, with exactly the environment `env` (default: this process's); killed (SIGKILL, code 1)
 * after `timeoutMs` when given, for commands that must exit by themselves.
 */
export function runCommand(
  command: string,
  args: string[],
  opts: { input?: string; uid?: number; cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
      ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid }),
      ...(opts.timeoutMs === undefined ? {} : { timeout: opts.timeoutMs, killSignal: 'SIGKILL' as const }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}
