// SPIRE measured in the same run, as the reference for the HA bench's "write -> workload" rows:
// spire-server and spire-agent v1.13.3 as child processes (one server on SQLite, one agent attested
// with a join token, the unix workload attestor), every cache and sync setting left at its default.
// Entries are created and deleted one at a time with `spire-server entry create|delete`, each
// timed from just before the command until the same Workload API watch the bench uses for tessera
// (x509-watch.ts) holds, or no longer holds, its SPIFFE ID. The processes, their configs and the
// binaries' lookup are the interop suites' (test/interop/spire.test.util.ts).
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createSpireEntry,
  type FoundSpire,
  generateSpireJoinToken,
  type SpireLog,
  startSpireAgent,
  startSpireServer,
} from '#test/interop/spire.test.util.js';
import { memoryOf } from './harness.js';
import { watchX509Ids } from './x509-watch.js';

/** SPIRE's defaults this measurement runs with (doc/spire_server.md, doc/spire_agent.md of v1.13.3); none of them is set in the configs. */
export const SPIRE_DEFAULTS =
  'server experimental.cache_reload_interval 5 s (full reload of the entry cache), events_based_cache false; agent sync_interval 5 s';
/**
 * SPIRE's server reloads its entry cache every 5 s and its agent syncs every 5 s (± 10 %): a write
 * is made at a random point of that cycle, not right after the sync that showed the previous one.
 */
const CYCLE_MS = 5000;
const FIRST_CONTEXT_TIMEOUT_MS = 60_000;

/** How long `command` (a spire-server CLI run) takes, in ms; its error if it fails. */
async function timed(command: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await command();
  return performance.now() - t0;
}

/** What the measurement needs from the bench that runs it. */
export interface SpireHarness {
  /** Registers `close` to run when the bench ends, fails or is interrupted; returns it, to run earlier (once). */
  own(what: string, close: () => Promise<void> | void): () => Promise<void>;
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
  bin: FoundSpire,
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
  bin: FoundSpire,
  h: SpireHarness,
  options: SpireOptions,
  closers: (() => Promise<void>)[],
): Promise<SpireResult> {
  const { dir, uid } = options;
  const random = options.random ?? Math.random;
  /** The last `chars` characters of a daemon's log. */
  const tail = (d: SpireLog, chars: number) => d.logLines().join('\n').slice(-chars);

  h.phase('SPIRE reference: starting spire-server');
  // Nothing of SPIRE's timers set (null: not written), so its defaults (SPIRE_DEFAULTS).
  const server = await startSpireServer({
    dir: join(dir, 'server'),
    trustDomain: 'example.org',
    keyManager: 'memory',
    cacheReloadInterval: null,
    binaries: bin,
  });
  const serverReadyMs = performance.now() - server.spawnedAt;
  closers.push(h.own(`spire-server (pid ${server.pid})`, server.stop));
  // No node alias: entries are parented by the agent's own ID.
  const joinToken = await generateSpireJoinToken(server, null);
  const { agentId } = joinToken;
  // One entry from the start, so the agent has an identity for this uid to serve at once.
  // (SPIRE reserves the /spire path for its own IDs: workload IDs go under /bench.)
  const first = 'spiffe://example.org/bench/ha/spire/workload';
  const selector = `unix:uid:${uid}`;
  await createSpireEntry(server, { spiffeId: first, parentId: agentId, selectors: [selector] });

  h.phase("SPIRE reference: waiting for spire-agent's first X.509 context");
  const agent = await startSpireAgent({
    dir: join(dir, 'agent'),
    server,
    joinToken,
    syncInterval: null,
    binaries: bin,
  });
  const agentName = `spire-agent (pid ${agent.pid})`;
  closers.push(h.own(agentName, agent.stop));
  const watch = watchX509Ids(agent.socketPath);
  closers.push(h.own('the Workload API watch on spire-agent', () => watch.close()));
  const end = agent.spawnedAt + FIRST_CONTEXT_TIMEOUT_MS;
  while (!watch.ids().has(first)) {
    if (!agent.alive()) throw new Error(`bench: ${agentName} exited:\n${tail(agent, 3000)}`);
    if (performance.now() > end)
      throw new Error(
        `bench: no X.509 context from ${agentName} in ${FIRST_CONTEXT_TIMEOUT_MS} ms:\n${tail(agent, 3000)}`,
      );
    await watch.when((s) => s.has(first), 100);
  }
  const firstContextMs = performance.now() - agent.spawnedAt;

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
      `  SPIRE: ${what} not seen by the workload in ${options.timeoutMs} ms; ${agentName} ${agent.alive() ? 'runs' : 'exited'}; its log ends: ${tail(agent, 1000).trim()}`,
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
    createCommand.push(
      await timed(() =>
        createSpireEntry(server, { spiffeId, parentId: agentId, selectors: [selector], entryId }),
      ),
    );
    const at = await seen;
    if (at === undefined) {
      createTimeouts++;
      diagnose(`entry ${i} (create)`);
    } else created.push(at - start);

    await sleep(random() * CYCLE_MS);
    const removing = performance.now();
    const gone = watch.when((s) => !s.has(spiffeId), options.timeoutMs);
    deleteCommand.push(await timed(() => server.cliOk(['entry', 'delete', '-entryID', entryId])));
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
    serverAddress: server.address,
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
