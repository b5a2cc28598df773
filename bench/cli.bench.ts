// npm run bench: how long an operator waits for a `tessera` command — the whole process, as a shell
// runs it (node start, module loading, the admin call over the Unix socket, exit). A server runs in
// this process; each command is a child process, run one after another. References from the same
// run: `node -e 0` (the floor: Node's own start), and, when SPIRE v1.13.3 is built
// (test/interop/setup.sh), `spire-server entry count` against a SPIRE server started here.
// Goal (issue 16): a simple admin command (`tessera entry count`) under 200 ms, i.e. at least 5 per second.
// Measured on the 2-core development VM (Node 20.20) while other builds loaded it (load average 6-8),
// six runs: node -e 0 69-114 ms, entry count 130-186 ms median, PASS each time; spire-server entry
// count 51-78 ms (before the V8 code cache, cli/code-cache.ts: entry count 265 ms against 118 ms). What entry count adds to node -e 0, some 55 ms at best: the launcher and
// node:crypto ~5, the bundle read and hashed and its cache deserialized ~10, protobuf-es building its
// descriptors (descriptor.proto, the well-known types, the admin API's) ~14, grpc-js's modules and the
// builtins they load (http2, tls, net, dns, http, zlib) ~8, the call (channel, HTTP/2 session, request,
// the server's answer, the output) ~14, exit ~1.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import { makeTempDir } from '@tessera/testkit';
import { findSpire, startSpireServer } from '#test/interop/spire.test.util.js';
import { type BenchResult, percentile, printTable, type Row } from './harness.js';

const RUNS = Number(process.env.CLI_BENCH_RUNS ?? 20);
const TESSERA = fileURLToPath(new URL('../../packages/tessera/bin/tessera.js', import.meta.url));

const run = promisify(execFile);

/**
 * Runs `file args` RUNS times (after one warm-up run), timing each whole process. Asynchronously:
 * the server answering the commands runs in this process's event loop.
 */
async function measure(name: string, file: string, args: readonly string[]): Promise<BenchResult> {
  const once = async () => {
    try {
      await run(file, args);
    } catch (err) {
      throw new Error(`cli bench: ${name} failed: ${String((err as { stderr?: unknown }).stderr ?? err)}`);
    }
  };
  await once();
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    await once();
    times.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  times.sort((a, b) => a - b);
  const median = percentile(times, 50);
  return {
    name,
    iterations: RUNS,
    opsPerSec: 1e6 / median,
    medianUs: median,
    p99Us: percentile(times, 99),
  };
}

const tmp = await makeTempDir('cli-bench-');
const server = await startTestServer(tmp.path);
const socket = join(tmp.path, 'admin.sock');
try {
  const floor = await measure('node -e 0', process.execPath, ['-e', '0']);
  const rows: Row[] = [
    { result: floor },
    {
      result: await measure('tessera --version', process.execPath, [TESSERA, '--version']),
      reference: { name: 'node -e 0', opsPerSec: floor.opsPerSec },
    },
    {
      // 200 ms: 5 per second. The goal is absolute; the reference is the floor.
      result: await measure('tessera entry count', process.execPath, [
        TESSERA,
        'entry',
        'count',
        '--socket',
        socket,
      ]),
      reference: { name: '200 ms', opsPerSec: 5 },
      goal: 1,
    },
    {
      result: await measure('tessera bundle show', process.execPath, [
        TESSERA,
        'bundle',
        'show',
        '--socket',
        socket,
      ]),
      reference: { name: 'node -e 0', opsPerSec: floor.opsPerSec },
    },
    {
      result: await measure('tessera agent list', process.execPath, [
        TESSERA,
        'agent',
        'list',
        '--socket',
        socket,
      ]),
      reference: { name: 'node -e 0', opsPerSec: floor.opsPerSec },
    },
  ];
  const spire = findSpire();
  if (spire.found) {
    const s = await startSpireServer({
      dir: join(tmp.path, 'spire'),
      trustDomain: 'example.org',
      binaries: spire.bin,
    });
    try {
      rows.push({
        result: await measure('spire-server entry count', spire.bin.server, [
          'entry',
          'count',
          '-socketPath',
          s.socketPath,
        ]),
      });
    } finally {
      await s.stop();
    }
  } else {
    console.log(`spire-server: SKIPPED (${spire.why}); bash test/interop/setup.sh builds it`);
  }
  printTable(`tessera CLI, whole process per command (${RUNS} runs each, median)`, rows);
  console.log("ratio: the command's rate against the reference (node -e 0: Node alone; 200 ms: the goal).");
} finally {
  await server.stop();
  await tmp.cleanup();
}
