// The admin CLI as operators use it: a real `tessera server run`, and every command group driven
// through the `tessera` binary on the server's admin socket, as root and as another uid.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status as grpcStatus } from '@grpc/grpc-js';
import { parseSpiffeId, parseTrustDomain, parseX509BundlePem, X509Svid } from '@tessera/spiffe';
import { ServerClient } from '@tessera/tessera/dist/agent/server-client.js';
import { createCsr } from '@tessera/tessera/dist/common/csr.js';
import { generateKey, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import {
  TESSERA_BIN as bin,
  runCommand,
  spawnTessera,
  type TesseraProcess,
  waitForLog,
} from './tessera-process.js';

const NOBODY = 65534;
const NO_STACK = /\n\s+at /;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion: `input` on stdin, optionally as another uid (from /, with no environment). */
function exec(command: string, args: string[], opts: { input?: string; uid?: number } = {}): Promise<Result> {
  return runCommand(command, args, {
    ...(opts.input === undefined ? {} : { input: opts.input }),
    ...(opts.uid === undefined ? {} : { uid: opts.uid, cwd: '/', env: {} }),
  });
}

function writeConfig(dir: string, socket: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'server.yaml');
  writeFileSync(
    file,
    `trust_domain: example.org\ndata_dir: ${dir}/data\nadmin_socket: ${socket}\n` +
      'agent_api: { address: 127.0.0.1, port: 0 }\nhealth: { address: 127.0.0.1, port: 0 }\n',
  );
  return file;
}

describe('tessera admin commands against a running server', () => {
  let tmp: TempDir;
  let server: TesseraProcess;
  let socket: string;
  let dataDir: string;
  const cli = (...args: string[]) => exec(process.execPath, [bin, ...args, '--socket', socket]);
  const cliIn = (input: string, ...args: string[]) =>
    exec(process.execPath, [bin, ...args, '--socket', socket], { input });
  const json = async (...args: string[]) => {
    const r = await cli(...args, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  /** A failed command: exit 1, one line naming the command, the server's message and code, no stack. */
  const fails = async (code: string, ...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^tessera ${args[0]} ${args[1]}: .*\\(${code}\\)\\n$`));
    assert.doesNotMatch(r.stderr, NO_STACK);
    return r.stderr;
  };

  before(async () => {
    tmp = await makeTempDir('acli-');
    chmodSync(tmp.path, 0o755); // so that the uid-65534 client can reach the socket directory
    socket = join(tmp.path, 'run', 'admin.sock');
    dataDir = join(tmp.path, 'srv', 'data');
    server = spawnTessera('server', 'run', '--config', writeConfig(join(tmp.path, 'srv'), socket));
    await waitForLog(server, /server started/);
  });

  after(async () => {
    server.child.kill('SIGTERM');
    assert.equal(await server.exit, 0, server.stderr());
    assert.ok(!existsSync(socket), 'the socket file is removed on stop');
    await tmp.cleanup();
  });

  it('healthcheck: exit 0 when ready; text and JSON', async () => {
    const r = await cli('healthcheck');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Server is healthy \(trust domain example.org, version \d+\.\d+\.\d+\)\n$/);
    assert.deepEqual((await json('healthcheck')).ready, true);
    assert.equal(statSync(socket).mode & 0o777, 0o700);
    assert.equal(statSync(join(tmp.path, 'run')).mode & 0o777, 0o700);
  });

  it('entry create, show, update (revision conflict), delete, count', async () => {
    const created = await cli(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/node-1',
      '--selector',
      'unix:uid:1000',
      '--selector',
      'unix:gid:1000',
      '--x509-svid-ttl',
      '10m',
      '--dns',
      'web.example.org',
      '--federates-with',
      'partner.test',
      '--hint',
      'frontend',
      '--metadata',
      'team=payments',
      '--expires-at',
      '2099-01-01T00:00:00Z',
    );
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.match(/^Entry ID\s+: (\S+)$/m)?.[1];
    assert.ok(id !== undefined, created.stdout);
    assert.match(created.stdout, /^Selector\s+: unix:gid:1000\nSelector\s+: unix:uid:1000$/m);
    assert.match(created.stdout, /^X509-SVID TTL\s+: 600s$/m);
    assert.match(created.stdout, /^Metadata\s+: team=payments$/m);
    assert.match(created.stdout, /^Expires at\s+: 2099-01-01T00:00:00.000Z$/m);

    const dup = await fails(
      'ERR_ENTRY_DUPLICATE',
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/node-1',
      '--selector',
      'unix:uid:1000',
      '--selector',
      'unix:gid:1000',
    );
    assert.match(dup, /already exists/);

    const shown = await json('entry', 'show', '--spiffe-id', 'spiffe://example.org/web');
    assert.equal(shown.entries.length, 1);
    assert.equal(shown.entries[0].id, id);
    assert.equal(shown.entries[0].revision, '1');
    assert.deepEqual(shown.entries[0].federates_with, ['partner.test']);
    const bySelector = await cli('entry', 'show', '--selector', 'unix:uid:1000');
    assert.match(bySelector.stdout, /^Found 1 entry\n/);

    const updated = await json('entry', 'update', '--entry-id', id, '--hint', 'backend', '--admin');
    assert.deepEqual([updated.revision, updated.hint, updated.admin], ['2', 'backend', true]);
    const stale = await fails(
      'ERR_REVISION_CONFLICT',
      'entry',
      'update',
      '--entry-id',
      id,
      '--revision',
      '1',
      '--hint',
      'x',
    );
    assert.match(stale, /revision/);
    const cleared = await json('entry', 'update', '--entry-id', id, '--no-admin');
    assert.deepEqual([cleared.revision, cleared.admin, cleared.hint], ['3', false, 'backend']);

    assert.equal((await cli('entry', 'count')).stdout, '1 registration entry\n');
    const del = await cli('entry', 'delete', '--entry-id', id);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(del.stdout, `Deleted entry ${id}\n`);
    await fails('ERR_ENTRY_NOT_FOUND', 'entry', 'show', '--entry-id', id);
    await fails('ERR_ENTRY_NOT_FOUND', 'entry', 'delete', '--entry-id', id);
    assert.deepEqual(await json('entry', 'count'), { count: 0 });
  });

  it('entry create --data: a batch where one bad entry does not stop the others; show fetches every page', async () => {
    const parent = 'spiffe://example.org/tessera/agent/join_token/batch';
    const entries = [
      {
        spiffe_id: 'spiffe://example.org/batch/a',
        parent_id: parent,
        selectors: [{ type: 'unix', value: 'uid:1' }],
      },
      { spiffe_id: 'not-an-id', parent_id: parent, selectors: [{ type: 'unix', value: 'uid:2' }] },
      {
        spiffe_id: 'spiffe://example.org/batch/c',
        parent_id: parent,
        selectors: [{ type: 'unix', value: 'uid:3' }],
      },
    ];
    const file = join(tmp.path, 'entries.json');
    writeFileSync(file, JSON.stringify({ entries }));
    const r = await cli('entry', 'create', '--data', file);
    assert.equal(r.code, 1);
    assert.equal((r.stdout.match(/^Entry ID/gm) ?? []).length, 2);
    assert.match(
      r.stderr,
      /^tessera entry create: entry 2 of 3 \(not-an-id\): .*not a SPIFFE ID.* \(ERR_ENTRY_INVALID\)\n$/,
    );
    const asJson = await cli('entry', 'create', '--data', file, '--output', 'json');
    assert.equal(asJson.code, 1);
    assert.deepEqual(
      JSON.parse(asJson.stdout).results.map((x: { status: { error_code: string } }) => x.status.error_code),
      ['ERR_ENTRY_DUPLICATE', 'ERR_ENTRY_INVALID', 'ERR_ENTRY_DUPLICATE'],
    );

    // More than one page (1000 a page): show returns them all.
    const many = Array.from({ length: 1205 }, (_, i) => ({
      spiffe_id: `spiffe://example.org/many/${i}`,
      parent_id: 'spiffe://example.org/tessera/agent/join_token/many',
      selectors: [{ type: 'unix', value: `uid:${i}` }],
    }));
    writeFileSync(file, JSON.stringify(many));
    const bulk = await cli('entry', 'create', '--data', file, '--output', 'json');
    assert.equal(bulk.code, 0, bulk.stderr);
    const all = await json(
      'entry',
      'show',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/many',
    );
    assert.equal(all.entries.length, 1205);
    assert.equal(new Set(all.entries.map((e: { spiffe_id: string }) => e.spiffe_id)).size, 1205);
    assert.deepEqual(await json('entry', 'count'), { count: 1207 });
  });

  it('token generate: printed once, stored only as a hash, never logged', async () => {
    const r = await cli('token', 'generate', '--spiffe-id', 'spiffe://example.org/node/web', '--ttl', '300');
    assert.equal(r.code, 0, r.stderr);
    const token = r.stdout.match(/^Token\s+: (\S+)$/m)?.[1];
    assert.ok(token !== undefined && /^[0-9a-f]{64}$/.test(token), r.stdout);
    assert.equal(r.stdout.split(token).length - 1, 1, 'the token is printed once');
    const agentId = r.stdout.match(/^Agent ID\s+: (\S+)$/m)?.[1];
    assert.match(agentId ?? '', /^spiffe:\/\/example.org\/tessera\/agent\/join_token\/[0-9a-f]{32}$/);
    const alias = await json('entry', 'show', '--parent-id', agentId ?? '');
    assert.equal(alias.entries[0]?.spiffe_id, 'spiffe://example.org/node/web');

    const named = await json('token', 'generate', '--agent-name', 'web-1');
    assert.equal(named.agent_id, 'spiffe://example.org/tessera/agent/join_token/web-1');
    const expiresIn = named.expires_at - Date.now() / 1000;
    assert.ok(expiresIn > 590 && expiresIn <= 600, `default TTL 600 s; got ${expiresIn}`);

    for (const file of ['datastore.sqlite3', 'datastore.sqlite3-wal', 'audit.log']) {
      const path = join(dataDir, file);
      if (!existsSync(path)) continue;
      const bytes = readFileSync(path);
      assert.ok(!bytes.includes(token) && !bytes.includes(named.token), `a token is in ${file}`);
    }
    assert.ok(
      !server.stderr().includes(token) && !server.stderr().includes(named.token),
      'a token is in the log',
    );
    const audit = readFileSync(join(dataDir, 'audit.log'), 'utf8');
    assert.match(
      audit,
      new RegExp(`"event":"join_token.created","agent_id":"${agentId}".*"caller_uid":0,"caller_pid":\\d+`),
    );
  });

  it('agent list, count, show, ban and evict with no attested agents', async () => {
    const list = await cli('agent', 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.equal(list.stdout, 'No attested agents found\n');
    assert.deepEqual(await json('agent', 'list'), { agents: [] });
    assert.equal((await cli('agent', 'count')).stdout, '0 attested agents\n');
    const missing = 'spiffe://example.org/tessera/agent/join_token/nobody';
    for (const sub of ['show', 'ban', 'evict'])
      await fails('ERR_AGENT_NOT_FOUND', 'agent', sub, '--spiffe-id', missing);
  });

  it('agent list, show, ban and evict an agent attested with a token from the CLI; the ban cuts its open stream', async () => {
    const token = (await json('token', 'generate', '--agent-name', 'web-9')).token as string;
    const port = server.stderr().match(/agent_api=127\.0\.0\.1:(\d+)/)?.[1];
    const td = parseTrustDomain('example.org');
    const bundle = parseX509BundlePem(td, (await cli('bundle', 'show')).stdout);
    const key = generateKey('ec-p256');
    const address = `127.0.0.1:${port}`;
    const attestClient = new ServerClient({ address, trustDomain: td, bundle });
    const r = await attestClient.attest({
      type: 'join_token',
      payload: Buffer.from(token),
      csr: createCsr(key.privateKey),
    });
    attestClient.close();
    const id = 'spiffe://example.org/tessera/agent/join_token/web-9';
    assert.equal(r.spiffeId, id);
    const svid = new X509Svid(
      parseSpiffeId(r.spiffeId),
      r.svidChain.map((d) => new X509Certificate(d)),
      key.privateKey,
    );
    const agent = new ServerClient({ address, trustDomain: td, bundle, svid });
    const stream = agent.sync();
    const ended = new Promise<unknown>((resolve) => {
      stream.on('error', resolve);
      stream.on('end', () => resolve(undefined));
    });
    // The server registers the stream before it sends the snapshot: once that arrives, it is connected.
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    stream.on('data', () => undefined);
    try {
      const shown: { connected: boolean; attestor: string; banned: boolean; selectors: string[] } =
        await json('agent', 'show', '--spiffe-id', id);
      assert.deepEqual(
        [shown?.attestor, shown?.connected, shown?.banned, shown?.selectors],
        ['join_token', true, false, ['join_token:name:web-9']],
      );
      const table = await cli('agent', 'list');
      assert.match(table.stdout, /^SPIFFE ID\s+ATTESTOR\s+SVID EXPIRES\s+BANNED\s+CONNECTED\n/);
      assert.match(table.stdout, new RegExp(`^${id}\\s+join_token\\s+\\S+Z\\s+false\\s+true$`, 'm'));
      assert.equal((await cli('agent', 'count')).stdout, '1 attested agent\n');

      const ban = await cli('agent', 'ban', '--spiffe-id', id);
      assert.equal(ban.stdout, `Agent banned: ${id}\n`);
      const err = (await ended) as { code?: number } | undefined;
      assert.equal(err?.code, grpcStatus.PERMISSION_DENIED, 'the ban ends the open stream');
      assert.deepEqual(
        (await json('agent', 'list', '--banned', 'true')).agents.map(
          (a: { spiffe_id: string }) => a.spiffe_id,
        ),
        [id],
      );
      assert.deepEqual((await json('agent', 'list', '--banned', 'false')).agents, []);
      const evict = await cli('agent', 'evict', '--spiffe-id', id);
      assert.equal(evict.stdout, `Agent evicted: ${id}\n`);
      assert.deepEqual(await json('agent', 'count'), { count: 0 });
      const audit = readFileSync(join(dataDir, 'audit.log'), 'utf8');
      assert.match(audit, new RegExp(`"event":"agent.banned","agent_id":"${id}","caller_uid":0`));
      assert.match(audit, new RegExp(`"event":"agent.evicted","agent_id":"${id}","caller_uid":0`));
    } finally {
      stream.cancel();
      agent.close();
    }
  });

  it('end to end: CLI token, attestation, SVIDs that openssl verifies against the served bundle; replay and a foreign entry refused', async () => {
    const token = (await json('token', 'generate', '--agent-name', 'e2e-vm')).token as string;
    const port = server.stderr().match(/agent_api=127\.0\.0\.1:(\d+)/)?.[1];
    const td = parseTrustDomain('example.org');
    const bundlePem = (await cli('bundle', 'show')).stdout;
    const bundle = parseX509BundlePem(td, bundlePem);
    const address = `127.0.0.1:${port}`;
    const key = generateKey('ec-p256');
    const attestClient = new ServerClient({ address, trustDomain: td, bundle });
    const attestation = { type: 'join_token', payload: Buffer.from(token), csr: createCsr(key.privateKey) };
    const r = await attestClient.attest(attestation);
    await assert.rejects(
      attestClient.attest(attestation),
      (e: { code?: number; details?: string }) =>
        e.code === grpcStatus.PERMISSION_DENIED && /already used/.test(e.details ?? ''),
    );
    attestClient.close();
    const mine = await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/e2e/web',
      '--parent-id',
      r.spiffeId,
      '--selector',
      'unix:uid:1000',
      '--dns',
      'web.e2e.example',
    );
    const theirs = await json(
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/e2e/payroll',
      '--parent-id',
      'spiffe://example.org/tessera/agent/join_token/someone-else',
      '--selector',
      'unix:uid:1000',
    );
    const mineId = mine.results[0].entry.id as string;
    const theirsId = theirs.results[0].entry.id as string;
    const agent = new ServerClient({
      address,
      trustDomain: td,
      bundle,
      svid: new X509Svid(
        parseSpiffeId(r.spiffeId),
        r.svidChain.map((d) => new X509Certificate(d)),
        key.privateKey,
      ),
    });
    try {
      const w = generateKey('ec-p256');
      const res = await agent.batchNewX509Svid([
        { entryId: mineId, csr: createCsr(w.privateKey) },
        { entryId: theirsId, csr: createCsr(w.privateKey) },
      ]);
      assert.equal(res.results[0]?.code, grpcStatus.OK, res.results[0]?.message);
      assert.equal(res.results[1]?.code, grpcStatus.PERMISSION_DENIED);
      const dir = join(tmp.path, 'e2e');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'bundle.pem'), bundlePem);
      writeFileSync(
        join(dir, 'svid.pem'),
        new X509Certificate(res.results[0]?.certChain[0] as Uint8Array).toString(),
      );
      const v = await exec('openssl', ['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'svid.pem')]);
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, /svid.pem: OK/);
      const audit = readFileSync(join(dataDir, 'audit.log'), 'utf8');
      assert.match(
        audit,
        /"event":"attestation.success","attestor":"join_token","agent":"spiffe:\/\/example.org\/tessera\/agent\/join_token\/e2e-vm"/,
      );
      assert.match(
        audit,
        new RegExp(`"event":"svid.denied","agent":"${r.spiffeId}","entry_id":"${theirsId}"`),
      );
      assert.ok(!audit.includes(token), 'the token is not in the audit log');
    } finally {
      agent.close();
      await cli('entry', 'delete', '--entry-id', mineId);
      await cli('entry', 'delete', '--entry-id', theirsId);
    }
  });

  it('bundle show (PEM that openssl reads, and the SPIFFE document), set/list/delete a federated one', async () => {
    const pem = await cli('bundle', 'show');
    assert.equal(pem.code, 0, pem.stderr);
    assert.match(pem.stdout, /^-----BEGIN CERTIFICATE-----\n/);
    const openssl = await exec('openssl', ['x509', '-noout', '-subject', '-ext', 'basicConstraints'], {
      input: pem.stdout,
    });
    assert.equal(openssl.code, 0, openssl.stderr);
    assert.match(openssl.stdout, /CA:TRUE/);
    const doc = JSON.parse((await cli('bundle', 'show', '--format', 'spiffe')).stdout);
    assert.deepEqual(doc.keys.map((k: { use: string }) => k.use).sort(), ['jwt-svid', 'x509-svid']);
    assert.ok(doc.spiffe_sequence >= 1);

    assert.equal((await cli('bundle', 'list')).stdout, 'No federated bundles\n');
    const partner = TestCa.create({ trustDomain: 'partner.test' });
    const set = await cliIn(partner.rootPem(), 'bundle', 'set', '--id', 'partner.test');
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stdout, 'Bundle set for partner.test (sequence 1)\n');
    const file = join(tmp.path, 'partner.pem');
    writeFileSync(file, partner.rootPem());
    const again = await json('bundle', 'set', '--id', 'partner.test', '--path', file);
    assert.equal(again.trust_domain, 'partner.test');
    const listed = await cli('bundle', 'list');
    assert.match(listed.stdout, /^\*+\n\* partner.test\n\*+\n-----BEGIN CERTIFICATE-----/);
    assert.equal(
      new X509Certificate(listed.stdout.slice(listed.stdout.indexOf('-----BEGIN'))).fingerprint256,
      partner.certificate.fingerprint256,
    );
    const listJson = await json('bundle', 'list', '--id', 'partner.test');
    assert.equal(listJson.bundles[0].spiffe_bundle.keys[0].use, 'x509-svid');
    const own = await fails('ERR_INVALID_ARGUMENT', 'bundle', 'set', '--id', 'example.org', '--path', file);
    assert.match(own, /own trust domain/);
    const del = await cli('bundle', 'delete', '--id', 'partner.test');
    assert.equal(del.stdout, 'Bundle deleted: partner.test\n');
    await fails('ERR_BUNDLE_NOT_FOUND', 'bundle', 'delete', '--id', 'partner.test');
  });

  it('x509 mint --write: svid.pem, key.pem 0600 and bundle.pem that openssl verify accepts; without --write, PEMs', async () => {
    const out = join(tmp.path, 'minted');
    const r = await cli(
      'x509',
      'mint',
      '--spiffe-id',
      'spiffe://example.org/ops',
      '--ttl',
      '15m',
      '--dns',
      'ops.example.org',
      '--write',
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^X509-SVID for spiffe:\/\/example.org\/ops, expires \S+Z\n/);
    assert.equal(statSync(join(out, 'key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(out, 'svid.pem')).mode & 0o777, 0o644);
    assert.equal(statSync(join(out, 'bundle.pem')).mode & 0o777, 0o644);
    const verify = await exec('openssl', [
      'verify',
      '-CAfile',
      join(out, 'bundle.pem'),
      join(out, 'svid.pem'),
    ]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /svid.pem: OK/);
    const leaf = new X509Certificate(readFileSync(join(out, 'svid.pem')));
    assert.equal(leaf.subjectAltName, 'URI:spiffe://example.org/ops, DNS:ops.example.org');
    const lifetime = (Date.parse(leaf.validTo) - Date.now()) / 1000;
    assert.ok(lifetime > 800 && lifetime <= 900, `15 minutes; got ${lifetime} s`);
    const key = await exec('openssl', ['pkey', '-in', join(out, 'key.pem'), '-pubout']);
    assert.equal(key.stdout, leaf.publicKey.export({ type: 'spki', format: 'pem' }));

    const printed = await json('x509', 'mint', '--spiffe-id', 'spiffe://example.org/ops');
    assert.match(printed.svid_pem, /^-----BEGIN CERTIFICATE-----/);
    assert.match(printed.key_pem, /^-----BEGIN PRIVATE KEY-----/);
    assert.match(printed.bundle_pem, /^-----BEGIN CERTIFICATE-----/);
    const outside = await fails('ERR_CA_ISSUE', 'x509', 'mint', '--spiffe-id', 'spiffe://other.org/ops');
    assert.match(outside, /not in trust domain "example.org"/);
  });

  it('jwt mint: a JWT-SVID with the subject and audiences asked for', async () => {
    const r = await cli(
      'jwt',
      'mint',
      '--spiffe-id',
      'spiffe://example.org/ops',
      '--audience',
      'db',
      '--audience',
      'queue',
      '--ttl',
      '60',
    );
    assert.equal(r.code, 0, r.stderr);
    const [header, claims] = r.stdout
      .trim()
      .split('.')
      .slice(0, 2)
      .map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()));
    assert.equal(header.alg, 'ES256');
    assert.equal(claims.sub, 'spiffe://example.org/ops');
    assert.deepEqual(claims.aud, ['db', 'queue']);
    assert.ok(claims.exp - claims.iat <= 60);
    const j = await json('jwt', 'mint', '--spiffe-id', 'spiffe://example.org/ops', '--audience', 'db');
    assert.equal(typeof j.token, 'string');
    assert.equal(typeof j.expires_at, 'number');
    const noAud = await cli('jwt', 'mint', '--spiffe-id', 'spiffe://example.org/ops');
    assert.equal(noAud.code, 2);
    assert.match(noAud.stderr, /--audience is required/);
  });

  it('authority show: the active X.509 CA and JWT key, as a table and as JSON', async () => {
    const r = await cli('authority', 'show');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^KIND\s+ID\s+STATUS\s+TAINTED\s+NOT AFTER\n/);
    assert.match(r.stdout, /^x509\s+[0-9a-f]{40}\s+active\s+no\s+\S+Z$/m);
    assert.match(r.stdout, /^jwt\s+\S+\s+active\s+no\s+\S+Z$/m);
    const j = await json('authority', 'show', '--kind', 'x509');
    assert.deepEqual(
      j.authorities.map((a: { kind: string; status: string }) => [a.kind, a.status]),
      [['x509', 'active']],
    );
    const bad = await cli('authority', 'taint', '--kind', 'x509');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--id is required/);
  });

  it('authority prepare, activate, taint and revoke: each says what it did; a revoked key is reported revoked, not tainted', async () => {
    const old = (await json('authority', 'show', '--kind', 'x509')).authorities[0].id as string;
    assert.match(
      (await cli('authority', 'prepare', '--kind', 'x509')).stdout,
      /^Prepared x509 authority [0-9a-f]{40}\n/,
    );
    assert.match((await cli('authority', 'activate', '--kind', 'x509')).stdout, /^Activated x509 authority /);
    const tainted = await cli('authority', 'taint', '--kind', 'x509', '--id', old);
    assert.match(tainted.stdout, new RegExp(`^Tainted x509 authority ${old}\n[\\s\\S]*Tainted\\s+: yes`));
    const revoked = await cli('authority', 'revoke', '--kind', 'x509', '--id', old);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`^Revoked x509 authority ${old}\n[\\s\\S]*Revoked\\s+: yes`));
    assert.doesNotMatch(revoked.stdout, /Tainted/);
    const shown = await json('authority', 'show', '--kind', 'x509');
    assert.equal(
      shown.authorities.some((a: { id: string }) => a.id === old),
      false,
      'the revoked CA is no longer listed',
    );
  });

  it('a reader that closes the pipe early ends the command quietly, without an EPIPE stack trace', async () => {
    const child = spawn(process.execPath, [bin, 'help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader is gone before the command writes
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const [code] = await once(child, 'exit');
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });

  it('a uid that is neither root nor the server’s is refused, by the file modes and by the server', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('needs root to run the CLI as uid 65534');
      return;
    }
    const asNobody = (...args: string[]) =>
      exec(process.execPath, [bin, ...args, '--socket', socket], { uid: NOBODY });
    const blocked = await asNobody('entry', 'count');
    assert.equal(blocked.code, 1);
    assert.equal(
      blocked.stderr,
      `tessera entry count: cannot connect to the server at ${socket}: permission denied; run as root or as the server's user\n`,
    );
    // Should the modes be opened up by mistake, the server still refuses the caller.
    chmodSync(join(tmp.path, 'run'), 0o755);
    chmodSync(socket, 0o777);
    try {
      const refused = await asNobody('entry', 'count');
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /^tessera entry count: admin: permission denied: uid 65534 is neither root nor the server's uid 0; call as root or as the server's user \(ERR_PERMISSION_DENIED\)\n$/,
      );
      const token = await asNobody('token', 'generate');
      assert.equal(token.code, 1);
      assert.match(token.stderr, /ERR_PERMISSION_DENIED/);
    } finally {
      chmodSync(socket, 0o700);
      chmodSync(join(tmp.path, 'run'), 0o700);
    }
    const denied = readFileSync(join(dataDir, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'admin.denied');
    assert.deepEqual(
      denied.map((e) => [e.caller_uid, e.method]),
      [
        [NOBODY, 'CountEntries'],
        [NOBODY, 'CreateJoinToken'],
      ],
    );
    assert.match(
      server.stderr(),
      /WARN {2}admin: refused a call subsystem=admin uid=65534 pid=\d+ method=CountEntries/,
    );
  });

  it('a missing socket, a bad flag and an unknown command are clear errors', async () => {
    const gone = await exec(process.execPath, [
      bin,
      'agent',
      'list',
      '--socket',
      join(tmp.path, 'none.sock'),
    ]);
    assert.equal(gone.code, 1);
    assert.equal(
      gone.stderr,
      `tessera agent list: cannot connect to the server at ${join(tmp.path, 'none.sock')}: is it running?\n`,
    );
    const flag = await cli('entry', 'show', '--colour');
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /^tessera entry show: Unknown option '--colour'/);
    const output = await cli('entry', 'count', '--output', 'yaml');
    assert.equal(output.code, 2);
    assert.match(output.stderr, /--output must be text or json/);
    const unknown = await cli('bundle', 'frob');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /tessera bundle: unknown command "frob"/);
    const usage = await exec(process.execPath, [bin]);
    assert.equal(usage.code, 2);
    for (const group of ['entry', 'token', 'agent', 'bundle', 'x509', 'jwt', 'authority', 'healthcheck'])
      assert.match(usage.stdout, new RegExp(`^  ${group} `, 'm'));
  });
});

describe('tessera server run and its admin socket', () => {
  it('an unusable admin socket path, or one another server serves, is one clear startup error', async () => {
    const tmp = await makeTempDir('acli-');
    try {
      const blocker = join(tmp.path, 'a-file');
      writeFileSync(blocker, '');
      const bad = spawnTessera(
        'server',
        'run',
        '--config',
        writeConfig(join(tmp.path, 'a'), join(blocker, 'admin.sock')),
      );
      assert.equal(await bad.exit, 1);
      assert.match(
        bad.stderr(),
        new RegExp(
          `tessera server: admin socket ${blocker}/admin.sock: cannot create the directory ${blocker}: (EEXIST|ENOTDIR)\\n$`,
        ),
      );
      assert.doesNotMatch(bad.stderr(), NO_STACK);

      const socket = join(tmp.path, 'shared.sock');
      const first = spawnTessera('server', 'run', '--config', writeConfig(join(tmp.path, 'b'), socket));
      await waitForLog(first, /server started/);
      try {
        const second = spawnTessera('server', 'run', '--config', writeConfig(join(tmp.path, 'c'), socket));
        assert.equal(await second.exit, 1);
        assert.match(
          second.stderr(),
          new RegExp(`tessera server: admin socket ${socket}: another process is serving on this socket`),
        );
        assert.ok(
          !existsSync(join(tmp.path, 'c', 'data', 'server.lock')),
          'a failed start releases its lock',
        );
      } finally {
        first.child.kill('SIGTERM');
      }
      assert.equal(await first.exit, 0);
    } finally {
      await tmp.cleanup();
    }
  });
});
