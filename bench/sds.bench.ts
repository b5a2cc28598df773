// npm run bench: Envoy SDS on the agent. A server and an agent in this process (as `tessera server
// run` / `tessera agent run` start them); 500 SDS streams (StreamSecrets, `default` + `ROOTCA`, each on
// its own Unix-socket connection, as 500 Envoys would hold them) ACK what they get. Then a rotation:
// the authority's key is replaced and the old one tainted, so the agent re-issues the SVID at once;
// measured from the taint call to each stream receiving the new version. Memory per stream from the
// process's RSS before and after opening them (agent and clients both count: an upper bound).
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { SECRET_TYPE_URL } from '@tessera/tessera/dist/agent/endpoints/sds.js';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import {
  type DiscoveryRequest,
  DiscoveryRequestSchema,
  type DiscoveryResponse,
  DiscoveryResponseSchema,
} from '@tessera/tessera/dist/gen/envoy/service/discovery/v3/discovery_pb.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir } from '@tessera/testkit';
import { fdLimit, percentile } from './harness.js';

const STREAMS = 500;
const WAVE = 100;
const GOAL_MS = 250;
const TIMEOUT_MS = 30_000;
const uid = process.getuid?.() ?? 0;
const quiet = createLogger({ level: 'error', write: () => undefined });
const ms = (v: number) => `${v.toFixed(1)} ms`;

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const tmp = await makeTempDir('sds-bench-');
let server: RunningServer | undefined;
let agent: RunningAgent | undefined;
const clients: grpc.Client[] = [];
const calls: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>[] = [];
let ok = true;
try {
  if (fdLimit() < 2 * STREAMS + 200)
    throw new Error(`bench: raise the open-file limit (ulimit -n ${4 * STREAMS})`);
  server = await startTestServer(tmp.path);
  await server.datastore.createJoinToken({
    token: 'sds-bench-token-0123456789',
    expiresAt: new Date(Date.now() + 60_000),
    agentName: 'sds-bench',
  });
  agent = await startTestAgent(server, tmp.path, 'sds-bench-token-0123456789', quiet);
  await server.datastore.createEntry({
    spiffeId: 'spiffe://example.org/envoy',
    parentId: agent.manager.id,
    selectors: [{ type: 'unix', value: `uid:${uid}` }],
  });
  await until(
    () => agent?.manager.svidsFor([{ type: 'unix', value: `uid:${uid}` }]).length === 1,
    10_000,
    'the SVID',
  );

  const links = join(tmp.path, 'l');
  mkdirSync(links);
  const versions: string[] = [];
  const received: number[] = [];
  const arrived: number[] = [];
  let rotatedAt = 0;
  let opened = 0;
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  for (let i = 0; i < STREAMS; i++) {
    // One connection per stream, as separate Envoys would have: grpc-js would share one per target.
    const path = join(links, `${i}.sock`);
    symlinkSync(agent.socketPath, path);
    const client = new grpc.Client(`unix://${path}`, grpc.credentials.createInsecure());
    clients.push(client);
    const call = client.makeBidiStreamRequest(
      '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets',
      (m: DiscoveryRequest) => Buffer.from(toBinary(DiscoveryRequestSchema, m)),
      (b: Buffer) => fromBinary(DiscoveryResponseSchema, b),
    ) as grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
    calls.push(call);
    const req = (r?: DiscoveryResponse) =>
      create(DiscoveryRequestSchema, {
        typeUrl: SECRET_TYPE_URL,
        resourceNames: ['default', 'ROOTCA'],
        versionInfo: r?.versionInfo ?? '',
        responseNonce: r?.nonce ?? '',
      });
    call.on('data', (r: DiscoveryResponse) => {
      call.write(req(r)); // ACK, as Envoy does
      received[i] = (received[i] ?? 0) + 1;
      if (versions[i] === undefined) {
        versions[i] = r.versionInfo;
        opened++;
      } else if (rotatedAt > 0 && r.versionInfo !== versions[i] && arrived[i] === undefined) {
        arrived[i] = performance.now() - rotatedAt;
      }
    });
    call.on('error', () => undefined);
    call.write(req());
    if ((i + 1) % WAVE === 0) await until(() => opened === i + 1, 30_000, `${i + 1} first responses`);
  }
  global.gc?.();
  const perStreamKb = (process.memoryUsage().rss - rssBefore) / 1024 / STREAMS;

  // Rotation on demand: a new CA signs, the old one is tainted, the agent re-issues at once.
  const old = (await server.authority.list()).find((a) => a.kind === 'x509' && a.status === 'active');
  await server.authority.prepare('x509');
  // The prepared CA joins ROOTCA: wait until every stream has that version before the rotation.
  await until(
    () => received.every((n) => n >= 2) && received.length === STREAMS,
    TIMEOUT_MS,
    'the new bundle on every stream',
  );
  await server.authority.activate('x509');
  let seen = 0;
  for (const c of calls) c.removeAllListeners('data');
  calls.forEach((call, i) => {
    call.on('data', (r: DiscoveryResponse) => {
      call.write(
        create(DiscoveryRequestSchema, {
          typeUrl: SECRET_TYPE_URL,
          resourceNames: ['default', 'ROOTCA'],
          versionInfo: r.versionInfo,
          responseNonce: r.nonce,
        }),
      );
      if (arrived[i] === undefined) {
        arrived[i] = performance.now() - rotatedAt;
        seen++;
      }
    });
  });
  rotatedAt = performance.now();
  await server.authority.taint('x509', old?.id as string);
  let timedOut = false;
  await until(() => seen === STREAMS, TIMEOUT_MS, 'the rotation on every stream').catch(() => {
    timedOut = true;
  });
  const sorted = arrived.filter((x) => x !== undefined).sort((a, b) => a - b);
  const p99 = percentile(sorted, 99);
  const pass = !timedOut && p99 < GOAL_MS;
  console.log(
    `\nSDS: ${STREAMS} StreamSecrets streams (default + ROOTCA, ACKed, one Unix-socket connection each); server, agent and clients in this process`,
  );
  console.log(
    `memory per stream (RSS growth / ${STREAMS}, agent and client sides together): ${perStreamKb.toFixed(1)} KB`,
  );
  console.log(
    `rotation (old CA tainted → agent re-issues → pushed) to each stream: p50 ${ms(percentile(sorted, 50))}  p99 ${ms(p99)}  max ${ms(sorted.at(-1) ?? Number.NaN)}  reached ${sorted.length}/${STREAMS}  goal p99 < ${GOAL_MS} ms  ${pass ? 'PASS' : 'FAIL'}`,
  );
  ok = pass;
} finally {
  for (const c of calls) c.cancel();
  for (const c of clients) c.close();
  await agent?.stop();
  await server?.stop();
  await tmp.cleanup();
}
if (!ok) process.exitCode = 1;
