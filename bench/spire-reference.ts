// SPIRE measured in the same run, as the reference for the HA bench's "write -> workload" rows:
// spire-server and spire-agent v1.13.3 as child processes (one server on SQLite, one agent attested
// with a join token, the unix workload attestor), every cache and sync setting left at its default.
// Entries are created and deleted one at a time with `spire-server entry create|delete`, each
// timed from just before the command until the same Workload API watch the bench uses for tessera
// (x509-watch.ts) holds, or no longer holds, its SPIFFE ID.
import { execFile, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '@tessera/testkit';
import { memoryOf } from './harness.js';
import { watchX509Ids } from './x509-watch.js';

export const SPIRE_VERSION = '1.13.3';
/** Where test/interop/setup-spire.sh installs the binaries (from bench/dist/); the interop suites use them too. */
const LOCAL_BIN = fileURLToPath(new URL('../../test/interop/.spire/bin', import.meta.url));
/** SPIRE's defaults this measurement runs with (doc/spire_server.md, doc/spire_agent.md of v1.13.3); none is set in the configs. */
export const SPIRE_DEFAULTS =
  'server experimental.cache_reload_interval 5 s (full reload of the entry cache), events_based_cache false; agent sync_interval 5 s';
/**
 * SPIRE's server reloads its entry cache every 5 s and its agent syncs every 5 s (± 10 %): a write
 * is made at a random point of that cycle, not right after the sync that showed the previous one.
 */
const CYCLE_MS = 5000;
const START_TIMEOUT_MS = 30_000;
const FIRST_CONTEXT_TIMEOUT_MS = 60_000;
const CLI_TIMEOUT_MS = 30_000;

const run = promisify(execFile);

export interface SpireBinaries {
  server: string;
  agent: string;
  /** As `spire-server --version` prints it (`go install` builds say `1.13.3-dev-unk`). */
  version: string;
}

export type SpireLookup = { found: true; bin: SpireBinaries } | { found: false; why: string };

/** spire-server and spire-agent from test/interop/.spire/bin, else from PATH, if both report v1.13.3. */
export function findSpire(): SpireLookup {
  const dirs = [LOCAL_BIN, ...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== '')];
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
      why: `no ${server === undefined ? 'spire-server' : 'spire-agent'} in ${LOCAL_BIN} or on PATH`,
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

/** A child process as the bench runs it: its output kept, stopped once (SIGTERM, then SIGKILL). */
export interface SpireChild {
  readonly name: string;
  readonly pid: number;
  /** What it wrote to stdout and stderr so far (SPIRE logs on stdout). */
  log(): string;
  alive(): boolean;
  stop(): Promise<void>;
}

/** What the measurement needs from the bench that runs it. */
export interface SpireHarness {
  /** Registers `close` to run when the bench ends, fails or is interrupted; returns it, to run earlier (once). */
  own(what: string, close: () => Promise<void> | void): () => Promise<void>;
  /** `command <args>` as a child process, owned (stopped at the end at the latest). */
  spawn(what: string, command: string, args: string[]): SpireChild;
  /** Names the step under way, for the bench's watchdog. */
  phase(what: string): void;
}

export interface SpireOptions {
  /** An empty directory for configs, data, sockets and the SQLite file (the caller removes it). */
  dir: string;
  /** The uid of this process: the entries' selector is unix:uid:<uid>. */
  uid: number;
  /** At most this many entries, created then deleted one at a time. */
  entries: number;
  /** No new entry once this long has passed since the first (SPIRE is slow: the bench stays short). */
  budgetMs: number;
  /** How long a change may take to reach the workload before it counts as timed out. */
  timeoutMs: number;
  /** After this many timeouts, no new entry. */
  maxTimeouts: number;
  /** The pause before each write is `random() * 5 s`; default Math.random. */
  random?: () => number;
}

export interface SpireResult {
  version: string;
  serverAddress: string;
  agentId: string;
  /** Spawn -> `spire-server healthcheck` passes. */
  serverReadyMs: number;
  /** Agent spawn -> the watch holds the first entry's SVID (attestation, first sync, first SVID). */
  firstContextMs: number;
  /** Entries tried (each created, then deleted). */
  tried: number;
  /** Why the loop ended before `entries`, if it did. */
  stoppedBy: string | undefined;
  /** Command start -> the workload's context holds the SPIFFE ID. */
  created: number[];
  /** Command start -> the SPIFFE ID gone from the context (for entries that arrived). */
  removed: number[];
  /** The `spire-server entry create` / `entry delete` processes alone, start to exit. */
  createCommand: number[];
  deleteCommand: number[];
  createTimeouts: number;
  removeTimeouts: number;
  serverRssMb: number;
  agentRssMb: number;
  watchErrors: readonly string[];
}

/** Runs one SPIRE server and one agent under `options.dir`, measures, and stops both (also on failure). */
export async function measureSpire(
  bin: SpireBinaries,
  h: SpireHarness,
  options: SpireOptions,
): Promise<SpireResult> {
  // Closed in reverse: the watch, then the agent, then the server; nothing of SPIRE's runs after this.
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async (): Promise<unknown[]> => {
    const errors: unknown[] = [];
    for (const close of closers.reverse()) await close().catch((err: unknown) => errors.push(err));
    return errors;
  };
  let result: SpireResult;
  try {
    result = await measure(bin, h, options, closers);
  } catch (err) {
    // The measurement's error is the one thrown; a failure to close as well is printed.
    for (const e of await closeAll()) console.error(`bench: ${(e as Error).message}`);
    throw err;
  }
  const [closeError] = await closeAll();
  if (closeError !== undefined) throw closeError;
  return result;
}

async function measure(
  bin: SpireBinaries,
  h: SpireHarness,
  options: SpireOptions,
  closers: (() => Promise<void>)[],
): Promise<SpireResult> {
  const { dir, uid } = options;
  const random = options.random ?? Math.random;
  mkdirSync(join(dir, 'server'), { recursive: true });
  mkdirSync(join(dir, 'agent'), { recursive: true });
  const serverSocket = join(dir, 'server.sock');
  const agentSocket = join(dir, 'agent.sock');
  const port = await freePort();
  const hcl = (s: string) => JSON.stringify(s);
  writeFileSync(
    join(dir, 'server.conf'),
    `server {
  bind_address = "127.0.0.1"
  bind_port = "${port}"
  socket_path = ${hcl(serverSocket)}
  trust_domain = "example.org"
  data_dir = ${hcl(join(dir, 'server'))}
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = ${hcl(join(dir, 'server', 'datastore.sqlite3'))}
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`,
  );

  /** `spire-server <args> -socketPath …`, timed; throws with its stderr when it fails. */
  const cli = async (args: string[]): Promise<{ stdout: string; ms: number }> => {
    const t0 = performance.now();
    try {
      const { stdout } = await run(bin.server, [...args, '-socketPath', serverSocket], {
        timeout: CLI_TIMEOUT_MS,
      });
      return { stdout, ms: performance.now() - t0 };
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(
        `bench: spire-server ${args.slice(0, 2).join(' ')} failed: ${(e.stderr || e.stdout || e.message).trim()}`,
        { cause: err },
      );
    }
  };

  h.phase('SPIRE reference: starting spire-server');
  const s0 = performance.now();
  const server = h.spawn('spire-server', bin.server, ['run', '-config', join(dir, 'server.conf')]);
  closers.push(server.stop);
  for (;;) {
    const ok = await run(bin.server, ['healthcheck', '-socketPath', serverSocket], { timeout: 5000 }).then(
      () => true,
      () => false,
    );
    if (ok) break;
    if (!server.alive()) throw new Error(`bench: ${server.name} exited:\n${server.log().slice(-3000)}`);
    if (performance.now() - s0 > START_TIMEOUT_MS)
      throw new Error(
        `bench: ${server.name} not healthy in ${START_TIMEOUT_MS} ms:\n${server.log().slice(-3000)}`,
      );
    await sleep(50);
  }
  const serverReadyMs = performance.now() - s0;

  const token = (await cli(['token', 'generate'])).stdout.match(/Token:\s*(\S+)/)?.[1];
  if (token === undefined) throw new Error('bench: spire-server token generate printed no "Token: …"');
  const agentId = `spiffe://example.org/spire/agent/join_token/${token}`;
  const bundle = join(dir, 'bundle.pem');
  writeFileSync(bundle, (await cli(['bundle', 'show'])).stdout);
  // One entry from the start, so the agent has an identity for this uid to serve at once.
  // (SPIRE reserves the /spire path for its own IDs: workload IDs go under /bench.)
  const first = 'spiffe://example.org/bench/ha/spire/workload';
  const selector = `unix:uid:${uid}`;
  await cli(['entry', 'create', '-parentID', agentId, '-spiffeID', first, '-selector', selector]);

  writeFileSync(
    join(dir, 'agent.conf'),
    `agent {
  data_dir = ${hcl(join(dir, 'agent'))}
  server_address = "127.0.0.1"
  server_port = "${port}"
  socket_path = ${hcl(agentSocket)}
  trust_bundle_path = ${hcl(bundle)}
  trust_domain = "example.org"
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
  h.phase("SPIRE reference: waiting for spire-agent's first X.509 context");
  const a0 = performance.now();
  const agent = h.spawn('spire-agent', bin.agent, [
    'run',
    '-config',
    join(dir, 'agent.conf'),
    '-joinToken',
    token,
  ]);
  closers.push(agent.stop);
  const watch = watchX509Ids(agentSocket);
  closers.push(h.own('the Workload API watch on spire-agent', () => watch.close()));
  const end = a0 + FIRST_CONTEXT_TIMEOUT_MS;
  while (!watch.ids().has(first)) {
    if (!agent.alive()) throw new Error(`bench: ${agent.name} exited:\n${agent.log().slice(-3000)}`);
    if (performance.now() > end)
      throw new Error(
        `bench: no X.509 context from ${agent.name} in ${FIRST_CONTEXT_TIMEOUT_MS} ms:\n${agent.log().slice(-3000)}`,
      );
    await watch.when((s) => s.has(first), 100);
  }
  const firstContextMs = performance.now() - a0;

  const created: number[] = [];
  const removed: number[] = [];
  const createCommand: number[] = [];
  const deleteCommand: number[] = [];
  let createTimeouts = 0;
  let removeTimeouts = 0;
  let tried = 0;
  let stoppedBy: string | undefined;
  const diagnose = (what: string) =>
    console.log(
      `  SPIRE: ${what} not seen by the workload in ${options.timeoutMs} ms; ${agent.name} ${agent.alive() ? 'runs' : 'exited'}; its log ends: ${agent.log().slice(-1000).trim()}`,
    );
  const l0 = performance.now();
  for (let i = 0; i < options.entries; i++) {
    if (createTimeouts + removeTimeouts >= options.maxTimeouts) {
      stoppedBy = `${options.maxTimeouts} timeouts`;
      break;
    }
    if (performance.now() - l0 > options.budgetMs) {
      stoppedBy = `the ${(options.budgetMs / 1000).toFixed(0)} s time budget`;
      break;
    }
    h.phase(`SPIRE reference: entry ${i}`);
    tried++;
    const spiffeId = `spiffe://example.org/bench/ha/spire/svc-${i}`;
    const entryId = `ha-bench-spire-${i}`;
    await sleep(random() * CYCLE_MS);
    const start = performance.now();
    const seen = watch.when((s) => s.has(spiffeId), options.timeoutMs);
    const c = await cli([
      'entry',
      'create',
      '-entryID',
      entryId,
      '-parentID',
      agentId,
      '-spiffeID',
      spiffeId,
      '-selector',
      selector,
    ]);
    createCommand.push(c.ms);
    const at = await seen;
    if (at === undefined) {
      createTimeouts++;
      diagnose(`entry ${i} (create)`);
    } else created.push(at - start);

    await sleep(random() * CYCLE_MS);
    const removing = performance.now();
    const gone = watch.when((s) => !s.has(spiffeId), options.timeoutMs);
    const d = await cli(['entry', 'delete', '-entryID', entryId]);
    deleteCommand.push(d.ms);
    const goneAt = await gone;
    // Only a removal of what the workload held is timed (one that never arrived is gone at once).
    if (at !== undefined) {
      if (goneAt === undefined) {
        removeTimeouts++;
        diagnose(`entry ${i} (delete)`);
      } else removed.push(goneAt - removing);
    }
  }
  const serverRssMb = memoryOf(server.pid).rssMb;
  const agentRssMb = memoryOf(agent.pid).rssMb;
  return {
    version: bin.version,
    serverAddress: `127.0.0.1:${port}`,
    agentId,
    serverReadyMs,
    firstContextMs,
    tried,
    stoppedBy,
    created,
    removed,
    createCommand,
    deleteCommand,
    createTimeouts,
    removeTimeouts,
    serverRssMb,
    agentRssMb,
    watchErrors: [...watch.errors],
  };
}
