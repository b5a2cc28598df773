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

  it('readyTimeoutMs bounds only the wait for the first update, and says why it gave up', async () => {
    const denied = await FakeWorkloadApi.start();
    try {
      denied.setError('FetchX509SVID', {
        code: grpc.status.PERMISSION_DENIED,
        details: 'no identity issued',
      });
      await assert.rejects(
        X509Source.create({ address: denied.address, backoff, readyTimeoutMs: 150 }),
        (e: unknown) =>
          isSpiffeError(e, ErrorCode.SOURCE_CLOSED) &&
          /no complete update within 150 ms: .*no identity/i.test(e.message),
      );
    } finally {
      await denied.close();
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
    api.setError('FetchX509SVID', { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    const source = new X509Source({ address: api.address, backoff });
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
      const pending = X509Source.create({ address: api.address, backoff, signal: ac.signal });
      ac.abort();
      await assert.rejects(pending, (e: unknown) => isSpiffeError(e, ErrorCode.SOURCE_CLOSED));
    } finally {
      api.setError('FetchX509SVID', undefined);
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
