/**
 * SPIRE v1.13.3 (`spire-server`, `spire-agent`, built by test/interop/setup-spire.sh into
 * test/interop/.spire/bin) as real child processes, for suites that federate with or run workloads
 * of a real SPIRE, and the go-spiffe peer's Workload API subcommands (`x509-server`, `x509-client`,
 * `x509-bundles`, go/x509_workload.go) pointed at a SPIRE agent's socket.
 *
 * Absence: `spireUnavailable(suite)` is `interopUnavailable` with the SPIRE binaries added — the
 * suite skips loudly, or fails with TESSERA_REQUIRE_INTEROP=1 — so a suite starts with
 *
 *   const skip = spireUnavailable('SPIRE federates with tessera');
 *   describe('…', { skip }, () => { … });
 *
 * A SPIRE server, an agent and a workload (see spire-harness.test.ts for all of it running):
 *
 *   const tmp = await makeTempDir('spire-');             // short: sockets live in it (108-byte limit)
 *   const server = await startSpireServer({ dir: join(tmp.path, 's'), trustDomain: 'spire.test',
 *     bundleEndpointPort: 0,                              // 0: a free port; undefined: no bundle endpoint
 *     federatesWith: [{ trustDomain: 'tessera.test', url: 'https://127.0.0.1:8443',
 *                       endpointSpiffeId: 'spiffe://tessera.test/tessera/server' }] });
 *   const agent = await startSpireAgent({ dir: join(tmp.path, 'a'), server });
 *   await createSpireEntry(server, { spiffeId: 'spiffe://spire.test/web', parentId: agent.nodeId,
 *     selectors: [`unix:uid:${process.getuid()}`], federatesWith: ['tessera.test'] });
 *   await agent.waitForSvid('spiffe://spire.test/web');   // the entry reached the agent
 *   const web = await startX509Server(agent.socketPath, { id: 'spiffe://tessera.test/client' });
 *   …
 *   finally: await agent.stop(); await server.stop(); await tmp.cleanup();
 *
 * SPIRE behaviours a federation test has to drive (v1.13.3, checked against its source):
 *   - https_spiffe federation needs a local copy of the foreign bundle first (the bundle endpoint's
 *     certificate is verified against it): `server.cli(['bundle', 'set', '-format', 'spiffe', '-id',
 *     'spiffe://tessera.test'], { input: json })` (or `federation create … -trustDomainBundlePath`).
 *     Without one SPIRE retries only every minute; its log says "local copy of bundle not found".
 *   - SPIRE polls a federated endpoint every max(its refresh hint, 1 min) / 4 — at least 15 s,
 *     whatever the hint; 5 min when the bundle has none (its log: `Bundle refreshed …
 *     trust_domain=td` when a poll stored a changed bundle, `Error updating bundle` when it failed).
 *     Tests force a fetch with `server.cliOk(['federation', 'refresh', '-id', td])` (works for the
 *     config file's relationships too): synchronous, exit 0 once the bundle the endpoint served is
 *     stored; exit 1 `failed to refresh bundle: …` when the fetch failed (logged as `Failed to
 *     refresh bundle`), `there is no federation relationship with trust domain …` for an unknown one.
 *   - An entry may federate only with trust domains SPIRE already has a bundle for (-federatesWith;
 *     else `unable to find federated bundle "spiffe://td"`).
 *   - Bundle changes reach workloads at the agent's next sync (`syncInterval`, here 1 s by default;
 *     SPIRE's own default is 5 s), entry changes after the server's entry-cache reload as well
 *     (`cacheReloadInterval`, here 1 s; SPIRE's 5 s).
 *   - SPIRE's own IDs live under /spire: its server is `spiffe://td/spire/server` (the ID its bundle
 *     endpoint presents, `endpointSpiffeId`), agents `spiffe://td/spire/agent/join_token/<token>`;
 *     workload IDs must not be under /spire.
 *   - The server CLI takes `-socketPath` after the subcommand words (`spire-server entry show
 *     -socketPath S`); `cli()` puts it there. Most commands take `-output json`.
 *   - CA rotation (`spireX509Authority`): `localauthority x509 prepare` (no flags; a second prepare
 *     replaces the prepared CA), `activate|taint|revoke -authorityID <id>`; revoke refuses an
 *     untainted CA ("it is not possible to revoke an untainted root CA"). Each change bumps the
 *     bundle's `spiffe_sequence`; `bundle show -format spiffe` prints no `spiffe_refresh_hint` (the
 *     bundle endpoint serves the configured one).
 *   - Bundles of other trust domains: `bundle set -id spiffe://td -format spiffe|pem [-path F]`
 *     (stdin without -path), `bundle list [-id spiffe://td] -format spiffe`, `bundle delete -id …`.
 *     Dynamic relationships: `federation create -trustDomain td -bundleEndpointURL U
 *     -bundleEndpointProfile https_spiffe -endpointSpiffeID ID [-trustDomainBundlePath F
 *     -trustDomainBundleFormat spiffe]`; `federation list|show|update|delete`.
 *
 * Sockets are created in the dirs given; makeTempDir's is 0700, so a workload of another uid needs
 * the directories on the path to its agent's socket opened up (chmod 0755, as sds.test.ts does for
 * the tessera agent; SPIRE itself runs with umask 0027). The Go helpers here run as this process's uid.
 *
 * Every process is stopped by its owner (`stop()`, SIGTERM then the exit; SIGKILL after 10 s), and
 * killed if the test process exits first. SPIRE's log (text format, stdout and stderr) is kept:
 * start-up failures quote its tail.
 *
 * The HA bench's SPIRE reference (bench/spire-reference.ts, importing this as
 * `#test/interop/spire.test.util.js`, the root package.json's `imports`) runs SPIRE through this file
 * too: binaries from `findSpire()` (the local build, else PATH, version-checked) passed as `binaries`,
 * SPIRE's own cache and sync timers (`cacheReloadInterval: null`, `syncInterval: null`), a join token
 * made first (`generateSpireJoinToken(server, null)`: no node alias, entries parented by the agent's
 * own ID) so an entry exists before the agent starts, and `spawnedAt` to time from the spawn.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { createHash, type X509Certificate } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '@tessera/testkit';
import { type Authorize, type GoClientResult, type GoServer, runGo, startGoListener } from './go-peer.js';
import { INTEROP_DIR, interopUnavailable } from './verdicts.js';

export const SPIRE_VERSION = '1.13.3';
/** Where test/interop/setup-spire.sh puts the binaries. */
export const SPIRE_BIN_DIR = join(INTEROP_DIR, '.spire', 'bin');
export const SPIRE_SERVER_BINARY = join(SPIRE_BIN_DIR, 'spire-server');
export const SPIRE_AGENT_BINARY = join(SPIRE_BIN_DIR, 'spire-agent');

const START_TIMEOUT_MS = 30_000;
/** How often a starting daemon's healthcheck is retried (the bench times "healthy after spawn" with it). */
const HEALTH_POLL_MS = 50;
const CLI_TIMEOUT_MS = 30_000;

export interface SpireBinaries {
  server: string;
  agent: string;
}

/** spire-server and spire-agent from test/interop/.spire/bin; undefined when setup-spire.sh has not built them. */
export function spireBinaries(): SpireBinaries | undefined {
  if (!existsSync(SPIRE_SERVER_BINARY) || !existsSync(SPIRE_AGENT_BINARY)) return undefined;
  return { server: SPIRE_SERVER_BINARY, agent: SPIRE_AGENT_BINARY };
}

export interface FoundSpire extends SpireBinaries {
  /** As `spire-server --version` prints it (`go install` builds say `1.13.3-dev-unk`). */
  version: string;
}

export type SpireLookup = { found: true; bin: FoundSpire } | { found: false; why: string };

/**
 * spire-server and spire-agent from test/interop/.spire/bin, else from PATH, if both report
 * v1.13.3: the HA bench's lookup (the suites take the local build alone, `spireUnavailable`).
 */
export function findSpire(): SpireLookup {
  const dirs = [SPIRE_BIN_DIR, ...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== '')];
  const locate = (name: string) =>
    dirs
      .map((d) => join(d, name))
      .find((p) => {
        try {
          accessSync(p, constants.X_OK);
          return true;
        } catch {
          return false;
        }
      });
  const server = locate('spire-server');
  const agent = locate('spire-agent');
  if (server === undefined || agent === undefined)
    return {
      found: false,
      why: `no ${server === undefined ? 'spire-server' : 'spire-agent'} in ${SPIRE_BIN_DIR} or on PATH`,
    };
  // Both print their version on stderr.
  const versions = [server, agent].map((p) => {
    const r = spawnSync(p, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  });
  const wanted = (v: string) => v === SPIRE_VERSION || v.startsWith(`${SPIRE_VERSION}-`);
  for (const [i, p] of [server, agent].entries())
    if (!wanted(versions[i] ?? ''))
      return { found: false, why: `${p} reports version "${versions[i]}", not ${SPIRE_VERSION}` };
  return { found: true, bin: { server, agent, version: versions[0] as string } };
}

/**
 * The interop rule (verdicts.ts) for a suite that runs SPIRE and the Go peer: true when it must skip
 * (said loudly), and a failing test instead under TESSERA_REQUIRE_INTEROP=1.
 */
export function spireUnavailable(suite: string, needs: readonly string[] = []): boolean {
  return interopUnavailable(suite, [SPIRE_SERVER_BINARY, SPIRE_AGENT_BINARY, ...needs]);
}

function requireBinaries(): SpireBinaries {
  const bin = spireBinaries();
  if (bin === undefined)
    throw new Error(
      `spire: no ${SPIRE_SERVER_BINARY} or ${SPIRE_AGENT_BINARY}; run test/interop/setup.sh (or setup-spire.sh)`,
    );
  return bin;
}

// --- processes -------------------------------------------------------------------------------

/** What a SPIRE command printed. */
export interface SpireCliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runCommand(
  file: string,
  args: readonly string[],
  input?: string,
  timeoutMs = CLI_TIMEOUT_MS,
): Promise<SpireCliResult> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
    child.stdin?.end(input ?? '');
  });
}

/** `args` with `-socketPath socket` after the subcommand words (before the first flag). */
function withSocket(args: readonly string[], socket: string): string[] {
  const i = args.findIndex((a) => a.startsWith('-'));
  const at = i < 0 ? args.length : i;
  return [...args.slice(0, at), '-socketPath', socket, ...args.slice(at)];
}

/** A SPIRE daemon's log, as it comes. */
export interface SpireLog {
  /** Every line written so far (stdout and stderr). */
  logLines(): readonly string[];
  /**
   * Resolves with the first line at index `from` (default 0) or later that matches `pattern`,
   * waiting for it; rejects after `ms` (default 15 s) with the log's tail. Take
   * `logLines().length` before an action to see only what follows it.
   */
  waitForLog(pattern: RegExp, options?: { from?: number; ms?: number }): Promise<string>;
}

interface Daemon extends SpireLog {
  child: ChildProcess;
  spawnedAt: number;
  alive(): boolean;
  tail(lines?: number): string;
  stop(): Promise<void>;
}

function startDaemon(name: string, file: string, args: readonly string[]): Daemon {
  const spawnedAt = performance.now();
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters = new Set<{ pattern: RegExp; from: number; resolve: (line: string) => void }>();
  const onLine = (line: string) => {
    lines.push(line);
    for (const w of waiters)
      if (lines.length - 1 >= w.from && w.pattern.test(line)) {
        waiters.delete(w);
        w.resolve(line);
      }
  };
  createInterface({ input: child.stdout as Readable }).on('line', onLine);
  createInterface({ input: child.stderr as Readable }).on('line', onLine);
  let spawnFailed = false;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      // Not started (ENOENT, EACCES): no 'exit' follows.
      spawnFailed = true;
      onLine(`spire: could not run ${file}: ${err.message}`);
      resolve();
    });
  });
  // The test process may end without stopping us (a crash, a failed before()): take SPIRE along.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  const alive = () => !spawnFailed && child.exitCode === null && child.signalCode === null;
  const tail = (n = 40) => lines.slice(-n).join('\n');
  let stopping: Promise<void> | undefined;
  return {
    child,
    spawnedAt,
    alive,
    tail,
    logLines: () => lines,
    waitForLog(pattern, options = {}) {
      const from = options.from ?? 0;
      const ms = options.ms ?? 15_000;
      const found = lines.slice(from).find((l) => pattern.test(l));
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const waiter = {
          pattern,
          from,
          resolve: (line: string) => {
            clearTimeout(timer);
            resolve(line);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(
            new Error(
              `spire: ${name} logged no line matching ${pattern} within ${ms} ms; its log ends:\n${tail()}`,
            ),
          );
        }, ms);
        waiters.add(waiter);
      });
    },
    stop() {
      stopping ??= (async () => {
        if (!alive()) return;
        child.kill('SIGTERM');
        const killed = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killed);
      })();
      return stopping;
    },
  };
}

/** Retries `healthy` every 50 ms until it passes; throws with the daemon's log if it exits or the time runs out. */
async function waitHealthy(name: string, d: Daemon, healthy: () => Promise<SpireCliResult>): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last: SpireCliResult | undefined;
  for (;;) {
    if (!d.alive())
      throw new Error(
        `spire: ${name} exited (${d.child.exitCode ?? d.child.signalCode}) while starting:\n${d.tail()}`,
      );
    last = await healthy();
    if (last.code === 0) return;
    if (Date.now() > deadline)
      throw new Error(
        `spire: ${name} not healthy after ${START_TIMEOUT_MS} ms (healthcheck: ${(last.stderr || last.stdout).trim()}); its log ends:\n${d.tail()}`,
      );
    await sleep(HEALTH_POLL_MS);
  }
}

const hcl = (s: string) => JSON.stringify(s);

// --- server ----------------------------------------------------------------------------------

export interface SpireFederatesWith {
  trustDomain: string;
  /** The foreign bundle endpoint, `https://host:port[/path]`. */
  url: string;
  /** https_spiffe: the SPIFFE ID the endpoint's certificate must carry. */
  endpointSpiffeId: string;
}

export interface SpireServerOptions {
  /** The server's directory (created if missing): server.conf, data/, api.sock. Keep it short. */
  dir: string;
  trustDomain: string;
  /** Serve a SPIFFE bundle endpoint (https_spiffe profile) on 127.0.0.1 at this port; 0: a free one. */
  bundleEndpointPort?: number;
  /** The bundle endpoint's `refresh_hint` (e.g. "10s"); SPIRE's default 5m. */
  bundleEndpointRefreshHint?: string;
  /** Static federation relationships (the config file's `federates_with`). */
  federatesWith?: readonly SpireFederatesWith[];
  /** `ca_ttl` (SPIRE's default 24h), e.g. "1h"; SPIRE prepares the next CA at half of it. */
  caTtl?: string;
  /** `default_x509_svid_ttl` (SPIRE's default 1h). */
  svidTtl?: string;
  /** Where the CA keys live: `disk` (default; a restart on the same dir keeps the CA) or `memory`. */
  keyManager?: 'disk' | 'memory';
  /**
   * `experimental.cache_reload_interval` (how soon entry changes reach agents); default "1s"; null:
   * not written, SPIRE's own (5 s).
   */
  cacheReloadInterval?: string | null;
  /** DEBUG, INFO (default), WARN, ERROR. */
  logLevel?: string;
  /** For the bind port; default a free one (give the old one to restart a server on the same dir). */
  port?: number;
  /** More HCL inside `server { … }`. */
  extraServerConfig?: string;
  /** Default the local build (test/interop/.spire/bin); e.g. `findSpire()`'s. */
  binaries?: SpireBinaries;
}

export interface RunningSpireServer extends SpireLog {
  readonly trustDomain: string;
  readonly dir: string;
  readonly configPath: string;
  /** The server API socket (the CLI's -socketPath). */
  readonly socketPath: string;
  /** The agent-facing gRPC address, 127.0.0.1:`port`. */
  readonly address: string;
  readonly port: number;
  /** `https://127.0.0.1:P` when a bundle endpoint was asked for. */
  readonly bundleEndpointUrl: string | undefined;
  readonly bundleEndpointPort: number | undefined;
  /** `spiffe://<td>/spire/server`: the ID of the server's SVID, which its bundle endpoint presents. */
  readonly endpointSpiffeId: string;
  readonly pid: number;
  /** `performance.now()` just before the spawn. */
  readonly spawnedAt: number;
  /** `spire-server <args> -socketPath <socket>` (the flag after the subcommand words); never throws. */
  cli(args: readonly string[], options?: { input?: string }): Promise<SpireCliResult>;
  /** As cli(), but throws (naming the command, with its output) unless it exits 0; its stdout. */
  cliOk(args: readonly string[], options?: { input?: string }): Promise<string>;
  /** `spire-server bundle show -format <format>`: this trust domain's bundle (PEM by default). */
  bundle(format?: 'pem' | 'spiffe'): Promise<string>;
  alive(): boolean;
  /** SIGTERM, then the exit (SIGKILL after 10 s); idempotent. */
  stop(): Promise<void>;
}

function serverConfig(
  o: SpireServerOptions,
  port: number,
  socketPath: string,
  bundlePort: number | undefined,
) {
  const data = join(o.dir, 'data');
  const server = [
    `bind_address = "127.0.0.1"`,
    `bind_port = "${port}"`,
    `socket_path = ${hcl(socketPath)}`,
    `trust_domain = ${hcl(o.trustDomain)}`,
    `data_dir = ${hcl(data)}`,
    `log_level = ${hcl(o.logLevel ?? 'INFO')}`,
    ...(o.caTtl === undefined ? [] : [`ca_ttl = ${hcl(o.caTtl)}`]),
    ...(o.svidTtl === undefined ? [] : [`default_x509_svid_ttl = ${hcl(o.svidTtl)}`]),
  ];
  const cacheReload = o.cacheReloadInterval === undefined ? '1s' : o.cacheReloadInterval;
  if (cacheReload !== null)
    server.push(`experimental {\n    cache_reload_interval = ${hcl(cacheReload)}\n  }`);
  const federation: string[] = [];
  if (bundlePort !== undefined)
    federation.push(
      [
        'bundle_endpoint {',
        '      address = "127.0.0.1"',
        `      port = ${bundlePort}`,
        ...(o.bundleEndpointRefreshHint === undefined
          ? []
          : [`      refresh_hint = ${hcl(o.bundleEndpointRefreshHint)}`]),
        '      profile "https_spiffe" {}',
        '    }',
      ].join('\n'),
    );
  for (const f of o.federatesWith ?? [])
    federation.push(
      [
        `federates_with ${hcl(f.trustDomain)} {`,
        `      bundle_endpoint_url = ${hcl(f.url)}`,
        '      bundle_endpoint_profile "https_spiffe" {',
        `        endpoint_spiffe_id = ${hcl(f.endpointSpiffeId)}`,
        '      }',
        '    }',
      ].join('\n'),
    );
  if (federation.length > 0) server.push(`federation {\n    ${federation.join('\n    ')}\n  }`);
  if (o.extraServerConfig !== undefined) server.push(o.extraServerConfig);
  const keyManager =
    (o.keyManager ?? 'disk') === 'disk'
      ? `KeyManager "disk" {\n    plugin_data {\n      keys_path = ${hcl(join(data, 'keys.json'))}\n    }\n  }`
      : 'KeyManager "memory" {\n    plugin_data {}\n  }';
  return `server {
  ${server.join('\n  ')}
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = ${hcl(join(data, 'datastore.sqlite3'))}
    }
  }
  ${keyManager}
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`;
}

/** Writes server.conf, runs `spire-server run -config`, and resolves once `spire-server healthcheck` passes. */
export async function startSpireServer(o: SpireServerOptions): Promise<RunningSpireServer> {
  const bin = o.binaries ?? requireBinaries();
  await mkdir(join(o.dir, 'data'), { recursive: true });
  const port = o.port ?? (await freePort());
  const bundlePort =
    o.bundleEndpointPort === undefined
      ? undefined
      : o.bundleEndpointPort === 0
        ? await freePort()
        : o.bundleEndpointPort;
  const socketPath = join(o.dir, 'api.sock');
  const configPath = join(o.dir, 'server.conf');
  await writeFile(configPath, serverConfig(o, port, socketPath, bundlePort));
  const name = `spire-server (${o.trustDomain})`;
  const d = startDaemon(name, bin.server, ['run', '-config', configPath]);
  const cli = (args: readonly string[], options: { input?: string } = {}) =>
    runCommand(bin.server, withSocket(args, socketPath), options.input);
  const cliOk = async (args: readonly string[], options: { input?: string } = {}) => {
    const r = await cli(args, options);
    if (r.code !== 0)
      throw new Error(
        `spire: spire-server ${args.join(' ')} (${o.trustDomain}) exited ${r.code}: ${(r.stderr || r.stdout).trim()}`,
      );
    return r.stdout;
  };
  try {
    await waitHealthy(name, d, () => cli(['healthcheck']));
  } catch (err) {
    await d.stop();
    throw err;
  }
  return {
    trustDomain: o.trustDomain,
    dir: o.dir,
    configPath,
    socketPath,
    address: `127.0.0.1:${port}`,
    port,
    bundleEndpointUrl: bundlePort === undefined ? undefined : `https://127.0.0.1:${bundlePort}`,
    bundleEndpointPort: bundlePort,
    endpointSpiffeId: `spiffe://${o.trustDomain}/spire/server`,
    pid: d.child.pid ?? -1,
    spawnedAt: d.spawnedAt,
    cli,
    cliOk,
    bundle: (format = 'pem') => cliOk(['bundle', 'show', '-format', format]),
    logLines: d.logLines,
    waitForLog: d.waitForLog,
    alive: d.alive,
    stop: d.stop,
  };
}

// --- agent -----------------------------------------------------------------------------------

/** A join token from `generateSpireJoinToken`, for an agent not started yet. */
export interface SpireJoinToken {
  token: string;
  /** `spiffe://<td>/spire/agent/join_token/<token>`: the ID of the agent that attests with it. */
  agentId: string;
  /** The parent ID of workload entries: the node alias the token was generated with, else `agentId`. */
  nodeId: string;
}

/**
 * `spire-server token generate [-spiffeID <nodeId>]`: a join token and, with `nodeId` (default
 * `spiffe://<td>/agent-node`), a node alias (an entry whose parent is the agent's ID) for workload
 * entries to hang on; null: no alias, workload entries are parented by the agent's own ID.
 */
export async function generateSpireJoinToken(
  server: RunningSpireServer,
  nodeId: string | null = `spiffe://${server.trustDomain}/agent-node`,
): Promise<SpireJoinToken> {
  const out = await server.cliOk(['token', 'generate', ...(nodeId === null ? [] : ['-spiffeID', nodeId])]);
  const token = /Token:\s*(\S+)/.exec(out)?.[1];
  if (token === undefined)
    throw new Error(`spire: spire-server token generate printed no "Token: …": ${out}`);
  const agentId = `spiffe://${server.trustDomain}/spire/agent/join_token/${token}`;
  return { token, agentId, nodeId: nodeId ?? agentId };
}

export interface SpireAgentOptions {
  /** The agent's directory (created if missing): agent.conf, bundle.pem, data/, api.sock. */
  dir: string;
  server: RunningSpireServer;
  /** Default the server's. */
  trustDomain?: string;
  /**
   * The ID `spire-server token generate -spiffeID` gives the node; default `spiffe://<td>/agent-node`;
   * null: none (see generateSpireJoinToken). Not with `joinToken`.
   */
  nodeId?: string | null;
  /** A token generated beforehand (e.g. to create entries before the agent runs); default a new one. */
  joinToken?: SpireJoinToken;
  /**
   * `experimental.sync_interval` (how soon entry and bundle changes reach workloads); default "1s";
   * null: not written, SPIRE's own (5 s).
   */
  syncInterval?: string | null;
  logLevel?: string;
  /** Default the local build (test/interop/.spire/bin); e.g. `findSpire()`'s. */
  binaries?: SpireBinaries;
}

export interface RunningSpireAgent extends SpireLog {
  /** The Workload API socket (SPIFFE_ENDPOINT_SOCKET is `unix://` + this). */
  readonly socketPath: string;
  /** `spiffe://<td>/spire/agent/join_token/<token>`: the agent's own ID. */
  readonly agentId: string;
  /** The node alias the token was generated with (else `agentId`): the parent ID of workload entries. */
  readonly nodeId: string;
  readonly pid: number;
  /** `performance.now()` just before the spawn. */
  readonly spawnedAt: number;
  /** `spire-agent <args> -socketPath <socket>`; never throws. */
  cli(args: readonly string[]): Promise<SpireCliResult>;
  /**
   * Polls `spire-agent api fetch x509` (as this process's user) until the SVIDs it gets include
   * `spiffeId`; throws after `ms` (default 20 s) with the last answer and the agent's log.
   */
  waitForSvid(spiffeId: string, ms?: number): Promise<void>;
  alive(): boolean;
  /** SIGTERM, then the exit (SIGKILL after 10 s); idempotent. */
  stop(): Promise<void>;
}

/**
 * Generates a join token for `nodeId` (unless given one), writes the server's bundle and agent.conf
 * (join_token node attestor, unix workload attestor, memory key manager), runs `spire-agent run`,
 * and resolves once `spire-agent healthcheck` passes (the agent has attested and serves the
 * Workload API).
 */
export async function startSpireAgent(o: SpireAgentOptions): Promise<RunningSpireAgent> {
  if (o.joinToken !== undefined && o.nodeId !== undefined)
    throw new TypeError(
      'spire: startSpireAgent takes nodeId or joinToken (generated with its node ID), not both',
    );
  const bin = o.binaries ?? requireBinaries();
  const td = o.trustDomain ?? o.server.trustDomain;
  await mkdir(join(o.dir, 'data'), { recursive: true });
  const { token, agentId, nodeId } =
    o.joinToken ??
    (await generateSpireJoinToken(o.server, o.nodeId === undefined ? `spiffe://${td}/agent-node` : o.nodeId));
  const syncInterval = o.syncInterval === undefined ? '1s' : o.syncInterval;
  const experimental =
    syncInterval === null ? '' : `\n  experimental {\n    sync_interval = ${hcl(syncInterval)}\n  }`;
  const bundlePath = join(o.dir, 'bundle.pem');
  await writeFile(bundlePath, await o.server.bundle('pem'));
  const socketPath = join(o.dir, 'api.sock');
  const configPath = join(o.dir, 'agent.conf');
  await writeFile(
    configPath,
    `agent {
  data_dir = ${hcl(join(o.dir, 'data'))}
  log_level = ${hcl(o.logLevel ?? 'INFO')}
  server_address = "127.0.0.1"
  server_port = "${o.server.port}"
  socket_path = ${hcl(socketPath)}
  trust_bundle_path = ${hcl(bundlePath)}
  trust_domain = ${hcl(td)}
  join_token = ${hcl(token)}${experimental}
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`,
  );
  const name = `spire-agent (${td})`;
  const d = startDaemon(name, bin.agent, ['run', '-config', configPath]);
  const cli = (args: readonly string[]) => runCommand(bin.agent, withSocket(args, socketPath));
  try {
    await waitHealthy(name, d, () => cli(['healthcheck']));
  } catch (err) {
    await d.stop();
    throw err;
  }
  return {
    socketPath,
    agentId,
    nodeId,
    pid: d.child.pid ?? -1,
    spawnedAt: d.spawnedAt,
    cli,
    async waitForSvid(spiffeId, ms = 20_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const r = await cli(['api', 'fetch', 'x509', '-timeout', '2s']);
        if (r.code === 0 && r.stdout.split('\n').some((l) => /^SPIFFE ID:/.test(l) && l.includes(spiffeId)))
          return;
        if (!d.alive()) throw new Error(`spire: ${name} exited:\n${d.tail()}`);
        if (Date.now() > deadline)
          throw new Error(
            `spire: ${name} served no SVID for ${spiffeId} within ${ms} ms; api fetch x509 said: ${(r.stdout + r.stderr).trim()}; the agent's log ends:\n${d.tail()}`,
          );
        await sleep(200);
      }
    },
    logLines: d.logLines,
    waitForLog: d.waitForLog,
    alive: d.alive,
    stop: d.stop,
  };
}

// --- entries ---------------------------------------------------------------------------------

export interface SpireEntryOptions {
  spiffeId: string;
  /** Usually `agent.nodeId`. */
  parentId: string;
  /** `type:value`, e.g. `unix:uid:0`; all must match. */
  selectors: readonly string[];
  /** Trust domains (names or `spiffe://` IDs) whose bundles the workload gets; SPIRE must hold each bundle already. */
  federatesWith?: readonly string[];
  /** `-x509SVIDTTL`, seconds. */
  x509SvidTtl?: number;
  /** `-entryID`; default SPIRE generates one. */
  entryId?: string;
}

/** `spire-server entry create …`; resolves with the entry ID, throws with SPIRE's output if refused. */
export async function createSpireEntry(server: RunningSpireServer, e: SpireEntryOptions): Promise<string> {
  const args = ['entry', 'create', '-spiffeID', e.spiffeId, '-parentID', e.parentId];
  for (const s of e.selectors) args.push('-selector', s);
  for (const td of e.federatesWith ?? [])
    args.push('-federatesWith', td.startsWith('spiffe://') ? td : `spiffe://${td}`);
  if (e.x509SvidTtl !== undefined) args.push('-x509SVIDTTL', String(e.x509SvidTtl));
  if (e.entryId !== undefined) args.push('-entryID', e.entryId);
  const out = await server.cliOk(args);
  const id = /Entry ID\s*:\s*(\S+)/.exec(out)?.[1];
  if (id === undefined) throw new Error(`spire: entry create printed no "Entry ID": ${out}`);
  return id;
}

// --- the server's X.509 CA (localauthority) ---------------------------------------------------

export interface SpireX509Authority {
  /** SPIRE's authority ID: the CA certificate's subject key ID, hex. */
  authorityId: string;
  expiresAt: Date;
}

/** `localauthority x509 show`: the authorities in SPIRE's active, prepared and old slots. */
export interface SpireX509Authorities {
  active?: SpireX509Authority;
  prepared?: SpireX509Authority;
  old?: SpireX509Authority;
}

type AuthorityJson = { authority_id: string; expires_at: string };
const authorityOf = (a: AuthorityJson): SpireX509Authority => ({
  authorityId: a.authority_id,
  expiresAt: new Date(Number(a.expires_at) * 1000),
});

/** `spire-server localauthority x509 show -output json`. */
export async function showSpireX509Authorities(server: RunningSpireServer): Promise<SpireX509Authorities> {
  const doc = JSON.parse(await server.cliOk(['localauthority', 'x509', 'show', '-output', 'json'])) as Record<
    string,
    AuthorityJson | undefined
  >;
  const out: SpireX509Authorities = {};
  for (const slot of ['active', 'prepared', 'old'] as const) {
    const a = doc[slot];
    if (a !== undefined) out[slot] = authorityOf(a);
  }
  return out;
}

/**
 * SPIRE's CA rotation, one step: `localauthority x509 prepare` (a new CA, added to the bundle at
 * once), `activate -authorityID <prepared>` (signs from now on; the previous one becomes old),
 * `taint -authorityID <old>` (agents rotate the SVIDs it signed), `revoke -authorityID <old>` (out
 * of the bundle; SPIRE refuses an untainted one). Resolves with the authority acted on.
 */
export async function spireX509Authority(
  server: RunningSpireServer,
  step: 'prepare' | 'activate' | 'taint' | 'revoke',
  authorityId?: string,
): Promise<SpireX509Authority> {
  if ((step === 'prepare') !== (authorityId === undefined))
    throw new TypeError(
      `spire: localauthority x509 ${step} ${step === 'prepare' ? 'takes no' : 'needs an'} authority ID`,
    );
  const args = ['localauthority', 'x509', step, '-output', 'json'];
  if (authorityId !== undefined) args.push('-authorityID', authorityId);
  const doc = JSON.parse(await server.cliOk(args)) as Record<string, AuthorityJson>;
  const a = Object.values(doc)[0];
  if (a === undefined)
    throw new Error(`spire: localauthority x509 ${step} printed no authority: ${JSON.stringify(doc)}`);
  return authorityOf(a);
}

// --- the go-spiffe peer on a Workload API socket -----------------------------------------------

function authorizeFlags(authorize: Authorize): string[] {
  return 'id' in authorize ? ['--authorize-id', authorize.id] : ['--authorize-member-of', authorize.memberOf];
}

/**
 * `interop x509-server` on `socket`: go-spiffe's `tlsconfig.MTLSServerConfig(source, source,
 * authorizer)` over an X509Source. Resolves once it listens. Its stderr has one line per connection:
 * `ACCEPTED 127.0.0.1:port (<client id>)` or `REFUSED 127.0.0.1:port: <error>` (`nextLog`); it echoes
 * `<client id> <line>`.
 */
export function startX509Server(
  socket: string,
  authorize: Authorize,
  options: { addr?: string } = {},
): Promise<GoServer> {
  return startGoListener([
    'x509-server',
    '--socket',
    socket,
    ...authorizeFlags(authorize),
    '--addr',
    options.addr ?? '127.0.0.1:0',
  ]);
}

export interface X509ClientResult extends GoClientResult {
  /** On success (`OK <server id> <reply>`): the server's SPIFFE ID and the line it sent back. */
  serverId?: string;
  reply?: string;
  /** On failure (`ERROR <msg>`, exit 1): the message. */
  error?: string;
}

/** `interop x509-client` on `socket`: one mTLS exchange with `address` (`tlsconfig.MTLSClientConfig`). */
export async function runX509Client(
  socket: string,
  address: string,
  authorize: Authorize,
  options: { message?: string } = {},
): Promise<X509ClientResult> {
  const r = await runGo([
    'x509-client',
    '--socket',
    socket,
    ...authorizeFlags(authorize),
    '--addr',
    address,
    '--message',
    options.message ?? 'hi',
  ]);
  const ok = /^OK (\S+) (.*)$/m.exec(r.stdout);
  if (r.code === 0 && ok !== null) return { ...r, serverId: ok[1] as string, reply: ok[2] as string };
  const error = /^ERROR (.*)$/m.exec(r.stdout)?.[1];
  return error === undefined ? r : { ...r, error };
}

export interface X509BundleSeen {
  roots: number;
  /** SHA-256 of each root's DER, lower-case hex (`fingerprint(cert)`), in the bundle's order. */
  fingerprints: string[];
}

export interface X509BundlesResult extends GoClientResult {
  /** Trust domain name -> its bundle in the X.509 context (empty when the run failed). */
  bundles: Map<string, X509BundleSeen>;
  svids: string[];
}

export interface X509BundlesOptions {
  /** Watch until this trust domain's bundle has `roots` roots (at least; exactly with `exact`). */
  trustDomain?: string;
  /** Default 0: the bundle is present. */
  roots?: number;
  exact?: boolean;
  /** Default 30 s. */
  timeoutMs?: number;
}

/**
 * `interop x509-bundles` on `socket`: the bundles and SVID IDs of the Workload API's X.509 context
 * (go-spiffe's WatchX509Context) — the first one, or the first where `trustDomain` has `roots`
 * roots. Exit 1 at the timeout, the last context seen on stderr.
 */
export async function runX509Bundles(
  socket: string,
  options: X509BundlesOptions = {},
): Promise<X509BundlesResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const args = ['x509-bundles', '--socket', socket, '--timeout', `${timeoutMs}ms`];
  if (options.trustDomain !== undefined) {
    args.push('--wait-td', options.trustDomain, '--wait-roots', String(options.roots ?? 0));
    if (options.exact === true) args.push('--wait-exact');
  }
  const r = await runGo(args, timeoutMs + 10_000);
  const bundles = new Map<string, X509BundleSeen>();
  const svids: string[] = [];
  if (r.code === 0)
    for (const line of r.stdout.split('\n')) {
      const [kind, a, b, c] = line.split(' ');
      if (kind === 'BUNDLE' && a !== undefined)
        bundles.set(a, { roots: Number(b), fingerprints: c === undefined || c === '' ? [] : c.split(',') });
      else if (kind === 'SVID' && a !== undefined) svids.push(a);
    }
  return { ...r, bundles, svids };
}

/** SHA-256 of a certificate's DER, lower-case hex: how x509-bundles names a root. */
export function fingerprint(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex');
}
