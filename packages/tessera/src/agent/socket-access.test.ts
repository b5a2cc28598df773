// Who can reach the agent's socket, with real processes: a server and agents started as
// `tessera server run` and `tessera agent run` start them (in this process), their sockets at the
// default paths moved under a temporary root (/run is the host's), and workloads spawned as uid
// 65534 speaking the Workload API through the spiffe library. With the defaults, in either start
// order, any user reaches the agent and no one but root reaches the admin socket; a socket under a
// directory closed to others is warned about, naming the directory, its mode and the fix.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { DEFAULT_ADMIN_SOCKET } from '../common/default-paths.js';
import { createLogger } from '../common/log.js';
import { parseServerConfig } from '../server/config.js';
import { type RunningServer, startServer } from '../server/run.js';
import { parseAgentConfig } from './config.js';
import { type RunningAgent, startAgent } from './run.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const LIBRARY = import.meta.resolve('@tessera/spiffe');
/** The agent's default socket_path, from its configuration schema. */
const DEFAULT_AGENT_SOCKET = parseAgentConfig(
  'trust_domain: example.org\nserver_address: 127.0.0.1\n',
).socket_path;
const quiet = createLogger({ level: 'error', write: () => undefined });

/** Runs `node --input-type=module -e script args…` as uid and gid 65534; resolves with its last stdout line as JSON. */
async function asNobody(script: string, ...args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], {
    uid: NOBODY,
    gid: NOBODY,
    cwd: '/',
    env: {},
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, `the uid-${NOBODY} process failed: ${err}`);
  return JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
}

/** A workload as uid 65534: its X.509 context's SPIFFE IDs from the agent at `socket`, or the library's error. */
const fetchAsNobody = (socket: string) =>
  asNobody(
    `const { createWorkloadApiClient } = await import(process.argv[1]);
     const c = createWorkloadApiClient({ address: 'unix://' + process.argv[2] });
     try {
       const ctx = await c.fetchX509Context();
       console.log(JSON.stringify({ ids: ctx.svids.map((s) => s.id.toString()) }));
     } catch (err) {
       console.log(JSON.stringify({ code: err.code, error: err.message }));
     } finally { c.close(); }`,
    LIBRARY,
    socket,
  );

/** connect(2) to `socket` as uid 65534: 'connected' or the errno code. */
const connectAsNobody = async (socket: string) =>
  (
    await asNobody(
      `import net from 'node:net';
       const s = net.connect(process.argv[1]);
       s.on('connect', () => { console.log(JSON.stringify({ r: 'connected' })); s.destroy(); });
       s.on('error', (e) => console.log(JSON.stringify({ r: e.code })));`,
      socket,
    )
  ).r;

const mode = (path: string) => `0${(statSync(path).mode & 0o777).toString(8)}`;

describe('the agent socket and the admin socket, as other users see them', {
  skip: isRoot ? false : `needs root to run workloads as uid ${NOBODY}`,
}, () => {
  let tmp: TempDir;
  const servers: RunningServer[] = [];
  const agents: RunningAgent[] = [];
  let first: RunningServer;
  let tokens = 0;

  const serverAt = async (name: string, adminSocket: string) => {
    const s = await startServer(
      parseServerConfig(
        [
          'trust_domain: example.org',
          `data_dir: ${tmp.path}/${name}`,
          'agent_api: { address: 127.0.0.1, port: 0 }',
          'health: { port: 0 }',
          `admin_socket: ${adminSocket}`,
        ].join('\n'),
      ),
      { logger: quiet },
    );
    servers.push(s);
    return s;
  };

  /** An agent of `first` on `socket`, entitled to give uid 65534 spiffe://example.org/nobody-<name>; its warnings in `warnings`. */
  const agentAt = async (name: string, socket: string, warnings: string[] = []) => {
    const token = `socket-access-token-${name}-${tokens++}`;
    await first.datastore.createJoinToken({
      token,
      expiresAt: new Date(Date.now() + 60_000),
      agentName: name,
    });
    await first.datastore.createEntry({
      spiffeId: `spiffe://example.org/nobody-${name}`,
      parentId: `spiffe://example.org/tessera/agent/join_token/${name}`,
      selectors: [{ type: 'unix', value: `uid:${NOBODY}` }],
    });
    const a = await startAgent(
      parseAgentConfig(
        [
          'trust_domain: example.org',
          'server_address: 127.0.0.1',
          `server_port: ${first.agentApiPort}`,
          'insecure_bootstrap: true',
          `socket_path: ${socket}`,
          `data_dir: ${tmp.path}/agent-${name}`,
          'health: { port: 0 }',
        ].join('\n'),
      ),
      { joinToken: token, logger: createLogger({ level: 'warn', write: (l) => warnings.push(l) }) },
    );
    agents.push(a);
    return a;
  };

  before(async () => {
    tmp = await makeTempDir('sock-');
    chmodSync(tmp.path, 0o755); // the temp root stands for /: others may pass
  });
  after(async () => {
    for (const a of agents) await a.stop();
    for (const s of servers) await s.stop();
    await tmp?.cleanup();
  });

  it('server first: the admin socket gets a 0700 directory of its own, /run/tessera stays 0755, and uid 65534 reaches the agent but not the server', async () => {
    assert.equal(DEFAULT_AGENT_SOCKET, '/run/tessera/agent.sock');
    const root = join(tmp.path, 'a');
    first = await serverAt('server-a', `${root}${DEFAULT_ADMIN_SOCKET}`);
    const warnings: string[] = [];
    const agent = await agentAt('a', `${root}${DEFAULT_AGENT_SOCKET}`, warnings);
    assert.equal(mode(join(root, 'run')), '0755');
    assert.equal(mode(join(root, 'run/tessera')), '0755');
    assert.equal(mode(join(root, 'run/tessera/server')), '0700');
    assert.deepEqual(await fetchAsNobody(agent.socketPath), { ids: ['spiffe://example.org/nobody-a'] });
    assert.equal(await connectAsNobody(`${root}${DEFAULT_ADMIN_SOCKET}`), 'EACCES');
    assert.deepEqual(
      warnings.filter((l) => /agent socket/.test(l)),
      [],
      'no warning when others can reach the socket',
    );
  });

  it('agent first: the server started after it leaves the agent socket open to uid 65534', async () => {
    const root = join(tmp.path, 'b');
    const warnings: string[] = [];
    const agent = await agentAt('b', `${root}${DEFAULT_AGENT_SOCKET}`, warnings);
    await serverAt('server-b', `${root}${DEFAULT_ADMIN_SOCKET}`);
    assert.equal(mode(join(root, 'run/tessera')), '0755');
    assert.equal(mode(join(root, 'run/tessera/server')), '0700');
    assert.deepEqual(await fetchAsNobody(agent.socketPath), { ids: ['spiffe://example.org/nobody-b'] });
    assert.equal(await connectAsNobody(`${root}${DEFAULT_ADMIN_SOCKET}`), 'EACCES');
    assert.deepEqual(
      warnings.filter((l) => /agent socket/.test(l)),
      [],
    );
  });

  it('warns at start, naming the closed directory, its mode and the fix, when other users cannot reach the socket', async () => {
    // A 0700 /run/tessera, as an older server left it.
    const closed = join(tmp.path, 'c', 'run', 'tessera');
    mkdirSync(closed, { recursive: true });
    chmodSync(join(tmp.path, 'c'), 0o755);
    chmodSync(join(tmp.path, 'c', 'run'), 0o755);
    chmodSync(closed, 0o700);
    const socket = join(closed, 'agent.sock');
    const warnings: string[] = [];
    const agent = await agentAt('c', socket, warnings);
    const warned = warnings.filter((l) => /agent socket/.test(l));
    assert.equal(warned.length, 1, warnings.join('\n'));
    assert.ok(
      warned[0]?.includes(
        `WARN  agent socket ${socket}: processes of other users cannot connect to it: ${closed} is 0700 (owner uid 0): others may not enter it. ` +
          'Their Workload API calls fail with "permission denied"; only root, and users the owner and group bits let through, can connect. ' +
          `Run chmod o+x ${closed}, or set socket_path to a path every directory of which others may enter (the default is /run/tessera/agent.sock)`,
      ),
      warned[0],
    );
    assert.ok(warned[0]?.endsWith(`socket=${socket} closed="${closed}=0700"`), warned[0]);
    // What the warning says is so: the workload is refused by the kernel ...
    const refused = await fetchAsNobody(agent.socketPath);
    assert.equal(refused.code, 'ERR_WORKLOADAPI_UNAVAILABLE', JSON.stringify(refused));
    assert.match(String(refused.error), /permission denied|EACCES/i);
    // ... and the fix it gives lets it in.
    chmodSync(closed, 0o711);
    assert.deepEqual(await fetchAsNobody(agent.socketPath), { ids: ['spiffe://example.org/nobody-c'] });
  });
});
