/**
 * go-spiffe and py-spiffe as WORKLOADS of a Workload API socket: `go/bin/interop workload`,
 * `go/bin/interop mtls-pair` and `python/workload.py`, run as child processes with
 * SPIFFE_ENDPOINT_SOCKET set, their JSON lines parsed. Any Workload API will do — FakeWorkloadApi in
 * workload-peers.test.ts, the Tessera agent in the agent's tests. Build the peers with setup.sh;
 * `missingPeers()` (verdicts.ts) says whether they are there.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { GO_BINARY, INTEROP_DIR, PYTHON } from './verdicts.js';

export const PYTHON_WORKLOAD = join(INTEROP_DIR, 'python', 'workload.py');

/** An X509-SVID as a peer saw it. Serials are upper-case hex, as node's X509Certificate prints them. */
export interface SvidSeen {
  spiffe_id: string;
  /** go-spiffe only (py-spiffe drops hints). */
  hint?: string;
  serial: string;
  /** The leaf's notAfter, Unix seconds. */
  expires_at: number;
}

/** One message of the X.509 watch (go-spiffe `Client.WatchX509Context`, py-spiffe `stream_x509_contexts`). */
export interface X509UpdateLine {
  kind: 'x509';
  /** 1, 2, … in the order seen. */
  update: number;
  svids: SvidSeen[];
  /** Trust domain name → number of X.509 authorities, own and federated. */
  bundles: Record<string, number>;
  /** go-spiffe only: the default SVID go-spiffe's X509Source serves once it has caught up with this update. */
  source?: { spiffe_id: string; serial: string };
}

/** go-spiffe, before update 1 is printed: what BundleSource and JWTSource hold per trust domain (-1: nothing). */
export interface SourcesLine {
  kind: 'bundles';
  x509: Record<string, number>;
  jwt: Record<string, number>;
  /** JWTSource's JWT authorities, when an audience was given. */
  jwt_source?: Record<string, number>;
}

/** The JWT-SVID fetched for the audiences (go-spiffe JWTSource.FetchJWTSVID, py-spiffe fetch_jwt_svid). */
export interface JwtLine {
  kind: 'jwt';
  spiffe_id: string;
  /** go-spiffe only. */
  hint?: string;
  /** go-spiffe: as in the token; py-spiffe: sorted. */
  audience: string[];
  expires_at: number;
}

/** py-spiffe's one-shot fetches: fetch_x509_context, fetch_x509_bundles, fetch_jwt_bundles. */
export interface PythonFetchLine {
  kind: 'x509-context' | 'x509-bundles' | 'jwt-bundles';
  svids?: SvidSeen[];
  bundles: Record<string, number>;
}

/** A failed call or watch error; the peer goes on (watches retry as the library does). */
export interface ErrorLine {
  kind: 'error';
  /** The call: watch, FetchJWTSVID, fetch_x509_context, stream_x509_contexts, … */
  where: string;
  /** The gRPC code as Go names it: PermissionDenied, Unavailable, InvalidArgument, … */
  code?: string;
  error: string;
}

export interface MtlsSide {
  /** The SPIFFE ID this side presented. */
  self: string;
  /** The SPIFFE ID of the peer, after go-spiffe verified and authorized it. */
  peer?: string;
  error?: string;
}

/** `interop mtls-pair`: both sides' views; `reply` is "<client ID as the server saw it> hello". */
export interface MtlsLine {
  kind: 'mtls';
  ok: boolean;
  server: MtlsSide;
  client: MtlsSide;
  reply?: string;
}

export type GoWorkloadLine = X509UpdateLine | SourcesLine | JwtLine | ErrorLine;
export type PythonWorkloadLine = PythonFetchLine | JwtLine | X509UpdateLine | ErrorLine;

export interface WorkloadPeerOptions<L> {
  /** JWT-SVID audiences; none: no JWT-SVID is fetched. */
  audience?: readonly string[];
  /** The peer exits 0 after this many X.509 watch updates (default 1). */
  updates?: number;
  /** The peer's own time limit (default 30 s): it then exits 1. The helper kills it 10 s later. */
  timeoutMs?: number;
  /**
   * Called with each line as the peer prints it, in order (awaited before the next) — e.g. push a
   * rotation once `{kind: 'x509', update: 1}` arrives: by then every stream of the peer is open.
   */
  onLine?: (line: L) => void | Promise<void>;
  /** Run the peer as this user and group (needs root); Workload API attestors look at these. */
  uid?: number;
  gid?: number;
  /** Extra environment. */
  env?: Record<string, string>;
}

export interface WorkloadRun<L> {
  /** The exit code: 0 when the peer saw every update it waited for; null if killed. */
  code: number | null;
  lines: L[];
  stderr: string;
}

/** `unix:///path` for a socket path; a `unix:` or `tcp:` URI is kept. */
function endpoint(socket: string): string {
  return /^(unix|tcp):/.test(socket) ? socket : `unix://${socket}`;
}

/** Runs a peer program with SPIFFE_ENDPOINT_SOCKET set and collects its JSON lines (see WorkloadPeerOptions). */
export function runPeer<L>(
  file: string,
  args: string[],
  socket: string,
  opts: WorkloadPeerOptions<L>,
  timeoutMs: number,
): Promise<WorkloadRun<L>> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: { ...process.env, ...opts.env, SPIFFE_ENDPOINT_SOCKET: endpoint(socket) },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.uid === undefined ? {} : { uid: opts.uid }),
      ...(opts.gid === undefined ? {} : { gid: opts.gid }),
    });
    const lines: L[] = [];
    let stderr = '';
    let failure: Error | undefined;
    // Lines are handled one after another, each after the previous onLine settled.
    let chain: Promise<void> = Promise.resolve();
    const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 10_000);
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    createInterface({ input: child.stdout as Readable }).on('line', (text) => {
      chain = chain.then(async () => {
        if (failure !== undefined) return;
        let line: L;
        try {
          line = JSON.parse(text) as L;
        } catch {
          failure = new Error(`interop: ${file} printed a line that is not JSON: ${text}`);
          child.kill('SIGKILL');
          return;
        }
        lines.push(line);
        try {
          await opts.onLine?.(line);
        } catch (err) {
          failure = err as Error;
          child.kill('SIGKILL');
        }
      });
    });
    child.once('error', (err) => {
      clearTimeout(killer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(killer);
      void chain.then(() => {
        if (failure !== undefined) reject(failure);
        else resolve({ code, lines, stderr });
      });
    });
  });
}

function commonArgs(opts: { audience?: readonly string[]; updates?: number }): string[] {
  return [...(opts.audience ?? []).flatMap((a) => ['--audience', a]), '--updates', String(opts.updates ?? 1)];
}

/**
 * `interop workload` (go-spiffe v2: X509Source, BundleSource, JWTSource and a Client watch on one
 * connection) against `socket`. Lines: once the first X.509 update is in, a `bundles` line and,
 * with an audience, a `jwt` line; then each X.509 update as `x509` (1..updates); `error` lines
 * whenever a call or the watch fails.
 */
export function runGoWorkload(
  socket: string,
  opts: WorkloadPeerOptions<GoWorkloadLine> = {},
): Promise<WorkloadRun<GoWorkloadLine>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return runPeer(
    GO_BINARY,
    ['workload', ...commonArgs(opts), '--timeout', `${timeoutMs}ms`],
    socket,
    opts,
    timeoutMs,
  );
}

/**
 * `python/workload.py` (py-spiffe WorkloadApiClient) against `socket`. Lines: `x509-context`,
 * `x509-bundles`, `jwt-bundles`, with an audience `jwt` (or an `error` line in place of each), then
 * each X.509 stream update as `x509` (1..updates).
 */
export function runPythonWorkload(
  socket: string,
  opts: WorkloadPeerOptions<PythonWorkloadLine> = {},
): Promise<WorkloadRun<PythonWorkloadLine>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return runPeer(
    PYTHON,
    [PYTHON_WORKLOAD, ...commonArgs(opts), '--timeout', String(timeoutMs / 1000)],
    socket,
    opts,
    timeoutMs,
  );
}

export interface MtlsPairOptions {
  /** The server (client) presents the SVID with this hint; default the first. */
  serverHint?: string;
  clientHint?: string;
  timeoutMs?: number;
  uid?: number;
  gid?: number;
  env?: Record<string, string>;
}

/**
 * `interop mtls-pair`: a go-spiffe mTLS server and client in one process, each on its own
 * X509Source from `socket`, each authorizing any ID of its own trust domain. `line` is the pair's
 * report — absent when the peer gave up before trying (no identity within the timeout: see
 * `stderr`); the exit code is 0 only when both sides completed the handshake and the exchange.
 */
export async function runGoMtlsPair(
  socket: string,
  opts: MtlsPairOptions = {},
): Promise<WorkloadRun<MtlsLine> & { line?: MtlsLine }> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const args = [
    'mtls-pair',
    '--timeout',
    `${timeoutMs}ms`,
    ...(opts.serverHint === undefined ? [] : ['--server-hint', opts.serverHint]),
    ...(opts.clientHint === undefined ? [] : ['--client-hint', opts.clientHint]),
  ];
  const run = await runPeer<MtlsLine>(GO_BINARY, args, socket, opts, timeoutMs);
  const line = run.lines.find((l) => l.kind === 'mtls');
  return line === undefined ? run : { ...run, line };
}

/** The lines of one kind, typed. */
export function linesOf<L extends { kind: string }, K extends L['kind']>(
  lines: readonly L[],
  kind: K,
): Extract<L, { kind: K }>[] {
  return lines.filter((l): l is Extract<L, { kind: K }> => l.kind === kind);
}
