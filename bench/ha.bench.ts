// npm run bench: high availability on PostgreSQL. Three tessera servers (A, B, C) in this process
// share one throwaway PostgreSQL cluster, each with its own data_dir, admin socket, CA key and
// database role (so pg_stat_statements can tell their statements apart).
// 1. A write on server A, seen by a workload of an agent of server B: `tessera agent run` as a child
//    process attested to B only, a spiffe Workload API client in this process watching its X.509
//    context; entries created (then deleted) through A's datastore, each timed until the context
//    holds (no longer holds) its SPIFFE ID. The reference is SPIRE v1.13.3 measured the same way in
//    this run, first, before anything of tessera's starts (spire-reference.ts): one spire-server on
//    SQLite and one spire-agent as child processes, default settings, entries written with the
//    spire-server CLI, watched by the same Workload API client. Without SPIRE's binaries (bash
//    test/interop/setup-spire.sh builds them) it prints the figure measured here earlier, marked a
//    constant.
// 2. The datastore's work while nothing changes: 1,000 simulated agents (agent API clients with
//    agent SVIDs, one mTLS channel and one Sync stream each) spread over the three servers, then 30 s
//    idle: transactions from pg_stat_database, statements per server from pg_stat_statements.
// 3. A restart with 100,000 entries: `tessera server run` as a child process on server A's data_dir
//    and database, timed from spawn until /ready answers 200 and an agent's Sync has its entries.
// Benchmarks never pass or fail on goals: this prints whether each goal is met, and exits non-zero
// only on errors. Without PostgreSQL server binaries it says loudly that it is skipped.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import type { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseSpiffeId, parseTrustDomain, type X509Bundle, X509Svid } from '@tessera/spiffe';
import { ServerClient } from '@tessera/tessera/dist/agent/server-client.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import type { SyncResponse } from '@tessera/tessera/dist/gen/tessera/agent/v1/agent_pb.js';
import { serialOf } from '@tessera/tessera/dist/server/api/agent-api.js';
import { parseServerConfig } from '@tessera/tessera/dist/server/config.js';
import { openPostgresDatastore } from '@tessera/tessera/dist/server/datastore/postgres.js';
import type { EntryInput } from '@tessera/tessera/dist/server/datastore/types.js';
import { type RunningServer, startServer } from '@tessera/tessera/dist/server/run.js';
import {
  findPostgresBin,
  freePort,
  generateKey,
  makeTempDir,
  type PostgresCluster,
  startPostgres,
} from '@tessera/testkit';
import pg from 'pg';
import { findSpire, SPIRE_VERSION } from '#test/interop/spire.test.util.js';
import { fdLimit, memoryOf, percentile } from './harness.js';
import { measureSpire, SPIRE_DEFAULTS, type SpireResult } from './spire-reference.js';
import { watchX509Ids } from './x509-watch.js';

const PROPAGATION_WARMUP = 5;
const PROPAGATIONS = 100;
const PROPAGATION_GOAL_MS = 1000;
const PROPAGATION_TIMEOUT_MS = 10_000;
/** After this many changes that never reached the workload, the rest are not tried (the bench stays short). */
const MAX_TIMEOUTS = 3;
const WRITE_TIMEOUT_MS = 30_000;
/** Printed when SPIRE's binaries are missing. */
const SPIRE_CONSTANT = `SPIRE v${SPIRE_VERSION}, one server, measured here earlier (a constant, not run now): p99 9.5 s (run bash test/interop/setup-spire.sh to measure it in the same run)`;
/** SPIRE in this run: at most this many entries, none started after the budget; the SPIRE part stays under ~3 min. */
const SPIRE_ENTRIES = 20;
const SPIRE_BUDGET_MS = 150_000;
const SPIRE_TIMEOUT_MS = 30_000;
const AGENTS = 1000;
const ATTEST_CONCURRENCY = 6;
const SYNC_TIMEOUT_MS = 90_000;
/** Idle backends flush their statistics up to 10 s late (PGSTAT_IDLE_INTERVAL): wait that out first. */
const SETTLE_MS = 11_000;
const IDLE_MS = 30_000;
/** The change feed's safety check every 5 s: one small query, 0.2/s per server. */
const IDLE_EXPECTED_PER_SERVER = 0.2;
const IDLE_GOAL_PER_SERVER = 0.25;
const ENTRIES = 100_000;
const ENTRY_BATCH = 500;
const RESTART_GOAL_MS = 30_000;
const RESTART_TIMEOUT_MS = 120_000;
const CLEANUP_TIMEOUT_MS = 20_000;
/** The whole run normally takes under 2 minutes (5 with SPIRE); past this something hangs: say where, clean up, exit 1. */
const WATCHDOG_MS = 9 * 60_000;

const TESSERA_BIN = fileURLToPath(new URL('../../packages/tessera/bin/tessera.js', import.meta.url));
const run = promisify(execFile);
const td = parseTrustDomain('example.org');
const uid = process.getuid?.() ?? 0;
const agentIdOf = (name: string) => `spiffe://example.org/tessera/agent/join_token/${name}`;
const ms = (v: number) => `${v.toFixed(1)} ms`;
const sec = (v: number) => `${(v / 1000).toFixed(2)} s`;
const n = (v: number) => v.toLocaleString('en-US');
const entriesOf = (k: number) => `${n(k)} ${k === 1 ? 'entry' : 'entries'}`;
const sorted = (xs: readonly number[]) => [...xs].sort((a, b) => a - b);
const stats = (xs: readonly number[]) => {
  const s = sorted(xs);
  return `p50 ${ms(percentile(s, 50))}  p99 ${ms(percentile(s, 99))}  max ${ms(s.at(-1) ?? Number.NaN)}`;
};

// Everything started is closed in reverse order, on success, on an error and on SIGINT/SIGTERM.
const cleanups = new Map<symbol, () => Promise<void>>();
/** Registers `close`; returns a function that runs it once (early, or at the end). */
function own(what: string, close: () => Promise<void> | void): () => Promise<void> {
  const key = Symbol();
  let done: Promise<void> | undefined;
  const runOnce = () => {
    done ??= (async () => {
      cleanups.delete(key);
      // A step that hangs is named, and the others still run.
      await withTimeout(Promise.resolve(close()), CLEANUP_TIMEOUT_MS, `closing ${what}`);
    })();
    return done;
  };
  cleanups.set(key, runOnce);
  return runOnce;
}
let cleanupFailed = false;
async function cleanupAll(): Promise<void> {
  for (const close of [...cleanups.values()].reverse())
    await close().catch((err: unknown) => {
      cleanupFailed = true;
      console.error(`bench: cleanup failed: ${(err as Error).message}`);
    });
}
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    console.error(`\nbench: ${signal}; cleaning up`);
    void cleanupAll().finally(() => process.exit(130));
  });

/** Warnings and errors the in-process servers logged (a change not applied would show here). */
const serverLog: string[] = [];
const serverLogger = (name: string) =>
  createLogger({ level: 'warn', write: (line) => serverLog.push(`server ${name}: ${line}`) });

interface Row {
  measure: string;
  figure: string;
  goal: string;
  met: boolean | undefined;
  reference: string;
}
const rows: Row[] = [];

/** What the bench is doing, for the watchdog's message. */
let phase = 'starting';

if (findPostgresBin() === undefined) {
  console.log(
    '\n*** HA BENCH SKIPPED: PostgreSQL server binaries (initdb, pg_ctl) not found; install them (apt-get install -y postgresql) to measure three servers on one PostgreSQL. ***',
  );
} else {
  const watchdog = setTimeout(() => {
    console.error(`bench: still running after ${WATCHDOG_MS / 60_000} min, in: ${phase}; cleaning up`);
    void cleanupAll().finally(() => process.exit(1));
  }, WATCHDOG_MS);
  watchdog.unref();
  try {
    await main();
  } finally {
    clearTimeout(watchdog);
    await cleanupAll();
  }
  // A step that hung may hold the event loop open: an error, so exit (the children are killed).
  if (cleanupFailed) process.exit(1);
}

async function main(): Promise<void> {
  const tmp = await makeTempDir('ha-bench-');
  own('the temp dir', () => tmp.cleanup());
  const spire = await spireReference(join(tmp.path, 'spire'));
  const t0 = performance.now();
  phase = 'starting PostgreSQL';
  const cluster = await startPostgres();
  own('the PostgreSQL cluster', () => cluster.stop());
  const pgInfo = await preparePostgres(cluster);
  const pgStartMs = performance.now() - t0;

  const names = ['a', 'b', 'c'] as const;
  const yaml = (name: string, extra: string[] = []) =>
    [
      'trust_domain: example.org',
      `data_dir: ${tmp.path}/server-${name}`,
      `admin_socket: ${tmp.path}/admin-${name}.sock`,
      `datastore: { postgres: { connection_string: ${JSON.stringify(roleConnection(cluster, `tessera_${name}`))} } }`,
      ...extra,
    ].join('\n');
  const servers: RunningServer[] = [];
  const stopServers: (() => Promise<void>)[] = [];
  const startMs: number[] = [];
  phase = 'starting the servers';
  for (const name of names) {
    const s0 = performance.now();
    const server = await startServer(
      parseServerConfig(yaml(name, ['agent_api: { address: 127.0.0.1, port: 0 }', 'health: { port: 0 }'])),
      { logger: serverLogger(name) },
    );
    startMs.push(performance.now() - s0);
    servers.push(server);
    stopServers.push(own(`server ${name.toUpperCase()}`, () => server.stop()));
  }
  const [a, b] = servers as [RunningServer, RunningServer, RunningServer];
  // Each server added its CA to the shared bundle; every agent trusts the union.
  const stored = await b.datastore.getBundle(td);
  if (stored === undefined) throw new Error('bench: the datastore has no bundle for example.org');
  const bundle = stored.x509Bundle();
  writeFileSync(join(tmp.path, 'bundle.json'), stored.marshal());
  console.log(
    `\nHA: 3 tessera servers in this process on one throwaway PostgreSQL ${pgInfo.version} cluster (initdb, start and a restart to preload pg_stat_statements: ${sec(pgStartMs)}; fsync off, Unix socket; ${pgInfo.statements ? 'pg_stat_statements preloaded' : `no pg_stat_statements: ${pgInfo.why}`})`,
  );
  console.log(
    `servers A, B, C started in ${startMs.map(ms).join(', ')}; agent API ports ${servers.map((s) => s.agentApiPort).join(', ')}; ${bundle.authorities.length} X.509 authorities in the shared bundle`,
  );

  await propagation(tmp.path, a, b, spire);
  const agents = await idle(servers, bundle, pgInfo.statements, cluster);
  for (const stop of stopServers) await stop();
  await restart(tmp.path, cluster, yaml('a'), agents[0] as SimulatedAgent, bundle, agents);

  printRows(
    'HA on PostgreSQL: 3 tessera servers, one database (this machine, this run)',
    serverLog.length === 0
      ? 'no warnings or errors logged by the in-process servers'
      : `${serverLog.length} warnings/errors logged by the in-process servers; first: ${serverLog.slice(0, 3).join(' | ')}`,
  );
}

/** The cluster's connection string as another role. */
function roleConnection(cluster: PostgresCluster, role: string): string {
  const cs = cluster.connectionString.replace(/^postgresql:\/\/postgres@/, `postgresql://${role}@`);
  if (cs === cluster.connectionString)
    throw new Error(`bench: unexpected connection string ${cluster.connectionString}`);
  return cs;
}

/** A superuser session on the cluster, closed at the end. */
async function connect(connectionString: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString });
  c.on('error', () => {});
  await c.connect();
  own('a PostgreSQL session', () => c.end().catch(() => {}));
  return c;
}

/**
 * One login role per server; and pg_stat_statements, when its library is installed: preloading it
 * needs a restart (pg_ctl restart on the data directory the server reports, as the cluster's owner).
 */
async function preparePostgres(
  cluster: PostgresCluster,
): Promise<{ version: string; statements: boolean; why: string }> {
  const c = new pg.Client({ connectionString: cluster.connectionString });
  await c.connect();
  let dataDir: string;
  let version: string;
  let why = '';
  try {
    version = String((await c.query('SHOW server_version')).rows[0]?.server_version);
    for (const name of ['a', 'b', 'c']) await c.query(`CREATE ROLE tessera_${name} LOGIN SUPERUSER`);
    dataDir = String((await c.query('SHOW data_directory')).rows[0]?.data_directory);
    try {
      await c.query(`LOAD 'pg_stat_statements'`);
      await c.query(`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`);
    } catch (err) {
      why = `cannot load it (${(err as Error).message})`;
    }
  } finally {
    await c.end();
  }
  if (why !== '') return { version, statements: false, why };
  const bin = findPostgresBin() as string;
  const owner =
    uid === 0
      ? {
          uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()),
          gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
        }
      : {};
  await run(
    join(bin, 'pg_ctl'),
    ['-D', dataDir, '-m', 'fast', '-w', '-l', join(cluster.socketDir, 'log-restarted'), 'restart'],
    owner,
  );
  const c2 = new pg.Client({ connectionString: cluster.connectionString });
  await c2.connect();
  try {
    await c2.query('CREATE EXTENSION pg_stat_statements');
  } finally {
    await c2.end();
  }
  return { version, statements: true, why };
}

interface Child {
  /** What it is, for messages: `tessera agent (pid 123)`. */
  name: string;
  proc: ChildProcess;
  pid: number;
  /** What it wrote to stderr so far. */
  log(): string;
  alive(): boolean;
  stop(): Promise<void>;
}

/** `command <args>` as a child process: stderr kept, stopped (SIGTERM, then SIGKILL) at the end. */
function spawnChild(what: string, command: string, args: string[]): Child {
  const proc = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (proc.pid === undefined) throw new Error(`bench: cannot start ${command} ${args.join(' ')}`);
  children.add(proc);
  const name = `${what} (pid ${proc.pid})`;
  let log = '';
  const keep = (d: string) => {
    log += d;
  };
  proc.stderr?.setEncoding('utf8').on('data', keep);
  const exited = once(proc, 'exit');
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const stop = own(name, async () => {
    if (alive()) {
      proc.kill('SIGTERM');
      const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(kill);
    }
    children.delete(proc);
  });
  return { name, proc, pid: proc.pid, log: () => log, alive, stop };
}

/** `tessera <args>` as a child process. */
function spawnTessera(args: string[]): Child {
  return spawnChild(`tessera ${args[0]}`, process.execPath, [TESSERA_BIN, ...args]);
}

/** Resolves with the first match of `re` in the child's log; rejects if it exits or after `timeoutMs`. */
async function waitLog(child: Child, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const m = child.log().match(re);
    if (m !== null) return m;
    if (!child.alive()) throw new Error(`bench: ${child.name} exited before logging ${re}:\n${child.log()}`);
    if (performance.now() > end) throw new Error(`bench: no ${re} from ${child.name} in ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** `promise`, or an error naming `what` after `timeoutMs`. */
async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`bench: ${what} did not finish in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The agent as a child process, attested to server B alone (server_address is B's), with one entry
 * for this uid; a Workload API client here watches its X.509 context. Then, one at a time: an
 * entry for this uid created through server A's datastore, timed until the context holds its
 * SPIFFE ID, then deleted, timed until the SPIFFE ID is gone.
 */
async function propagation(
  dir: string,
  a: RunningServer,
  b: RunningServer,
  spire: SpireOutcome,
): Promise<void> {
  const agentName = 'ha-bench-agent';
  const parentId = agentIdOf(agentName);
  const token = `ha-bench-token-${Date.now()}`;
  await b.datastore.createJoinToken({ token, expiresAt: new Date(Date.now() + 120_000), agentName });
  const selectors = [{ type: 'unix', value: `uid:${uid}` }];
  await a.datastore.createEntry({ spiffeId: 'spiffe://example.org/bench/ha/workload', parentId, selectors });
  const config = join(dir, 'agent.yaml');
  const socket = join(dir, 'agent.sock');
  writeFileSync(
    config,
    [
      'trust_domain: example.org',
      'server_address: 127.0.0.1',
      `server_port: ${b.agentApiPort}`,
      `trust_bundle_path: ${dir}/bundle.json`,
      `socket_path: ${socket}`,
      `data_dir: ${dir}/agent`,
      'health: { port: 0 }',
      'log: { level: warn }',
    ].join('\n'),
  );
  phase = 'waiting for the agent child and its first X.509 context';
  const agent = spawnTessera(['agent', 'run', '--config', config, '--join-token', token]);

  const watch = watchX509Ids(socket);
  const stopWatching = own('the Workload API watch', () => watch.close());
  const when = watch.when;
  const s0 = performance.now();
  const first = when((s) => s.size > 0, 60_000);
  const exited = once(agent.proc, 'exit').then(() => undefined);
  if ((await Promise.race([first, exited])) === undefined)
    throw new Error(
      agent.alive()
        ? 'bench: no X.509 context from the agent child in 60 s'
        : `bench: tessera agent run exited ${agent.proc.exitCode}:\n${agent.log()}`,
    );
  const firstMs = performance.now() - s0;
  const onB = b.agentApi.connectedAgents().includes(parentId);
  const onA = a.agentApi.connectedAgents().includes(parentId);

  // When B's change feed told each change (B's index and agent API act on it in the same tick).
  const toldOnB = new Map<string, number>();
  const offB = b.datastore.onChange((c) => {
    if (c.kind === 'entry') toldOnB.set(`${c.op}:${c.entry.id}`, performance.now());
  });
  own("B's change listener", () => {
    offB();
  });
  const created: number[] = [];
  const removed: number[] = [];
  const writeOnA: number[] = [];
  const toB: number[] = [];
  const bToWorkload: number[] = [];
  const removeToB: number[] = [];
  let createTimeouts = 0;
  let removeTimeouts = 0;
  let done = 0;
  // Why a change did not arrive, said at once: whether B's feed told it, whether B still holds the
  // agent's stream, and what the agent logged (warnings and errors).
  const diagnose = (what: string, id: string, start: number) => {
    const told = toldOnB.get(id);
    console.log(
      `  ${what} not seen by the workload in ${PROPAGATION_TIMEOUT_MS} ms: B's change feed ${told === undefined ? 'never told it' : `told it after ${ms(told - start)}`}; B holds the agent's Sync stream: ${b.agentApi.connectedAgents().includes(parentId)}; the agent child ${agent.alive() ? 'runs' : `exited ${agent.proc.exitCode}`}; its log: ${agent.log().slice(-1500).trim() || '(nothing at warn or above)'}`,
    );
  };
  for (let i = 0; i < PROPAGATION_WARMUP + PROPAGATIONS; i++) {
    if (createTimeouts + removeTimeouts >= MAX_TIMEOUTS) {
      console.log(`  stopped after ${MAX_TIMEOUTS} timeouts, ${done} of ${PROPAGATIONS} iterations measured`);
      break;
    }
    phase = `propagation, iteration ${i}`;
    const measured = i >= PROPAGATION_WARMUP;
    const spiffeId = `spiffe://example.org/bench/ha/propagation/svc-${i}`;
    const start = performance.now();
    const seen = when((s) => s.has(spiffeId), PROPAGATION_TIMEOUT_MS);
    const entry = await withTimeout(
      a.datastore.createEntry({ spiffeId, parentId, selectors }),
      WRITE_TIMEOUT_MS,
      "server A's datastore.createEntry",
    );
    const written = performance.now();
    const at = await seen;
    const told = toldOnB.get(`upsert:${entry.id}`);
    if (at === undefined) diagnose(`entry ${i} (create)`, `upsert:${entry.id}`, start);
    if (measured) {
      done++;
      writeOnA.push(written - start);
      if (at === undefined) createTimeouts++;
      else {
        created.push(at - start);
        if (told !== undefined) {
          toB.push(told - start);
          bToWorkload.push(at - told);
        }
      }
    }
    const removing = performance.now();
    // Only a removal of what the workload held is timed (a create that never arrived is gone at once).
    const gone = when((s) => !s.has(spiffeId), PROPAGATION_TIMEOUT_MS);
    await withTimeout(
      a.datastore.deleteEntry(entry.id),
      WRITE_TIMEOUT_MS,
      "server A's datastore.deleteEntry",
    );
    const goneAt = await gone;
    if (goneAt === undefined) diagnose(`entry ${i} (delete)`, `delete:${entry.id}`, removing);
    if (measured && at !== undefined) {
      const toldDelete = toldOnB.get(`delete:${entry.id}`);
      if (toldDelete !== undefined) removeToB.push(toldDelete - removing);
      if (goneAt === undefined) removeTimeouts++;
      else removed.push(goneAt - removing);
    }
  }
  offB();
  await stopWatching();
  const agentMemory = memoryOf(agent.pid);
  await agent.stop();

  const p99c = percentile(sorted(created), 99);
  const p99d = percentile(sorted(removed), 99);
  console.log(
    `\n1. Write on server A -> workload on an agent of server B: tessera agent run as a child process (pid ${agent.pid}, server_address = B only; connected to B: ${onB}, to A: ${onA}), first X.509 context ${sec(firstMs)} after spawn; a spiffe Workload API client in this process (uid ${uid}) watching FetchX509SVID`,
  );
  console.log(
    `${done} entries (unix:uid:${uid}, parent ${parentId}) created one at a time through A's datastore (after ${PROPAGATION_WARMUP} warm-up), each deleted the same way:`,
  );
  console.log(
    `  create call -> the context holds the SPIFFE ID: ${stats(created)}  timed out ${createTimeouts}  goal p99 < ${PROPAGATION_GOAL_MS} ms  ${verdict(createTimeouts === 0 && p99c < PROPAGATION_GOAL_MS)}`,
  );
  console.log(
    `    of which: A's createEntry (commit + A's own feed) ${stats(writeOnA)}; call -> B's change feed told it (LISTEN/NOTIFY) ${stats(toB)}; B's feed -> the workload's context (B's push, the agent's CSR + BatchNewX509SVID to B, the Workload API push, the client's parse) ${stats(bToWorkload)}`,
  );
  console.log(
    `  delete call -> the SPIFFE ID gone from the context: ${stats(removed)}  timed out ${removeTimeouts}  goal p99 < ${PROPAGATION_GOAL_MS} ms  ${verdict(removeTimeouts === 0 && p99d < PROPAGATION_GOAL_MS)}  (call -> B's feed told it: ${stats(removeToB)})`,
  );
  console.log(`  agent child VmRSS ${agentMemory.rssMb.toFixed(0)} MB`);
  for (const line of spireLines(spire)) console.log(line);
  if (watch.errors.length > 0)
    console.log(`  watch errors (${watch.errors.length}): ${watch.errors.slice(0, 3).join('; ')}`);
  rows.push(
    {
      measure: 'write on A -> workload of B: create, p99',
      figure: `${ms(p99c)} (p50 ${ms(percentile(sorted(created), 50))}${createTimeouts > 0 ? `, ${createTimeouts} timed out` : ''})`,
      goal: `< ${PROPAGATION_GOAL_MS} ms`,
      met: createTimeouts === 0 && p99c < PROPAGATION_GOAL_MS,
      reference: spireReferenceText(spire, 'create'),
    },
    {
      measure: 'write on A -> workload of B: delete, p99',
      figure: `${ms(p99d)} (p50 ${ms(percentile(sorted(removed), 50))}${removeTimeouts > 0 ? `, ${removeTimeouts} timed out` : ''})`,
      goal: `< ${PROPAGATION_GOAL_MS} ms`,
      met: removeTimeouts === 0 && p99d < PROPAGATION_GOAL_MS,
      reference: spireReferenceText(spire, 'delete'),
    },
  );
}

type SpireOutcome =
  | { kind: 'measured'; result: SpireResult; where: string; totalMs: number }
  | { kind: 'missing'; why: string }
  | { kind: 'failed'; error: string };

/**
 * SPIRE measured first, while nothing else of the bench runs (see spire-reference.ts), its processes
 * and files gone before tessera's start. A failure is an error of the run (exit 1), not of tessera's
 * figures: those are still measured and printed.
 */
async function spireReference(dir: string): Promise<SpireOutcome> {
  const found = findSpire();
  if (!found.found) {
    console.log(
      `\nSPIRE reference not measured in this run: ${found.why}; run bash test/interop/setup-spire.sh (builds SPIRE v${SPIRE_VERSION} with Go: some 15 min from scratch, seconds once built) to measure it`,
    );
    return { kind: 'missing', why: found.why };
  }
  const { bin } = found;
  const where = bin.server.replace(/\/spire-server$/, '');
  console.log(
    `\nSPIRE reference first, while nothing else runs: spire-server and spire-agent ${bin.version} from ${where}, up to ${SPIRE_ENTRIES} entries or ${SPIRE_BUDGET_MS / 1000} s (about 3 minutes)`,
  );
  const closeDir = own('the SPIRE temp dir', () => rm(dir, { recursive: true, force: true }));
  const t0 = performance.now();
  try {
    const result = await measureSpire(
      bin,
      {
        own,
        phase: (what) => {
          phase = what;
        },
      },
      {
        dir,
        uid,
        entries: SPIRE_ENTRIES,
        budgetMs: SPIRE_BUDGET_MS,
        timeoutMs: SPIRE_TIMEOUT_MS,
        maxTimeouts: MAX_TIMEOUTS,
      },
    );
    return { kind: 'measured', result, where, totalMs: performance.now() - t0 };
  } catch (err) {
    process.exitCode = 1;
    const error = (err as Error).message;
    console.log(
      `\n*** SPIRE REFERENCE FAILED (the run will exit 1; tessera is still measured): ${error} ***`,
    );
    return { kind: 'failed', error: error.split('\n')[0] ?? error };
  } finally {
    await closeDir();
  }
}

/** The reference column for the create or delete row. */
function spireReferenceText(spire: SpireOutcome, which: 'create' | 'delete'): string {
  if (spire.kind === 'missing') return SPIRE_CONSTANT;
  if (spire.kind === 'failed') return `SPIRE v${SPIRE_VERSION}: not measured, it failed (see above)`;
  const r = spire.result;
  const xs = sorted(which === 'create' ? r.created : r.removed);
  const timeouts = which === 'create' ? r.createTimeouts : r.removeTimeouts;
  return `SPIRE v${SPIRE_VERSION}, same run, one server, default settings: p99 ${sec(percentile(xs, 99))} (p50 ${sec(percentile(xs, 50))}, n ${xs.length}${timeouts > 0 ? `, ${timeouts} timed out` : ''})`;
}

/** What section 1 prints about SPIRE. */
function spireLines(spire: SpireOutcome): string[] {
  if (spire.kind === 'missing') return [`  reference: ${SPIRE_CONSTANT}`];
  if (spire.kind === 'failed')
    return [`  reference: SPIRE v${SPIRE_VERSION} was to be measured in this run but failed: ${spire.error}`];
  const r = spire.result;
  return [
    `  reference, SPIRE measured in this run (first, before PostgreSQL and the tessera servers started): spire-server and spire-agent ${r.version} (${spire.where}) as child processes; one server (${r.serverAddress}, SQLite datastore in a temp dir, memory key manager, join_token node attestor; healthy ${sec(r.serverReadyMs)} after spawn) and one agent (join token, trust_bundle_path from spire-server bundle show, memory key manager, unix workload attestor; first X.509 context ${sec(r.firstContextMs)} after spawn); nothing else set, so SPIRE's defaults: ${SPIRE_DEFAULTS}`,
    `  ${r.tried} entries (unix:uid:${uid}, parent ${r.agentId}) created one at a time with spire-server entry create, each deleted with spire-server entry delete, each command after a random 0-5 s pause (SPIRE polls on 5 s timers: a write made just after the previous change arrived would always be a whole sync interval before the agent's next sync); no warm-up${r.stoppedBy === undefined ? '' : `; stopped by ${r.stoppedBy}`}:`,
    `    create command -> the context holds the SPIFFE ID: min ${ms(sorted(r.created)[0] ?? Number.NaN)}  ${stats(r.created)}  timed out ${r.createTimeouts} (at ${SPIRE_TIMEOUT_MS / 1000} s)  (the entry create process alone: ${stats(r.createCommand)})`,
    `    delete command -> the SPIFFE ID gone from the context: min ${ms(sorted(r.removed)[0] ?? Number.NaN)}  ${stats(r.removed)}  timed out ${r.removeTimeouts}  (the entry delete process alone: ${stats(r.deleteCommand)})`,
    "    a change waits for the server's next entry-cache reload (every 5 s), then for the agent's next sync (every 5 s ± 10 % jitter): from near 0 to about 10.5 s, so with this few entries the p99 is the largest sample and moves between runs",
    `    spire-server VmRSS ${r.serverRssMb.toFixed(0)} MB, spire-agent VmRSS ${r.agentRssMb.toFixed(0)} MB; the SPIRE part took ${sec(spire.totalMs)}${r.watchErrors.length > 0 ? `; watch errors (${r.watchErrors.length}): ${r.watchErrors.slice(0, 3).join('; ')}` : ''}`,
  ];
}

interface SimulatedAgent {
  id: string;
  svid: X509Svid;
  server: number;
}

interface WindowCounters {
  xacts: number;
}

/**
 * 1,000 agents attested straight in the datastore (agent SVIDs issued by the server each will talk
 * to), one ServerClient (its own mTLS channel) and one Sync stream each, round-robin over A, B, C;
 * once every stream is synced and the servers have settled, 30 s with nothing changing.
 */
async function idle(
  servers: RunningServer[],
  bundle: X509Bundle,
  statements: boolean,
  cluster: PostgresCluster,
): Promise<SimulatedAgent[]> {
  const limit = fdLimit();
  if (limit < 2 * AGENTS + 200)
    throw new Error(
      `bench: ${AGENTS} agent streams need about ${2 * AGENTS + 200} open files; the limit is ${limit}; run "ulimit -n ${4 * AGENTS}" first`,
    );
  phase = 'attesting 1,000 simulated agents';
  const agents: SimulatedAgent[] = [];
  const a0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: ATTEST_CONCURRENCY }, async () => {
      while (next < AGENTS) {
        const i = next++;
        const server = servers[i % servers.length] as RunningServer;
        const id = agentIdOf(`ha-sim-${i}`);
        const key = generateKey();
        const issued = server.authority.x509.issueX509Svid({
          publicKey: key.publicKey,
          spiffeId: id,
          ttlMs: 3600_000,
          now: new Date(),
        });
        await server.datastore.attestAgent({
          spiffeId: id,
          attestor: 'join_token',
          selectors: [],
          serial: serialOf(issued.chain[0] as X509Certificate),
          expiresAt: issued.expiresAt,
        });
        agents[i] = {
          id,
          svid: new X509Svid(parseSpiffeId(id), issued.chain, key.privateKey),
          server: i % servers.length,
        };
      }
    }),
  );
  const attestMs = performance.now() - a0;

  let windowOpen = false;
  let windowMessages = 0;
  let closing = false;
  const streamErrors: string[] = [];
  const clients: ServerClient[] = [];
  const streams: { cancel(): void }[] = [];
  const closeStreams = own('the simulated agents', () => {
    closing = true;
    for (const s of streams) s.cancel();
    for (const c of clients) c.close();
  });
  phase = 'opening 1,000 Sync streams';
  const s0 = performance.now();
  const synced = Promise.all(
    agents.map(
      (agent) =>
        new Promise<void>((resolve, reject) => {
          const server = servers[agent.server] as RunningServer;
          const client = new ServerClient({
            address: `127.0.0.1:${server.agentApiPort}`,
            trustDomain: td,
            bundle,
            svid: agent.svid,
          });
          clients.push(client);
          const stream = client.sync();
          streams.push(stream);
          stream.on('data', (m: SyncResponse) => {
            if (windowOpen) windowMessages++;
            if (m.synced) resolve();
          });
          stream.on('error', (err: Error) => {
            if (closing) return;
            streamErrors.push(`${agent.id}: ${err.message}`);
            reject(err);
          });
        }),
    ),
  );
  await withTimeout(synced, SYNC_TIMEOUT_MS, `synchronising ${AGENTS} Sync streams`);
  const syncMs = performance.now() - s0;
  const connected = servers.map((s) => s.agentApi.connectedAgents().length);

  phase = 'the idle window';
  await sleep(SETTLE_MS);
  const monitor = await connect(cluster.connectionString);
  const read = async (reset: boolean): Promise<WindowCounters> => {
    const r = await monitor.query(
      `SELECT xact_commit + xact_rollback AS xacts${reset ? ', pg_stat_statements_reset()' : ''} FROM pg_stat_database WHERE datname = current_database()`,
    );
    return { xacts: Number(r.rows[0]?.xacts) };
  };
  const before = await read(statements);
  windowOpen = true;
  const w0 = performance.now();
  await sleep(IDLE_MS);
  const after = await read(false);
  const windowS = (performance.now() - w0) / 1000;
  windowOpen = false;
  // The first read's own transaction is counted in the difference; the second's is not (yet).
  const xacts = after.xacts - before.xacts - 1;
  let perRole = new Map<string, number>();
  let top: { role: string; calls: number; query: string }[] = [];
  if (statements) {
    const r = await monitor.query(
      `SELECT r.rolname AS role, s.calls AS calls, s.query AS query
         FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
        WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND r.rolname LIKE 'tessera\\_%'
        ORDER BY s.calls DESC`,
    );
    top = r.rows.map((x) => ({ role: String(x.role), calls: Number(x.calls), query: String(x.query) }));
    perRole = new Map(['a', 'b', 'c'].map((s) => [`tessera_${s}`, 0]));
    for (const t of top) perRole.set(t.role, (perRole.get(t.role) ?? 0) + t.calls);
  }
  await closeStreams();

  const rate = xacts / windowS;
  const perServer = rate / servers.length;
  const goalMet = perServer <= IDLE_GOAL_PER_SERVER;
  console.log(
    `\n2. Idle datastore: ${n(AGENTS)} simulated agents (attested in the datastore in ${sec(attestMs)}, agent SVIDs from the server each talks to), one mTLS channel and one Sync stream each, all synced in ${sec(syncMs)}; streams per server A/B/C: ${connected.join('/')}`,
  );
  console.log(
    `then ${(SETTLE_MS / 1000).toFixed(0)} s settling (idle backends report their statistics up to 10 s late), then a ${windowS.toFixed(1)} s window with nothing changing (no writes, no agent calls); Sync messages pushed during the window: ${windowMessages}`,
  );
  console.log(
    `  pg_stat_database (xact_commit + xact_rollback, this database, all sessions; the bench's own read subtracted): ${xacts} transactions = ${rate.toFixed(2)}/s, ${perServer.toFixed(2)}/s per server  goal ≈ 0 (expected ${IDLE_EXPECTED_PER_SERVER}/s per server from the 5 s safety check; met when ≤ ${IDLE_GOAL_PER_SERVER}/s per server)  ${verdict(goalMet)}`,
  );
  if (statements) {
    const total = [...perRole.values()].reduce((x, y) => x + y, 0);
    console.log(
      `  pg_stat_statements (every statement, BEGIN and COMMIT included, by each server's role): ${total} = ${(total / windowS).toFixed(2)}/s; per server ${[...perRole].map(([r, c]) => `${r.replace('tessera_', '').toUpperCase()} ${c} (${(c / windowS).toFixed(2)}/s)`).join(', ')}`,
    );
    const byQuery = new Map<string, number>();
    for (const t of top) byQuery.set(t.query, (byQuery.get(t.query) ?? 0) + t.calls);
    console.log('  statements in the window, all three servers:');
    for (const [q, c] of [...byQuery].sort((x, y) => y[1] - x[1]).slice(0, 8))
      console.log(`    ${String(c).padStart(5)}  ${q.replace(/\s+/g, ' ').slice(0, 110)}`);
  } else console.log('  (per-server statements need pg_stat_statements, which could not be enabled)');
  console.log(
    "  reference: none measured here; SPIRE's servers each reload their whole entry cache from the datastore every 5 s, whatever changed",
  );
  if (streamErrors.length > 0) console.log(`  stream errors: ${streamErrors.slice(0, 3).join('; ')}`);
  rows.push({
    measure: `idle datastore, ${n(AGENTS)} Sync streams, 3 servers: transactions/s`,
    figure: `${rate.toFixed(2)}/s (${perServer.toFixed(2)}/s per server)`,
    goal: `≈ 0 (≤ ${IDLE_GOAL_PER_SERVER}/s per server)`,
    met: goalMet,
    reference: "none here; SPIRE's servers reload their whole cache every 5 s",
  });
  if (statements)
    rows.push({
      measure: 'idle datastore: statements/s per server (A, B, C)',
      figure: [...perRole.values()].map((c) => (c / windowS).toFixed(2)).join(', '),
      goal: '-',
      met: undefined,
      reference: '-',
    });
  return agents;
}

/**
 * `tessera server run` on server A's data_dir and database, once as it is (a handful of entries)
 * and once after 100,000 entries were created (batches of 500 through a datastore of the bench's
 * own; the in-process servers are stopped by then): spawn -> /ready 200, -> 'server started', ->
 * an agent's Sync has its 100 entries; and the process's RSS.
 */
async function restart(
  dir: string,
  cluster: PostgresCluster,
  yamlA: string,
  probe: SimulatedAgent,
  bundle: X509Bundle,
  agents: SimulatedAgent[],
): Promise<void> {
  phase = 'a cold start with almost no entries';
  const empty = await coldStart(dir, yamlA, probe, bundle, 'empty');

  const ds = await openPostgresDatastore(cluster.connectionString);
  const closeDs = own("the bench's datastore", () => ds.close());
  phase = `creating ${n(ENTRIES)} entries`;
  const c0 = performance.now();
  for (let i = 0; i < ENTRIES; i += ENTRY_BATCH) {
    const batch: EntryInput[] = [];
    for (let k = i; k < Math.min(ENTRIES, i + ENTRY_BATCH); k++)
      batch.push({
        spiffeId: `spiffe://example.org/bench/ha/bulk/svc-${k}`,
        parentId: (agents[k % agents.length] as SimulatedAgent).id,
        selectors: [{ type: 'unix', value: `uid:${20_000 + (k % 1000)}` }],
      });
    await ds.createEntries(batch);
  }
  const createMs = performance.now() - c0;
  const r0 = performance.now();
  const snapshot = await ds.snapshotEntries();
  const snapshotMs = performance.now() - r0;
  const total = snapshot.entries.length;
  await closeDs();

  phase = `a cold start with ${n(ENTRIES)} entries`;
  const full = await coldStart(dir, yamlA, probe, bundle, 'full');
  const met = full.readyMs < RESTART_GOAL_MS;
  console.log(
    `\n3. Restart of server A with ${entriesOf(total)}: tessera server run as a child process on A's data_dir and database (in-process servers stopped; PostgreSQL's cache warm, the entries just written)`,
  );
  console.log(
    `created ${n(ENTRIES)} entries in batches of ${ENTRY_BATCH} through datastore.createEntries in ${sec(createMs)} (${n(Math.round(ENTRIES / (createMs / 1000)))}/s); one snapshotEntries() of them from the bench: ${sec(snapshotMs)}`,
  );
  for (const [what, r] of [
    [`with ${entriesOf(empty.entries)}`, empty],
    [`with ${entriesOf(total)}`, full],
  ] as const)
    console.log(
      `  ${what.padEnd(20)} spawn -> /ready 200 ${sec(r.readyMs)}, -> 'server started' ${sec(r.startedMs)}, -> an agent's Sync holds its ${r.synced} entries ${sec(r.syncMs)};  VmRSS ${r.rssMb.toFixed(0)} MB (peak ${r.peakMb.toFixed(0)} MB)`,
    );
  console.log(
    `  goal: serving in < ${RESTART_GOAL_MS / 1000} s with ${entriesOf(total)}  ${verdict(met)}  (reference: the same start with ${entriesOf(empty.entries)}, above)`,
  );
  rows.push(
    {
      measure: `restart with ${entriesOf(total)}: spawn -> /ready 200`,
      figure: `${sec(full.readyMs)} (Sync served ${sec(full.syncMs)})`,
      goal: `< ${RESTART_GOAL_MS / 1000} s`,
      met,
      reference: `the same start with ${entriesOf(empty.entries)}: ${sec(empty.readyMs)}`,
    },
    {
      measure: `restart with ${entriesOf(total)}: RSS after load`,
      figure: `${full.rssMb.toFixed(0)} MB (peak ${full.peakMb.toFixed(0)} MB)`,
      goal: '-',
      met: undefined,
      reference: `with ${entriesOf(empty.entries)}: ${empty.rssMb.toFixed(0)} MB`,
    },
  );
}

interface ColdStart {
  entries: number;
  readyMs: number;
  startedMs: number;
  syncMs: number;
  synced: number;
  rssMb: number;
  peakMb: number;
}

/** Spawns server A, times it to serving, reads its memory, stops it. */
async function coldStart(
  dir: string,
  yamlA: string,
  probe: SimulatedAgent,
  bundle: X509Bundle,
  tag: string,
): Promise<ColdStart> {
  const healthPort = await freePort();
  const apiPort = await freePort();
  const config = join(dir, `server-a-${tag}.yaml`);
  writeFileSync(
    config,
    [
      yamlA,
      `agent_api: { address: 127.0.0.1, port: ${apiPort} }`,
      `health: { port: ${healthPort} }`,
      'log: { level: info }',
    ].join('\n'),
  );
  const t0 = performance.now();
  const child = spawnTessera(['server', 'run', '--config', config]);
  const ready = (async () => {
    const end = t0 + RESTART_TIMEOUT_MS;
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${healthPort}/ready`, {
          signal: AbortSignal.timeout(1000),
        });
        if (res.status === 200) return performance.now() - t0;
      } catch {
        // not listening yet
      }
      if (!child.alive())
        throw new Error(`bench: tessera server run exited ${child.proc.exitCode}:\n${child.log()}`);
      if (performance.now() > end) throw new Error(`bench: /ready not 200 in ${RESTART_TIMEOUT_MS} ms`);
      await sleep(10);
    }
  })();
  const started = waitLog(child, /server started/, RESTART_TIMEOUT_MS).then(() => performance.now() - t0);
  // Both fail when the child dies: the second failure must not go unhandled (and end this process
  // before it has cleaned up).
  ready.catch(() => {});
  started.catch(() => {});
  const [readyMs, startedMs] = await Promise.all([ready, started]);
  // An agent of A's (its SVID from A's CA, which A kept on disk) opens a Sync stream.
  const client = new ServerClient({
    address: `127.0.0.1:${apiPort}`,
    trustDomain: td,
    bundle,
    svid: probe.svid,
  });
  const closeClient = own('the Sync probe', () => client.close());
  const stream = client.sync();
  const synced = await new Promise<number>((resolve, reject) => {
    let count = 0;
    const timer = setTimeout(
      () => reject(new Error('bench: no synced Sync from the restarted server')),
      30_000,
    );
    stream.on('data', (m: SyncResponse) => {
      count += m.upserted.length;
      if (m.synced) {
        clearTimeout(timer);
        resolve(count);
      }
    });
    stream.on('error', (err: Error) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  const syncMs = performance.now() - t0;
  const mem = memoryOf(child.pid);
  const entries = Number(
    (
      await fetch(`http://127.0.0.1:${healthPort}/metrics`)
        .then((r) => r.text())
        .catch(() => '')
    ).match(/^tessera_entries(?:\{[^}]*\})? (\d+)/m)?.[1] ?? Number.NaN,
  );
  stream.cancel();
  await closeClient();
  await child.stop();
  return { entries, readyMs, startedMs, syncMs, synced, rssMb: mem.rssMb, peakMb: mem.peakMb };
}

function verdict(met: boolean): string {
  return met ? 'met' : 'NOT MET';
}

/** One aligned table of every figure, the goal and whether it is met, as the other benchmarks print. */
function printRows(title: string, footer: string): void {
  const header = ['measure', 'figure', 'goal', 'met', 'reference'];
  const lines = rows.map((r) => [
    r.measure,
    r.figure,
    r.goal,
    r.met === undefined ? '-' : verdict(r.met),
    r.reference,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const pad = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  console.log(`\n${title}`);
  console.log(pad(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(pad(l));
  console.log(footer);
}
