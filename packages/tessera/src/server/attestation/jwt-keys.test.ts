// How a token issuer's keys are fetched, and what is said when they cannot be: OIDC discovery's
// issuer check, a non-https jwks_uri, a silent server (timeout), a redirect, private key material,
// concurrent requests sharing one fetch. Real HTTPS servers on localhost.
import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { FakeClock, TestCa, TestJwtAuthority } from '@tessera/testkit';
import { createLogger } from '../../common/log.js';
import { discoveryUrl, JwtKeys, type JwtKeysLocation } from './jwt-keys.js';

const quiet = createLogger({ level: 'error', write: () => undefined });

describe('JwtKeys', () => {
  const ca = TestCa.create({ trustDomain: 'keys.test' });
  const cert = ca.issueCertificate({ uris: [], dnsNames: ['localhost'], subject: 'CN=localhost' });
  const key = TestJwtAuthority.create({ trustDomain: 'keys.test', keyType: 'rsa-2048', kid: 'k1' });
  const jwk = { ...key.jwk(), use: 'sig' };
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_q, r) => r.writeHead(404).end();
  let server: Server;
  let base = '';
  let requests = 0;
  const clock = new FakeClock();

  before(async () => {
    server = createServer({ key: cert.privateKeyPem, cert: cert.certificatesPem }, (q, r) => {
      requests++;
      handler(q, r);
    });
    const { address } = await lookup('localhost');
    await new Promise<void>((resolve) => server.listen(0, address, resolve));
    base = `https://localhost:${(server.address() as AddressInfo).port}`;
  });
  after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );

  const keysAt = (location: JwtKeysLocation, timeoutMs = 2000) =>
    new JwtKeys({ location, ca: ca.rootPem(), now: () => clock.now(), logger: quiet, timeoutMs });
  const json = (body: unknown) => (_q: IncomingMessage, r: ServerResponse) =>
    r.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));

  it('discovery: <issuer>/.well-known/openid-configuration (a trailing slash dropped), whose issuer must be exactly the one configured', async () => {
    assert.equal(
      discoveryUrl('https://gitlab.example.com/'),
      'https://gitlab.example.com/.well-known/openid-configuration',
    );
    assert.equal(
      discoveryUrl('https://idp.example.com/t/1'),
      'https://idp.example.com/t/1/.well-known/openid-configuration',
    );
    handler = (q, r) => {
      if (q.url === '/.well-known/openid-configuration')
        return json({ issuer: `${base}/`, jwks_uri: `${base}/jwks` })(q, r);
      return json({ keys: [jwk] })(q, r);
    };
    await assert.rejects(
      keysAt({ kind: 'discovery', issuer: base }).load(),
      new RegExp(
        `names issuer "${base}/", not "${base}"; set issuer to the exact value the provider publishes$`,
      ),
    );
    handler = json({ issuer: base, jwks_uri: 'http://localhost/jwks' });
    await assert.rejects(
      keysAt({ kind: 'discovery', issuer: base }).load(),
      /has no https jwks_uri \(got "http:\/\/localhost\/jwks"\)$/,
    );
  });

  it('says what failed: no answer in time, a redirect (not followed), an HTTP error, a JWKS with a private key, not JSON', async () => {
    handler = () => undefined; // never answers
    const t0 = Date.now();
    await assert.rejects(
      keysAt({ kind: 'uri', uri: `${base}/jwks` }, 300).load(),
      new RegExp(`^Error: cannot fetch ${base}/jwks: no answer within 300 ms$`),
    );
    assert.ok(Date.now() - t0 < 2000);
    handler = (_q, r) => r.writeHead(302, { location: 'https://elsewhere.example/jwks' }).end();
    await assert.rejects(
      keysAt({ kind: 'uri', uri: `${base}/jwks` }).load(),
      /answered HTTP 302 \(to https:\/\/elsewhere\.example\/jwks; redirects are not followed\)$/,
    );
    handler = (_q, r) => r.writeHead(401).end();
    await assert.rejects(keysAt({ kind: 'uri', uri: `${base}/jwks` }).load(), /jwks answered HTTP 401$/);
    handler = json({ keys: [{ ...key.privateKey.export({ format: 'jwk' }), kid: 'k1' }] });
    await assert.rejects(
      keysAt({ kind: 'uri', uri: `${base}/jwks` }).load(),
      /key 0 holds private or secret key material/,
    );
    handler = (_q, r) => r.writeHead(200).end('<html>');
    await assert.rejects(
      keysAt({ kind: 'uri', uri: `${base}/jwks` }).load(),
      /answered something that is not JSON/,
    );
    // Without the private CA, the server's certificate is not trusted.
    handler = json({ keys: [jwk] });
    await assert.rejects(
      new JwtKeys({
        location: { kind: 'uri', uri: `${base}/jwks` },
        now: () => clock.now(),
        logger: quiet,
      }).load(),
      /cannot fetch .*: (self[- ]signed|unable to (get|verify)).*certificate/i,
    );
  });

  it('tokens arriving together share one fetch', async () => {
    handler = json({ keys: [jwk] });
    const keys = keysAt({ kind: 'uri', uri: `${base}/jwks` });
    await keys.load();
    clock.advance(31_000);
    const before = requests;
    const results = await Promise.allSettled(
      [1, 2, 3, 4].map(() => keys.keyFor({ alg: 'RS256', kid: 'other' })),
    );
    assert.ok(results.every((r) => r.status === 'rejected'));
    assert.equal(requests - before, 1);
    assert.equal((await keys.keyFor({ alg: 'RS256', kid: 'k1' })).length, 1);
  });
});
