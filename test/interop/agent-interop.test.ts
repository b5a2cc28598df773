/**
 * go-spiffe v2 and py-spiffe against the Tessera agent: a real server and agent (in this process,
 * real TLS and a real Unix socket), the peers as child processes of this uid. They must see exactly
 * the SVIDs, serials and bundles the agent holds, follow a rotation (8 s SVIDs), fetch JWT-SVIDs,
 * and an mTLS pair built on the agent's SVIDs must complete its handshake.
 * Same rules as interop.test.ts: without the peers the suite is skipped loudly, unless
 * TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { interopUnavailable } from './verdicts.js';
import {
  linesOf,
  type PythonFetchLine,
  runGoMtlsPair,
  runGoWorkload,
  runPythonWorkload,
} from './workload-peers.js';

const skip = interopUnavailable('go-spiffe and py-spiffe against the agent');

const uid = process.getuid?.() ?? 0;
const quiet = createLogger({ level: 'error', write: () => undefined });

describe('go-spiffe and py-spiffe against the Tessera agent', {
  skip,
  timeout: 120_000,
}, () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;

  before(async () => {
    tmp = await makeTempDir('agent-interop-');
    server = await startTestServer(tmp.path, ['x509_svid_ttl: 8s']);
    await server.datastore.createJoinToken({
      token: 'interop-agent-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'interop',
    });
    const agentId = 'spiffe://example.org/tessera/agent/join_token/interop';
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: agentId,
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
      hint: 'web',
    });
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/api',
      parentId: agentId,
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
      hint: 'api',
    });
    agent = await startTestAgent(server, tmp.path, 'interop-agent-token-0123', quiet);
  });

  after(async () => {
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  /** What the agent hands this uid now: SPIFFE ID → serial. */
  const held = () =>
    new Map(
      agent.manager
        .svidsFor([{ type: 'unix', value: `uid:${uid}` }])
        .map((s) => [s.svid.id.toString(), s.svid.certificates[0]?.serialNumber ?? '']),
    );

  test('go-spiffe sees the SVIDs, serials, hints and bundle the agent holds, follows a rotation, and fetches a JWT-SVID', async () => {
    const run = await runGoWorkload(agent.socketPath, {
      audience: ['interop'],
      updates: 2,
      timeoutMs: 30_000,
    });
    assert.equal(run.code, 0, run.stderr);
    const updates = linesOf(run.lines, 'x509');
    assert.equal(updates.length, 2);
    const first = updates[0];
    assert.deepEqual(first?.svids.map((s) => s.spiffe_id).sort(), [
      'spiffe://example.org/api',
      'spiffe://example.org/web',
    ]);
    assert.deepEqual(first?.svids.map((s) => s.hint).sort(), ['api', 'web']);
    assert.deepEqual(first?.bundles, { 'example.org': 1 });
    // A rotation: the second update carries new serials for the same IDs.
    const before = new Map(first?.svids.map((s) => [s.spiffe_id, s.serial]));
    const changed = updates[1]?.svids.filter((s) => before.get(s.spiffe_id) !== s.serial) ?? [];
    assert.ok(changed.length >= 1, JSON.stringify(updates));
    // What go-spiffe saw last is what the agent holds (or was, just before another renewal).
    const now = held();
    for (const s of updates[1]?.svids ?? []) assert.ok(now.has(s.spiffe_id));
    const jwt = linesOf(run.lines, 'jwt')[0];
    assert.ok(
      jwt !== undefined && ['spiffe://example.org/api', 'spiffe://example.org/web'].includes(jwt.spiffe_id),
    );
    assert.deepEqual(jwt.audience, ['interop']);
    const sources = linesOf(run.lines, 'bundles')[0];
    assert.equal(sources?.x509['example.org'], 1);
    assert.equal(sources?.jwt['example.org'], 1);
    assert.deepEqual(linesOf(run.lines, 'error'), []);
  });

  test('py-spiffe fetches the same context, bundles and a JWT-SVID', async () => {
    const expected = held();
    const run = await runPythonWorkload(agent.socketPath, {
      audience: ['interop'],
      updates: 1,
      timeoutMs: 30_000,
    });
    assert.equal(run.code, 0, run.stderr);
    const fetched = (kind: PythonFetchLine['kind']) =>
      run.lines.find((l): l is PythonFetchLine => l.kind === kind);
    const ctx = fetched('x509-context');
    assert.deepEqual(ctx?.svids?.map((s) => s.spiffe_id).sort(), [...expected.keys()].sort());
    assert.deepEqual(ctx?.bundles, { 'example.org': 1 });
    assert.deepEqual(fetched('jwt-bundles')?.bundles, { 'example.org': 1 });
    assert.deepEqual(linesOf(run.lines, 'jwt')[0]?.audience, ['interop']);
    assert.deepEqual(linesOf(run.lines, 'error'), []);
  });

  test('a go-spiffe mTLS server and client on the agent SVIDs complete a handshake', async () => {
    const run = await runGoMtlsPair(agent.socketPath, {
      serverHint: 'api',
      clientHint: 'web',
      timeoutMs: 30_000,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.line?.ok, true, JSON.stringify(run.line));
    assert.equal(run.line?.server.self, 'spiffe://example.org/api');
    assert.equal(run.line?.server.peer, 'spiffe://example.org/web');
    assert.equal(run.line?.client.peer, 'spiffe://example.org/api');
  });
});
