// `tessera api` as users run it: the real binary as a child process, against a fake Workload API
// on a real Unix socket, with SVIDs from the test kit's CA.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import {
  DEFAULT_WORKLOAD_API_SOCKET,
  parseJwtBundle,
  parseTrustDomain,
  parseX509SvidRaw,
  X509Bundle,
  type X509Svid,
} from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { makeTempDir, type TempDir, TestCa, TestJwtAuthority } from '@tessera/testkit';
import { parseAgentConfig } from '../agent/config.js';
import { workloadApiAddress } from './api.js';

const bin = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment of a child: ours without SPIFFE_ENDPOINT_SOCKET, plus `env`. */
function childEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { SPIFFE_ENDPOINT_SOCKET: _, ...rest } = process.env;
  return { ...rest, ...env };
}

function tessera(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: childEnv(opts.env), cwd: opts.cwd, timeout: 30_000 },
      (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr });
      },
    );
  });
}

/** `tessera api watch …` as a running child; `next()` resolves with its stdout lines one by one. */
function startWatch(args: string[]): {
  child: ChildProcess;
  next(): Promise<string>;
  stderr(): string;
  exit: Promise<Run>;
} {
  const child = spawn(process.execPath, [bin, 'api', 'watch', ...args], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const queued: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    stdout += `${line}\n`;
    const w = waiting.shift();
    if (w === undefined) queued.push(line);
    else w(line);
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exit = new Promise<Run>((resolve) =>
    child.once('close', (code, signal) =>
      resolve({ code: code ?? (signal === null ? 1 : 128), stdout, stderr }),
    ),
  );
  return {
    child,
    next: () => {
      const line = queued.shift();
      return line !== undefined ? Promise.resolve(line) : new Promise((resolve) => waiting.push(resolve));
    },
    stderr: () => stderr,
    exit,
  };
}

const ca = TestCa.create({ trustDomain: 'example.org' });
const intermediate = ca.createIntermediate();
const partner = TestCa.create({ trustDomain: 'partner.example' });
const td = parseTrustDomain('example.org');
const bundle = new X509Bundle(td, [ca.root]);
const partnerBundle = new X509Bundle(parseTrustDomain('partner.example'), [partner.root]);
const jwtAuthority = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'key-1' });
const partnerJwt = TestJwtAuthority.create({ trustDomain: 'partner.example', kid: 'p-1' });

function svid(issuer: TestCa, id: string, opts: { hint?: string; dnsNames?: string[] } = {}): X509Svid {
  const s = issuer.issueX509Svid(id, opts.dnsNames === undefined ? {} : { dnsNames: opts.dnsNames });
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, opts.hint ?? '');
}

const noStack = (r: Run) => assert.doesNotMatch(r.stderr, /\n\s+at /);

describe('tessera api', () => {
  let tmp: TempDir;
  let api: FakeWorkloadApi;
  let web: X509Svid;
  let db: X509Svid;
  let jwtRequests: { audience: string[]; spiffeId: string }[];

  before(async () => {
    tmp = await makeTempDir('api-cli-');
    api = await FakeWorkloadApi.start(join(tmp.path, 'agent.sock'));
  });
  after(async () => {
    await api.close();
    await tmp.cleanup();
  });
  beforeEach(() => {
    web = svid(ca, 'spiffe://example.org/web', { dnsNames: ['web.example.org', 'web.internal'] });
    db = svid(intermediate, 'spiffe://example.org/db', { hint: 'db' });
    api.setX509Svids(
      [
        { svid: web, bundle },
        { svid: db, bundle },
      ],
      [partnerBundle],
    );
    api.setJwtBundles([
      parseJwtBundle(td, jwtAuthority.jwks()),
      parseJwtBundle(partnerBundle.trustDomain, partnerJwt.jwks()),
    ]);
    jwtRequests = [];
    api.setJwtSvidMinter((req) => {
      jwtRequests.push({ audience: [...req.audience], spiffeId: req.spiffeId });
      const ids =
        req.spiffeId === '' ? ['spiffe://example.org/web', 'spiffe://example.org/db'] : [req.spiffeId];
      return ids.map((id) => ({ spiffeId: id, svid: jwtAuthority.sign({ sub: id, aud: req.audience }) }));
    });
    for (const m of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles', 'FetchJWTSVID'] as const)
      api.setError(m, undefined);
  });

  it('fetch x509: every SVID with its ID, hint, serial, validity and DNS names, and the bundles; no files', async () => {
    const r = await tessera(['api', 'fetch', 'x509', '--socket', api.socketPath], { cwd: tmp.path });
    assert.equal(r.code, 0, r.stderr);
    const blocks = r.stdout.split('\n\n');
    assert.match(blocks[0] ?? '', new RegExp(`^Received 2 X509-SVIDs from unix://${api.socketPath}$`));
    const webBlock = blocks[1] ?? '';
    assert.match(webBlock, /^SPIFFE ID +: spiffe:\/\/example.org\/web$/m);
    assert.match(webBlock, /^Hint +: \(none\)$/m);
    assert.match(webBlock, new RegExp(`^Serial +: ${web.leaf.serialNumber}$`, 'm'));
    assert.match(webBlock, new RegExp(`^Valid until +: ${web.expiresAt.toISOString()}$`, 'm'));
    assert.match(webBlock, /^DNS names +: web.example.org\nDNS names +: web.internal$/m);
    assert.match(webBlock, /^Intermediates +: 0$/m);
    const dbBlock = blocks[2] ?? '';
    assert.match(dbBlock, /^SPIFFE ID +: spiffe:\/\/example.org\/db$/m);
    assert.match(dbBlock, /^Hint +: db$/m);
    assert.match(dbBlock, new RegExp(`^Serial +: ${db.leaf.serialNumber}$`, 'm'));
    assert.match(dbBlock, /^DNS names +: \(none\)$/m);
    assert.match(dbBlock, /^Intermediates +: 1$/m);
    assert.match(r.stdout, /^example.org +1 +own$/m);
    assert.match(r.stdout, /^partner.example +1 +federated$/m);
    assert.deepEqual(readdirSync(tmp.path).sort(), ['agent.sock']);
  });

  it('fetch x509 --output json --write: the same facts as JSON, and the PEM files with the key 0600', async () => {
    const dir = join(tmp.path, 'out');
    const r = await tessera([
      'api',
      'fetch',
      'x509',
      '--socket',
      `unix://${api.socketPath}`,
      '--output',
      'json',
      '--write',
      dir,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.svids[0], {
      spiffe_id: 'spiffe://example.org/web',
      hint: '',
      serial: web.leaf.serialNumber,
      not_before: Math.floor(new Date(web.leaf.validFrom).getTime() / 1000),
      expires_at: Math.floor(web.expiresAt.getTime() / 1000),
      dns_names: ['web.example.org', 'web.internal'],
      intermediates: 0,
    });
    assert.equal(out.svids[1].spiffe_id, 'spiffe://example.org/db');
    assert.equal(out.svids[1].hint, 'db');
    assert.deepEqual(out.bundles, [
      { trust_domain: 'example.org', authorities: 1, federated: false },
      { trust_domain: 'partner.example', authorities: 1, federated: true },
    ]);
    const names = [
      'svid.0.pem',
      'svid.0.key',
      'svid.1.pem',
      'svid.1.key',
      'bundle.pem',
      'federated_bundle.partner.example.pem',
    ];
    assert.deepEqual(
      out.files,
      names.map((n) => join(dir, n)),
    );
    assert.equal(statSync(join(dir, 'svid.0.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'svid.1.key')).mode & 0o777, 0o600);
    // The files hold what was served: the chain leaf first, the matching key, each trust domain's roots.
    const chain = readFileSync(join(dir, 'svid.1.pem'), 'utf8');
    assert.equal(new X509Certificate(chain).serialNumber, db.leaf.serialNumber);
    assert.equal(chain.match(/BEGIN CERTIFICATE/g)?.length, 2);
    assert.equal(readFileSync(join(dir, 'svid.0.key'), 'utf8'), web.marshal().privateKey);
    assert.ok(new X509Certificate(readFileSync(join(dir, 'bundle.pem'))).raw.equals(ca.root.raw));
    assert.ok(
      new X509Certificate(readFileSync(join(dir, 'federated_bundle.partner.example.pem'))).raw.equals(
        partner.root.raw,
      ),
    );
  });

  it("the default socket is the library's, which is the agent's default socket_path: one constant", () => {
    const agentDefault = parseAgentConfig(
      'trust_domain: example.org\nserver_address: 127.0.0.1\n',
    ).socket_path;
    assert.equal(agentDefault, DEFAULT_WORKLOAD_API_SOCKET);
    assert.equal(workloadApiAddress(undefined, {}), `unix://${DEFAULT_WORKLOAD_API_SOCKET}`);
    assert.equal(
      workloadApiAddress(undefined, { SPIFFE_ENDPOINT_SOCKET: '' }),
      `unix://${DEFAULT_WORKLOAD_API_SOCKET}`,
    );
    assert.equal(
      workloadApiAddress(undefined, { SPIFFE_ENDPOINT_SOCKET: '/a b.sock' }),
      'unix:///a%20b.sock',
    );
    assert.equal(
      workloadApiAddress('tcp://127.0.0.1:1', { SPIFFE_ENDPOINT_SOCKET: '/a.sock' }),
      'tcp://127.0.0.1:1',
    );
  });

  it('finds the socket in --socket (path or URI), else SPIFFE_ENDPOINT_SOCKET, else the agent default socket', async () => {
    const fromEnv = await tessera(['api', 'fetch', 'x509', '--output', 'json'], {
      env: { SPIFFE_ENDPOINT_SOCKET: `unix://${api.socketPath}` },
    });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.equal(JSON.parse(fromEnv.stdout).svids.length, 2);
    const relative = await tessera(['api', 'fetch', 'x509', '--socket', 'agent.sock', '--output', 'json'], {
      cwd: tmp.path,
      env: { SPIFFE_ENDPOINT_SOCKET: 'unix:///nonexistent/agent.sock' },
    });
    assert.equal(relative.code, 0, relative.stderr);
    if (!existsSync(DEFAULT_WORKLOAD_API_SOCKET)) {
      const fallback = await tessera(['api', 'fetch', 'x509']);
      assert.equal(fallback.code, 1);
      assert.equal(
        fallback.stderr,
        `tessera api fetch: no Workload API socket at ${DEFAULT_WORKLOAD_API_SOCKET}: is the agent running? (set --socket or SPIFFE_ENDPOINT_SOCKET)\n`,
      );
    }
    const bad = await tessera(['api', 'fetch', 'x509', '--socket', 'tcp://localhost:8081']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid endpoint address "tcp:\/\/localhost:8081": .*must be an IP:port/);
  });

  it("fetch jwt: the tokens for every --audience, only --spiffe-id's when given", async () => {
    const all = await tessera([
      'api',
      'fetch',
      'jwt',
      '--socket',
      api.socketPath,
      '--audience',
      'db',
      '--audience',
      'cache',
    ]);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(jwtRequests.at(-1), { audience: ['db', 'cache'], spiffeId: '' });
    assert.match(all.stdout, /^Received 2 JWT-SVIDs from /);
    assert.match(all.stdout, /^SPIFFE ID : spiffe:\/\/example.org\/web$/m);
    assert.match(all.stdout, /^Audience {2}: db, cache$/m);
    assert.match(all.stdout, /^Token {5}: eyJ[\w-]+\.[\w-]+\.[\w-]+$/m);

    const one = await tessera([
      'api',
      'fetch',
      'jwt',
      '--socket',
      api.socketPath,
      '--audience',
      'db',
      '--spiffe-id',
      'spiffe://example.org/db',
      '--output',
      'json',
    ]);
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(jwtRequests.at(-1), { audience: ['db'], spiffeId: 'spiffe://example.org/db' });
    const { svids } = JSON.parse(one.stdout);
    assert.equal(svids.length, 1);
    assert.equal(svids[0].spiffe_id, 'spiffe://example.org/db');
    assert.deepEqual(svids[0].audience, ['db']);
    assert.ok(Math.abs(svids[0].expires_at - (Date.now() / 1000 + 300)) < 60);
    const payload = JSON.parse(Buffer.from(svids[0].token.split('.')[1], 'base64url').toString());
    assert.equal(payload.sub, 'spiffe://example.org/db');

    const noAudience = await tessera(['api', 'fetch', 'jwt', '--socket', api.socketPath]);
    assert.equal(noAudience.code, 2);
    assert.match(noAudience.stderr, /--audience is required/);
    const badId = await tessera([
      'api',
      'fetch',
      'jwt',
      '--socket',
      api.socketPath,
      '--audience',
      'a',
      '--spiffe-id',
      'web',
    ]);
    assert.equal(badId.code, 2);
    assert.match(badId.stderr, /^tessera api fetch: --spiffe-id: spiffeid: /);
  });

  it('fetch bundles: X.509 and JWT authorities per trust domain', async () => {
    const text = await tessera(['api', 'fetch', 'bundles', '--socket', api.socketPath]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^Received bundles of 2 trust domains from /);
    assert.match(text.stdout, /^Trust domain +X.509 authorities +JWT authorities +JWT key IDs$/m);
    assert.match(text.stdout, /^example.org +1 +1 +key-1$/m);
    assert.match(text.stdout, /^partner.example +1 +1 +p-1$/m);
    const json = await tessera(['api', 'fetch', 'bundles', '--socket', api.socketPath, '--output', 'json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), {
      bundles: [
        { trust_domain: 'example.org', x509_authorities: 1, jwt_authorities: 1, jwt_key_ids: ['key-1'] },
        { trust_domain: 'partner.example', x509_authorities: 1, jwt_authorities: 1, jwt_key_ids: ['p-1'] },
      ],
    });
  });

  it('watch --count: one JSON line per update, a rotation included, then exits 0', async () => {
    const w = startWatch(['--socket', api.socketPath, '--output', 'json', '--count', '2']);
    const first = JSON.parse(await w.next());
    assert.equal(first.update, 1);
    assert.deepEqual(
      first.svids.map((s: { serial: string }) => s.serial),
      [web.leaf.serialNumber, db.leaf.serialNumber],
    );
    const rotated = svid(ca, 'spiffe://example.org/web');
    api.setX509Svids([{ svid: rotated, bundle: bundle.withAuthority(partner.root) }]);
    const second = JSON.parse(await w.next());
    assert.equal(second.update, 2);
    assert.deepEqual(
      second.svids.map((s: { spiffe_id: string; serial: string }) => [s.spiffe_id, s.serial]),
      [['spiffe://example.org/web', rotated.leaf.serialNumber]],
    );
    assert.deepEqual(second.bundles, [{ trust_domain: 'example.org', authorities: 2, federated: false }]);
    const r = await w.exit;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trimEnd().split('\n').length, 2);
  });

  it('watch: text until interrupted, then exits 0; waits through PermissionDenied, saying so on stderr', async () => {
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const w = startWatch(['--socket', api.socketPath]);
    assert.equal(await w.next(), `Watching the Workload API at unix://${api.socketPath} for X.509 updates`);
    while (!w.stderr().includes('retrying')) await new Promise((resolve) => setTimeout(resolve, 20));
    api.setError('FetchX509SVID', undefined);
    assert.equal(await w.next(), '');
    assert.match(await w.next(), /^Update 1 at \S+Z: 2 X509-SVIDs$/);
    for (;;) if ((await w.next()).startsWith('partner.example')) break;
    w.child.kill('SIGINT');
    const r = await w.exit;
    assert.equal(r.code, 0);
    assert.match(
      r.stderr,
      /^tessera api watch: no identity was issued to this process \(uid \d+, gid \d+\) by the Workload API at unix:\/\/\S+ \(PermissionDenied: no identity issued\); .*; retrying$/m,
    );
  });

  it("validate: the Workload API's verdict on a token, from --token or --token-file", async () => {
    const good = jwtAuthority.sign({ sub: 'spiffe://example.org/web', aud: ['db'] });
    api.setJwtValidator((req) =>
      req.svid === good && req.audience === 'db'
        ? { spiffeId: 'spiffe://example.org/web' }
        : { code: grpc.status.INVALID_ARGUMENT, details: 'token has expired' },
    );
    const ok = await tessera([
      'api',
      'validate',
      '--socket',
      api.socketPath,
      '--audience',
      'db',
      '--token',
      good,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^SVID is valid.\nSPIFFE ID : spiffe:\/\/example.org\/web\nAudience {2}: db\n/);
    const file = join(tmp.path, 'token.jwt');
    writeFileSync(file, `${good}\n`);
    const fromFile = await tessera([
      'api',
      'validate',
      '--socket',
      api.socketPath,
      '--audience',
      'db',
      '--token-file',
      file,
      '--output',
      'json',
    ]);
    assert.equal(fromFile.code, 0, fromFile.stderr);
    const v = JSON.parse(fromFile.stdout);
    assert.equal(v.valid, true);
    assert.equal(v.spiffe_id, 'spiffe://example.org/web');
    assert.deepEqual(v.claims.aud, ['db']);

    const bad = await tessera([
      'api',
      'validate',
      '--socket',
      api.socketPath,
      '--audience',
      'db',
      '--token',
      jwtAuthority.sign({ sub: 'spiffe://example.org/web', aud: ['db'] }, { kid: 'other' }),
    ]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, 'tessera api validate: the Workload API refused the token: token has expired\n');
    assert.equal(bad.stdout, '');
    const both = await tessera(['api', 'validate', '--audience', 'db']);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /exactly one of --token and --token-file is required/);
  });

  it('errors are one line and exit 1: PermissionDenied names the uid, a silent API times out', async () => {
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const denied = await tessera(['api', 'fetch', 'x509', '--socket', api.socketPath]);
    assert.equal(denied.code, 1);
    const uid = process.getuid?.();
    assert.equal(
      denied.stderr,
      `tessera api fetch: no identity was issued to this process (uid ${uid}, gid ${process.getgid?.()}) by the Workload API at unix://${api.socketPath} (PermissionDenied: no identity issued); register an entry whose selectors match this process, e.g. unix:uid:${uid}, or run it as the user an entry names\n`,
    );
    api.setError('FetchJWTBundles', { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const deniedBundles = await tessera(['api', 'fetch', 'bundles', '--socket', api.socketPath]);
    assert.equal(deniedBundles.code, 1);
    assert.match(deniedBundles.stderr, /^tessera api fetch: no identity was issued to this process/);
    // An agent that says why (its server banned it) is quoted, without the advice to register an entry.
    const why =
      'the server banned this agent (spiffe://example.org/tessera/agent/join_token/n1): it serves no identity to any workload';
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details: why });
    const banned = await tessera(['api', 'fetch', 'x509', '--socket', api.socketPath]);
    assert.equal(
      banned.stderr,
      `tessera api fetch: the Workload API at unix://${api.socketPath} refused this process (uid ${uid}, gid ${process.getgid?.()}): ${why}\n`,
    );

    const silent = await FakeWorkloadApi.start(join(tmp.path, 'silent.sock'));
    try {
      const started = Date.now();
      const r = await tessera(['api', 'fetch', 'x509', '--socket', silent.socketPath, '--timeout', '300ms']);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        `tessera api fetch: the Workload API at unix://${silent.socketPath} did not answer within 300ms\n`,
      );
      assert.ok(Date.now() - started < 10_000);
    } finally {
      await silent.close();
    }
    const missing = await tessera(['api', 'fetch', 'x509', '--socket', join(tmp.path, 'none.sock')]);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /^tessera api fetch: no Workload API socket at .*none.sock: is the agent running\?/,
    );
    for (const r of [denied, deniedBundles, banned, missing]) noStack(r);
  });

  it('usage: unknown commands and kinds exit 2 with the usage', async () => {
    const none = await tessera(['api']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^usage: tessera api <command>/);
    const kind = await tessera(['api', 'fetch', 'svid']);
    assert.equal(kind.code, 2);
    assert.match(kind.stderr, /unknown kind "svid"; use x509, jwt or bundles/);
    const help = await tessera(['api', 'help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /fetch x509 \[--write dir\]/);
    const flag = await tessera(['api', 'watch', '--count', '0', '--socket', api.socketPath]);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /--count must be a positive whole number/);
  });
});
