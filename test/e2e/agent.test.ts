// The agent as operators run it: a real server and a real agent process, workloads as real
// processes under different uids, identified by the kernel (SO_PEERCRED), the Workload API over a
// real Unix socket, spoken by the spiffe library.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { createWorkloadApiClient, type X509Context } from '@tessera/spiffe';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import {
  runCommand,
  spawnTessera,
  spawnTesseraWithEnv,
  TESSERA_BIN,
  type TesseraProcess,
  waitForLog,
} from './tessera-process.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const NOBODY = 65534;
const OTHER = 65533;
const isRoot = process.getuid?.() === 0;

/** Runs a command to completion from the repository root, optionally as `uid`, with extra environment. */
function exec(
  args: string[],
  opts: { uid?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCommand(args[0] as string, args.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    ...(opts.uid === undefined ? {} : { uid: opts.uid }),
  });
}

/** A workload process (as `uid`) that fetches its X.509 context once and prints the SPIFFE IDs, or the error. */
const FETCH = `
import { createWorkloadApiClient } from '@tessera/spiffe';
const c = createWorkloadApiClient();
const want = Number(process.env.WANT ?? 0);
try {
  if (want === 0) {
    const ctx = await c.fetchX509Context();
    console.log(JSON.stringify({ ids: ctx.svids.map((s) => s.id.toString()) }));
  } else {
    // Watch until the context holds WANT SVIDs (an update pushed by the agent), then print it.
    const ac = new AbortController();
    await c.watchX509Context({ onUpdate: (ctx) => {
      if (ctx.svids.length < want) return;
      console.log(JSON.stringify({ ids: ctx.svids.map((s) => s.id.toString()) }));
      ac.abort();
    } }, ac.signal).catch(() => undefined);
  }
} catch (err) {
  console.log(JSON.stringify({ error: err.message, code: err.cause?.code }));
} finally { c.close(); }
`;

/** A workload that watches its X.509 context, printing each update, and exits on the first error after one. */
const WATCH = `
import { createWorkloadApiClient } from '@tessera/spiffe';
const c = createWorkloadApiClient({ backoff: { initialMs: 50, maxMs: 200 } });
const ac = new AbortController();
let seen = false;
await c.watchX509Context({
  onUpdate: (ctx) => { seen = true; console.log(JSON.stringify({ ids: ctx.svids.map((s) => s.id.toString()) })); },
  // Before the first update, a refusal only means the new entry has not reached the agent yet.
  onError: (err) => { if (!seen) return; console.log(JSON.stringify({ error: err.message, code: err.cause?.code })); ac.abort(); },
}, ac.signal).catch(() => undefined);
c.close();
`;

describe('tessera agent', { skip: isRoot ? false : 'needs root: workloads run as other uids' }, () => {
  let tmp: TempDir;
  let server: TesseraProcess;
  let agent: TesseraProcess;
  let socket: string;
  let agentConfig: string;
  let serverSocket: string;
  let serverConfig: string;
  const cli = (...args: string[]) => exec([process.execPath, TESSERA_BIN, ...args, '--socket', serverSocket]);
  const json = async (...args: string[]) => {
    const r = await cli(...args, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const fetchAs = async (uid: number | undefined, want = 0) => {
    const r = await exec([process.execPath, '--input-type=module', '-e', FETCH], {
      ...(uid === undefined ? {} : { uid }),
      env: { SPIFFE_ENDPOINT_SOCKET: `unix://${socket}`, WANT: String(want) },
    });
    return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as {
      ids?: string[];
      error?: string;
      code?: number;
    };
  };

  before(async () => {
    tmp = await makeTempDir('agent-e2e-');
    chmodSync(tmp.path, 0o755);
    const srvDir = join(tmp.path, 'server');
    mkdirSync(srvDir, { recursive: true });
    serverSocket = join(srvDir, 'admin.sock');
    writeFileSync(
      join(srvDir, 'server.yaml'),
      `trust_domain: example.org\ndata_dir: ${srvDir}/data\nadmin_socket: ${serverSocket}\nagent_api: { address: 127.0.0.1, port: ${await freePort()} }\nhealth: { port: 0 }\nx509_svid_ttl: 8s\n`,
    );
    serverConfig = join(srvDir, 'server.yaml');
    server = spawnTessera('server', 'run', '--config', serverConfig);
    const [, port] = await waitForLog(server, /server started .*agent_api=127\.0\.0\.1:(\d+)/);
    const token = (await json('token', 'generate', '--agent-name', 'node-1')).token as string;
    const bundle = await cli('bundle', 'show');
    const agentDir = join(tmp.path, 'agent');
    mkdirSync(agentDir, { recursive: true });
    writeFileSync(join(agentDir, 'bundle.pem'), bundle.stdout);
    socket = join(tmp.path, 'run', 'agent.sock');
    agentConfig = join(agentDir, 'agent.yaml');
    writeFileSync(
      agentConfig,
      `trust_domain: example.org\nserver_address: 127.0.0.1\nserver_port: ${port}\ntrust_bundle_path: ${agentDir}/bundle.pem\nsocket_path: ${socket}\ndata_dir: ${agentDir}/data\nhealth: { port: 0 }\n`,
    );
    const parent = 'spiffe://example.org/tessera/agent/join_token/node-1';
    await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/nobody',
      '--parent-id',
      parent,
      '--selector',
      `unix:uid:${NOBODY}`,
    );
    await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/root',
      '--parent-id',
      parent,
      '--selector',
      'unix:uid:0',
    );
    agent = spawnTessera('agent', 'run', '--config', agentConfig, '--join-token', token);
    await waitForLog(agent, /agent started/);
  });

  after(async () => {
    agent?.child.kill('SIGTERM');
    server?.child.kill('SIGTERM');
    await Promise.all([agent?.exit, server?.exit]);
    await tmp?.cleanup();
  });

  it('gives each uid its own SVID, identified by the kernel, and nothing to a process that matches no entry', async () => {
    const [root, nobody, other] = await Promise.all([fetchAs(undefined), fetchAs(NOBODY), fetchAs(OTHER)]);
    assert.deepEqual(root.ids, ['spiffe://example.org/root'], JSON.stringify(root));
    assert.deepEqual(nobody.ids, ['spiffe://example.org/nobody'], JSON.stringify(nobody));
    assert.equal(other.ids, undefined);
    assert.match(other.error ?? '', /no identity|permission/i);
  });

  it('pushes a new entry to an open stream within seconds, and drops a deleted one', async () => {
    const client = createWorkloadApiClient({ address: `unix://${socket}` });
    const seen: X509Context[] = [];
    let wake: (() => void) | undefined;
    const controller = new AbortController();
    const errors: string[] = [];
    const watching = client.watchX509Context(
      {
        onUpdate: (ctx) => {
          seen.push(ctx);
          wake?.();
        },
        onError: (err) => {
          errors.push(err.message);
          wake?.();
        },
      },
      controller.signal,
    );
    const until = async (pred: () => boolean) => {
      while (!pred()) await new Promise<void>((r) => (wake = r));
    };
    await until(() => seen.length > 0);
    const created = await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/root-2',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/node-1',
      '--selector',
      'unix:uid:0',
    );
    const started = Date.now();
    await until(() =>
      seen.some((c) => c.svids.some((s) => s.id.toString() === 'spiffe://example.org/root-2')),
    );
    assert.ok(Date.now() - started < 5000);
    assert.deepEqual(
      seen.at(-1)?.svids.map((s) => s.id.toString()),
      ['spiffe://example.org/root', 'spiffe://example.org/root-2'],
    );
    await cli('entry', 'delete', '--entry-id', created.results[0].entry.id);
    await until(() => seen.at(-1)?.svids.length === 1);
    controller.abort();
    await watching.catch(() => undefined);
    client.close();
  });

  it('serves JWT-SVIDs, X.509 and JWT bundles, and validates tokens, as the spiffe library sees them', async () => {
    const client = createWorkloadApiClient({ address: `unix://${socket}` });
    try {
      const jwt = await client.fetchJwtSvid({ audience: ['payments', 'ledger'] });
      assert.equal(jwt.id.toString(), 'spiffe://example.org/root');
      assert.deepEqual([...jwt.audience].sort(), ['ledger', 'payments']);
      const again = await client.fetchJwtSvid({ audience: ['ledger', 'payments'] });
      assert.equal(again.marshal(), jwt.marshal(), 'cached until half its life');
      const validated = await client.validateJwtSvid(jwt.marshal(), 'payments');
      assert.equal(validated.id.toString(), 'spiffe://example.org/root');
      await assert.rejects(client.validateJwtSvid(jwt.marshal(), 'someone-else'), /audience/);
      const x509 = await client.fetchX509Bundles();
      assert.equal(x509.list().length, 1);
      const jwtBundles = await client.fetchJwtBundles();
      assert.ok(jwtBundles.list()[0]?.authorities.size ?? 0 >= 1);
    } finally {
      client.close();
    }
  });

  it('refuses a call without the security header with INVALID_ARGUMENT', async () => {
    const raw = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      const call = raw.makeServerStreamRequest(
        '/SpiffeWorkloadAPI/FetchX509SVID',
        () => Buffer.alloc(0),
        (b: Buffer) => b,
        {},
      );
      call.on('error', resolve);
      call.on('data', () => undefined);
    });
    raw.close();
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /security header missing/);
  });

  it('rotates a workload SVID at about half its life (TTL 8 s) on an open stream', async () => {
    const client = createWorkloadApiClient({ address: `unix://${socket}` });
    const serials: string[] = [];
    let wake: (() => void) | undefined;
    const controller = new AbortController();
    const watching = client.watchX509Context(
      {
        onUpdate: (ctx) => {
          const serial = ctx.svids[0]?.certificates[0]?.serialNumber;
          if (serial !== undefined && serials.at(-1) !== serial) serials.push(serial);
          wake?.();
        },
      },
      controller.signal,
    );
    while (serials.length < 2) await new Promise<void>((r) => (wake = r));
    controller.abort();
    await watching.catch(() => undefined);
    client.close();
    assert.notEqual(serials[0], serials[1]);
  });

  it('keeps serving cached SVIDs while the server is down, and resumes when it is back', async () => {
    server.child.kill('SIGTERM');
    assert.equal(await server.exit, 0, server.stderr());
    await waitForLog(agent, /lost the push stream/);
    const [, healthPort] = agent.stderr().match(/agent started .*health=127\.0\.0\.1:(\d+)/) ?? [];
    const metrics = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
    assert.match(metrics, /^tessera_agent_server_connected 0$/m, 'the outage shows in the metrics');
    assert.match(metrics, /^tessera_agent_sync_errors_total [1-9]/m);
    const during = await fetchAs(NOBODY);
    assert.deepEqual(during.ids, ['spiffe://example.org/nobody'], JSON.stringify(during));
    server = spawnTessera('server', 'run', '--config', serverConfig);
    await waitForLog(server, /server started/);
    await waitForLog(agent, /connected to the server[\s\S]*connected to the server/);
    const created = await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/nobody-2',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/node-1',
      '--selector',
      `unix:uid:${NOBODY}`,
    );
    const after = await fetchAs(NOBODY, 2);
    assert.deepEqual(after.ids, ['spiffe://example.org/nobody', 'spiffe://example.org/nobody-2']);
    await cli('entry', 'delete', '--entry-id', created.results[0].entry.id);
  });

  it('ends the stream of a caller that lost its last entry with PERMISSION_DENIED', async () => {
    const created = await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/other',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/node-1',
      '--selector',
      `unix:uid:${OTHER}`,
    );
    const child = spawn(process.execPath, ['--input-type=module', '-e', WATCH], {
      cwd: ROOT,
      uid: OTHER,
      gid: OTHER,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${socket}` },
    });
    const lines: { ids?: string[]; code?: number }[] = [];
    let wake: (() => void) | undefined;
    let buf = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      for (const p of parts) if (p.trim() !== '') lines.push(JSON.parse(p));
      wake?.();
    });
    const exited = new Promise((r) => child.once('exit', r));
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    assert.deepEqual(lines[0]?.ids, ['spiffe://example.org/other']);
    await cli('entry', 'delete', '--entry-id', created.results[0].entry.id);
    while (!lines.some((l) => l.code !== undefined)) await new Promise<void>((r) => (wake = r));
    assert.equal(lines.find((l) => l.code !== undefined)?.code, grpc.status.PERMISSION_DENIED);
    await exited;
  });

  it('tessera api fetch|validate work against the agent', async () => {
    const x509 = await exec([
      process.execPath,
      TESSERA_BIN,
      'api',
      'fetch',
      'x509',
      '--socket',
      socket,
      '--output',
      'json',
    ]);
    assert.equal(x509.code, 0, x509.stderr);
    assert.deepEqual(
      JSON.parse(x509.stdout).svids.map((s: { spiffe_id: string }) => s.spiffe_id),
      ['spiffe://example.org/root'],
    );
    const jwt = await exec([
      process.execPath,
      TESSERA_BIN,
      'api',
      'fetch',
      'jwt',
      '--audience',
      'aud-1',
      '--socket',
      socket,
      '--output',
      'json',
    ]);
    assert.equal(jwt.code, 0, jwt.stderr);
    const token = JSON.parse(jwt.stdout).svids[0].token as string;
    const ok = await exec([
      process.execPath,
      TESSERA_BIN,
      'api',
      'validate',
      '--audience',
      'aud-1',
      '--token',
      token,
      '--socket',
      socket,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /SVID is valid/);
    const bad = await exec([
      process.execPath,
      TESSERA_BIN,
      'api',
      'validate',
      '--audience',
      'other',
      '--token',
      token,
      '--socket',
      socket,
    ]);
    assert.equal(bad.code, 1);
  });

  it('resumes after a restart without a join token', async () => {
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exit, 0, agent.stderr());
    agent = spawnTessera('agent', 'run', '--config', agentConfig);
    await waitForLog(agent, /resuming with the saved agent SVID[\s\S]*agent started/);
    const nobody = await fetchAs(NOBODY);
    assert.deepEqual(nobody.ids, ['spiffe://example.org/nobody'], JSON.stringify(nobody));
  });

  it('stops serving identities when the agent is banned', async () => {
    const r = await cli(
      'agent',
      'ban',
      '--spiffe-id',
      'spiffe://example.org/tessera/agent/join_token/node-1',
    );
    assert.equal(r.code, 0, r.stderr);
    await waitForLog(agent, /no identity is served any more/);
    const root = await fetchAs(undefined);
    assert.equal(root.ids, undefined);
    // Told that the agent was banned and what the operator does, not to register an entry.
    const id = 'spiffe://example.org/tessera/agent/join_token/node-1';
    assert.match(
      root.error ?? '',
      new RegExp(
        `refused this process \\(uid 0, gid 0\\): the server banned this agent \\(${id}\\): it serves no identity to any workload until an operator evicts it \\(tessera agent evict --spiffe-id ${id}\\) and it attests again$`,
      ),
    );
    assert.doesNotMatch(agent.stderr(), /lost the push stream/);
  });

  it('evicted after the ban and restarted without a new token: exits 1 saying it cannot attest again and how to give it a token', async () => {
    const id = 'spiffe://example.org/tessera/agent/join_token/node-1';
    const r = await cli('agent', 'evict', '--spiffe-id', id);
    assert.equal(r.code, 0, r.stderr);
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exit, 0, agent.stderr());
    // It resumes with its saved SVID, is told it was evicted, and has no token to attest again with.
    agent = spawnTessera('agent', 'run', '--config', agentConfig);
    assert.equal(await agent.exit, 1, agent.stderr());
    assert.match(
      agent.stderr(),
      new RegExp(
        `\\ntessera agent: agent: the server evicted this agent \\(${id}\\) and it cannot attest again: the agent is not attested yet: give it a join token \\(--join-token, node_attestor\\.join_token\\.token or token_file\\)\\. A join token is used once: generate a new one on the server \\(tessera token generate\\) and start the agent with it \\(tessera agent run --join-token <token>\\)\\n$`,
      ),
    );
    assert.doesNotMatch(agent.stderr(), /\n\s+at /);
  });
});

describe('tessera agent run: startup errors', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('agent-start-');
  });
  after(() => tmp.cleanup());

  const start = async (yaml: string, ...args: string[]) => startWith({}, yaml, ...args);
  const startWith = async (env: NodeJS.ProcessEnv, yaml: string, ...args: string[]) => {
    const file = join(tmp.path, `agent-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, yaml);
    const p = spawnTesseraWithEnv(env, 'agent', 'run', '--config', file, ...args);
    const code = await p.exit;
    return { code, stderr: p.stderr() };
  };
  const base = (name: string) =>
    `trust_domain: example.org\nserver_address: 127.0.0.1\nserver_port: 1\nsocket_path: ${tmp.path}/${name}.sock\ndata_dir: ${tmp.path}/${name}\nhealth: { port: 0 }\n`;

  it('says how to attest when there is no token, and how to trust the server when there is no bundle', async () => {
    const noToken = await start(`${base('a')}insecure_bootstrap: true\n`);
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /tessera agent: agent: the agent is not attested yet: give it a join token/);
    const noTrust = await start(base('b'), '--join-token', 'x'.repeat(20));
    assert.equal(noTrust.code, 1);
    assert.match(
      noTrust.stderr,
      /no way to trust the server: set trust_bundle_path, trust_bundle_url, or \(labs only\) insecure_bootstrap: true/,
    );
    const badFile = await start(
      `${base('c')}trust_bundle_path: ${tmp.path}/missing.pem\n`,
      '--join-token',
      'x'.repeat(20),
    );
    assert.equal(badFile.code, 1);
    assert.match(badFile.stderr, /cannot read trust_bundle_path .*missing\.pem: ENOENT/);
    const unreachable = await start(`${base('d')}insecure_bootstrap: true\n`, '--join-token', 'x'.repeat(20));
    assert.equal(unreachable.code, 1);
    assert.match(
      unreachable.stderr,
      /node attestation \(join_token\) with the server at 127\.0\.0\.1:1 failed/,
    );
    assert.match(unreachable.stderr, /INSECURE BOOTSTRAP/);
    const noTokenFile = await start(
      `${base('e')}insecure_bootstrap: true\nnode_attestor: { join_token: { token_file: ${tmp.path}/no-token } }\n`,
    );
    assert.equal(noTokenFile.code, 1);
    assert.match(noTokenFile.stderr, /cannot read token_file .*no-token/);
    // A token from the file is used (and fails on the unreachable server, not before).
    writeFileSync(join(tmp.path, 'token'), `${'y'.repeat(20)}\n`);
    const fromFile = await start(
      `${base('f')}insecure_bootstrap: true\nnode_attestor: { join_token: { token_file: ${tmp.path}/token } }\n`,
    );
    assert.match(fromFile.stderr, /node attestation \(join_token\) with the server at 127\.0\.0\.1:1 failed/);
    for (const r of [noToken, noTrust, badFile, unreachable, noTokenFile, fromFile])
      assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('fetches the bootstrap bundle from trust_bundle_url over https, trusting only the web PKI', async () => {
    const web = TestCa.create({ trustDomain: 'web.example' });
    const cert = web.issueCertificate({ uris: [], dnsNames: ['localhost'], subject: 'CN=localhost' });
    const bundlePem = TestCa.create({ trustDomain: 'example.org' }).rootPem();
    const https = createHttpsServer(
      { cert: cert.certificatesPem, key: cert.privateKey.export({ type: 'pkcs8', format: 'pem' }) },
      (_req, res) => res.end(bundlePem),
    );
    await new Promise<void>((r) => https.listen(0, '127.0.0.1', () => r()));
    const port = (https.address() as { port: number }).port;
    writeFileSync(join(tmp.path, 'web-ca.pem'), web.rootPem());
    try {
      const yaml = `${base('url')}trust_bundle_url: https://localhost:${port}/bundle.pem\n`;
      const untrusted = await start(yaml, '--join-token', 'x'.repeat(20));
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr, /cannot fetch trust_bundle_url https:\/\/localhost/);
      // Trusting the web CA, the bundle is fetched; attestation then fails on the unreachable server.
      const trusted = await startWith(
        { NODE_EXTRA_CA_CERTS: join(tmp.path, 'web-ca.pem') },
        yaml,
        '--join-token',
        'x'.repeat(20),
      );
      assert.equal(trusted.code, 1);
      assert.match(
        trusted.stderr,
        /node attestation \(join_token\) with the server at 127\.0\.0\.1:1 failed/,
      );
    } finally {
      await new Promise<void>((r) => https.close(() => r()));
    }
  });
});
