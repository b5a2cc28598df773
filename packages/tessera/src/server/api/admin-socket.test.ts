// The admin API as a client sees it: a real grpc-js client on the real Unix socket, and a client
// process running as another uid.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { parseTrustDomain, SpiffeBundle } from '@tessera/spiffe';
import { createCsr, generateKey, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { type AuditEvent, createAuditLog } from '../../common/audit.js';
import { errorCodeOf, grpcServiceDefinition, ServiceClient } from '../../common/grpc.js';
import { createLogger } from '../../common/log.js';
import { Admin } from '../../gen/tessera/admin/v1/admin_pb.js';
import { AuthorityManager } from '../ca/manager.js';
import { openSqliteDatastore } from '../datastore/sqlite.js';
import type { Datastore } from '../datastore/types.js';
import { MemoryKeyManager } from '../keymanager/memory.js';
import { createAdminService } from './admin-api.js';
import { type AdminSocket, startAdminSocket } from './admin-socket.js';

const NOBODY = 65534;
const td = parseTrustDomain('example.org');

interface Harness {
  tmp: TempDir;
  ds: Datastore;
  socket: AdminSocket;
  path: string;
  client: ServiceClient<typeof Admin.method>;
  audit: { event: AuditEvent; [k: string]: unknown }[];
  logs: string[];
  close(): Promise<void>;
}

async function harness(socketDirMode?: number): Promise<Harness> {
  const tmp = await makeTempDir('adm-');
  const ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
  const authority = new AuthorityManager({
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    datastore: ds,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    caTtlMs: 24 * 3600_000,
    subject: { country: 'US', organization: 'SPIFFE' },
    now: () => new Date(),
  });
  await authority.init();
  const audit: Harness['audit'] = [];
  const logs: string[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', write: (l) => logs.push(l) });
  const auditLog = createAuditLog({ write: (l) => audit.push(JSON.parse(l)) });
  const service = createAdminService({
    trustDomain: td,
    datastore: ds,
    authority,
    x509SvidTtlMs: 3600_000,
    jwtSvidTtlMs: 300_000,
    audit: auditLog,
    logger,
    version: 'test',
  });
  const dir = join(tmp.path, 'run');
  if (socketDirMode !== undefined) {
    mkdirSync(dir, { mode: socketDirMode });
    chmodSync(dir, socketDirMode);
    chmodSync(tmp.path, 0o755);
  }
  const path = join(dir, 'server.sock');
  const socket = await startAdminSocket(path, service, logger, auditLog);
  const client = new ServiceClient(Admin, `unix:${path}`, grpc.credentials.createInsecure());
  return {
    tmp,
    ds,
    socket,
    path,
    client,
    audit,
    logs,
    async close() {
      client.close();
      await socket.close();
      await ds.close();
      await tmp.cleanup();
    },
  };
}

const me = { caller_uid: process.getuid?.(), caller_pid: process.pid };

describe('admin socket', () => {
  let h: Harness;
  before(async () => {
    h = await harness();
  });
  after(() => h.close());

  it('creates its directory and socket 0700 and answers Health', async () => {
    assert.equal(statSync(join(h.tmp.path, 'run')).mode & 0o777, 0o700);
    assert.equal(statSync(h.path).mode & 0o777, 0o700);
    const r = await h.client.unary(Admin.method.health, {});
    assert.deepEqual([r.ready, r.trustDomain, r.version], [true, 'example.org', 'test']);
  });

  it('creates a batch with a status per entry; a bad entry and a duplicate do not stop the others', async () => {
    const entry = (id: string, parent = 'spiffe://example.org/agent') => ({
      spiffeId: id,
      parentId: parent,
      selectors: [{ type: 'unix', value: 'uid:1000' }],
    });
    const first = await h.client.unary(Admin.method.createEntries, {
      entries: [entry('spiffe://example.org/a')],
    });
    assert.equal(first.results[0]?.status?.code, 0);
    const r = await h.client.unary(Admin.method.createEntries, {
      entries: [
        entry('spiffe://example.org/b'),
        entry('not a spiffe id'),
        entry('spiffe://example.org/a'),
        entry('spiffe://example.org/c'),
      ],
    });
    assert.deepEqual(
      r.results.map((x) => [x.status?.code, x.status?.errorCode, x.entry?.spiffeId ?? '']),
      [
        [0, '', 'spiffe://example.org/b'],
        [grpc.status.INVALID_ARGUMENT, 'ERR_ENTRY_INVALID', ''],
        [grpc.status.ALREADY_EXISTS, 'ERR_ENTRY_DUPLICATE', ''],
        [0, '', 'spiffe://example.org/c'],
      ],
    );
    assert.match(r.results[1]?.status?.message ?? '', /spiffeId "not a spiffe id" is not a SPIFFE ID/);
    const created = h.audit.filter((a) => a.event === 'entry.created');
    assert.equal(created.length, 3);
    assert.deepEqual(
      {
        spiffe_id: created[1]?.spiffe_id,
        caller_uid: created[1]?.caller_uid,
        caller_pid: created[1]?.caller_pid,
      },
      { spiffe_id: 'spiffe://example.org/b', ...me },
    );
    assert.equal((await h.client.unary(Admin.method.countEntries, {})).count, 3n);
  });

  it('refuses an entry of another trust domain and a unix selector without a value or with an unknown key, naming each', async () => {
    const r = await h.client.unary(Admin.method.createEntries, {
      entries: [
        {
          spiffeId: 'spiffe://other.org/w',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'unix', value: 'uid:1' }],
        },
        {
          spiffeId: 'spiffe://example.org/w',
          parentId: 'spiffe://other.org/agent',
          selectors: [{ type: 'unix', value: 'uid:1' }],
        },
        {
          spiffeId: 'spiffe://example.org/w',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'unix', value: 'uid' }],
        },
        {
          spiffeId: 'spiffe://example.org/w',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'unix', value: 'uid:' }],
        },
        {
          spiffeId: 'spiffe://example.org/w',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'unix', value: 'pid:7' }],
        },
        // SPIRE's code once wrote systemd:Id:…; its names (and ours) are id and fragment_path.
        {
          spiffeId: 'spiffe://example.org/w',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'systemd', value: 'Id:nginx.service' }],
        },
        {
          spiffeId: 'spiffe://example.org/w',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'docker', value: 'label' }],
        },
        {
          spiffeId: 'spiffe://example.org/w-docker',
          parentId: 'spiffe://example.org/agent',
          selectors: [
            { type: 'docker', value: 'label:com.example.app:web' },
            { type: 'docker', value: 'env:ROLE=frontend' },
            { type: 'systemd', value: 'id:nginx.service' },
          ],
        },
        // Other selector types are the attestors' business: kept as given, as SPIRE does.
        {
          spiffeId: 'spiffe://example.org/w-team',
          parentId: 'spiffe://example.org/agent',
          selectors: [{ type: 'team', value: 'red' }],
        },
      ],
    });
    const messages = r.results.map((x) => [x.status?.errorCode, x.status?.message]);
    assert.deepEqual(
      messages.map(([code]) => code),
      [
        'ERR_ENTRY_INVALID',
        'ERR_ENTRY_INVALID',
        'ERR_ENTRY_INVALID',
        'ERR_ENTRY_INVALID',
        'ERR_ENTRY_INVALID',
        'ERR_ENTRY_INVALID',
        'ERR_ENTRY_INVALID',
        '',
        '',
      ],
    );
    assert.match(
      String(messages[0]?.[1]),
      /spiffeId "spiffe:\/\/other.org\/w" is not in this server's trust domain "example.org"/,
    );
    assert.match(
      String(messages[1]?.[1]),
      /parentId "spiffe:\/\/other.org\/agent" is not in this server's trust domain/,
    );
    assert.match(
      String(messages[2]?.[1]),
      /selector "unix:uid" has no value and would match no workload; write unix:uid:<value>/,
    );
    assert.match(String(messages[3]?.[1]), /selector "unix:uid:" has no value/);
    assert.match(
      String(messages[4]?.[1]),
      /selector "unix:pid:7" has no key the unix attestor yields; .*uid, user, gid/,
    );
    assert.match(
      String(messages[5]?.[1]),
      /selector "systemd:Id:nginx.service" has no key the systemd attestor yields; .*key one of id, fragment_path \(e.g. systemd:id:nginx.service\)/,
    );
    assert.match(
      String(messages[6]?.[1]),
      /selector "docker:label" has no value and would match no workload; write docker:label:<value> \(e.g. docker:label:com.example.app:web\)/,
    );
  });

  it('updates with the revision read, refuses a stale one, and deletes with a result per ID', async () => {
    const [e] = (await h.client.unary(Admin.method.listEntries, { bySpiffeId: 'spiffe://example.org/a' }))
      .entries;
    assert.ok(e);
    const updated = await h.client.unary(Admin.method.updateEntry, { entry: { ...e, hint: 'web' } });
    assert.equal(updated.revision, e.revision + 1n);
    assert.equal(updated.hint, 'web');
    const stale = await h.client
      .unary(Admin.method.updateEntry, { entry: { ...e, hint: 'x' } })
      .catch((err) => err);
    assert.equal(stale.code, grpc.status.ABORTED);
    assert.equal(errorCodeOf(stale), 'ERR_REVISION_CONFLICT');
    const del = await h.client.unary(Admin.method.deleteEntries, { ids: [e.id, 'nope'] });
    assert.deepEqual(
      del.results.map((x) => [x.id, x.status?.code]),
      [
        [e.id, 0],
        ['nope', grpc.status.NOT_FOUND],
      ],
    );
    assert.equal(h.audit.filter((a) => a.event === 'entry.deleted').length, 1);
  });

  it('generates a join token once: 32 random bytes, only its hash stored, never in a log', async () => {
    const r = await h.client.unary(Admin.method.createJoinToken, {
      spiffeId: 'spiffe://example.org/node/web',
    });
    assert.match(r.token, /^[0-9a-f]{64}$/);
    const hash = createHash('sha256').update(r.token).digest('hex');
    assert.equal(r.agentId, `spiffe://example.org/tessera/agent/join_token/${hash.slice(0, 32)}`);
    const expires = Number(r.expiresAt) - Date.now() / 1000;
    assert.ok(expires > 590 && expires <= 600, `expires in ${expires} s`);
    const [alias] = (await h.client.unary(Admin.method.listEntries, { byParentId: r.agentId })).entries;
    assert.equal(alias?.spiffeId, 'spiffe://example.org/node/web');
    assert.deepEqual(
      alias?.selectors.map((s) => `${s.type}:${s.value}`),
      [`join_token:name:${hash.slice(0, 32)}`],
    );
    const everything = JSON.stringify(h.audit) + h.logs.join('\n');
    assert.ok(!everything.includes(r.token), 'the token is in a log');
    assert.ok(h.audit.some((a) => a.event === 'join_token.created' && a.agent_id === r.agentId));
    assert.ok(!readFileSync(join(h.tmp.path, 'ds.db')).includes(r.token), 'the token is in the datastore');
    await h.ds.consumeJoinToken(r.token, new Date());

    const named = await h.client.unary(Admin.method.createJoinToken, { agentName: 'web-1', ttl: 60 });
    assert.equal(named.agentId, 'spiffe://example.org/tessera/agent/join_token/web-1');
    const bad = await h.client.unary(Admin.method.createJoinToken, { agentName: '../x' }).catch((e) => e);
    assert.equal(errorCodeOf(bad), 'ERR_INVALID_ARGUMENT');
  });

  it('agents: none listed, a missing one is NOT_FOUND', async () => {
    assert.deepEqual((await h.client.unary(Admin.method.listAgents, {})).agents, []);
    assert.equal((await h.client.unary(Admin.method.countAgents, {})).count, 0n);
    for (const m of [Admin.method.getAgent, Admin.method.banAgent, Admin.method.evictAgent]) {
      const err = await h.client
        .unary(m, { spiffeId: 'spiffe://example.org/tessera/agent/join_token/x' })
        .catch((e) => e);
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(errorCodeOf(err), 'ERR_AGENT_NOT_FOUND');
    }
  });

  it('agents: ban and evict an attested agent, audited with the caller', async () => {
    const id = 'spiffe://example.org/tessera/agent/join_token/web-9';
    await h.ds.attestAgent({
      spiffeId: id,
      attestor: 'join_token',
      selectors: [{ type: 'join_token', value: 'name:web-9' }],
      serial: '01',
      expiresAt: new Date(Date.now() + 3600_000),
    });
    const a = await h.client.unary(Admin.method.getAgent, { spiffeId: id });
    assert.deepEqual([a.attestor, a.banned, a.connected], ['join_token', false, false]);
    await h.client.unary(Admin.method.banAgent, { spiffeId: id });
    assert.equal((await h.client.unary(Admin.method.listAgents, { banned: 'true' })).agents[0]?.spiffeId, id);
    await h.client.unary(Admin.method.evictAgent, { spiffeId: id });
    assert.equal((await h.client.unary(Admin.method.countAgents, {})).count, 0n);
    assert.ok(
      h.audit.some((x) => x.event === 'agent.banned' && x.agent_id === id && x.caller_pid === process.pid),
    );
    assert.ok(h.audit.some((x) => x.event === 'agent.evicted' && x.agent_id === id));
  });

  it('bundles: the own one, and a federated one set, listed and deleted; the own one cannot be set', async () => {
    const own = await h.client.unary(Admin.method.getBundle, {});
    assert.equal(own.trustDomain, 'example.org');
    assert.ok(own.sequence >= 1n);
    const ca = TestCa.create({ trustDomain: 'partner.test' });
    const doc = new SpiffeBundle({
      trustDomain: parseTrustDomain('partner.test'),
      x509Authorities: [ca.certificate],
    });
    const set = await h.client.unary(Admin.method.setBundle, {
      trustDomain: 'partner.test',
      spiffeBundle: Buffer.from(doc.marshal()),
    });
    assert.equal(set.sequence, 1n);
    const list = await h.client.unary(Admin.method.listBundles, {});
    assert.deepEqual(list.bundles.map((b) => b.trustDomain).sort(), ['example.org', 'partner.test']);
    const mine = await h.client
      .unary(Admin.method.setBundle, { trustDomain: 'example.org', spiffeBundle: Buffer.from(doc.marshal()) })
      .catch((e) => e);
    assert.equal(errorCodeOf(mine), 'ERR_INVALID_ARGUMENT');
    assert.match(mine.details, /own trust domain/);
    const garbage = await h.client
      .unary(Admin.method.setBundle, { trustDomain: 'partner.test', spiffeBundle: Buffer.from('{') })
      .catch((e) => e);
    assert.equal(errorCodeOf(garbage), 'ERR_INVALID_ARGUMENT');
    await h.client.unary(Admin.method.deleteBundle, { trustDomain: 'partner.test' });
    const again = await h.client
      .unary(Admin.method.deleteBundle, { trustDomain: 'partner.test' })
      .catch((e) => e);
    assert.equal(again.code, grpc.status.NOT_FOUND);
    assert.equal(errorCodeOf(again), 'ERR_BUNDLE_NOT_FOUND');
    assert.deepEqual(
      h.audit.filter((a) => a.event.startsWith('bundle.')).map((a) => [a.event, a.trust_domain]),
      [
        ['bundle.set', 'partner.test'],
        ['bundle.deleted', 'partner.test'],
      ],
    );
  });

  it('mints an X509-SVID from a CSR and a JWT-SVID, each audited', async () => {
    const key = generateKey('ec-p256');
    const x = await h.client.unary(Admin.method.mintX509SVID, {
      spiffeId: 'spiffe://example.org/ops',
      csr: createCsr(key.publicKey, key.privateKey),
      ttl: 120,
      dnsNames: ['ops.example.org'],
    });
    assert.equal(x.svidChain.length, 1);
    assert.ok(x.bundle.length >= 1);
    const expires = Number(x.expiresAt) - Date.now() / 1000;
    assert.ok(expires > 100 && expires <= 120);
    const otherTd = await h.client
      .unary(Admin.method.mintX509SVID, {
        spiffeId: 'spiffe://other.org/ops',
        csr: createCsr(key.publicKey, key.privateKey),
      })
      .catch((e) => e);
    assert.equal(errorCodeOf(otherTd), 'ERR_CA_ISSUE');
    const j = await h.client.unary(Admin.method.mintJWTSVID, {
      spiffeId: 'spiffe://example.org/ops',
      audience: ['db'],
    });
    const claims = JSON.parse(Buffer.from(j.token.split('.')[1] ?? '', 'base64url').toString());
    assert.deepEqual([claims.sub, claims.aud], ['spiffe://example.org/ops', ['db']]);
    const issued = h.audit.filter((a) => a.event === 'svid.issued');
    assert.deepEqual(
      issued.map((a) => a.type),
      ['x509', 'jwt'],
    );
    assert.ok(!JSON.stringify(h.audit).includes(j.token));
  });

  it('lists the authorities; prepare, activate, taint and revoke an X.509 CA, each audited with the caller', async () => {
    const r = await h.client.unary(Admin.method.getAuthorities, {});
    const kinds = r.authorities.map((a) => `${a.kind}:${a.status}`);
    assert.deepEqual(kinds.sort(), ['jwt:active', 'x509:active']);
    const first = r.authorities.find((a) => a.kind === 'x509');
    assert.ok(first !== undefined && first.certificate.length > 0 && first.id.length === 40);
    const bad = await h.client.unary(Admin.method.prepareAuthority, { kind: 'rsa' }).catch((e) => e);
    assert.equal(errorCodeOf(bad), 'ERR_INVALID_ARGUMENT');
    assert.match(bad.details, /authority kind "rsa" is not one of x509, jwt/);
    const prepared = await h.client.unary(Admin.method.prepareAuthority, { kind: 'x509' });
    assert.equal(prepared.status, 'prepared');
    const active = await h.client.unary(Admin.method.activateAuthority, { kind: 'x509' });
    assert.deepEqual([active.id, active.status], [prepared.id, 'active']);
    const noId = await h.client.unary(Admin.method.taintAuthority, { kind: 'x509' }).catch((e) => e);
    assert.match(noId.details, /id is required to taint an authority/);
    const tainted = await h.client.unary(Admin.method.taintAuthority, { kind: 'x509', id: first.id });
    assert.equal(tainted.tainted, true);
    const revoked = await h.client.unary(Admin.method.revokeAuthority, { kind: 'x509', id: first.id });
    assert.equal(revoked.id, first.id);
    const bundle = await h.ds.getBundle(td);
    assert.equal(bundle?.x509Authorities.length, 1, 'the revoked CA left the bundle');
    assert.deepEqual(
      h.audit
        .filter((a) => a.event.startsWith('authority.'))
        .map((a) => [a.event, a.authority_id, a.trigger, a.caller_pid]),
      [
        ['authority.prepared', prepared.id, 'operator', process.pid],
        ['authority.activated', prepared.id, 'operator', process.pid],
        ['authority.tainted', first.id, 'operator', process.pid],
        ['authority.revoked', first.id, 'operator', process.pid],
      ],
    );
  });
});

describe('admin socket startup', () => {
  it('replaces a stale socket file, refuses a live one and a non-socket file, each naming the path', async () => {
    const tmp = await makeTempDir('adm-');
    try {
      const logger = createLogger({ write: () => undefined });
      const audit = createAuditLog({ write: () => undefined });
      const service = { definition: grpcServiceDefinition(Admin), implementation: {} };
      const path = join(tmp.path, 's.sock');
      // A stale file: the socket of a process that was killed, so nobody listens on it any more.
      const killed = spawn(process.execPath, [
        '-e',
        'require("node:net").createServer().listen(process.argv[1], () => process.kill(process.pid, "SIGKILL"))',
        path,
      ]);
      await once(killed, 'exit');
      assert.equal(statSync(path).isSocket(), true);
      const first = await startAdminSocket(path, service, logger, audit);
      await assert.rejects(startAdminSocket(path, service, logger, audit), {
        code: 'ERR_STARTUP',
        message: `admin socket ${path}: another process is serving on this socket; stop it or set admin_socket elsewhere`,
      });
      await first.close();
      await first.close();
      assert.throws(() => statSync(path), /ENOENT/);
      const file = join(tmp.path, 'file');
      writeFileSync(file, '');
      await assert.rejects(startAdminSocket(file, service, logger, audit), {
        code: 'ERR_STARTUP',
        message: `admin socket ${file}: the path exists and is not a socket; remove it or set admin_socket elsewhere`,
      });
      await assert.rejects(startAdminSocket(join(file, 'x.sock'), service, logger, audit), {
        code: 'ERR_STARTUP',
        message: new RegExp(
          `^admin socket ${file}/x.sock: cannot create the directory ${file}: (EEXIST|ENOTDIR)`,
        ),
      });
    } finally {
      await tmp.cleanup();
    }
  });
});

describe('admin socket and other uids', () => {
  it('a uid-65534 client cannot connect to the 0700 socket, and if the modes are opened up it is refused with PERMISSION_DENIED and an audit event', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('needs root to spawn a uid-65534 client');
      return;
    }
    const h = await harness(0o755);
    try {
      const grpcPath = createRequire(import.meta.url).resolve('@grpc/grpc-js');
      const script = `
        const grpc = require(process.argv[1]);
        const c = new grpc.Client('unix:' + process.argv[2], grpc.credentials.createInsecure());
        c.makeUnaryRequest('/tessera.admin.v1.Admin/CountEntries', (x) => x, (x) => x, Buffer.alloc(0), new grpc.Metadata(), {},
          (err) => { console.log(JSON.stringify({ code: err ? err.code : 0, details: err ? err.details : '',
            errorCode: err && err.metadata ? err.metadata.get('tessera-error-code')[0] : undefined })); c.close(); });`;
      const callAsNobody = async () => {
        const child = spawn(process.execPath, ['-e', script, grpcPath, h.path], {
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
        assert.equal(code, 0, err);
        return {
          result: JSON.parse(out) as { code: number; details: string; errorCode?: string },
          pid: child.pid,
        };
      };
      // As installed: the file mode keeps the other uid out before the server sees it.
      const blocked = await callAsNobody();
      assert.equal(blocked.result.code, grpc.status.UNAVAILABLE);
      assert.match(blocked.result.details, /EACCES/);
      // A mistake in the modes does not open the API: the peer's uid is checked on every call.
      chmodSync(h.path, 0o777);
      const refused = await callAsNobody();
      assert.equal(refused.result.code, grpc.status.PERMISSION_DENIED);
      assert.equal(refused.result.errorCode, 'ERR_PERMISSION_DENIED');
      assert.match(refused.result.details, /uid 65534 is neither root nor the server's uid 0/);
      const denied = h.audit.filter((a) => a.event === 'admin.denied');
      assert.deepEqual(denied, [
        {
          time: denied[0]?.time,
          event: 'admin.denied',
          caller_uid: NOBODY,
          caller_pid: refused.pid,
          method: 'CountEntries',
          reason: "uid 65534 is neither root nor the server's uid 0",
        },
      ]);
      assert.ok(h.logs.some((l) => l.includes('"msg":"admin: refused a call"') && l.includes('"uid":65534')));
      // And root still gets through on the same socket.
      assert.equal((await h.client.unary(Admin.method.health, {})).ready, true);
    } finally {
      await h.close();
    }
  });
});
