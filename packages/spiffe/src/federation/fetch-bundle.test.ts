import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestCa } from '@tessera/testkit';
import { SpiffeBundle } from '../bundle/spiffe-bundle.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { parseSpiffeId } from '../spiffeid/spiffe-id.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { createBundleEndpointHandler } from './bundle-endpoint-handler.js';
import { respond, startEndpoint, type TestEndpoint, withEndpoint } from './endpoint.test.util.js';
import { fetchBundle } from './fetch-bundle.js';

const td = parseTrustDomain('example.org');
const foreignTd = parseTrustDomain('foreign.test');
const endpointId = parseSpiffeId('spiffe://example.org/spire/server');

// The trust domain whose bundle is served.
const foreignCa = TestCa.create({ trustDomain: 'foreign.test' });
const served = new SpiffeBundle({
  trustDomain: foreignTd,
  x509Authorities: [foreignCa.root],
  sequenceNumber: 42n,
  refreshHint: 300,
});

// Web PKI: a private CA standing in for the public ones, and a server certificate for localhost.
const webCa = TestCa.create({ trustDomain: 'web.test' });
const webCert = webCa.issueCertificate({ uris: [], dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] });

// https_spiffe: the endpoint server's X509-SVID from the endpoint's trust domain.
const spiffeCa = TestCa.create({ trustDomain: 'example.org' });
const spiffeBundle = new X509Bundle(td, [spiffeCa.root]);
const serverSvid = spiffeCa.issueX509Svid('spiffe://example.org/spire/server');

function fetchError(pattern: RegExp, causeCode?: string) {
  return (err: unknown): boolean => {
    assert.ok(
      isSpiffeError(err, ErrorCode.FEDERATION_FETCH),
      `expected ERR_FEDERATION_FETCH, got ${String(err)}`,
    );
    assert.match(err.message, pattern);
    if (causeCode !== undefined) {
      assert.equal((err.cause as SpiffeError | undefined)?.code, causeCode, `cause: ${String(err.cause)}`);
    }
    return true;
  };
}

const bundleHandler = createBundleEndpointHandler(() => served);

describe('fetchBundle https_web', () => {
  let server: TestEndpoint;
  before(async () => {
    server = await startEndpoint(webCert, bundleHandler);
  });
  after(() => server.close());

  it('fetches the bundle from a server whose certificate names the host', async () => {
    const bundle = await fetchBundle(foreignTd, server.url('/bundle', 'localhost'), {
      profile: 'https_web',
      ca: [webCa.root],
    });
    assert.ok(bundle.equals(served));
    assert.equal(bundle.sequenceNumber, 42n);
    assert.equal(bundle.refreshHint, 300);
    assert.equal(bundle.trustDomain.toString(), 'foreign.test');
  });

  it('accepts the roots as PEM text', async () => {
    const bundle = await fetchBundle(foreignTd, new URL(server.url('/', 'localhost')), {
      profile: 'https_web',
      ca: webCa.rootPem(),
    });
    assert.ok(bundle.equals(served));
  });

  it('refuses a certificate that does not name the URL host, before sending a request', async () => {
    const before = server.requests;
    await assert.rejects(
      fetchBundle(foreignTd, server.url('/bundle', '127.0.0.1'), { profile: 'https_web', ca: [webCa.root] }),
      fetchError(/foreign\.test.*https:\/\/127\.0\.0\.1:\d+\/bundle.*does not name host "127\.0\.0\.1"/),
    );
    assert.equal(server.requests, before);
  });

  it('refuses a certificate from a CA it does not trust (system roots by default)', async () => {
    const before = server.requests;
    await assert.rejects(
      fetchBundle(foreignTd, server.url('/bundle', 'localhost'), { profile: 'https_web' }),
      fetchError(/TLS verification failed \(https_web\).*not trusted/),
    );
    const otherCa = TestCa.create({ trustDomain: 'other-web.test' });
    await assert.rejects(
      fetchBundle(foreignTd, server.url('/bundle', 'localhost'), {
        profile: 'https_web',
        ca: [otherCa.root],
      }),
      fetchError(/not trusted/),
    );
    assert.equal(server.requests, before);
  });

  it('refuses an X509-SVID presented to an https_web client (no DNS name for the host)', async () => {
    await withEndpoint(serverSvid, bundleHandler, async (svidServer) => {
      await assert.rejects(
        fetchBundle(foreignTd, svidServer.url('/', 'localhost'), {
          profile: 'https_web',
          ca: [spiffeCa.root],
        }),
        fetchError(/does not name host "localhost"/),
      );
      assert.equal(svidServer.requests, 0);
    });
  });
});

describe('fetchBundle https_spiffe', () => {
  let server: TestEndpoint;
  before(async () => {
    server = await startEndpoint(serverSvid, bundleHandler);
  });
  after(() => server.close());

  it('fetches when the server presents an X509-SVID for the endpoint ID; host names are not checked', async () => {
    const bundle = await fetchBundle(foreignTd, server.url('/b', '127.0.0.1'), {
      profile: 'https_spiffe',
      endpointId,
      bundleSource: spiffeBundle,
    });
    assert.ok(bundle.equals(served));
  });

  it('accepts an SVID issued by an intermediate, chained to the root in the bundle', async () => {
    const inter = spiffeCa.createIntermediate();
    await withEndpoint(inter.issueX509Svid(endpointId.toString()), bundleHandler, async (s) => {
      const bundle = await fetchBundle(foreignTd, s.url(), {
        profile: 'https_spiffe',
        endpointId,
        bundleSource: spiffeBundle,
      });
      assert.ok(bundle.equals(served));
    });
  });

  it('refuses a server with another SPIFFE ID and sends it no request', async () => {
    await withEndpoint(
      spiffeCa.issueX509Svid('spiffe://example.org/not-the-server'),
      bundleHandler,
      async (s) => {
        await assert.rejects(
          fetchBundle(foreignTd, s.url('/bundle'), {
            profile: 'https_spiffe',
            endpointId,
            bundleSource: spiffeBundle,
          }),
          fetchError(
            /foreign\.test.*\/bundle.*https_spiffe.*"spiffe:\/\/example\.org\/spire\/server".*unexpected ID "spiffe:\/\/example\.org\/not-the-server"/,
            ErrorCode.ID_UNAUTHORIZED,
          ),
        );
        assert.ok(s.connections >= 1, 'the client connected');
        assert.equal(s.requests, 0, 'no HTTP request reached the server');
      },
    );
  });

  it('refuses an SVID from a CA that is not in the bundle and sends no request', async () => {
    const rogueCa = TestCa.create({ trustDomain: 'example.org' });
    await withEndpoint(rogueCa.issueX509Svid(endpointId.toString()), bundleHandler, async (s) => {
      await assert.rejects(
        fetchBundle(foreignTd, s.url(), { profile: 'https_spiffe', endpointId, bundleSource: spiffeBundle }),
        fetchError(/TLS verification failed \(https_spiffe\)/, ErrorCode.X509SVID_VERIFY),
      );
      assert.ok(s.connections >= 1);
      assert.equal(s.requests, 0);
    });
  });

  it('refuses an SVID when the bundle source has no bundle for its trust domain', async () => {
    const otherBundle = new X509Bundle(parseTrustDomain('other.org'), [spiffeCa.root]);
    const before = server.requests;
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), {
        profile: 'https_spiffe',
        endpointId,
        bundleSource: otherBundle,
      }),
      fetchError(/https_spiffe.*example\.org/, ErrorCode.BUNDLE_NOT_FOUND),
    );
    assert.equal(server.requests, before);
  });

  it('refuses a plain web certificate', async () => {
    await withEndpoint(webCert, bundleHandler, async (s) => {
      await assert.rejects(
        fetchBundle(foreignTd, s.url(), { profile: 'https_spiffe', endpointId, bundleSource: spiffeBundle }),
        fetchError(/https_spiffe/, ErrorCode.X509SVID_INVALID),
      );
      assert.equal(s.requests, 0);
    });
  });

  it('checks the SVID validity at the injected clock time', async () => {
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), {
        profile: 'https_spiffe',
        endpointId,
        bundleSource: spiffeBundle,
        clock: { now: () => new Date(Date.now() + 48 * 3600_000) },
      }),
      fetchError(/https_spiffe/, ErrorCode.X509SVID_VERIFY),
    );
  });
});

describe('fetchBundle responses', () => {
  let server: TestEndpoint;
  const opts = { profile: 'https_spiffe', endpointId, bundleSource: spiffeBundle } as const;
  before(async () => {
    server = await startEndpoint(serverSvid);
  });
  after(() => server.close());

  it('fails on a status other than 200, naming it', async () => {
    server.handle(respond(404, 'not found'));
    await assert.rejects(
      fetchBundle(foreignTd, server.url('/missing'), opts),
      fetchError(/\/missing.*HTTP 404/),
    );
    server.handle(respond(500, '{}'));
    await assert.rejects(fetchBundle(foreignTd, server.url(), opts), fetchError(/HTTP 500/));
  });

  it('fails on a body larger than the limit (Content-Length)', async () => {
    server.handle(respond(200, Buffer.alloc(1024 * 1024 + 1, 0x20)));
    await assert.rejects(fetchBundle(foreignTd, server.url(), opts), fetchError(/larger than 1048576 bytes/));
  });

  it('fails on a chunked body that grows past the limit', async () => {
    server.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      for (let i = 0; i < 8; i++) res.write(chunk);
      res.end();
    });
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), { ...opts, maxBodySize: 64 * 1024 }),
      fetchError(/larger than 65536 bytes/),
    );
  });

  it('accepts a body of exactly the limit', async () => {
    const body = served.marshal();
    server.handle(respond(200, body));
    const bundle = await fetchBundle(foreignTd, server.url(), {
      ...opts,
      maxBodySize: Buffer.byteLength(body),
    });
    assert.ok(bundle.equals(served));
  });

  it('fails on invalid JSON, with the parse error as cause', async () => {
    server.handle(respond(200, '{"keys": ['));
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), opts),
      fetchError(/not a valid SPIFFE bundle.*not valid JSON/, ErrorCode.BUNDLE_INVALID),
    );
    server.handle(respond(200, '{"spiffe_sequence": 1}'));
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), opts),
      fetchError(/not a valid SPIFFE bundle.*"keys"/, ErrorCode.BUNDLE_INVALID),
    );
  });

  it('times out when the server does not answer', async () => {
    server.handle(() => {
      /* never answers */
    });
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), { ...opts, timeout: 200 }),
      fetchError(/timed out after 200 ms/),
    );
  });

  it('stops with ERR_ABORTED when the signal aborts', async () => {
    const controller = new AbortController();
    server.handle(() => controller.abort(new Error('stop')));
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), { ...opts, signal: controller.signal }),
      (err) => {
        assert.ok(isSpiffeError(err, ErrorCode.ABORTED), String(err));
        assert.match(err.message, /foreign\.test.*aborted/);
        return true;
      },
    );
    await assert.rejects(
      fetchBundle(foreignTd, server.url(), { ...opts, signal: AbortSignal.abort() }),
      (err) => isSpiffeError(err, ErrorCode.ABORTED),
    );
  });

  it('follows redirects to https URLs with the same checks', async () => {
    server.handle((req, res) => {
      if (req.url === '/old') res.writeHead(302, { location: '/new' }).end();
      else if (req.url === '/new') bundleHandler(req, res);
      else res.writeHead(404).end();
    });
    const bundle = await fetchBundle(foreignTd, server.url('/old'), opts);
    assert.ok(bundle.equals(served));
    await assert.rejects(
      fetchBundle(foreignTd, server.url('/old'), { ...opts, maxRedirects: 0 }),
      fetchError(/stopped after 0 redirects/),
    );
  });

  it('refuses a redirect to a non-https URL', async () => {
    server.handle((_req, res) => res.writeHead(307, { location: 'http://127.0.0.1/bundle' }).end());
    await assert.rejects(
      fetchBundle(foreignTd, server.url('/'), opts),
      fetchError(
        /refusing redirect to http:\/\/127\.0\.0\.1\/bundle: the scheme is "http"; it must be https/,
      ),
    );
  });

  it('refuses a redirect to a server with another SPIFFE ID', async () => {
    await withEndpoint(
      spiffeCa.issueX509Svid('spiffe://example.org/elsewhere'),
      bundleHandler,
      async (other) => {
        server.handle((_req, res) => res.writeHead(302, { location: other.url('/bundle') }).end());
        await assert.rejects(fetchBundle(foreignTd, server.url('/'), opts), fetchError(/unexpected ID/));
        assert.equal(other.requests, 0);
      },
    );
  });
});

describe('fetchBundle arguments', () => {
  it('refuses URLs that are not bundle endpoint URLs', async () => {
    const web = { profile: 'https_web' } as const;
    await assert.rejects(fetchBundle(foreignTd, 'http://example.com/b', web), fetchError(/must be https/));
    await assert.rejects(
      fetchBundle(foreignTd, 'https://u:p@example.com/b', web),
      fetchError(/user information/),
    );
    await assert.rejects(fetchBundle(foreignTd, 'not a url', web), fetchError(/is not a URL/));
  });

  it('refuses wrong argument types with TypeError', async () => {
    await assert.rejects(
      fetchBundle('foreign.test' as never, 'https://example.com/', { profile: 'https_web' }),
      TypeError,
    );
    await assert.rejects(
      fetchBundle(foreignTd, 'https://example.com/', { profile: 'https' } as never),
      /unknown bundle endpoint profile "https"/,
    );
    await assert.rejects(
      fetchBundle(foreignTd, 'https://example.com/', { profile: 'https_spiffe', endpointId } as never),
      /bundleSource/,
    );
    await assert.rejects(
      fetchBundle(foreignTd, 'https://example.com/', {
        profile: 'https_spiffe',
        endpointId: 'spiffe://example.org/x',
        bundleSource: spiffeBundle,
      } as never),
      /endpointId/,
    );
  });

  it('reports a connection failure', async () => {
    const s = await startEndpoint(serverSvid);
    const url = s.url();
    await s.close();
    await assert.rejects(
      fetchBundle(foreignTd, url, { profile: 'https_spiffe', endpointId, bundleSource: spiffeBundle }),
      fetchError(/could not connect to 127\.0\.0\.1:\d+/),
    );
  });
});
