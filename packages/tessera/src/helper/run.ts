// `tessera helper run`: the SVIDs, bundles and JWT-SVIDs of this process from the Workload API,
// written to files for a program that reads certificates from disk, rewritten on every update
// the agent pushes (and JWT-SVIDs at half their lifetime), then the program told to reload.
// Daemon mode keeps going through every failure (agent away, no identity yet, a cert_dir that
// cannot be written, a reload that fails), saying why; one-shot mode writes once or exits 1.
import {
  createWorkloadApiClient,
  defaultWorkloadApiAddress,
  ErrorCode,
  isSpiffeError,
  type JwtBundleSet,
  JwtSource,
  type SpiffeError,
  type WorkloadApiClient,
  X509Source,
} from '@tessera/spiffe';
import { startHealthServer } from '../common/daemon.js';
import { isTesseraError, TesseraError, TesseraErrorCode } from '../common/errors.js';
import { createLogger, type DaemonLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { type HelperConfig, type JwtSvidFileConfig, outputPath, splitArgs } from './config.js';
import { checkWritableDir, writeFileAtomic } from './file-writer.js';
import { jwtBundlesFile, jwtRefreshDelayMs, pickSvid, x509Files } from './outputs.js';
import { exitStatus, ManagedChild, runReloadCommand, signalPidFileWithRetry } from './reloader.js';

export interface HelperOptions {
  logger?: DaemonLogger;
  /** Where a relative cert_dir is taken from; default process.cwd(). */
  cwd?: string;
  now?: () => Date;
}

export interface RunningHelper {
  /** The health listener's port (useful with bind_port 0), or undefined when it is off. */
  readonly healthPort: number | undefined;
  readonly metrics: Metrics;
  /**
   * Resolves with the status the helper should exit with when it ends by itself: the child's
   * (cmd) when it exits. Never resolves without a child.
   */
  readonly done: Promise<number>;
  /** Every configured file written at least once, and none holding an expired SVID. */
  isReady(): boolean;
  /** The last write of every file succeeded (spiffe-helper's liveness). */
  isLive(): boolean;
  /** Whether cmd has been started (after the first write) and has not exited yet. */
  hasChild(): boolean;
  /** Stops watching, stops the child (SIGTERM) and waits for it. Idempotent. */
  stop(): Promise<void>;
}

/** The Workload API address to dial: agent_address as a path or a URI, else the default. */
export function agentAddress(config: HelperConfig): string {
  const a = config.agent_address ?? defaultWorkloadApiAddress();
  return a.includes('://') ? a : `unix://${a}`;
}

/** Where each output stands, for /ready and /live. */
interface FileState {
  written: boolean;
  failed: boolean;
  /** Expiry of the SVID the file holds (X.509 and JWT-SVID files). */
  expiresAt?: Date;
}

interface Outputs {
  readonly x509: boolean;
  readonly paths: {
    readonly svid?: string;
    readonly key?: string;
    readonly bundle?: string;
    readonly combined?: string;
    readonly crl?: string;
    readonly jwtBundle?: string;
  };
  readonly jwt: readonly (JwtSvidFileConfig & { readonly path: string })[];
}

function outputsOf(config: HelperConfig, cwd: string): Outputs {
  const p = (name: string | undefined) => (name === undefined ? undefined : outputPath(config, name, cwd));
  const paths = {
    svid: p(config.svid_file_name),
    key: p(config.svid_key_file_name),
    bundle: p(config.svid_bundle_file_name),
    combined: p(config.svid_combined_file_name),
    crl: p(config.crl_file_name),
    jwtBundle: p(config.jwt_bundle_file_name),
  };
  return {
    x509: paths.svid !== undefined || paths.combined !== undefined,
    paths,
    jwt: config.jwt_svids.map((j) => ({ ...j, path: outputPath(config, j.jwt_svid_file_name, cwd) })),
  };
}

/** Writes the X.509 files from the source's current context; returns the SVID's expiry. */
function writeX509(
  config: HelperConfig,
  out: Outputs,
  source: X509Source,
  now: Date,
): { id: string; serial: string; expiresAt: Date } {
  const files = x509Files(
    { svids: source.getX509Svids(), bundles: source.getX509Bundles(), crls: source.getX509Crls() },
    {
      hint: config.hint,
      addIntermediatesToBundle: config.add_intermediates_to_bundle,
      includeFederatedDomains: config.include_federated_domains,
      omitExpired: config.omit_expired,
      now,
    },
  );
  // The key before the certificate: a program that reads both between two writes finds a key
  // without its certificate rather than the reverse only for as long as the two renames take.
  // Programs that must never see a mismatched pair read svid_combined_file_name.
  if (out.paths.key !== undefined) writeFileAtomic(out.paths.key, files.privateKey, config.key_file_mode);
  if (out.paths.svid !== undefined)
    writeFileAtomic(out.paths.svid, files.certificates, config.cert_file_mode);
  if (out.paths.bundle !== undefined) writeFileAtomic(out.paths.bundle, files.bundle, config.cert_file_mode);
  if (out.paths.combined !== undefined)
    writeFileAtomic(out.paths.combined, files.combined, config.key_file_mode);
  // The trust domain's CRLs (PEM, one per X.509 authority; empty from an agent that sends none, as
  // SPIRE's): a new CRL is an update of the context, so it is written and reloaded like an SVID.
  if (out.paths.crl !== undefined)
    writeFileAtomic(
      out.paths.crl,
      source
        .getX509Crls()
        .map((c) => c.toPem())
        .join(''),
      config.cert_file_mode,
    );
  return {
    id: files.svid.id.toString(),
    serial: files.svid.leaf.serialNumber,
    expiresAt: files.svid.expiresAt,
  };
}

function writeJwtBundles(config: HelperConfig, path: string, set: JwtBundleSet): void {
  writeFileAtomic(path, jwtBundlesFile(set), config.jwt_bundle_file_mode);
}

async function fetchAndWriteJwtSvid(
  config: HelperConfig,
  client: WorkloadApiClient,
  j: JwtSvidFileConfig & { path: string },
  signal: AbortSignal,
): Promise<Date> {
  const svids = await client.fetchJwtSvids(
    { audience: [j.jwt_audience, ...j.jwt_extra_audiences] },
    { signal },
  );
  const svid = pickSvid(svids, config.hint, `JWT-SVID for audience ${JSON.stringify(j.jwt_audience)}`);
  writeFileAtomic(j.path, svid.marshal(), config.jwt_svid_file_mode);
  return svid.expiresAt;
}

/** A Workload API error with the agent address in front, unless the message has it already. */
function describeFetchError(err: unknown, address: string): string {
  const message = (err as Error).message;
  return message.includes(address.replace(/^unix:\/\//, ''))
    ? message
    : `${message} (agent_address ${address})`;
}

/**
 * One-shot mode (daemon_mode: false): waits up to fetch_timeout for everything the configuration
 * writes, writes each file once, and returns; throws ERR_HELPER_FETCH (nothing in time, no SVID
 * with the hint) or ERR_HELPER_WRITE.
 */
export async function runHelperOnce(config: HelperConfig, options: HelperOptions = {}): Promise<void> {
  const log = options.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  const now = options.now ?? (() => new Date());
  const out = outputsOf(config, options.cwd ?? process.cwd());
  const address = agentAddress(config);
  const deadline = Date.now() + config.fetch_timeout;
  const remaining = () => Math.max(1, deadline - Date.now());
  const client = createWorkloadApiClient({
    address,
    logger: log.with({ subsystem: 'workloadapi' }),
    backoff: { initialMs: 200, maxMs: 2000 },
  });
  const fetchFailed = (what: string, err: unknown) =>
    new TesseraError(
      TesseraErrorCode.HELPER_FETCH,
      `helper: no ${what} from the Workload API within fetch_timeout (${config.fetch_timeout} ms): ${describeFetchError(err, address)}`,
      { cause: err },
    );
  try {
    if (out.x509) {
      let source: X509Source;
      try {
        source = await X509Source.create({ client, readyTimeoutMs: remaining() });
      } catch (err) {
        throw fetchFailed('X509-SVID', err);
      }
      try {
        const svid = writeX509(config, out, source, now());
        log.info('X.509 files written', {
          spiffe_id: svid.id,
          serial: svid.serial,
          expires: svid.expiresAt.toISOString(),
        });
      } finally {
        await source.close();
      }
    }
    if (out.paths.jwtBundle !== undefined || out.jwt.length > 0) {
      let source: JwtSource;
      try {
        source = await JwtSource.create({ client, readyTimeoutMs: remaining() });
      } catch (err) {
        throw fetchFailed('JWT bundles', err);
      }
      try {
        if (out.paths.jwtBundle !== undefined) {
          writeJwtBundles(
            config,
            out.paths.jwtBundle,
            await client.fetchJwtBundles({ signal: AbortSignal.timeout(remaining()) }),
          );
          log.info('JWT bundle file written', { file: out.paths.jwtBundle });
        }
        for (const j of out.jwt) {
          let expiresAt: Date;
          try {
            expiresAt = await fetchAndWriteJwtSvid(config, client, j, AbortSignal.timeout(remaining()));
          } catch (err) {
            if (isTesseraError(err)) throw err;
            throw fetchFailed(`JWT-SVID for audience ${JSON.stringify(j.jwt_audience)}`, err);
          }
          log.info('JWT-SVID written', {
            file: j.path,
            audience: j.jwt_audience,
            expires: expiresAt.toISOString(),
          });
        }
      } finally {
        await source.close();
      }
    }
  } finally {
    client.close();
  }
}

/** Daemon mode: starts watching and writing; see RunningHelper. Throws ERR_STARTUP (health port). */
export async function startHelper(config: HelperConfig, options: HelperOptions = {}): Promise<RunningHelper> {
  const log = options.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  const now = options.now ?? (() => new Date());
  const cwd = options.cwd ?? process.cwd();
  const out = outputsOf(config, cwd);
  const address = agentAddress(config);
  const metrics = new Metrics();
  const stopping = new AbortController();
  const state = new Map<string, FileState>();
  const track = (key: string) => state.set(key, { written: false, failed: false });
  if (out.x509) track('x509');
  if (out.paths.jwtBundle !== undefined) track('jwt_bundle');
  for (const j of out.jwt) track(j.path);
  const mark = (key: string, ok: boolean, expiresAt?: Date) => {
    const s = state.get(key) as FileState;
    s.failed = !ok;
    if (ok) {
      s.written = true;
      s.expiresAt = expiresAt;
    }
    metrics.inc(
      ok ? 'tessera_helper_writes_total' : 'tessera_helper_write_failures_total',
      ok ? 'Files (sets of files, for X.509) written.' : 'Writes that failed (retried).',
      { output: key === 'x509' || key === 'jwt_bundle' ? key : 'jwt_svid' },
    );
  };
  const isReady = () =>
    [...state.values()].every((s) => s.written && (s.expiresAt === undefined || s.expiresAt > now()));
  const isLive = () => [...state.values()].every((s) => !s.failed);

  const problem = checkWritableDir(outputPath(config, '.', cwd));
  if (problem !== undefined)
    log.error('cert_dir cannot be written yet; the helper retries each write', {
      cert_dir: config.cert_dir,
      problem,
    });

  // --- reloading the program, one reload at a time; a write during one asks for one more ---
  let child: ManagedChild | undefined;
  let resolveDone!: (status: number) => void;
  const done = new Promise<number>((resolve) => {
    resolveDone = resolve;
  });
  const cmdArgs = splitArgs(config.cmd_args) ?? [];
  const reloadArgs = splitArgs(config.reload_cmd_args) ?? [];
  const signal = config.renew_signal as NodeJS.Signals | undefined;
  const reloadFailed = (how: string, err: unknown) => {
    metrics.inc('tessera_helper_reload_failures_total', 'Reloads of the program that failed.', { how });
    log.error('the program was not told to reload', { how, error: (err as Error).message });
  };
  const reloadOnce = async () => {
    if (config.cmd !== undefined) {
      if (child === undefined) {
        child = new ManagedChild(config.cmd, cmdArgs);
        log.info('cmd started', { cmd: config.cmd, pid: child.pid });
        const c = child;
        c.exit.then(
          (exit) => {
            log.info('cmd exited; the helper exits with its status', {
              code: exit.code,
              signal: exit.signal,
            });
            resolveDone(exitStatus(exit));
          },
          (err: unknown) => {
            log.error('cmd could not be started', { error: (err as Error).message });
            resolveDone(1);
          },
        );
      } else if (signal !== undefined) {
        try {
          child.signal(signal);
          log.info('cmd signalled', { pid: child.pid, signal });
        } catch (err) {
          reloadFailed('cmd', err);
        }
      }
    }
    if (config.pid_file_name !== undefined && signal !== undefined) {
      try {
        const pid = await signalPidFileWithRetry(config.pid_file_name, signal, {
          attempts: 5,
          firstDelayMs: 100,
          abort: stopping.signal,
        });
        log.info('process signalled', { pid_file_name: config.pid_file_name, pid, signal });
      } catch (err) {
        reloadFailed('pid_file_name', err);
      }
    }
    if (config.reload_cmd !== undefined) {
      try {
        await runReloadCommand(config.reload_cmd, reloadArgs, config.reload_timeout);
        log.info('reload_cmd ran', { reload_cmd: config.reload_cmd });
      } catch (err) {
        reloadFailed('reload_cmd', err);
      }
    }
  };
  let reloading: Promise<void> | undefined;
  let reloadAgain = false;
  const reload = () => {
    if (stopping.signal.aborted) return;
    if (reloading !== undefined) {
      reloadAgain = true;
      return;
    }
    reloading = (async () => {
      do {
        reloadAgain = false;
        await reloadOnce();
      } while (reloadAgain && !stopping.signal.aborted);
      reloading = undefined;
    })();
  };

  // --- writing, with a retry while the last write failed ---
  const retryTimers = new Map<string, NodeJS.Timeout>();
  const retryDelays = new Map<string, number>();
  /** Runs `write` now and, while it fails, again after 1 s, 2 s, ... 30 s (until a new update replaces it). */
  const attempt = (key: string, what: string, write: () => boolean) => {
    clearTimeout(retryTimers.get(key));
    retryTimers.delete(key);
    if (stopping.signal.aborted) return;
    if (write()) {
      retryDelays.delete(key);
      return;
    }
    const wait = Math.min(30_000, retryDelays.get(key) ?? 1000);
    retryDelays.set(key, wait * 2);
    log.warn(`writing ${what} again in ${wait} ms`);
    retryTimers.set(
      key,
      setTimeout(() => attempt(key, what, write), wait),
    );
  };

  const client = createWorkloadApiClient({ address, logger: log.with({ subsystem: 'workloadapi' }) });
  const closers: (() => Promise<void> | void)[] = [() => client.close()];

  let x509: X509Source | undefined;
  if (out.x509) {
    const source = new X509Source({ client });
    x509 = source;
    closers.unshift(() => source.close());
    let last: string | undefined;
    const write = () => {
      try {
        const svid = writeX509(config, out, source, now());
        mark('x509', true, svid.expiresAt);
        if (last !== svid.serial)
          log.info('X.509 files written', {
            spiffe_id: svid.id,
            serial: svid.serial,
            expires: svid.expiresAt.toISOString(),
            cert_dir: outputPath(config, '.', cwd),
          });
        else log.info('X.509 files written (bundle update)', { spiffe_id: svid.id, serial: svid.serial });
        last = svid.serial;
        reload();
        return true;
      } catch (err) {
        if (isTesseraError(err, TesseraErrorCode.HELPER_WRITE)) mark('x509', false);
        log.error('X.509 files not written', { error: (err as Error).message });
        return false;
      }
    };
    source.on('update', () => attempt('x509', 'the X.509 files', write));
  }

  // The JWT bundles of every trust domain, from a watch of their own.
  let jwtBundleError: SpiffeError | undefined;
  const bundlePath = out.paths.jwtBundle;
  if (bundlePath !== undefined) {
    const watching = client.watchJwtBundles(
      {
        onUpdate: (set) => {
          jwtBundleError = undefined;
          attempt('jwt_bundle', 'the JWT bundle file', () => {
            try {
              writeJwtBundles(config, bundlePath, set);
              mark('jwt_bundle', true);
              log.info('JWT bundle file written', { file: bundlePath, trust_domains: set.size });
              return true;
            } catch (err) {
              if (isTesseraError(err, TesseraErrorCode.HELPER_WRITE)) mark('jwt_bundle', false);
              log.error('JWT bundle file not written', { error: (err as Error).message });
              return false;
            }
          });
        },
        onError: (err) => {
          jwtBundleError = err;
        },
      },
      stopping.signal,
    );
    closers.push(() => watching.catch(() => undefined));
  }

  // JWT-SVIDs: fetched at once, again at half their lifetime, with back-off (1 s .. 60 s) on failure.
  const jwtLoops: Promise<void>[] = [];
  for (const j of out.jwt)
    jwtLoops.push(
      (async () => {
        let backoff = 1000;
        while (!stopping.signal.aborted) {
          let wait: number;
          try {
            const expiresAt = await fetchAndWriteJwtSvid(config, client, j, stopping.signal);
            mark(j.path, true, expiresAt);
            wait = jwtRefreshDelayMs({ expiresAt }, now());
            backoff = 1000;
            log.info('JWT-SVID written', {
              file: j.path,
              audience: j.jwt_audience,
              expires: expiresAt.toISOString(),
              next_fetch_in_ms: wait,
            });
          } catch (err) {
            if (stopping.signal.aborted) return;
            // Only a failed write makes the helper not live (as spiffe-helper); an agent that does
            // not answer leaves the file as it was, and /ready says whether it is still good.
            if (isTesseraError(err, TesseraErrorCode.HELPER_WRITE)) mark(j.path, false);
            wait = backoff;
            backoff = Math.min(60_000, backoff * 2);
            log.error('JWT-SVID not written', {
              file: j.path,
              audience: j.jwt_audience,
              error: describeFetchError(err, address),
              retry_in_ms: wait,
            });
          }
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, wait);
            stopping.signal.addEventListener(
              'abort',
              () => {
                clearTimeout(t);
                resolve();
              },
              { once: true },
            );
          });
        }
      })(),
    );

  // The Workload API's refusals are logged once per reason by the client; this says it plainly
  // every 30 s until the first files are written.
  const nag = setInterval(() => {
    if (isReady()) return;
    const last = x509?.lastError ?? jwtBundleError;
    log.warn('waiting for an identity from the Workload API', {
      agent_address: address,
      last_error: last?.message ?? 'none yet (the agent has not answered)',
      what_to_do: whatToDo(last),
    });
  }, 30_000);
  nag.unref();
  closers.unshift(() => clearInterval(nag));

  let healthPort: number | undefined;
  if (config.health_checks.listener_enabled) {
    try {
      const health = await startHealthServer({
        role: 'helper',
        address: config.health_checks.bind_address,
        port: config.health_checks.bind_port,
        metrics,
        ready: isReady,
        live: isLive,
        paths: { live: config.health_checks.liveness_path, ready: config.health_checks.readiness_path },
      });
      healthPort = health.port;
      closers.unshift(() => health.close());
    } catch (err) {
      stopping.abort();
      for (const c of closers) await c();
      throw err;
    }
  }
  log.info('helper started', {
    agent_address: address,
    cert_dir: outputPath(config, '.', cwd),
    outputs: state.size,
    health: healthPort === undefined ? 'off' : `${config.health_checks.bind_address}:${healthPort}`,
  });

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping.abort();
      for (const t of retryTimers.values()) clearTimeout(t);
      for (const c of closers) await c();
      await Promise.allSettled(jwtLoops);
      await reloading;
      if (child !== undefined) await child.stop().catch(() => undefined);
    })();
    return stopped;
  };
  let childExited = false;
  void done.then(() => {
    childExited = true;
  });
  const hasChild = () => child !== undefined && !childExited;
  return { healthPort, metrics, done, isReady, isLive, hasChild, stop };
}

/** The advice for a Workload API error, for the periodic "waiting" line. */
function whatToDo(err: SpiffeError | undefined): string {
  if (err === undefined) return 'check that tessera agent runs and agent_address points at its socket';
  if (isSpiffeError(err, ErrorCode.WORKLOADAPI_PERMISSION_DENIED))
    return 'register an entry whose selectors match this process (tessera entry create)';
  if (isSpiffeError(err, ErrorCode.WORKLOADAPI_UNAVAILABLE))
    return 'start the agent, or point agent_address at its socket';
  return 'see last_error';
}
