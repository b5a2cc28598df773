// Federation between tessera servers in this process, each exactly as `tessera server run` starts
// it: real bundle endpoints (https_spiffe with the server SVID, https_web with a certificate from a
// private CA), real fetches, the CLI as operators type it, and a workload on a real agent socket.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, parseTrustDomain, type X509Context } from '@tessera/spiffe';
import {
  makeTempDir,
  type PostgresCluster,
  postgresAvailable,
  startPostgres,
  type TempDir,
  TestCa,
} from '@tessera/testkit';
import type { RunningAgent } from '../../agent/run.js';
import { startTestAgent } from '../../agent/test-agent.test.util.js';
import { tessera } from '../../cli/main.test.util.js';
import { ConfigError } from '../../common/config-schema.js';
import { createLogger } from '../../common/log.js';
import { startTestServer } from '../api/test-server.test.util.js';
import { parseServerConfig } from '../config.js';
import type { RunningServer } from '../run.js';

const A = parseTrustDomain('a.test');
const B = parseTrustDomain('b.test');
const quiet = createLogger({ level: 'error', write: () => undefined });

/** Resolves with the first context `watch` delivers that satisfies `ok`. */
function nextContext(
  socket: string,
  ok: (ctx: X509Context) => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<X509Context> {
  const client = createWorkloadApiClient({ address: `unix://${socket}` });
  const abort = new AbortController();
  let last = 'nothing yet';
  return new Promise<X509Context>((resolve, reject) => {
    const timer = setTimeout(() => {
      abort.abort();
      reject(new Error(`timed out waiting for ${what}; last context: ${last}`));
    }, timeoutMs);
    void client.watchX509Context(
      {
        onUpdate(ctx) {
          last = ctx.bundles
            .list()
            .map((b) => `${b.trustDomain.name}:${b.authorities.length}`)
            .join(',');
          if (!ok(ctx)) return;
          clearTimeout(timer);
          abort.abort();
          resolve(ctx);
        },
        onError() {},
      },
      abort.signal,
    );
  }).finally(() => client.close());
}

const rootsOf = (ctx: X509Context, td = A) =>
  (ctx.bundles.get(td)?.authorities ?? []).map((c) => c.fingerprint256).sort();

describe('federation between tessera servers', () => {
  let tmp: TempDir;
  let a: RunningServer;
  let b: RunningServer;
  let agent: RunningAgent;
  let aUrl: string;
  let bUrl: string;
  let aSock: string;
  let bSock: string;
  const ca = TestCa.create({ trustDomain: 'web-ca.test' });

  before(async () => {
    tmp = await makeTempDir('federation-');
    // B's bundle endpoint is https_web, with a certificate of a private CA for "localhost".
    const web = ca.issueCertificate({ uris: [], dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] });
    writeFileSync(join(tmp.path, 'web.pem'), web.certificatesPem);
    writeFileSync(join(tmp.path, 'web.key'), web.privateKeyPem, { mode: 0o600 });
    writeFileSync(join(tmp.path, 'web-ca.pem'), ca.rootPem());
    // A serves a one-second refresh hint; B refreshes by it (the one-minute floor lowered for the test).
    a = await startTestServer(
      join(tmp.path, 'a'),
      ['federation: { bundle_endpoint: { address: 127.0.0.1, port: 0, refresh_hint: 1s } }'],
      0,
      'a.test',
    );
    b = await startTestServer(
      join(tmp.path, 'b'),
      [
        'federation:',
        '  bundle_endpoint:',
        '    address: 127.0.0.1',
        '    port: 0',
        '    profile:',
        '      https_web:',
        `        serving_cert_file: { cert_file_path: ${tmp.path}/web.pem, key_file_path: ${tmp.path}/web.key }`,
      ],
      0,
      'b.test',
      { minRefreshMs: 0, retryMs: 200 },
    );
    aUrl = `https://127.0.0.1:${a.bundleEndpointPort}`;
    bUrl = `https://localhost:${b.bundleEndpointPort}`;
    aSock = join(tmp.path, 'a', 'admin.sock');
    bSock = join(tmp.path, 'b', 'admin.sock');
    writeFileSync(join(tmp.path, 'a-bundle.json'), (await a.datastore.getBundle(A))?.marshal() ?? '');
    // A workload of B that federates with a.test, and one that does not.
    await b.datastore.createJoinToken({
      token: 'federation-agent-token-0123456',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'fed',
    });
    await b.datastore.createEntry({
      spiffeId: 'spiffe://b.test/web',
      parentId: 'spiffe://b.test/tessera/agent/join_token/fed',
      selectors: [{ type: 'unix', value: `uid:${process.getuid?.() ?? 0}` }],
      federatesWith: ['a.test'],
    });
    agent = await startTestAgent(b, join(tmp.path, 'agent'), 'federation-agent-token-0123456', quiet);
  });

  after(async () => {
    await agent?.stop();
    await b?.stop();
    await a?.stop();
    await tmp?.cleanup();
  });

  it('refuses relationships that cannot work, naming the field', async () => {
    const create = (...flags: string[]) => tessera('federation', 'create', '--socket', bSock, ...flags);
    let r = await create(
      '--trust-domain',
      'a.test',
      '--bundle-endpoint-url',
      `http://127.0.0.1:1`,
      '--bundle-endpoint-profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      'spiffe://a.test/tessera/server',
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bundle_endpoint_url: the scheme is "http"; it must be https/);
    r = await create(
      '--trust-domain',
      'a.test',
      '--bundle-endpoint-url',
      aUrl,
      '--bundle-endpoint-profile',
      'https_spiffe',
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /https_spiffe needs endpoint_spiffe_id/);
    r = await create(
      '--trust-domain',
      'b.test',
      '--bundle-endpoint-url',
      aUrl,
      '--bundle-endpoint-profile',
      'https_web',
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /own trust domain/);
    r = await create(
      '--trust-domain',
      'a.test',
      '--bundle-endpoint-url',
      aUrl,
      '--bundle-endpoint-profile',
      'https_other',
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--bundle-endpoint-profile must be https_spiffe or https_web/);
    assert.equal(
      (await tessera('federation', 'list', '--socket', bSock)).stdout.trim(),
      'No federation relationships',
    );
  });

  it("fetches over https_spiffe once the peer bundle is set, keeping the peer's sequence, and says what was missing before", async () => {
    const flags = ['--socket', bSock, '--trust-domain', 'a.test'];
    let r = await tessera(
      'federation',
      'create',
      ...flags,
      '--bundle-endpoint-url',
      aUrl,
      '--bundle-endpoint-profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      'spiffe://a.test/tessera/server',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Federation relationship created with a\.test/);
    r = await tessera('federation', 'refresh', ...flags);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /no bundle of "a\.test" is stored to authenticate the bundle endpoint spiffe:\/\/a\.test\/tessera\/server/,
    );
    assert.match(r.stderr, /--trust-domain-bundle-path/);
    assert.equal(await b.datastore.getBundle(A), undefined);

    r = await tessera(
      'federation',
      'update',
      ...flags,
      '--trust-domain-bundle-path',
      join(tmp.path, 'a-bundle.json'),
    );
    assert.equal(r.code, 0, r.stderr);
    r = await tessera('federation', 'refresh', ...flags);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Bundle refreshed for a\.test \(sequence \d+, 1 X\.509 and 1 JWT authorities\)/);
    const fetched = await b.datastore.getBundle(A);
    const served = await a.datastore.getBundle(A);
    assert.ok(fetched !== undefined && served !== undefined);
    assert.equal(fetched.refreshHint, 1);
    assert.equal(fetched.sequenceNumber, served.sequenceNumber);
    assert.ok(fetched.with({ refreshHint: undefined }).equals(served.with({ refreshHint: undefined })));

    r = await tessera('federation', 'show', ...flags, '--output', 'json');
    const shown = JSON.parse(r.stdout) as {
      source: string;
      status: {
        last_success: string | null;
        last_error: string | null;
        bundle: { x509_authorities: number } | null;
      };
    };
    assert.equal(shown.source, 'datastore');
    assert.notEqual(shown.status.last_success, null);
    assert.equal(shown.status.last_error, null);
    assert.equal(shown.status.bundle?.x509_authorities, 1);
    const metrics = await b.metrics.render();
    assert.match(metrics, /tessera_federation_bundle_age_seconds\{trust_domain="a.test"\} \d+/);
    assert.match(metrics, /tessera_federation_refresh_errors_total\{trust_domain="a.test"\} [1-9]/);
  });

  it('refuses an endpoint that presents another SPIFFE ID, and keeps the last good bundle', async () => {
    const flags = ['--socket', bSock, '--trust-domain', 'a.test'];
    const before = await b.datastore.getBundle(A);
    let r = await tessera(
      'federation',
      'update',
      ...flags,
      '--endpoint-spiffe-id',
      'spiffe://a.test/not-the-server',
    );
    assert.equal(r.code, 0, r.stderr);
    r = await tessera('federation', 'refresh', ...flags);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /spiffe:\/\/a\.test\/not-the-server/);
    assert.match(r.stderr, /the last good bundle stays in use/);
    assert.ok((await b.datastore.getBundle(A))?.equals(before));
    r = await tessera('federation', 'show', ...flags);
    assert.match(r.stdout, /Last error {11}: .*not-the-server/);
    r = await tessera(
      'federation',
      'update',
      ...flags,
      '--endpoint-spiffe-id',
      'spiffe://a.test/tessera/server',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await tessera('federation', 'refresh', ...flags)).code, 0);
  });

  it("brings a rotation of the peer's CA to a federated workload by the refresh hint, and not to the others' bundles", async () => {
    const agentSock = agent.socketPath;
    const first = await nextContext(agentSock, (ctx) => rootsOf(ctx).length === 1, 'the a.test bundle');
    assert.deepEqual(rootsOf(first), [a.authority.x509.certificate.fingerprint256]);
    const prepared = await a.authority.prepare('x509');
    // No command on B: its federation fetches again after the one-second hint.
    const rotated = await nextContext(
      agentSock,
      (ctx) => rootsOf(ctx).length === 2,
      'both a.test roots',
    ).catch(async (err: Error) => {
      throw new Error(
        `${err.message}; B stores ${(await b.datastore.getBundle(A))?.x509Authorities.length} roots of a.test, A ${(await a.datastore.getBundle(A))?.x509Authorities.length}; B's federation: ${JSON.stringify(b.federation.get('a.test')?.status)}; agent: ${agent.manager.federatedBundles.get('a.test')?.x509Authorities.length}`,
      );
    });
    assert.ok(rootsOf(rotated).includes(prepared.certificate?.fingerprint256 ?? 'missing'));
    assert.equal(rotated.bundles.get(B)?.authorities.length, 1);
  });

  it('fetches over https_web from a private CA only when told its roots', async () => {
    const flags = ['--socket', aSock, '--trust-domain', 'b.test'];
    let r = await tessera(
      'federation',
      'create',
      ...flags,
      '--bundle-endpoint-url',
      bUrl,
      '--bundle-endpoint-profile',
      'https_web',
    );
    assert.equal(r.code, 0, r.stderr);
    r = await tessera('federation', 'refresh', ...flags);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /certificate/i);
    assert.equal(await a.datastore.getBundle(B), undefined);
    r = await tessera('federation', 'update', ...flags, '--ca-bundle-path', join(tmp.path, 'web-ca.pem'));
    assert.equal(r.code, 0, r.stderr);
    r = await tessera('federation', 'refresh', ...flags);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (await a.datastore.getBundle(B))?.x509Authorities.map((c) => c.fingerprint256),
      [b.authority.x509.certificate.fingerprint256],
    );
    r = await tessera('federation', 'show', ...flags);
    assert.match(r.stdout, /Endpoint roots {7}: a private CA bundle/);
  });

  it('deleting a relationship removes the bundle from the workloads', async () => {
    const r = await tessera('federation', 'delete', '--socket', bSock, '--trust-domain', 'a.test');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Federation relationship deleted: a\.test/);
    const ctx = await nextContext(agent.socketPath, (c) => !c.bundles.has(A), 'a.test gone');
    assert.equal(ctx.bundles.has(B), true);
    assert.equal(await b.datastore.getBundle(A), undefined);
    const again = await tessera('federation', 'refresh', '--socket', bSock, '--trust-domain', 'a.test');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no relationship with "a\.test"/);
  });

  it("lists server.yaml's relationships as such and refuses to change them through the API", async () => {
    const c = await startTestServer(
      join(tmp.path, 'c'),
      [
        'federation:',
        '  federates_with:',
        '    a.test:',
        `      bundle_endpoint_url: ${aUrl}`,
        '      bundle_endpoint_profile: { https_spiffe: { endpoint_spiffe_id: "spiffe://a.test/tessera/server" } }',
      ],
      0,
      'c.test',
    );
    try {
      const cSock = join(tmp.path, 'c', 'admin.sock');
      const set = await tessera(
        'bundle',
        'set',
        '--socket',
        cSock,
        '--id',
        'a.test',
        '--format',
        'spiffe',
        '--path',
        join(tmp.path, 'a-bundle.json'),
      );
      assert.equal(set.code, 0, set.stderr);
      const refreshed = await tessera('federation', 'refresh', '--socket', cSock, '--trust-domain', 'a.test');
      assert.equal(refreshed.code, 0, refreshed.stderr);
      assert.equal((await c.datastore.getBundle(A))?.x509Authorities.length, 2);
      const list = await tessera('federation', 'list', '--socket', cSock);
      assert.match(list.stdout, /Found 1 federation relationship\n/);
      assert.match(list.stdout, /Defined in {11}: server\.yaml/);
      const del = await tessera('federation', 'delete', '--socket', cSock, '--trust-domain', 'a.test');
      assert.equal(del.code, 1);
      assert.match(del.stderr, /defined in server\.yaml \(federation\.federates_with\); remove it there/);
      const dup = await tessera(
        'federation',
        'create',
        '--socket',
        cSock,
        '--trust-domain',
        'a.test',
        '--bundle-endpoint-url',
        aUrl,
        '--bundle-endpoint-profile',
        'https_web',
      );
      assert.equal(dup.code, 1);
      assert.match(dup.stderr, /defined in server\.yaml/);
    } finally {
      await c.stop();
    }
  });
});

if (postgresAvailable('federation across servers on one PostgreSQL'))
  describe('federation across servers sharing a PostgreSQL datastore', () => {
    let tmp: TempDir;
    let cluster: PostgresCluster;
    const servers: RunningServer[] = [];
    before(async () => {
      tmp = await makeTempDir('federation-ha-');
      cluster = await startPostgres();
    });
    after(async () => {
      for (const s of servers.reverse()) await s.stop();
      await cluster?.stop();
      await tmp?.cleanup();
    });

    it('a relationship created through one server is fetched by every server; a delete stops them all', async () => {
      const peer = await startTestServer(
        join(tmp.path, 'peer'),
        ['federation: { bundle_endpoint: { address: 127.0.0.1, port: 0 } }'],
        0,
        'peer.test',
      );
      servers.push(peer);
      const pg = `datastore: { postgres: { connection_string: "${cluster.connectionString}" } }`;
      const one = await startTestServer(join(tmp.path, 'one'), [pg]);
      servers.push(one);
      const two = await startTestServer(join(tmp.path, 'two'), [pg]);
      servers.push(two);
      const file = join(tmp.path, 'peer.json');
      writeFileSync(file, (await peer.datastore.getBundle(parseTrustDomain('peer.test')))?.marshal() ?? '');
      const created = await tessera(
        'federation',
        'create',
        '--socket',
        join(tmp.path, 'one', 'admin.sock'),
        '--trust-domain',
        'peer.test',
        '--bundle-endpoint-url',
        `https://127.0.0.1:${peer.bundleEndpointPort}`,
        '--bundle-endpoint-profile',
        'https_spiffe',
        '--endpoint-spiffe-id',
        'spiffe://peer.test/tessera/server',
        '--trust-domain-bundle-path',
        file,
      );
      assert.equal(created.code, 0, created.stderr);
      // The other server learns of it from the change feed, and fetches it itself.
      const refreshed = await tessera(
        'federation',
        'refresh',
        '--socket',
        join(tmp.path, 'two', 'admin.sock'),
        '--trust-domain',
        'peer.test',
      );
      assert.equal(refreshed.code, 0, refreshed.stderr);
      assert.notEqual(two.federation.get('peer.test')?.status.lastSuccess, undefined);
      assert.equal(two.federation.get('peer.test')?.source, 'datastore');
      const del = await tessera(
        'federation',
        'delete',
        '--socket',
        join(tmp.path, 'two', 'admin.sock'),
        '--trust-domain',
        'peer.test',
      );
      assert.equal(del.code, 0, del.stderr);
      // The delete reaches the first server through its feed (NOTIFY): wait for the change, then
      // for its federation to apply it.
      await new Promise<void>((resolve) => {
        const check = () =>
          void one.federation.settled().then(() => {
            if (one.federation.get('peer.test') !== undefined) return;
            off();
            resolve();
          });
        const off = one.datastore.onChange((c) => {
          if (c.kind === 'federation') check();
        });
        check();
      });
      assert.equal(one.federation.get('peer.test'), undefined);
    });
  });

describe('server.yaml federation keys', () => {
  const base = ['trust_domain: example.org', 'federation:'];
  const problems = (lines: string[]) => {
    try {
      parseServerConfig([...base, ...lines].join('\n'));
    } catch (err) {
      if (err instanceof ConfigError) return err.message;
      throw err;
    }
    return '';
  };

  it('names each bad federates_with key and value', () => {
    const text = problems([
      '  federates_with:',
      '    Not_A_TD!: { bundle_endpoint_url: "https://x", bundle_endpoint_profile: { https_web: {} } }',
      '    spire.test:',
      '      bundle_endpoint_url: http://spire.test:8443',
      '      bundle_endpoint_profile: { https_spiffe: {} }',
      '    other.test: { bundle_endpoint_url: "https://o", bundle_endpoint_profile: { https_x: {} } }',
    ]);
    assert.match(text, /federation\.federates_with\.Not_A_TD!: is not a trust domain name/);
    assert.match(
      text,
      /federation\.federates_with\.spire\.test\.bundle_endpoint_url: the scheme is "http"; it must be https/,
    );
    assert.match(
      text,
      /federation\.federates_with\.spire\.test\.bundle_endpoint_profile\.https_spiffe\.endpoint_spiffe_id: is required/,
    );
    assert.match(
      text,
      /federation\.federates_with\.other\.test\.bundle_endpoint_profile\.https_x: unknown key; allowed here: https_spiffe, https_web/,
    );
  });

  it("has no bundle endpoint unless configured, and SPIRE's defaults when it is", () => {
    const none = parseServerConfig('trust_domain: example.org');
    assert.equal(none.federation.bundle_endpoint, undefined);
    assert.deepEqual(none.federation.federates_with, {});
    const on = parseServerConfig(
      ['trust_domain: example.org', 'federation: { bundle_endpoint: {} }'].join('\n'),
    );
    assert.deepEqual(on.federation.bundle_endpoint, {
      address: '0.0.0.0',
      port: 8443,
      refresh_hint: 300_000,
      profile: { https_spiffe: {} },
    });
  });
});
