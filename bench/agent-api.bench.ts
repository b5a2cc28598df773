// npm run bench: the agent API end to end — the server started as `tessera server run` starts it,
// real gRPC over mTLS on a real port, a real SQLite file and audit log — with its clients in the same
// process. Batch X509-SVID signing beside openssl's P-256 sign+verify pair rate from the same run,
// and the push latency of an entry change to its agent's sync stream with 1,000 agents connected.
import { X509Certificate } from 'node:crypto';
import { parseSpiffeId, parseTrustDomain, type X509Bundle, X509Svid } from '@tessera/spiffe';
import { ServerClient } from '@tessera/tessera/dist/agent/server-client.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import type { SyncResponse } from '@tessera/tessera/dist/gen/tessera/agent/v1/agent_pb.js';
import { serialOf } from '@tessera/tessera/dist/server/api/agent-api.js';
import { parseServerConfig } from '@tessera/tessera/dist/server/config.js';
import type { EntryInput } from '@tessera/tessera/dist/server/datastore/types.js';
import { type RunningServer, startServer } from '@tessera/tessera/dist/server/run.js';
import { createCsr, generateKey, makeTempDir } from '@tessera/testkit';
import {
  type BenchResult,
  fdLimit,
  openFds,
  opensslSpeed,
  pairRate,
  percentile,
  printTable,
} from './harness.js';

const BATCH = 50;
const IN_FLIGHT = 2;
const SIGN_WARMUP_MS = 500;
const SIGN_MS = 3000;
const AGENTS = 1000;
const ENTRIES_PER_AGENT = 10;
const CHANGES = 500;
const CHANGES_CONCURRENT = 10;
const PUSH_TIMEOUT_MS = 10_000;

const td = parseTrustDomain('example.org');
const agentId = (name: string) => `spiffe://example.org/tessera/agent/join_token/${name}`;

const p256 = opensslSpeed('ecdsap256');
const tmp = await makeTempDir('agent-api-bench-');
const clients: ServerClient[] = [];
let server: RunningServer | undefined;
let ok = true;
try {
  server = await startServer(
    parseServerConfig(
      [
        'trust_domain: example.org',
        `data_dir: ${tmp.path}/data`,
        'agent_api: { address: 127.0.0.1, port: 0 }',
        'health: { port: 0 }',
        `admin_socket: ${tmp.path}/admin.sock`,
      ].join('\n'),
    ),
    { logger: createLogger({ level: 'error', write: () => undefined }) },
  );
  const address = `127.0.0.1:${server.agentApiPort}`;
  const stored = await server.datastore.getBundle(td);
  if (stored === undefined) throw new Error('bench: the server has no bundle for example.org');
  const bundle = stored.x509Bundle();
  const open = (svid?: X509Svid) => {
    const c = new ServerClient({ address, trustDomain: td, bundle, ...(svid ? { svid } : {}) });
    clients.push(c);
    return c;
  };
  ok = (await signing(server, open)) && ok;
  ok = (await push(server, bundle, address)) && ok;
} finally {
  for (const c of clients) c.close();
  await server?.stop();
  await tmp.cleanup();
}
if (!ok) process.exitCode = 1;

/** One agent attested with a join token signs batches of 50 CSRs for its 50 entries, 2 calls in flight. */
async function signing(server: RunningServer, open: (svid?: X509Svid) => ServerClient): Promise<boolean> {
  const token = `bench-token-${Date.now()}`;
  await server.datastore.createJoinToken({
    token,
    expiresAt: new Date(Date.now() + 60_000),
    agentName: 'bench-signer',
  });
  const key = generateKey();
  const attested = await open().attest({
    type: 'join_token',
    payload: Buffer.from(token),
    csr: createCsr(key.publicKey, key.privateKey),
  });
  const agent = open(
    new X509Svid(
      parseSpiffeId(attested.spiffeId),
      attested.svidChain.map((d) => new X509Certificate(d)),
      key.privateKey,
    ),
  );
  const entries = await server.datastore.createEntries(
    Array.from({ length: BATCH }, (_, i) => ({
      spiffeId: `spiffe://example.org/bench/sign/svc-${i}`,
      parentId: attested.spiffeId,
      selectors: [{ type: 'unix', value: `uid:${1000 + i}` }],
      dnsNames: [`svc-${i}.example.org`],
    })),
  );
  // One key and CSR per entry, made once: key generation is the agent's cost, not the server's.
  const params = entries.map((e) => {
    const k = generateKey();
    return { entryId: e.id, csr: createCsr(k.publicKey, k.privateKey) };
  });
  const call = async (): Promise<void> => {
    const res = await agent.batchNewX509Svid(params);
    const bad = res.results.find((r) => r.code !== 0);
    if (res.results.length !== BATCH || bad !== undefined)
      throw new Error(`bench: a batch came back with ${res.results.length} results; ${bad?.message ?? ''}`);
  };
  const run = async (ms: number, latenciesUs: number[]): Promise<{ calls: number; seconds: number }> => {
    const start = process.hrtime.bigint();
    const end = start + BigInt(ms) * 1_000_000n;
    let calls = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (process.hrtime.bigint() < end) {
          const t0 = process.hrtime.bigint();
          await call();
          latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
          calls++;
        }
      }),
    );
    return { calls, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
  };
  await run(SIGN_WARMUP_MS, []);
  const latenciesUs: number[] = [];
  const { calls, seconds } = await run(SIGN_MS, latenciesUs);
  latenciesUs.sort((a, b) => a - b);
  const result: BenchResult = {
    name: `agent API BatchNewX509SVID over mTLS, ${BATCH} CSRs/call, ${IN_FLIGHT} in flight (SVIDs/s; µs per call)`,
    iterations: calls * BATCH,
    opsPerSec: (calls * BATCH) / seconds,
    medianUs: percentile(latenciesUs, 50),
    p99Us: percentile(latenciesUs, 99),
  };
  return printTable(
    `Agent API signing, server and agent in one process, audit log on (openssl speed -seconds 2 -mr ecdsap256: sign ${p256.sign.toFixed(0)}/s, verify ${p256.verify.toFixed(0)}/s)`,
    [
      {
        result,
        reference: { name: 'openssl P-256 sign+verify pair', opsPerSec: pairRate(p256) },
        goal: 0.25,
      },
    ],
  );
}

interface SimulatedAgent {
  id: string;
  svid: X509Svid;
}

/**
 * 1,000 agents (attested straight in the datastore, SVIDs from the authority), 10 entries each, one
 * client and one sync stream per agent; then 500 entry creations for random agents, each timed from
 * the create call until its agent's stream receives the entry.
 */
async function push(server: RunningServer, bundle: X509Bundle, address: string): Promise<boolean> {
  // Each agent holds one socket and the server another; Node cannot raise RLIMIT_NOFILE itself.
  const limit = fdLimit();
  if (limit < 2 * AGENTS + 100)
    throw new Error(
      `bench: ${AGENTS} agent streams need about ${2 * AGENTS + 100} open files; the limit is ${limit}; run "ulimit -n ${4 * AGENTS}" first`,
    );
  const now = new Date();
  const agents: SimulatedAgent[] = [];
  for (let i = 0; i < AGENTS; i++) {
    const id = agentId(`bench-${i}`);
    const key = generateKey();
    const issued = server.authority.x509.issueX509Svid({
      publicKey: key.publicKey,
      spiffeId: id,
      ttlMs: 3600_000,
      now,
    });
    await server.datastore.attestAgent({
      spiffeId: id,
      attestor: 'join_token',
      selectors: [],
      serial: serialOf(issued.chain[0] as X509Certificate),
      expiresAt: issued.expiresAt,
    });
    agents.push({ id, svid: new X509Svid(parseSpiffeId(id), issued.chain, key.privateKey) });
  }
  const inputs: EntryInput[] = agents.flatMap((a, i) =>
    Array.from({ length: ENTRIES_PER_AGENT }, (_, k) => ({
      spiffeId: `spiffe://example.org/bench/push/agent-${i}/svc-${k}`,
      parentId: a.id,
      selectors: [{ type: 'unix', value: `uid:${1000 + k}` }],
    })),
  );
  for (let i = 0; i < inputs.length; i += 500) await server.datastore.createEntries(inputs.slice(i, i + 500));

  // Entry ID → when a stream received it, or who waits for it.
  const arrived = new Map<string, number>();
  const waiting = new Map<string, (at: number) => void>();
  const streamErrors: string[] = [];
  let closing = false;
  const pushClients: ServerClient[] = [];
  const streams: { cancel(): void }[] = [];
  const t0 = performance.now();
  const fdsBefore = openFds();
  await Promise.all(
    agents.map(
      (a) =>
        new Promise<void>((resolve, reject) => {
          const client = new ServerClient({ address, trustDomain: td, bundle, svid: a.svid });
          pushClients.push(client);
          const stream = client.sync();
          streams.push(stream);
          let synced = false;
          stream.on('data', (m: SyncResponse) => {
            if (!synced) {
              if (m.synced) {
                synced = true;
                resolve();
              }
              return;
            }
            const at = performance.now();
            for (const e of m.upserted) {
              const w = waiting.get(e.id);
              if (w === undefined) arrived.set(e.id, at);
              else {
                waiting.delete(e.id);
                w(at);
              }
            }
          });
          stream.on('error', (err: Error) => {
            if (closing) return;
            streamErrors.push(`${a.id}: ${err.message}`);
            reject(err);
          });
        }),
    ),
  );
  const syncSeconds = (performance.now() - t0) / 1000;
  const fdsAfter = openFds();
  const rssSyncedMb = process.memoryUsage().rss / 1024 / 1024;

  const latenciesMs: number[] = [];
  let timedOut = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: CHANGES_CONCURRENT }, async () => {
      while (next < CHANGES) {
        const n = next++;
        const a = Math.floor(Math.random() * AGENTS);
        const start = performance.now();
        const entry = await server.datastore.createEntry({
          spiffeId: `spiffe://example.org/bench/push/agent-${a}/new-${n}`,
          parentId: agentId(`bench-${a}`),
          selectors: [{ type: 'unix', value: `uid:${2000 + n}` }],
        });
        const at =
          arrived.get(entry.id) ??
          (await new Promise<number | undefined>((resolve) => {
            const timer = setTimeout(() => {
              waiting.delete(entry.id);
              resolve(undefined);
            }, PUSH_TIMEOUT_MS);
            waiting.set(entry.id, (t) => {
              clearTimeout(timer);
              resolve(t);
            });
          }));
        if (at === undefined) timedOut++;
        else latenciesMs.push(at - start);
      }
    }),
  );
  const rssMb = process.memoryUsage().rss / 1024 / 1024;
  closing = true;
  for (const s of streams) s.cancel();
  for (const c of pushClients) c.close();

  latenciesMs.sort((x, y) => x - y);
  const p = (q: number) => percentile(latenciesMs, q);
  const pass = timedOut === 0 && streamErrors.length === 0 && p(99) < 200;
  const ms = (v: number) => `${v.toFixed(1)} ms`;
  console.log(
    `\nPush: ${AGENTS.toLocaleString('en-US')} agent streams (one grpc-js channel each, mTLS) with ${ENTRIES_PER_AGENT} entries each, server in the same process`,
  );
  console.log(
    `open and sync all ${AGENTS.toLocaleString('en-US')} streams: ${syncSeconds.toFixed(2)} s; open file descriptors ${fdsBefore} -> ${fdsAfter} (limit: ${fdLimit()})`,
  );
  console.log(
    `${CHANGES} entry creations, ${CHANGES_CONCURRENT} at a time, create call -> received on the agent's stream:`,
  );
  console.log(
    `  p50 ${ms(p(50))}  p95 ${ms(p(95))}  p99 ${ms(p(99))}  max ${ms(latenciesMs.at(-1) ?? Number.NaN)}  timed out ${timedOut}  goal p99 < 200 ms  ${pass ? 'PASS' : 'FAIL'}`,
  );
  console.log(
    `resident memory: ${rssSyncedMb.toFixed(0)} MB after sync, ${rssMb.toFixed(0)} MB after the changes`,
  );
  if (streamErrors.length > 0) console.log(`stream errors: ${streamErrors.slice(0, 5).join('; ')}`);
  return pass;
}
