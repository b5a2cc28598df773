/**
 * The go-spiffe TLS peer (test/interop/go, `tls-server` / `tls-client`) as child processes.
 * Readiness is the server's `LISTEN <addr>` line; every process is killed by its owner in a finally.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import type { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { IssuedSvid } from '@tessera/testkit';
import { GO_BINARY } from './verdicts.js';

/** Files a Go peer is started with. */
export interface GoPeerFiles {
  cert: string;
  key: string;
  /** `td=file,td=file` for --bundle. */
  bundle: string;
}

/** Writes an SVID and trust bundles to `dir` under `name` for the Go peer's flags. */
export async function writePeerFiles(
  dir: string,
  name: string,
  svid: IssuedSvid,
  bundles: Record<string, readonly X509Certificate[]>,
): Promise<GoPeerFiles> {
  const cert = join(dir, `${name}.cert.pem`);
  const key = join(dir, `${name}.key.pem`);
  await writeFile(cert, svid.certificatesPem);
  await writeFile(key, svid.privateKeyPem, { mode: 0o600 });
  const entries: string[] = [];
  for (const [td, roots] of Object.entries(bundles)) {
    const file = join(dir, `${name}.bundle.${td}.pem`);
    await writeFile(file, roots.map((c) => c.toString()).join(''));
    entries.push(`${td}=${file}`);
  }
  return { cert, key, bundle: entries.join(',') };
}

export type Authorize = { id: string } | { memberOf: string };

function flags(files: GoPeerFiles, authorize: Authorize): string[] {
  return [
    '--cert',
    files.cert,
    '--key',
    files.key,
    '--bundle',
    files.bundle,
    ...('id' in authorize ? ['--authorize-id', authorize.id] : ['--authorize-member-of', authorize.memberOf]),
  ];
}

/** Resolves with the first line of `stream` that satisfies `match`; rejects if the stream ends first. */
export function waitForLine(
  stream: Readable,
  match: (line: string) => boolean,
  what: string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: stream });
    const onLine = (line: string) => {
      if (!match(line)) return;
      lines.off('close', onClose);
      lines.off('line', onLine);
      resolve(line);
    };
    const onClose = () => reject(new Error(`interop: stream ended before ${what}`));
    lines.on('line', onLine);
    lines.once('close', onClose);
    lines.once('error', reject);
  });
}

export interface GoServer {
  /** host:port it listens on. */
  address: string;
  port: number;
  /**
   * Resolves with the first stderr line (ACCEPTED / REFUSED / READ ...) matching `pattern` that no
   * earlier call took, waiting for it if it has not been written yet; with `ms`, rejects after that long.
   */
  nextLog(pattern: RegExp, ms?: number): Promise<string>;
  /** Everything written to stderr so far. */
  stderr(): string;
  close(): Promise<void>;
}

/** Starts `interop tls-server` and resolves once it prints `LISTEN <addr>`. */
export function startGoServer(files: GoPeerFiles, authorize: Authorize): Promise<GoServer> {
  return startGoListener(['tls-server', ...flags(files, authorize), '--addr', '127.0.0.1:0']);
}

/**
 * Starts the Go peer with `args` (a subcommand that prints `LISTEN <addr>` on stdout once it listens
 * and one stderr line per connection: tls-server, x509-server) and resolves once it listens.
 */
export async function startGoListener(args: readonly string[]): Promise<GoServer> {
  const child = spawn(GO_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const logLines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (l: string) => void }[] = [];
  createInterface({ input: child.stderr as Readable }).on('line', (line) => {
    stderr += `${line}\n`;
    const i = waiters.findIndex((w) => w.pattern.test(line));
    if (i >= 0) waiters.splice(i, 1)[0]?.resolve(line);
    else logLines.push(line);
  });
  const close = () => stop(child);
  try {
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) =>
        reject(new Error(`interop: go ${args[0]} exited (${code ?? signal}) before listening: ${stderr}`)),
      ),
    );
    const listen = await Promise.race([
      waitForLine(child.stdout as Readable, (l) => l.startsWith('LISTEN '), 'the LISTEN line'),
      exited,
    ]);
    const address = listen.slice('LISTEN '.length).trim();
    const port = Number(address.slice(address.lastIndexOf(':') + 1));
    return {
      address,
      port,
      nextLog(pattern, ms) {
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
          const timer =
            ms === undefined
              ? undefined
              : setTimeout(() => {
                  waiters.splice(waiters.indexOf(waiter), 1);
                  reject(
                    new Error(
                      `interop: go ${args[0]} logged no line matching ${pattern} within ${ms} ms; its stderr:\n${stderr}`,
                    ),
                  );
                }, ms);
          waiters.push(waiter);
        });
      },
      stderr: () => stderr,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

export interface GoClientResult {
  /** 0 when the exchange completed. */
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the Go peer once with `args` (killed after `timeoutMs`, default 30 s); its exit code and output. */
export function runGo(args: readonly string[], timeoutMs = 30_000): Promise<GoClientResult> {
  return new Promise((resolve) => {
    execFile(GO_BINARY, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
  });
}

/** Runs `interop tls-client` once against `address`. */
export function runGoClient(
  files: GoPeerFiles,
  authorize: Authorize,
  address: string,
  message: string,
): Promise<GoClientResult> {
  return runGo(['tls-client', ...flags(files, authorize), '--addr', address, '--message', message]);
}

/** Runs `interop grpc-client` once: a grpc-go client with go-spiffe credentials calling `method`. */
export function runGoGrpcClient(
  files: GoPeerFiles,
  authorize: Authorize,
  address: string,
  method: string,
  message: string,
): Promise<GoClientResult> {
  return runGo([
    'grpc-client',
    ...flags(files, authorize),
    '--addr',
    address,
    '--method',
    method,
    '--message',
    message,
  ]);
}
