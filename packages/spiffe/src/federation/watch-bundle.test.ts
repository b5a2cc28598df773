import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TestCa } from '@tessera/testkit';
import { SpiffeBundle } from '../bundle/spiffe-bundle.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { parseSpiffeId } from '../spiffeid/spiffe-id.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { createBundleEndpointHandler } from './bundle-endpoint-handler.js';
import { EventQueue, ManualSchedule, respond, withEndpoint } from './endpoint.test.util.js';
import { fetchBundle } from './fetch-bundle.js';
import { type BundleWatcher, watchBundle } from './watch-bundle.js';

const td = parseTrustDomain('example.org');
const endpointId = parseSpiffeId('spiffe://example.org/spire/server');
const foreignTd = parseTrustDomain('foreign.test');
const foreignCa = TestCa.create({ trustDomain: 'foreign.test' });
const webCa = TestCa.create({ trustDomain: 'web.test' });
const webCert = webCa.issueCertificate({ uris: [], dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] });

function recorder() {
  const updates = new EventQueue<SpiffeBundle>();
  const errors = new EventQueue<SpiffeError>();
  const watcher: BundleWatcher = { onUpdate: updates.push, onError: errors.push };
  return { updates, errors, watcher };
}

// A watch that misbehaves leaves an event unsent; the timeout turns that hang into a failure.
describe('watchBundle', { timeout: 10_000 }, () => {
  it('https_web: re-fetches at the refresh hint and reports a rotated bundle', async () => {
    let current = new SpiffeBundle({
      trustDomain: foreignTd,
      x509Authorities: [foreignCa.root],
      sequenceNumber: 1n,
      refreshHint: 2,
    });
    await withEndpoint(
      webCert,
      createBundleEndpointHandler(() => current),
      async (server) => {
        const { updates, errors, watcher } = recorder();
        const clock = new ManualSchedule();
        const controller = new AbortController();
        const done = watchBundle(
          foreignTd,
          server.url('/bundle', 'localhost'),
          { profile: 'https_web', ca: [webCa.root], minRefreshInterval: 0, schedule: clock.schedule },
          watcher,
          controller.signal,
        );

        const first = await updates.next();
        assert.equal(first.sequenceNumber, 1n);
        assert.equal(await clock.waiting(), 2000, 'next fetch after the 2 s refresh hint');

        // Unchanged bundle: fetched again, not reported.
        clock.release();
        assert.equal(await clock.waiting(), 2000);
        assert.equal(server.requests, 2);
        assert.equal(updates.size, 0);

        // Rotation: a new authority and a higher sequence number.
        const newCa = TestCa.create({ trustDomain: 'foreign.test' });
        current = current.with({
          x509Authorities: [foreignCa.root, newCa.root],
          sequenceNumber: 2n,
          refreshHint: 3,
        });
        clock.release();
        const second = await updates.next();
        assert.equal(second.sequenceNumber, 2n);
        assert.equal(second.x509Authorities.length, 2);
        assert.ok(second.equals(current));
        assert.equal(await clock.waiting(), 3000);

        controller.abort();
        await done;
        assert.equal(errors.size, 0);
        assert.equal(server.requests, 3);
      },
    );
  });

  it('clamps the refresh interval and uses 5 minutes without a hint', async () => {
    let current = new SpiffeBundle({
      trustDomain: foreignTd,
      x509Authorities: [foreignCa.root],
      refreshHint: 1,
    });
    await withEndpoint(
      webCert,
      createBundleEndpointHandler(() => current),
      async (server) => {
        const { updates, watcher } = recorder();
        const clock = new ManualSchedule();
        const controller = new AbortController();
        const done = watchBundle(
          foreignTd,
          server.url('/', 'localhost'),
          { profile: 'https_web', ca: webCa.rootPem(), schedule: clock.schedule },
          watcher,
          controller.signal,
        );
        await updates.next();
        assert.equal(await clock.waiting(), 60_000, 'a 1 s hint is raised to the 1 minute floor');
        current = current.with({ refreshHint: undefined });
        clock.release();
        await updates.next();
        assert.equal(await clock.waiting(), 300_000, 'no hint: 5 minutes');
        current = current.with({ refreshHint: 7 * 24 * 3600 });
        clock.release();
        await updates.next();
        assert.equal(await clock.waiting(), 24 * 3600_000, 'a week is capped at a day');
        controller.abort();
        await done;
      },
    );
  });

  it('reports errors, backs off, and recovers', async () => {
    const bundle = new SpiffeBundle({
      trustDomain: foreignTd,
      x509Authorities: [foreignCa.root],
      refreshHint: 60,
    });
    await withEndpoint(webCert, respond(503, 'unavailable'), async (server) => {
      const { updates, errors, watcher } = recorder();
      const clock = new ManualSchedule();
      const controller = new AbortController();
      const done = watchBundle(
        foreignTd,
        server.url('/', 'localhost'),
        { profile: 'https_web', ca: [webCa.root], retryInterval: 1000, schedule: clock.schedule },
        watcher,
        controller.signal,
      );
      const e1 = await errors.next();
      assert.ok(isSpiffeError(e1, ErrorCode.FEDERATION_FETCH));
      assert.match(e1.message, /HTTP 503/);
      assert.equal(await clock.waiting(), 1000);
      clock.release();
      await errors.next();
      assert.equal(await clock.waiting(), 2000, 'doubled');
      clock.release();
      await errors.next();
      assert.equal(await clock.waiting(), 4000);

      server.handle(createBundleEndpointHandler(() => bundle));
      clock.release();
      assert.ok((await updates.next()).equals(bundle));
      assert.equal(await clock.waiting(), 60_000);

      // Failures after a success are retried no later than the refresh interval.
      server.handle(respond(500, ''));
      clock.release();
      await errors.next();
      assert.equal(await clock.waiting(), 1000, 'back-off starts again');
      controller.abort();
      await done;
      assert.equal(updates.size, 0);
    });
  });

  it('stops when the signal aborts during a fetch', async () => {
    await withEndpoint(webCert, undefined, async (server) => {
      const controller = new AbortController();
      server.handle(() => controller.abort());
      const { updates, errors, watcher } = recorder();
      await watchBundle(
        foreignTd,
        server.url('/', 'localhost'),
        { profile: 'https_web', ca: [webCa.root] },
        watcher,
        controller.signal,
      );
      assert.equal(updates.size + errors.size, 0, 'an abort is not reported as an error');
    });
  });

  it('stops when the signal aborts while waiting (real timer)', async () => {
    const bundle = new SpiffeBundle({ trustDomain: foreignTd, x509Authorities: [foreignCa.root] });
    await withEndpoint(
      webCert,
      createBundleEndpointHandler(() => bundle),
      async (server) => {
        const controller = new AbortController();
        const done = watchBundle(
          foreignTd,
          server.url('/', 'localhost'),
          { profile: 'https_web', ca: [webCa.root] },
          {
            // Abort once the loop has gone to sleep until the next fetch.
            onUpdate: () => setImmediate(() => controller.abort()),
            onError: (err) => assert.fail(err),
          },
          controller.signal,
        );
        // Resolves although the next fetch is 5 minutes away.
        await done;
        assert.equal(server.requests, 1);
      },
    );
  });

  it('refuses a bad URL and bad arguments before starting', async () => {
    const { watcher } = recorder();
    const signal = new AbortController().signal;
    await assert.rejects(
      watchBundle(foreignTd, 'http://example.com/', { profile: 'https_web' }, watcher, signal),
      (err) => isSpiffeError(err, ErrorCode.FEDERATION_FETCH),
    );
    await assert.rejects(
      watchBundle(foreignTd, 'https://example.com/', { profile: 'https_web' }, {} as never, signal),
      TypeError,
    );
    await assert.rejects(
      watchBundle(foreignTd, 'https://example.com/', { profile: 'https_web' }, watcher, undefined as never),
      TypeError,
    );
    await assert.rejects(
      watchBundle(
        foreignTd,
        'https://example.com/',
        { profile: 'https_web', minRefreshInterval: -1 },
        watcher,
        signal,
      ),
      /minRefreshInterval/,
    );
  });

  it('https_spiffe (self-serving): rolls trust forward to each fetched bundle', async () => {
    // The endpoint serves the bundle of its own trust domain, example.org, as a SPIRE server does.
    const ca1 = TestCa.create({ trustDomain: 'example.org' });
    const ca2 = TestCa.create({ trustDomain: 'example.org' });
    const bootstrap = new X509Bundle(td, [ca1.root]);
    let current = new SpiffeBundle({
      trustDomain: td,
      x509Authorities: [ca1.root, ca2.root],
      sequenceNumber: 1n,
    });
    await withEndpoint(
      ca1.issueX509Svid(endpointId.toString()),
      createBundleEndpointHandler(() => current),
      async (server) => {
        const { updates, errors, watcher } = recorder();
        const clock = new ManualSchedule();
        const controller = new AbortController();
        const url = server.url('/bundle');
        const done = watchBundle(
          td,
          url,
          { profile: 'https_spiffe', endpointId, bundleSource: bootstrap, schedule: clock.schedule },
          watcher,
          controller.signal,
        );
        assert.equal((await updates.next()).sequenceNumber, 1n);
        await clock.waiting();

        // example.org rotates to ca2 and drops ca1. The bootstrap bundle no longer verifies the server...
        server.setCertificate(ca2.issueX509Svid(endpointId.toString()));
        current = new SpiffeBundle({ trustDomain: td, x509Authorities: [ca2.root], sequenceNumber: 2n });
        await assert.rejects(
          fetchBundle(td, url, { profile: 'https_spiffe', endpointId, bundleSource: bootstrap }),
          (err) => isSpiffeError(err, ErrorCode.FEDERATION_FETCH) && /https_spiffe/.test(err.message),
        );
        // ...but the watch verifies with the bundle it fetched last, which has ca2.
        clock.release();
        const second = await updates.next();
        assert.equal(second.sequenceNumber, 2n);
        assert.deepEqual(
          second.x509Authorities.map((c) => c.fingerprint256),
          [ca2.root.fingerprint256],
        );
        await clock.waiting();

        // Now only ca2 is trusted: a server falling back to a ca1 SVID is refused, though the
        // bootstrap bundle would accept it.
        server.setCertificate(ca1.issueX509Svid(endpointId.toString()));
        const requestsBefore = server.requests;
        clock.release();
        const err = await errors.next();
        assert.match(err.message, /TLS verification failed \(https_spiffe\)/);
        assert.equal(server.requests, requestsBefore, 'no request was sent to the refused server');
        assert.equal(errors.size, 0);
        controller.abort();
        await done;
        assert.equal(updates.size, 0);
      },
    );
  });

  it('https_spiffe (endpoint of another trust domain): verifies with the caller source every time', async () => {
    const ca = TestCa.create({ trustDomain: 'example.org' });
    const endpointBundle = new X509Bundle(td, [ca.root]);
    const served = new SpiffeBundle({ trustDomain: foreignTd, x509Authorities: [foreignCa.root] });
    await withEndpoint(
      ca.issueX509Svid(endpointId.toString()),
      createBundleEndpointHandler(() => served),
      async (server) => {
        const { updates, errors, watcher } = recorder();
        const clock = new ManualSchedule();
        const controller = new AbortController();
        const done = watchBundle(
          foreignTd,
          server.url(),
          { profile: 'https_spiffe', endpointId, bundleSource: endpointBundle, schedule: clock.schedule },
          watcher,
          controller.signal,
        );
        assert.ok((await updates.next()).equals(served));
        await clock.waiting();
        clock.release();
        await clock.waiting();
        assert.equal(server.requests, 2);
        assert.equal(errors.size, 0);
        controller.abort();
        await done;
      },
    );
  });
});
