// How the helper tells the app that its files changed: a signal to the pid in a pid file, a signal
// to the child it runs, or a reload command. Each failure is ERR_HELPER_RELOAD naming the input
// (pid_file_name, cmd, reload_cmd) and what to do.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';

const reloadError = (message: string, cause?: unknown) =>
  new TesseraError(
    TesseraErrorCode.HELPER_RELOAD,
    `helper: ${message}`,
    cause === undefined ? undefined : { cause },
  );

/** Reads the pid in `file` (pid_file_name) and sends it `signal`; returns the pid. Throws ERR_HELPER_RELOAD. */
export function signalPidFile(file: string, signal: NodeJS.Signals): number {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw reloadError(
      code === 'ENOENT'
        ? `pid_file_name ${file} does not exist: start the program first, or point pid_file_name at the file it writes its pid to`
        : `cannot read pid_file_name ${file}: ${code ?? (err as Error).message}`,
      err,
    );
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0)
    throw reloadError(
      `pid_file_name ${file} does not hold a process id (found ${JSON.stringify(text.trim().slice(0, 40))}): point it at the program's pid file`,
    );
  try {
    process.kill(pid, signal);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw reloadError(
      code === 'ESRCH'
        ? `no process has pid ${pid} from pid_file_name ${file} (a stale pid file: the program exited or restarted without rewriting it); restart the program`
        : code === 'EPERM'
          ? `not permitted to send ${signal} to pid ${pid} from pid_file_name ${file}: it runs as another user; run the helper as that user (or root)`
          : `cannot send ${signal} to pid ${pid} from pid_file_name ${file}: ${code ?? (err as Error).message}`,
      err,
    );
  }
  return pid;
}

/**
 * signalPidFile, retried with doubling delays from `firstDelayMs` (a program that is restarting
 * writes its new pid a moment later); the last error is thrown after `attempts` tries.
 */
export async function signalPidFileWithRetry(
  file: string,
  signal: NodeJS.Signals,
  o: { attempts: number; firstDelayMs: number; abort?: AbortSignal },
): Promise<number> {
  let wait = o.firstDelayMs;
  for (let i = 1; ; i++) {
    try {
      return signalPidFile(file, signal);
    } catch (err) {
      if (i >= o.attempts || o.abort?.aborted === true) throw err;
    }
    await delay(wait, undefined, o.abort === undefined ? {} : { signal: o.abort }).catch(() => undefined);
    wait *= 2;
  }
}

/** Runs reload_cmd with its arguments; resolves when it exits 0, else throws ERR_HELPER_RELOAD with its exit status and output's end. */
export function runReloadCommand(cmd: string, args: readonly string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err === null) return resolve();
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      const output = `${stderr}${stdout}`.trim().split('\n').slice(-3).join(' | ');
      const what =
        e.code === 'ENOENT'
          ? `reload_cmd ${cmd} was not found: give its absolute path or fix PATH`
          : e.code === 'EACCES'
            ? `reload_cmd ${cmd} is not executable by uid ${process.getuid?.() ?? '?'}`
            : e.killed === true
              ? `reload_cmd ${cmd} did not finish within reload_timeout (${timeoutMs} ms) and was killed`
              : `reload_cmd ${cmd} ${args.join(' ')} exited with status ${e.code}${output === '' ? '' : `: ${output}`}`;
      reject(reloadError(what, err));
    });
  });
}

/** How a child ended: its exit code, or the signal that killed it. */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** The exit status a shell would report for `exit`: the code, or 128 + the signal's number. */
export function exitStatus(exit: ChildExit): number {
  if (exit.code !== null) return exit.code;
  const n = exit.signal === null ? undefined : constants.signals[exit.signal];
  return n === undefined ? 1 : 128 + n;
}

/**
 * The program of cmd/cmd_args as a child with the helper's stdio. SIGTERM and SIGINT sent to the
 * helper are forwarded to it; `exit` resolves when it ends.
 */
export class ManagedChild {
  readonly #child: ChildProcess;
  readonly exit: Promise<ChildExit>;
  readonly #forward: (sig: NodeJS.Signals) => void;

  constructor(cmd: string, args: readonly string[]) {
    this.#child = spawn(cmd, [...args], { stdio: 'inherit' });
    this.#forward = (sig) => {
      this.#child.kill(sig);
    };
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, this.#forward);
    this.exit = new Promise<ChildExit>((resolve, reject) => {
      this.#child.once('error', (err: NodeJS.ErrnoException) => {
        this.#unforward();
        reject(
          reloadError(
            err.code === 'ENOENT'
              ? `cmd ${cmd} was not found: give its absolute path or fix PATH`
              : `cmd ${cmd} cannot be started: ${err.code ?? err.message}`,
            err,
          ),
        );
      });
      this.#child.once('exit', (code, signal) => {
        this.#unforward();
        resolve({ code, signal });
      });
    });
    this.exit.catch(() => undefined);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Sends renew_signal; throws ERR_HELPER_RELOAD when the child is gone. */
  signal(sig: NodeJS.Signals): void {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null || !this.#child.kill(sig))
      throw reloadError(`cannot send ${sig} to cmd (pid ${this.#child.pid}): it has exited`);
  }

  /** Asks the child to stop (SIGTERM) and waits for it. */
  async stop(): Promise<ChildExit> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGTERM');
    return this.exit;
  }

  #unforward(): void {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.off(sig, this.#forward);
  }
}
