import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { TestCa, TestJwtAuthority } from '@tessera/testkit';
import { parseJwtBundle } from '../bundle/jwt-bundle.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { X509SVIDResponseSchema } from '../gen/workload/workload_pb.js';
import { parseSpiffeId } from '../spiffeid/spiffe-id.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { parseX509SvidRaw, type X509Svid } from '../svid/x509-svid.js';
import { createWorkloadApiClient, type WorkloadApiClient, type X509Context } from './client.js';
import { FakeWorkloadApi } from './fake-server.js';

const td = parseTrustDomain('example.org');
const fedTd = parseTrustDomain('federated.org');
const ca = TestCa.create({ trustDomain: 'example.org' });
const fedCa = TestCa.create({ trustDomain: 'federated.org' });
const bundle = new X509Bundle(td, [ca.root]);
const fedBundle = new X509Bundle(fedTd, [fedCa.root]);
const jwtAuthority = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'k1' });

function svid(path: string, hint = ''): X509Svid {
  const s = ca.issueX509Svid(`spiffe://example.org${path}`);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, hint);
}

/** Collects watch updates and errors; `next()` waits for the next one. */
class Queue<T> {
  readonly items: T[] = [];
  readonly #waiters: ((v: T) => void)[] = [];
  push = (v: T): void => {
    const w = this.#waiters.shift();
    if (w === undefined) this.items.push(v);
    else w(v);
  };
  next(): Promise<T> {
    const v = this.items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

describe('WorkloadApiClient against a Workload API on a real Unix socket', () => {
  let api: FakeWorkloadApi;
  let client: WorkloadApiClient;
  before(async () => {
    api = await FakeWorkloadApi.start();
    client = createWorkloadApiClient({ address: api.address, backoff: { initialMs: 20, maxMs: 100 } });
  });
  after(async () => {
    client.close();
    await api.close();
  });

  it('fetches the X.509 context with the security header, de-duplicating hints (first wins)', async () => {
    const a = svid('/a', 'internal');
    const b = svid('/b', 'internal');
    const c = svid('/c', 'external');
    api.setX509Svids(
      [
        { svid: a, bundle },
        { svid: b, bundle },
        { svid: c, bundle },
      ],
      [fedBundle],
    );
    const ctx = await client.fetchX509Context();
    assert.deepEqual(
      ctx.svids.map((s) => `${s.id.path}:${s.hint}`),
      ['/a:internal', '/c:external'],
    );
    assert.ok(ctx.bundles.getX509BundleForTrustDomain(td).hasAuthority(ca.root));
    assert.ok(ctx.bundles.getX509BundleForTrustDomain(fedTd).hasAuthority(fedCa.root));
    assert.equal((await client.fetchX509Svid()).id.path, '/a');
    assert.ok(api.requests.every((r) => r.securityHeader));
    const set = await client.fetchX509Bundles();
    assert.deepEqual(
      set.list().map((x) => x.trustDomain.name),
      ['example.org', 'federated.org'],
    );
  });

  it('fetches JWT bundles and JWT-SVIDs, and validates through the API', async () => {
    api.setJwtBundles([parseJwtBundle(td, jwtAuthority.jwks())]);
    const set = await client.fetchJwtBundles();
    assert.ok(set.getJwtBundleForTrustDomain(td).hasJwtAuthority('k1'));
    const seen: string[][] = [];
    api.setJwtSvidMinter((req) => {
      seen.push([...req.audience, `id=${req.spiffeId}`]);
      return [
        {
          spiffeId: 'spiffe://example.org/a',
          svid: jwtAuthority.sign({ sub: 'spiffe://example.org/a', aud: req.audience }),
        },
      ];
    });
    const jwt = await client.fetchJwtSvid({
      audience: ['svc', 'other'],
      subject: parseSpiffeId('spiffe://example.org/a'),
    });
    assert.equal(jwt.id.toString(), 'spiffe://example.org/a');
    assert.deepEqual(jwt.audience, ['svc', 'other']);
    assert.deepEqual(seen.at(-1), ['svc', 'other', 'id=spiffe://example.org/a']);
    api.setJwtValidator((req) =>
      req.audience === 'svc'
        ? { spiffeId: 'spiffe://example.org/a' }
        : { code: grpc.status.INVALID_ARGUMENT, details: 'token has expired' },
    );
    assert.equal((await client.validateJwtSvid(jwt.marshal(), 'svc')).id.path, '/a');
    await assert.rejects(
      client.validateJwtSvid(jwt.marshal(), 'nope'),
      (e: unknown) => isSpiffeError(e, ErrorCode.JWTSVID_VERIFY) && /token has expired/.test(e.message),
    );
  });

  it('turns PermissionDenied into an error that says no identity was issued to this process', async () => {
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    try {
      await assert.rejects(client.fetchX509Context(), (e: unknown) => {
        assert.ok(isSpiffeError(e, ErrorCode.WORKLOADAPI_PERMISSION_DENIED));
        const uid = process.getuid?.();
        assert.equal(
          e.message,
          `workloadapi: fetch X.509 context: no identity: the Workload API at ${api.address} issued no identity to this process (uid ${uid}, gid ${process.getgid?.()}) (PermissionDenied: no identity issued); register an entry whose selectors match this process (e.g. unix:uid:${uid}), or run it as the user an entry names`,
        );
        return true;
      });
    } finally {
      api.setError('FetchX509SVID', undefined);
    }
  });

  it("quotes a PermissionDenied that says more than 'no identity issued' as the agent says it, without the advice to register an entry", async () => {
    const details =
      'the server banned this agent (spiffe://example.org/agent): it serves no identity to any workload';
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details });
    try {
      await assert.rejects(client.fetchX509Context(), (e: unknown) => {
        assert.ok(isSpiffeError(e, ErrorCode.WORKLOADAPI_PERMISSION_DENIED));
        assert.equal(
          e.message,
          `workloadapi: fetch X.509 context: no identity: the Workload API at ${api.address} refused this process (uid ${process.getuid?.()}, gid ${process.getgid?.()}): ${details}`,
        );
        return true;
      });
    } finally {
      api.setError('FetchX509SVID', undefined);
    }
  });

  it('refuses a response that breaks the spec: empty svids, a spiffe_id that differs from the certificate', async () => {
    api.setX509Response(create(X509SVIDResponseSchema, {}));
    await assert.rejects(
      client.fetchX509Context(),
      (e: unknown) => isSpiffeError(e, ErrorCode.WORKLOADAPI_RESPONSE) && /no SVIDs/.test(e.message),
    );
    const s = svid('/a');
    api.setX509Svids([{ svid: s, bundle }]);
    const raw = s.marshalRaw();
    api.setX509Response(
      create(X509SVIDResponseSchema, {
        svids: [
          {
            spiffeId: 'spiffe://example.org/b',
            x509Svid: raw.certificates,
            x509SvidKey: raw.privateKey,
            bundle: bundle.toDer(),
            hint: '',
          },
        ],
      }),
    );
    await assert.rejects(
      client.fetchX509Context(),
      (e: unknown) => isSpiffeError(e, ErrorCode.WORKLOADAPI_RESPONSE) && /does not match/.test(e.message),
    );
  });

  it('watches: delivers each snapshot in order, reports a bad message and keeps going', async () => {
    api.setX509Svids([{ svid: svid('/v1'), bundle }]);
    const updates = new Queue<X509Context>();
    const errors = new Queue<SpiffeError>();
    const ac = new AbortController();
    const done = client.watchX509Context({ onUpdate: updates.push, onError: errors.push }, ac.signal);
    assert.equal((await updates.next()).svids[0]?.id.path, '/v1');
    api.setX509Svids([{ svid: svid('/v2'), bundle }]);
    assert.equal((await updates.next()).svids[0]?.id.path, '/v2');
    api.setX509Response(create(X509SVIDResponseSchema, {}));
    assert.match((await errors.next()).message, /no SVIDs/);
    api.setX509Svids([{ svid: svid('/v3'), bundle }]);
    assert.equal((await updates.next()).svids[0]?.id.path, '/v3');
    ac.abort();
    await done;
    assert.equal(updates.items.length, 0);
  });

  it('watches: resumes after the server restarts and serves new material', async () => {
    api.setX509Svids([{ svid: svid('/before'), bundle }]);
    const updates = new Queue<X509Context>();
    const errors = new Queue<SpiffeError>();
    const ac = new AbortController();
    const done = client.watchX509Context({ onUpdate: updates.push, onError: errors.push }, ac.signal);
    assert.equal((await updates.next()).svids[0]?.id.path, '/before');
    await api.stop();
    const err = await errors.next();
    assert.ok(
      err.code === ErrorCode.WORKLOADAPI_UNAVAILABLE || err.code === ErrorCode.WORKLOADAPI_RESPONSE,
      err.message,
    );
    api.setX509Svids([{ svid: svid('/after'), bundle }]);
    await api.restart();
    let ctx = await updates.next();
    while (ctx.svids[0]?.id.path !== '/after') ctx = await updates.next();
    assert.equal(ctx.svids[0]?.id.path, '/after');
    ac.abort();
    await done;
  });

  it('watches: log a reason at warn once (repeats at debug), again when it changes, and at info when updates resume', async () => {
    const lines: string[] = [];
    const log =
      (level: string) =>
      (message: string): void => {
        lines.push(`${level} ${message}`);
      };
    const logger = { debug: log('debug'), info: log('info'), warn: log('warn') };
    const c = createWorkloadApiClient({ address: api.address, logger, backoff: { initialMs: 5, maxMs: 10 } });
    const updates = new Queue<X509Context>();
    const errors = new Queue<SpiffeError>();
    const ac = new AbortController();
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const done = c.watchX509Context({ onUpdate: updates.push, onError: errors.push }, ac.signal);
    try {
      for (let i = 0; i < 3; i++)
        assert.equal((await errors.next()).code, ErrorCode.WORKLOADAPI_PERMISSION_DENIED);
      api.setError('FetchX509SVID', { code: grpc.status.UNAVAILABLE, details: 'agent starting' });
      while ((await errors.next()).code !== ErrorCode.WORKLOADAPI_UNAVAILABLE);
      await errors.next();
      api.setX509Svids([{ svid: svid('/logged'), bundle }]);
      api.setError('FetchX509SVID', undefined);
      assert.equal((await updates.next()).svids[0]?.id.path, '/logged');
    } finally {
      ac.abort();
      await done;
      c.close();
    }
    // Consecutive repeats collapse to one line for the comparison.
    const collapsed = lines.filter((l, i) => l !== lines[i - 1]);
    const uid = process.getuid?.();
    const denied = `workloadapi: watch X.509 context: no identity: the Workload API at ${api.address} issued no identity to this process (uid ${uid}, gid ${process.getgid?.()}) (PermissionDenied: no identity issued); register an entry whose selectors match this process (e.g. unix:uid:${uid}), or run it as the user an entry names`;
    const unavailable = `workloadapi: watch X.509 context: cannot reach the Workload API at ${api.address} (agent starting); check that the agent is running and that the socket exists and is accessible`;
    assert.deepEqual(collapsed, [
      `warn ${denied}`,
      `debug ${denied}`,
      `warn ${unavailable}`,
      `debug ${unavailable}`,
      `info workloadapi: watch X.509 context: updates from ${api.address} again`,
    ]);
    assert.equal(lines.filter((l) => l.startsWith('warn ')).length, 2);
  });

  it('stops a watch on INVALID_ARGUMENT (no retry) and rejects with the reason', async () => {
    api.setError('FetchJWTBundles', { code: grpc.status.INVALID_ARGUMENT, details: 'bad request' });
    try {
      await assert.rejects(
        client.watchJwtBundles({ onUpdate: () => {} }),
        (e: unknown) =>
          isSpiffeError(e, ErrorCode.WORKLOADAPI_RESPONSE) && /INVALID_ARGUMENT: bad request/.test(e.message),
      );
    } finally {
      api.setError('FetchJWTBundles', undefined);
    }
  });

  it('aborts a fetch and a watch with the caller’s signal', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(client.fetchX509Context({ signal: ac.signal }), (e: unknown) =>
      isSpiffeError(e, ErrorCode.ABORTED),
    );
  });
});

describe('WorkloadApiClient without a server', () => {
  it('says there is no socket at the path, and where the address came from', async () => {
    const client = createWorkloadApiClient({ address: 'unix:///nonexistent/tessera/agent.sock' });
    try {
      await assert.rejects(client.fetchX509Context(), (e: unknown) => {
        assert.ok(isSpiffeError(e, ErrorCode.WORKLOADAPI_UNAVAILABLE), String(e));
        assert.equal(
          e.message,
          'workloadapi: fetch X.509 context: no Workload API socket at /nonexistent/tessera/agent.sock (unix:///nonexistent/tessera/agent.sock, from the address option): is the agent running, and is this its socket_path?',
        );
        return true;
      });
    } finally {
      client.close();
    }
  });

  it('a server that refuses requests without the security header', async () => {
    const api = await FakeWorkloadApi.start();
    const raw = new grpc.Client(`unix://${api.socketPath}`, grpc.credentials.createInsecure());
    try {
      const call = raw.makeServerStreamRequest(
        '/SpiffeWorkloadAPI/FetchX509SVID',
        () => Buffer.alloc(0),
        (b: Buffer) => b,
        {},
      );
      const [err] = (await once(call, 'error')) as [grpc.ServiceError];
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /security header missing/);
    } finally {
      raw.close();
      await api.close();
    }
  });
});
