// The library README's examples (packages/spiffe/examples; README.md shows them verbatim, see
// packages/spiffe/src/readme.test.ts), run as a reader runs them: each a process of its own,
// finding a real Tessera agent's Workload API by SPIFFE_ENDPOINT_SOCKET. Each must print what the
// README says and exit 0 within a few seconds (8 s) — a source left open would keep it running. And a
// process the agent has no entry for, or with no agent at its socket, is told why it waits.
//
// Three agents of one in-process server stand for three hosts: "a" serves spiffe://example.org/server
// and "b" spiffe://example.org/client to this uid; "c" serves nobody.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_WORKLOAD_API_SOCKET } from '@tessera/spiffe';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { type RunResult, runCommand } from './tessera-process.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXAMPLES = join(ROOT, 'packages/spiffe/examples');
const quiet = createLogger({ level: 'error', write: () => undefined });
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
/**
 * What "within a few seconds" means for one example process, start to exit (~1.5 s alone; room for
 * a loaded machine). Under the examples' 10 s readyTimeoutMs, so one that only ends by giving up fails.
 */
const FEW_SECONDS_MS = 8000;

/** This environment without SPIFFE_ENDPOINT_SOCKET, plus `socket` as it when given. */
function envWith(socket: string | undefined): NodeJS.ProcessEnv {
  const { SPIFFE_ENDPOINT_SOCKET: _, ...rest } = process.env;
  return socket === undefined ? rest : { ...rest, SPIFFE_ENDPOINT_SOCKET: `unix://${socket}` };
}

/** Runs `node <args>` from the repository root to its exit (killed after 20 s); with how long it ran. */
async function node(args: string[], socket: string | undefined): Promise<RunResult & { ms: number }> {
  const start = Date.now();
  const r = await runCommand(process.execPath, args, { cwd: ROOT, env: envWith(socket), timeoutMs: 20_000 });
  return { ...r, ms: Date.now() - start };
}

function exitedFast(r: RunResult & { ms: number }, what: string): void {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  assert.ok(r.ms < FEW_SECONDS_MS, `${what} took ${r.ms} ms to exit (limit ${FEW_SECONDS_MS} ms)`);
}

describe('the spiffe library README examples, against a real agent', () => {
  let tmp: TempDir;
  let server: RunningServer;
  const agents: Record<'a' | 'b' | 'c', RunningAgent | undefined> = {
    a: undefined,
    b: undefined,
    c: undefined,
  };
  const socket = (host: 'a' | 'b' | 'c'): string => {
    const agent = agents[host];
    assert.ok(agent !== undefined);
    return agent.socketPath;
  };

  before(async () => {
    tmp = await makeTempDir('spiffe-examples-');
    server = await startTestServer(tmp.path);
    const serves = { a: 'spiffe://example.org/server', b: 'spiffe://example.org/client', c: undefined };
    for (const host of ['a', 'b', 'c'] as const) {
      await server.datastore.createJoinToken({
        token: `spiffe-examples-${host}`,
        expiresAt: new Date(Date.now() + 60_000),
        agentName: `host-${host}`,
      });
      const spiffeId = serves[host];
      if (spiffeId !== undefined)
        await server.datastore.createEntry({
          spiffeId,
          parentId: `spiffe://example.org/tessera/agent/join_token/host-${host}`,
          selectors: [{ type: 'unix', value: `uid:${uid}` }],
        });
      mkdirSync(join(tmp.path, host));
      agents[host] = await startTestAgent(server, join(tmp.path, host), `spiffe-examples-${host}`, quiet);
    }
  });

  after(async () => {
    for (const agent of Object.values(agents)) await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  it('x509-svid.mjs prints its SPIFFE ID, expiry and bundle, and exits 0 within a few seconds', async () => {
    const r = await node([join(EXAMPLES, 'x509-svid.mjs')], socket('b'));
    exitedFast(r, 'x509-svid.mjs');
    assert.match(
      r.stdout,
      /^SPIFFE ID: spiffe:\/\/example\.org\/client\nexpires: {3}\d{4}-\d\d-\d\dT[\d:.]+Z\nbundle: {4}1 root\(s\) for example\.org\n$/,
    );
    assert.equal(r.stderr, '');
  });

  it('jwt-svid.mjs fetches a JWT-SVID for "reports", validates it with the JWT bundles, shows "billing" refusing it, and exits 0', async () => {
    const r = await node([join(EXAMPLES, 'jwt-svid.mjs')], socket('b'));
    exitedFast(r, 'jwt-svid.mjs');
    assert.match(
      r.stdout,
      /^token for spiffe:\/\/example\.org\/client, audience reports, expires \d{4}-\d\d-\d\dT[\d:.]+Z\n/,
    );
    assert.match(r.stdout, /\nreports accepts it: the caller is spiffe:\/\/example\.org\/client\n/);
    assert.match(
      r.stdout,
      /\nbilling refuses it: jwtsvid: expected audience in \["billing"\] \(audience=\["reports"\]\)\n$/,
    );
    assert.equal(r.stderr, '');
  });

  it('mtls/server.mjs on host a answers mtls/client.mjs on host b; the client exits 0 at once, the server on SIGTERM', async () => {
    const srv = spawn(process.execPath, [join(EXAMPLES, 'mtls/server.mjs')], {
      cwd: ROOT,
      env: envWith(socket('a')),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    srv.stdout.setEncoding('utf8');
    srv.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    const exited = new Promise<number | null>((resolve) => srv.on('exit', (code) => resolve(code)));
    try {
      const port = await new Promise<string>((resolve, reject) => {
        srv.stdout.on('data', (d: string) => {
          out += d;
          const m = /server: listening on (\d+)\n/.exec(out);
          if (m !== null) resolve(m[1] as string);
        });
        exited.then((code) =>
          reject(new Error(`server.mjs exited ${code} before listening:\n${out}\n${err}`)),
        );
      });
      assert.match(out, /^server: my SPIFFE ID is spiffe:\/\/example\.org\/server\n/);
      const client = await node([join(EXAMPLES, 'mtls/client.mjs'), port], socket('b'));
      exitedFast(client, 'mtls/client.mjs');
      assert.equal(client.stdout, 'client spiffe://example.org/client: hello spiffe://example.org/client\n');
      assert.equal(client.stderr, '');
      const start = Date.now();
      srv.kill('SIGTERM');
      assert.equal(await exited, 0, err);
      assert.ok(
        Date.now() - start < FEW_SECONDS_MS,
        `server.mjs took ${Date.now() - start} ms to exit on SIGTERM`,
      );
    } finally {
      srv.kill('SIGKILL');
    }
  });

  /** Sources with a 1.5 s readyTimeoutMs, one X.509 and one JWT; prints each outcome as a JSON line. */
  const WAITING = `
import { JwtSource, X509Source } from '@tessera/spiffe';
const outcomes = await Promise.allSettled([
  X509Source.create({ readyTimeoutMs: 1500 }),
  JwtSource.create({ readyTimeoutMs: 1500 }),
]);
for (const o of outcomes) {
  if (o.status === 'fulfilled') { console.log(JSON.stringify({ ready: true })); await o.value.close(); }
  else console.log(JSON.stringify({ code: o.reason.code, message: o.reason.message }));
}
`;

  /** The SpiffeWarning lines of a process's stderr, without Node's "(node:PID) [CODE]" prefix. */
  const warnings = (stderr: string): string[] =>
    [...stderr.matchAll(/^\(node:\d+\) \[(\w+)\] SpiffeWarning: (.*)$/gm)].map((m) => `[${m[1]}] ${m[2]}`);

  it('a process the agent has no entry for is told so while it waits (once), and readyTimeoutMs gives up with ERR_SOURCE_TIMEOUT and the reason', async () => {
    const address = `unix://${socket('c')}`;
    const r = await node(['--input-type=module', '-e', WAITING], socket('c'));
    assert.equal(r.code, 0, r.stderr);
    const why = (op: string) =>
      `workloadapi: ${op}: no identity: the Workload API at ${address} issued no identity to this process (uid ${uid}, gid ${gid}) (PermissionDenied: no identity issued); register an entry whose selectors match this process (e.g. unix:uid:${uid}), or run it as the user an entry names`;
    assert.deepEqual(warnings(r.stderr).sort(), [
      `[ERR_WORKLOADAPI_PERMISSION_DENIED] jwtsource: waiting for JWT bundles: ${why('watch JWT bundles')}`,
      `[ERR_WORKLOADAPI_PERMISSION_DENIED] x509source: waiting for an X509-SVID: ${why('watch X.509 context')}`,
    ]);
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
      [
        {
          code: 'ERR_SOURCE_TIMEOUT',
          message: `x509source: gave up waiting for an X509-SVID after 1500 ms (readyTimeoutMs): ${why('watch X.509 context')}`,
        },
        {
          code: 'ERR_SOURCE_TIMEOUT',
          message: `jwtsource: gave up waiting for JWT bundles after 1500 ms (readyTimeoutMs): ${why('watch JWT bundles')}`,
        },
      ],
    );
    assert.ok(r.ms < FEW_SECONDS_MS, `took ${r.ms} ms`);
  });

  it('with no SPIFFE_ENDPOINT_SOCKET the sources look at the agent default socket and, with none there, say so', async (t) => {
    if (existsSync(DEFAULT_WORKLOAD_API_SOCKET)) {
      t.skip(`${DEFAULT_WORKLOAD_API_SOCKET} exists on this machine`);
      return;
    }
    const r = await node(['--input-type=module', '-e', WAITING], undefined);
    assert.equal(r.code, 0, r.stderr);
    const why = (op: string) =>
      `workloadapi: ${op}: no Workload API socket at ${DEFAULT_WORKLOAD_API_SOCKET} (unix://${DEFAULT_WORKLOAD_API_SOCKET}, from the default; SPIFFE_ENDPOINT_SOCKET is not set): is the agent running, and is this its socket_path?`;
    assert.deepEqual(warnings(r.stderr).sort(), [
      `[ERR_WORKLOADAPI_UNAVAILABLE] jwtsource: waiting for JWT bundles: ${why('watch JWT bundles')}`,
      `[ERR_WORKLOADAPI_UNAVAILABLE] x509source: waiting for an X509-SVID: ${why('watch X.509 context')}`,
    ]);
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).code),
      ['ERR_SOURCE_TIMEOUT', 'ERR_SOURCE_TIMEOUT'],
    );
  });
});
