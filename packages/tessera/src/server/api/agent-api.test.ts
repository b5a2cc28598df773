// The agent API as an agent sees it: real gRPC over real TLS on a real port, a real SQLite file,
// the server started exactly as `tessera server run` starts it.
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import {
  authorizeAny,
  authorizeId,
  grpcChannelCredentials,
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  verifyX509Svid,
  type X509Bundle,
  X509BundleSet,
  X509Svid,
} from '@tessera/spiffe';
import { createCsr, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import Database from 'better-sqlite3';
import { ServerClient } from '../../agent/server-client.js';
import { ServiceClient } from '../../common/grpc.js';
import { Admin } from '../../gen/tessera/admin/v1/admin_pb.js';
import { type SyncResponse, X509PopPayloadSchema } from '../../gen/tessera/agent/v1/agent_pb.js';
import { x509popChallengeResponse } from '../attestation/x509pop.js';
import type { SqlDatastore } from '../datastore/sql-datastore.js';
import type { RunningServer } from '../run.js';
import { startTestServer } from './test-server.test.util.js';

const td = parseTrustDomain('example.org');
const SERVER_ID = 'spiffe://example.org/tessera/server';

function ecKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

function csrFor(key: { privateKey: KeyObject; publicKey: KeyObject }): Buffer {
  return createCsr(key.publicKey, key.privateKey);
}

interface Attested {
  id: string;
  client: ServerClient;
  key: { privateKey: KeyObject; publicKey: KeyObject };
  svid: X509Svid;
}

describe('agent API', () => {
  let tmp: TempDir;
  let server: RunningServer;
  let address: string;
  let bundle: X509Bundle;
  let nodeCa: TestCa;
  const clients: ServerClient[] = [];

  const client = (svid?: X509Svid) => {
    const c = new ServerClient({ address, trustDomain: td, bundle, ...(svid ? { svid } : {}) });
    clients.push(c);
    return c;
  };

  async function attestWithToken(agentName?: string): Promise<Attested> {
    const token = `tok-${Math.random().toString(36).slice(2)}-${Date.now()}`;
    await server.datastore.createJoinToken({
      token,
      expiresAt: new Date(Date.now() + 60_000),
      ...(agentName ? { agentName } : {}),
    });
    const key = ecKey();
    const r = await client().attest({ type: 'join_token', payload: Buffer.from(token), csr: csrFor(key) });
    const svid = new X509Svid(
      parseSpiffeId(r.spiffeId),
      r.svidChain.map((d) => new X509Certificate(d)),
      key.privateKey,
    );
    return { id: r.spiffeId, client: client(svid), key, svid };
  }

  before(async () => {
    tmp = await makeTempDir('agent-api-');
    nodeCa = TestCa.create({ trustDomain: 'nodes.example' });
    writeFileSync(join(tmp.path, 'node-ca.pem'), nodeCa.rootPem());
    server = await startTestServer(tmp.path, [
      `node_attestors: { x509pop: { ca_bundle_path: ${tmp.path}/node-ca.pem } }`,
    ]);
    address = `127.0.0.1:${server.agentApiPort}`;
    const b = await server.datastore.getBundle(td);
    bundle = (b as NonNullable<typeof b>).x509Bundle();
  });

  after(async () => {
    for (const c of clients) c.close();
    await server?.stop();
    await tmp?.cleanup();
  });

  it('attests with a join token: the agent SVID verifies against the bundle and the token cannot be replayed', async () => {
    const token = 'tok-replay-0123456789abcdef';
    await server.datastore.createJoinToken({
      token,
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'web-vm-1',
    });
    const key = ecKey();
    const r = await client().attest({ type: 'join_token', payload: Buffer.from(token), csr: csrFor(key) });
    assert.equal(r.spiffeId, 'spiffe://example.org/tessera/agent/join_token/web-vm-1');
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      ['join_token:name:web-vm-1'],
    );
    const served = parseSpiffeBundle(td, Buffer.from(r.bundle?.spiffeBundle ?? new Uint8Array()).toString());
    const { id } = verifyX509Svid(r.svidChain, served.x509Bundle());
    assert.equal(id.toString(), r.spiffeId);
    const leaf = new X509Certificate(r.svidChain[0] as Uint8Array);
    assert.ok(leaf.publicKey.equals(key.publicKey), 'the SVID certifies the key of the CSR');
    await assert.rejects(
      client().attest({ type: 'join_token', payload: Buffer.from(token), csr: csrFor(ecKey()) }),
      (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED && /already used/.test(e.details),
    );
    const audit = readFileSync(join(tmp.path, 'data', 'audit.log'), 'utf8');
    assert.match(audit, /"event":"attestation.success".*join_token\/web-vm-1/);
    assert.match(audit, /"event":"join_token.refused"/);
    assert.ok(!audit.includes(token), 'the token never reaches the audit log');
  });

  it('refuses an unknown attestor and a first message without params, and keeps serving', async () => {
    await assert.rejects(
      client().attest({ type: 'aws_iid', payload: new Uint8Array(), csr: csrFor(ecKey()) }),
      (e: grpc.ServiceError) =>
        e.code === grpc.status.PERMISSION_DENIED &&
        /"aws_iid" is not enabled.*join_token, x509pop/.test(e.details),
    );
    const a = await attestWithToken();
    assert.match(a.id, /^spiffe:\/\/example.org\/tessera\/agent\/join_token\/[0-9a-f]{32}$/);
  });

  it('attests with x509pop: chain to the configured CA, challenge signed by the node key, selectors', async () => {
    const node = nodeCa.issueCertificate({ uris: [], dnsNames: ['node-1.example'], subject: 'CN=node-1' });
    const payload = toBinary(
      X509PopPayloadSchema,
      create(X509PopPayloadSchema, { certificates: node.certificates.map((c) => c.raw) }),
    );
    let challenges = 0;
    const r = await client().attest({ type: 'x509pop', payload, csr: csrFor(ecKey()) }, (nonce) => {
      challenges++;
      return x509popChallengeResponse(nonce, node.privateKey);
    });
    assert.equal(challenges, 1);
    assert.match(r.spiffeId, /^spiffe:\/\/example.org\/tessera\/agent\/x509pop\/[0-9a-f]{64}$/);
    const sel = r.selectors.map((s) => `${s.type}:${s.value}`);
    assert.ok(sel.includes('x509pop:subject:cn:node-1'), sel.join(' '));
    assert.ok(sel.includes('x509pop:san:dns:node-1.example'), sel.join(' '));
    assert.ok(sel.some((s) => s.startsWith('x509pop:ca:fingerprint:')));
    // The wrong key answers the challenge: refused.
    await assert.rejects(
      client().attest({ type: 'x509pop', payload, csr: csrFor(ecKey()) }, (nonce) =>
        x509popChallengeResponse(nonce, ecKey().privateKey),
      ),
      (e: grpc.ServiceError) =>
        e.code === grpc.status.PERMISSION_DENIED && /not signed by the key/.test(e.details),
    );
    // A certificate from another CA: refused before any challenge.
    const stranger = TestCa.create({ trustDomain: 'other.example' }).issueCertificate({
      uris: [],
      subject: 'CN=x',
    });
    await assert.rejects(
      client().attest(
        {
          type: 'x509pop',
          payload: toBinary(
            X509PopPayloadSchema,
            create(X509PopPayloadSchema, { certificates: [stranger.certificates[0]!.raw] }),
          ),
          csr: csrFor(ecKey()),
        },
        () => assert.fail('no challenge for an untrusted certificate'),
      ),
      (e: grpc.ServiceError) => /not trusted/.test(e.details),
    );
  });

  it('signs batches only for entitled entries, directly or through a node alias, and mints JWT-SVIDs', async () => {
    const a = await attestWithToken('batch-agent');
    const own = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: a.id,
      selectors: [{ type: 'unix', value: 'uid:1000' }],
      dnsNames: ['web.example.org'],
    });
    const alias = 'spiffe://example.org/node-group/batch';
    await server.datastore.createEntry({
      spiffeId: alias,
      parentId: SERVER_ID,
      selectors: [{ type: 'join_token', value: 'name:batch-agent' }],
    });
    const viaAlias = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/db',
      parentId: alias,
      selectors: [{ type: 'unix', value: 'uid:1001' }],
    });
    const other = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/secret',
      parentId: 'spiffe://example.org/tessera/agent/join_token/someone-else',
      selectors: [{ type: 'unix', value: 'uid:0' }],
    });
    const k = ecKey();
    const res = await a.client.batchNewX509Svid([
      { entryId: own.id, csr: csrFor(k) },
      { entryId: viaAlias.id, csr: csrFor(k) },
      { entryId: other.id, csr: csrFor(k) },
      { entryId: own.id, csr: Buffer.from('not a csr') },
    ]);
    assert.deepEqual(
      res.results.map((r) => r.code),
      [grpc.status.OK, grpc.status.OK, grpc.status.PERMISSION_DENIED, grpc.status.INVALID_ARGUMENT],
    );
    const web = new X509Certificate(res.results[0]!.certChain[0]!);
    assert.match(web.subjectAltName ?? '', /URI:spiffe:\/\/example.org\/web/);
    assert.match(web.subjectAltName ?? '', /DNS:web.example.org/);
    assert.equal(verifyX509Svid(res.results[1]!.certChain, bundle).id.toString(), 'spiffe://example.org/db');
    assert.match(res.results[2]!.message, /not entitled/);
    assert.match(res.results[3]!.message, /csr/i);

    // A batch large enough to be spread over the signing threads: every item signed, in order.
    const many = await a.client.batchNewX509Svid(
      Array.from({ length: 40 }, (_, i) => ({ entryId: i % 2 === 0 ? own.id : viaAlias.id, csr: csrFor(k) })),
    );
    assert.deepEqual(
      many.results.map((r) => r.spiffeId),
      Array.from({ length: 40 }, (_, i) =>
        i % 2 === 0 ? 'spiffe://example.org/web' : 'spiffe://example.org/db',
      ),
    );
    assert.ok(many.results.every((r) => r.code === grpc.status.OK && r.certChain.length === 1));
    const jwt = await a.client.newJwtSvid(own.id, ['payments']);
    const claims = JSON.parse(Buffer.from(jwt.token.split('.')[1] as string, 'base64url').toString());
    assert.equal(claims.sub, 'spiffe://example.org/web');
    assert.deepEqual(claims.aud, ['payments']);
    await assert.rejects(
      a.client.newJwtSvid(other.id, ['payments']),
      (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED,
    );
    const audit = readFileSync(join(tmp.path, 'data', 'audit.log'), 'utf8');
    assert.match(audit, new RegExp(`"event":"svid.denied".*"entry_id":"${other.id}"`));
  });

  it('pushes the entitled entries, then each change, within one stream; a ban ends the stream at once', async () => {
    const a = await attestWithToken('sync-agent');
    const first = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/sync/one',
      parentId: a.id,
      selectors: [{ type: 'unix', value: 'uid:1' }],
    });
    const stream = a.client.sync();
    const messages: SyncResponse[] = [];
    const waiters: (() => void)[] = [];
    stream.on('data', (m: SyncResponse) => {
      messages.push(m);
      for (const w of waiters.splice(0)) w();
    });
    const next = async (pred: (m: SyncResponse) => boolean): Promise<SyncResponse> => {
      for (;;) {
        const m = messages.find(pred);
        if (m !== undefined) {
          messages.splice(messages.indexOf(m), 1);
          return m;
        }
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    const initial = await next((m) => m.synced);
    assert.deepEqual(
      initial.upserted.map((e) => e.spiffeId),
      ['spiffe://example.org/sync/one'],
    );
    assert.equal(initial.bundle?.trustDomain, 'example.org');
    const second = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/sync/two',
      parentId: a.id,
      selectors: [{ type: 'unix', value: 'uid:2' }],
    });
    const added = await next((m) => m.upserted.length > 0);
    assert.deepEqual(
      added.upserted.map((e) => e.id),
      [second.id],
    );
    // Someone else's entry is not pushed to this agent.
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/sync/elsewhere',
      parentId: 'spiffe://example.org/tessera/agent/join_token/other',
      selectors: [{ type: 'unix', value: 'uid:3' }],
    });
    await server.datastore.deleteEntry(first.id);
    const removed = await next((m) => m.removedEntryIds.length > 0);
    assert.deepEqual(removed.removedEntryIds, [first.id]);
    assert.equal(
      messages.some((m) => m.upserted.some((e) => e.spiffeId.endsWith('/elsewhere'))),
      false,
    );

    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    await server.datastore.banAgent(a.id);
    const err = await ended;
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /banned/);
    await assert.rejects(
      a.client.getBundle(),
      (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED && /banned/.test(e.details),
    );
  });

  it('after a gap in the change feed (resync), a stream gets the entries it missed and a ban it missed cuts it', {
    timeout: 20_000,
  }, async () => {
    const a = await attestWithToken('resync-agent');
    const stream = a.client.sync();
    const messages: SyncResponse[] = [];
    let wake: () => void = () => {};
    stream.on('data', (m: SyncResponse) => {
      messages.push(m);
      wake();
    });
    const until = async (pred: () => boolean) => {
      while (!pred()) await new Promise<void>((r) => (wake = r));
    };
    await until(() => messages.some((m) => m.synced));
    // Written behind the feed's back (as if its events had been pruned): an entry, then a ban.
    const db = new Database(join(tmp.path, 'data', 'datastore.sqlite3'));
    try {
      db.prepare(
        `INSERT INTO registration_entries (id, spiffe_id, parent_id, selectors_key, x509_svid_ttl, jwt_svid_ttl,
           dns_names, federates_with, admin, downstream, hint, expires_at, metadata, revision, created_at, updated_at)
         VALUES ('missed-entry', 'spiffe://example.org/resync/missed', ?, 'unix:uid:7', 0, 0, '[]', '[]', 0, 0, '',
           NULL, '{}', 1, 0, 0)`,
      ).run(a.id);
      db.prepare("INSERT INTO entry_selectors VALUES ('missed-entry', 'unix', 'uid:7')").run();
      db.prepare('UPDATE change_revision SET revision = revision + 1 WHERE id = 1').run();
    } finally {
      db.close();
    }
    const feed = (server.datastore as SqlDatastore).feed;
    const resyncs = feed.resyncs;
    await feed.poll();
    assert.equal(feed.resyncs, resyncs + 1);
    await until(() => messages.some((m) => m.upserted.some((e) => e.id === 'missed-entry')));
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    const db2 = new Database(join(tmp.path, 'data', 'datastore.sqlite3'));
    try {
      db2.prepare('UPDATE agents SET banned = 1 WHERE spiffe_id = ?').run(a.id);
      db2.prepare('UPDATE change_revision SET revision = revision + 1 WHERE id = 1').run();
    } finally {
      db2.close();
    }
    await feed.poll();
    const err = await ended;
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /banned/);
  });

  it('pushes a taint to open streams at once, and counts issuance in /metrics', async () => {
    const a = await attestWithToken('taint-agent');
    const stream = a.client.sync();
    const got: SyncResponse[] = [];
    let wake: (() => void) | undefined;
    stream.on('data', (m: SyncResponse) => {
      got.push(m);
      wake?.();
    });
    stream.on('error', () => undefined);
    const waitFor = async (pred: (m: SyncResponse) => boolean) => {
      while (!got.some(pred)) await new Promise<void>((r) => (wake = r));
      return got.find(pred) as SyncResponse;
    };
    await waitFor((m) => m.synced);
    const oldId = (await server.authority.list()).find((x) => x.kind === 'x509' && x.status === 'active')?.id;
    await server.authority.prepare('x509');
    await server.authority.activate('x509');
    await server.authority.taint('x509', oldId as string);
    const m = await waitFor((x) => x.taintedAuthorities.length > 0);
    assert.deepEqual(m.taintedAuthorities, [`x509:${oldId}`]);
    // As an agent does from its push stream: the bundle with the new CA, which now signs the server's
    // SVID too, for the clients of the tests that follow.
    const current = await server.datastore.getBundle(td);
    bundle = (current as NonNullable<typeof current>).x509Bundle();
    stream.cancel();
    const text = await server.metrics.render();
    assert.match(text, /tessera_svids_issued_total\{type="x509",kind="agent"\} [1-9]/);
    assert.match(text, /tessera_attestation_failures_total\{attestor="join_token"\} [1-9]/);
    assert.match(text, /tessera_agents [1-9]/);
  });

  it('serves the admin API on the agent port to SVIDs of admin entries only', async () => {
    const a = await attestWithToken('admin-agent');
    const ops = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/ops',
      parentId: a.id,
      selectors: [{ type: 'unix', value: 'uid:0' }],
      admin: true,
    });
    const plain = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/not-ops',
      parentId: a.id,
      selectors: [{ type: 'unix', value: 'uid:5' }],
    });
    const k = ecKey();
    const res = await a.client.batchNewX509Svid([
      { entryId: ops.id, csr: csrFor(k) },
      { entryId: plain.id, csr: csrFor(k) },
    ]);
    const adminClient = (i: number, id: string) => {
      const svid = new X509Svid(
        parseSpiffeId(id),
        res.results[i]!.certChain.map((d) => new X509Certificate(d)),
        k.privateKey,
      );
      const c = new ServiceClient(
        Admin,
        address,
        grpcChannelCredentials({
          svid,
          bundles: new X509BundleSet([bundle]),
          authorizer: authorizeId(SERVER_ID),
        }),
        { 'grpc.ssl_target_name_override': 'tessera-server' },
      );
      clients.push({ close: () => c.close() } as ServerClient);
      return c;
    };
    const count = await adminClient(0, ops.spiffeId).unary(Admin.method.countEntries, {});
    assert.ok(count.count >= 2n);
    await assert.rejects(
      adminClient(1, plain.spiffeId).unary(Admin.method.countEntries, {}),
      (e: grpc.ServiceError) =>
        e.code === grpc.status.PERMISSION_DENIED && /not an admin identity/.test(e.details),
    );
    // Its SVID revoked, the admin workload is refused, saying why.
    const serial = new X509Certificate(res.results[0]!.certChain[0]!).serialNumber;
    await server.revocations.revoke({ serial }, 1);
    await assert.rejects(
      adminClient(0, ops.spiffeId).unary(Admin.method.countEntries, {}),
      (e: grpc.ServiceError) =>
        e.code === grpc.status.PERMISSION_DENIED &&
        /the X509-SVID with serial \w+ was revoked by its authority/.test(e.details),
    );
  });

  it('renews the agent SVID; the superseded-twice SVID is refused', async () => {
    const a = await attestWithToken('renew-agent');
    const k2 = ecKey();
    const chain2 = await a.client.renewAgent(csrFor(k2));
    const svid2 = new X509Svid(
      parseSpiffeId(a.id),
      chain2.map((d) => new X509Certificate(d)),
      k2.privateKey,
    );
    const c2 = client(svid2);
    assert.ok((await c2.getBundle()).bundle);
    // The first SVID is still accepted right after renewal (its open calls finish) ...
    assert.ok((await a.client.getBundle()).bundle);
    // ... but not after a second renewal.
    await c2.renewAgent(csrFor(ecKey()));
    await assert.rejects(a.client.getBundle(), (e: grpc.ServiceError) =>
      /not its current one/.test(e.details),
    );
  });

  it('refuses calls without an SVID, with an SVID of another CA, and garbage frames, and keeps serving', async () => {
    await assert.rejects(
      client().getBundle(),
      (e: grpc.ServiceError) =>
        e.code === grpc.status.PERMISSION_DENIED && /needs the agent SVID/.test(e.details),
    );
    const rogue = TestCa.create({ trustDomain: 'example.org' }).issueX509Svid(
      'spiffe://example.org/tessera/agent/join_token/x',
    );
    const rogueSvid = new X509Svid(
      parseSpiffeId('spiffe://example.org/tessera/agent/join_token/x'),
      rogue.certificates,
      rogue.privateKey,
    );
    await assert.rejects(client(rogueSvid).getBundle());
    // A raw client sending bytes that are not a protobuf message.
    const raw = new grpc.Client(
      address,
      grpcChannelCredentials({ bundles: new X509BundleSet([bundle]), authorizer: authorizeAny() }),
      { 'grpc.ssl_target_name_override': 'x', 'grpc.max_send_message_length': -1 },
    );
    clients.push({ close: () => raw.close() } as ServerClient);
    const garbage = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest(
        '/tessera.agent.v1.Agent/GetBundle',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
        (err) => resolve(err),
      ),
    );
    assert.ok(garbage !== null);
    assert.ok(
      [grpc.status.INTERNAL, grpc.status.PERMISSION_DENIED, grpc.status.INVALID_ARGUMENT].includes(
        garbage.code,
      ),
    );
    // An oversized message (5 MiB) is refused by the server before any handler runs.
    const oversized = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest(
        '/tessera.agent.v1.Agent/BatchNewX509SVID',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.concat([Buffer.from([0x0a, 0x80, 0x80, 0x40]), Buffer.alloc(5 * 1024 * 1024, 1)]),
        (err) => resolve(err),
      ),
    );
    assert.equal(oversized?.code, grpc.status.RESOURCE_EXHAUSTED);
    const a = await attestWithToken();
    assert.ok((await a.client.getBundle()).bundle, 'the server still serves');
  });
});
