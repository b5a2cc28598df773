import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { TestCa, TestJwtAuthority } from '@tessera/testkit';
import { parseJwtBundle } from '../bundle/jwt-bundle.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { parseX509SvidRaw, type X509Svid } from '../svid/x509-svid.js';
import { FakeWorkloadApi } from './fake-server.js';
import { BundleSource, JwtSource, pickByHint, X509Source } from './sources.js';

const td = parseTrustDomain('example.org');
const ca = TestCa.create({ trustDomain: 'example.org' });
const bundle = new X509Bundle(td, [ca.root]);
const jwtAuthority = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'k1' });
const backoff = { initialMs: 20, maxMs: 100 };
/** A logger that drops everything: given, it also turns off the process warnings of a waiting source. */
const quiet = {};
const denied = { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' };

function svid(path: string, hint = ''): X509Svid {
  const s = ca.issueX509Svid(`spiffe://example.org${path}`);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, hint);
}

describe('live sources', () => {
  let api: FakeWorkloadApi;
  before(async () => {
    api = await FakeWorkloadApi.start();
  });
  after(() => api.close());

  it('readyTimeoutMs bounds only the wait for the first update: ERR_SOURCE_TIMEOUT with the last reason', async () => {
    const refusing = await FakeWorkloadApi.start();
    try {
      refusing.setError('FetchX509SVID', denied);
      const uid = process.getuid?.();
      await assert.rejects(
        X509Source.create({ address: refusing.address, backoff, readyTimeoutMs: 500, logger: quiet }),
        (e: unknown) => {
          assert.ok(isSpiffeError(e, ErrorCode.SOURCE_TIMEOUT), String(e));
          assert.equal(
            e.message,
            `x509source: gave up waiting for an X509-SVID after 500 ms (readyTimeoutMs): workloadapi: watch X.509 context: no identity: the Workload API at ${refusing.address} issued no identity to this process (uid ${uid}, gid ${process.getgid?.()}) (PermissionDenied: no identity issued); register an entry whose selectors match this process (e.g. unix:uid:${uid}), or run it as the user an entry names`,
          );
          assert.ok(isSpiffeError(e.cause, ErrorCode.WORKLOADAPI_PERMISSION_DENIED));
          return true;
        },
      );
      // The same for the JWT side, which waits for JWT bundles.
      refusing.setError('FetchJWTBundles', denied);
      await assert.rejects(
        JwtSource.create({ address: refusing.address, backoff, readyTimeoutMs: 500, logger: quiet }),
        (e: unknown) =>
          isSpiffeError(e, ErrorCode.SOURCE_TIMEOUT) &&
          e.message.startsWith(
            'jwtsource: gave up waiting for JWT bundles after 500 ms (readyTimeoutMs): workloadapi: watch JWT bundles: no identity: ',
          ),
      );
    } finally {
      await refusing.close();
    }
    api.setX509Svids([{ svid: svid('/timed'), bundle }]);
    const source = await X509Source.create({ address: api.address, backoff, readyTimeoutMs: 50 });
    try {
      // After the deadline has passed (nothing to wait for but time), and through a rotation, the
      // source is still open.
      await delay(100);
      const updated = once(source, 'update');
      api.setX509Svids([{ svid: svid('/timed-2'), bundle }]);
      await updated;
      assert.equal(source.closed, false);
      assert.equal(source.getX509Svid().id.path, '/timed-2');
    } finally {
      await source.close();
    }
  });

  it('X509Source: ready after the first update, follows rotation with an update event, picks by hint, closes idempotently', async () => {
    api.setX509Svids([
      { svid: svid('/default'), bundle },
      { svid: svid('/internal', 'internal'), bundle },
    ]);
    const source = await X509Source.create({ address: api.address, backoff });
    const picked = new X509Source({ address: api.address, backoff, picker: pickByHint('internal') });
    await picked.ready();
    try {
      assert.equal(source.getX509Svid().id.path, '/default');
      assert.equal(picked.getX509Svid().id.path, '/internal');
      assert.equal(source.getX509Svids().length, 2);
      assert.ok(source.getX509BundleForTrustDomain(td).hasAuthority(ca.root));
      const updated = once(source, 'update');
      api.setX509Svids([{ svid: svid('/rotated'), bundle }]);
      await updated;
      assert.equal(source.getX509Svid().id.path, '/rotated');
    } finally {
      await source.close();
      await source.close();
      await picked.close();
    }
    assert.throws(
      () => source.getX509Svid(),
      (e: unknown) => isSpiffeError(e, ErrorCode.SOURCE_CLOSED),
    );
    assert.throws(
      () => source.getX509BundleForTrustDomain(td),
      (e: unknown) => isSpiffeError(e, ErrorCode.SOURCE_CLOSED),
    );
  });

  it('X509Source: ready() waits through PermissionDenied, exposes the error, and resolves once an identity is issued', async () => {
    api.setError('FetchX509SVID', denied);
    const source = new X509Source({ address: api.address, backoff, logger: quiet });
    try {
      const [err] = (await once(source, 'watchError')) as [Error];
      assert.ok(isSpiffeError(err, ErrorCode.WORKLOADAPI_PERMISSION_DENIED));
      assert.ok(isSpiffeError(source.lastError, ErrorCode.WORKLOADAPI_PERMISSION_DENIED));
      api.setX509Svids([{ svid: svid('/late'), bundle }]);
      api.setError('FetchX509SVID', undefined);
      await source.ready();
      assert.equal(source.getX509Svid().id.path, '/late');
      assert.equal(source.lastError, undefined);
    } finally {
      await source.close();
    }
  });

  it('ready() rejects when the source is closed or its signal aborts before the first update', async () => {
    api.setError('FetchX509SVID', { code: grpc.status.UNAVAILABLE, details: 'agent starting' });
    try {
      const ac = new AbortController();
      const pending = X509Source.create({ address: api.address, backoff, signal: ac.signal, logger: quiet });
      ac.abort();
      await assert.rejects(pending, (e: unknown) => isSpiffeError(e, ErrorCode.SOURCE_CLOSED));
    } finally {
      api.setError('FetchX509SVID', undefined);
    }
  });

  it('readyTimeoutMs with no socket at the path: the timeout names the path and where the address came from', async () => {
    const address = 'unix:///nonexistent/tessera/agent.sock';
    await assert.rejects(
      X509Source.create({ address, backoff, readyTimeoutMs: 500, logger: quiet }),
      (e: unknown) =>
        isSpiffeError(e, ErrorCode.SOURCE_TIMEOUT) &&
        e.message ===
          `x509source: gave up waiting for an X509-SVID after 500 ms (readyTimeoutMs): workloadapi: watch X.509 context: no Workload API socket at /nonexistent/tessera/agent.sock (${address}, from the address option): is the agent running, and is this its socket_path?`,
    );
  });

  it('readyTimeoutMs with an API that has not answered: the timeout says so', async () => {
    const silent = await FakeWorkloadApi.start(); // serves nothing until told: the stream stays open
    try {
      await assert.rejects(
        X509Source.create({ address: silent.address, backoff, readyTimeoutMs: 100 }),
        (e: unknown) =>
          isSpiffeError(e, ErrorCode.SOURCE_TIMEOUT) &&
          e.message ===
            `x509source: gave up waiting for an X509-SVID after 100 ms (readyTimeoutMs): the Workload API at ${silent.address} has not answered yet (an agent still syncing with its server answers late)`,
      );
    } finally {
      await silent.close();
    }
  });

  it('without a logger, a source waiting for its first update says why as a process warning, once per distinct reason', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => {
      if (w.name === 'SpiffeWarning') warnings.push(w);
    };
    process.on('warning', onWarning);
    const refusing = await FakeWorkloadApi.start();
    refusing.setError('FetchX509SVID', denied);
    const source = new X509Source({ address: refusing.address, backoff });
    try {
      const seen = async (n: number) => {
        for (let i = 0; i < n; i++) await once(source, 'watchError');
      };
      await seen(3);
      refusing.setError('FetchX509SVID', { code: grpc.status.UNAVAILABLE, details: 'agent starting' });
      while (source.lastError?.code !== ErrorCode.WORKLOADAPI_UNAVAILABLE) await seen(1);
      await seen(2);
      refusing.setX509Svids([{ svid: svid('/warned'), bundle }]);
      refusing.setError('FetchX509SVID', undefined);
      await source.ready();
      // Warnings are emitted on the next tick.
      await delay(10);
      assert.deepEqual(
        warnings.map((w) => [
          (w as Error & { code?: string }).code,
          w.message.split(': ').slice(0, 4).join(': '),
        ]),
        [
          [
            'ERR_WORKLOADAPI_PERMISSION_DENIED',
            'x509source: waiting for an X509-SVID: workloadapi: watch X.509 context',
          ],
          [
            'ERR_WORKLOADAPI_UNAVAILABLE',
            'x509source: waiting for an X509-SVID: workloadapi: watch X.509 context',
          ],
        ],
      );
      assert.match(
        warnings[0]?.message ?? '',
        /: no identity: .*issued no identity to this process \(uid \d+/,
      );
      assert.match(warnings[1]?.message ?? '', /cannot reach .*\(agent starting\)/);
      // Once ready, a refusal is for 'watchError' and lastError, not a process warning.
      refusing.setError('FetchX509SVID', denied);
      await once(source, 'watchError');
      await delay(10);
      assert.equal(warnings.length, 2);
    } finally {
      process.off('warning', onWarning);
      await source.close();
      await refusing.close();
    }
  });

  it('JwtSource: bundles from the watch, SVIDs fetched on demand', async () => {
    api.setJwtBundles([parseJwtBundle(td, jwtAuthority.jwks())]);
    api.setJwtSvidMinter((req) => [
      {
        spiffeId: 'spiffe://example.org/w',
        svid: jwtAuthority.sign({ sub: 'spiffe://example.org/w', aud: req.audience }),
      },
    ]);
    const source = await JwtSource.create({ address: api.address, backoff });
    try {
      assert.ok(source.getJwtBundleForTrustDomain(td).hasJwtAuthority('k1'));
      const token = await source.fetchJwtSvid({ audience: ['svc'] });
      assert.deepEqual(token.audience, ['svc']);
    } finally {
      await source.close();
    }
    await assert.rejects(source.fetchJwtSvid({ audience: ['svc'] }), (e: unknown) =>
      isSpiffeError(e, ErrorCode.SOURCE_CLOSED),
    );
  });

  it('BundleSource: ready once both X.509 and JWT bundles arrived', async () => {
    api.setX509Bundles([bundle]);
    api.setJwtBundles([parseJwtBundle(td, jwtAuthority.jwks())]);
    const source = await BundleSource.create({ address: api.address, backoff });
    try {
      assert.ok(source.getX509BundleForTrustDomain(td).hasAuthority(ca.root));
      assert.ok(source.getJwtBundleForTrustDomain(td).hasJwtAuthority('k1'));
    } finally {
      await source.close();
    }
  });
});
