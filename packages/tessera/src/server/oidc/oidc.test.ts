// OIDC discovery of JWT-SVIDs: the configuration rules (each problem named by its key), the
// document and the JWK Set served by a real server over HTTPS (certificate from files) and over a
// Unix socket, the keys following the JWT authority's rotation (prepared → published before it
// signs; revoked → gone), for ec-p256 and rsa-2048; and an RS256 JWT-SVID from a real agent's
// Workload API verified by the spiffe library, the agent's ValidateJWTSVID, and jose against the
// discovered JWK Set. Relying parties nobody here wrote are in test/interop/oidc.test.ts.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, parseAndValidateJwtSvid, parseTrustDomain } from '@tessera/spiffe';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startTestAgent } from '../../agent/test-agent.test.util.js';
import { ConfigError } from '../../common/config-schema.js';
import { createLogger } from '../../common/log.js';
import { startTestServer } from '../api/test-server.test.util.js';
import { parseServerConfig } from '../config.js';
import type { RunningServer } from '../run.js';
import { defaultJwksUri, oidcPaths, oidcUrlProblem } from './discovery.js';

const quiet = createLogger({ level: 'error', write: () => undefined });
const uid = process.getuid?.() ?? 0;

function problems(text: string): string[] {
  try {
    parseServerConfig(text, 'server.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.line}:${p.path}: ${p.message}`);
  }
  assert.fail('expected a ConfigError');
}

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(url: string, ca: string, method = 'GET'): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

function getOnSocket(socketPath: string, path: string): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, headers: { host: 'oidc.example.org' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

async function eventually(what: string, check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('oidc_discovery configuration', () => {
  const base = 'trust_domain: example.org\n';
  const files =
    'serving_cert_file: { cert_file_path: /etc/tessera/oidc.crt, key_file_path: /etc/tessera/oidc.key }';

  it('is off by default; jwt_key_type defaults to ec-p256', () => {
    const c = parseServerConfig(base);
    assert.equal(c.oidc_discovery, undefined);
    assert.equal(c.jwt_key_type, 'ec-p256');
  });

  it('reads the section: issuer from jwt_issuer, defaults for the rest', () => {
    const c = parseServerConfig(
      `${base}jwt_issuer: https://oidc.example.org/cluster-1\njwt_key_type: rsa-2048\noidc_discovery:\n  ${files}\n`,
    );
    assert.equal(c.jwt_key_type, 'rsa-2048');
    assert.equal(c.oidc_discovery?.address, '0.0.0.0');
    assert.equal(c.oidc_discovery?.port, 8444);
    assert.equal(c.oidc_discovery?.serving_cert_file?.file_sync_interval, 3600_000);
    assert.equal(c.oidc_discovery?.allow_insecure_scheme, false);
    assert.equal(c.oidc_discovery?.jwks_uri, undefined);
  });

  it('names the key of every problem, with its line', () => {
    assert.deepEqual(problems(`${base}jwt_key_type: ec-p384\n`), [
      '2:jwt_key_type: must be one of ec-p256, rsa-2048; got "ec-p384"',
    ]);
    assert.deepEqual(problems(`${base}oidc_discovery:\n  ${files}\n`), [
      '2:oidc_discovery: needs jwt_issuer: the discovery document names the issuer of the JWT-SVIDs; set jwt_issuer to the URL relying parties discover, e.g. https://oidc.example.org or https://example.org/tessera',
    ]);
    assert.deepEqual(problems(`${base}jwt_issuer: http://oidc.example.org\noidc_discovery:\n  ${files}\n`), [
      '2:jwt_issuer: "http://oidc.example.org" uses http; relying parties fetch keys from it, so it must be https (oidc_discovery.allow_insecure_scheme: true allows http, for a development setup only) (oidc_discovery serves it)',
    ]);
    assert.deepEqual(
      problems(
        `${base}jwt_issuer: https://oidc.example.org/?x=1\noidc_discovery:\n  listen_socket_path: /run/tessera/oidc.sock\n  ${files}\n  jwks_uri: spiffe://example.org/keys\n`,
      ),
      [
        '2:jwt_issuer: "https://oidc.example.org/?x=1" has a query; an OIDC issuer has none (oidc_discovery serves it)',
        '6:oidc_discovery.jwks_uri: "spiffe://example.org/keys" uses spiffe; it must be an https URL',
        '4:oidc_discovery.listen_socket_path: cannot be set with serving_cert_file: serve HTTPS on address:port (serving_cert_file) or plain HTTP on a Unix socket (listen_socket_path), not both',
      ],
    );
    assert.deepEqual(
      problems(`${base}jwt_issuer: https://oidc.example.org\noidc_discovery: { port: 443 }\n`),
      [
        '3:oidc_discovery: needs serving_cert_file (HTTPS on address:port) or listen_socket_path (plain HTTP on a Unix socket, behind a TLS-terminating proxy)',
      ],
    );
    assert.deepEqual(problems(`${base}oidc_discovery:\n  serving_cert_file: { cert_file_path: rel.crt }\n`), [
      '3:oidc_discovery.serving_cert_file.cert_file_path: must be an absolute path; got "rel.crt"',
      '3:oidc_discovery.serving_cert_file.key_file_path: is required',
    ]);
  });

  it('allows an http issuer only with allow_insecure_scheme', () => {
    const c = parseServerConfig(
      `${base}jwt_issuer: http://127.0.0.1:8444/dev\noidc_discovery:\n  allow_insecure_scheme: true\n  listen_socket_path: /run/tessera/oidc.sock\n`,
    );
    assert.equal(c.oidc_discovery?.listen_socket_path, '/run/tessera/oidc.sock');
  });
});

describe('OIDC discovery URLs', () => {
  it('puts discovery under the issuer path and the JWK Set at jwks_uri (default <issuer>/keys)', () => {
    assert.equal(defaultJwksUri('https://oidc.example.org'), 'https://oidc.example.org/keys');
    assert.equal(defaultJwksUri('https://example.org/tessera/'), 'https://example.org/tessera/keys');
    assert.deepEqual(oidcPaths('https://oidc.example.org', 'https://oidc.example.org/keys'), {
      discovery: '/.well-known/openid-configuration',
      jwks: '/keys',
    });
    assert.deepEqual(oidcPaths('https://example.org/cluster-1/', 'https://cdn.example.org/jwks.json'), {
      discovery: '/cluster-1/.well-known/openid-configuration',
      jwks: '/jwks.json',
    });
  });

  it('refuses what OIDC Discovery forbids in an issuer', () => {
    assert.equal(oidcUrlProblem('https://example.org/a/b', false), undefined);
    assert.match(oidcUrlProblem('example.org', false) ?? '', /is not a URL/);
    assert.match(oidcUrlProblem('https://u:p@example.org', false) ?? '', /user information/);
    assert.match(oidcUrlProblem('https://example.org/#x', false) ?? '', /has a fragment/);
    assert.match(oidcUrlProblem('https://example.org/?', false) ?? '', /has a query/);
    assert.equal(oidcUrlProblem('http://localhost:1', true), undefined);
  });
});

for (const keyType of ['ec-p256', 'rsa-2048'] as const) {
  const alg = keyType === 'ec-p256' ? 'ES256' : 'RS256';
  const kty = keyType === 'ec-p256' ? 'EC' : 'RSA';

  describe(`OIDC discovery served by the server (jwt_key_type ${keyType})`, () => {
    let tmp: TempDir;
    let server: RunningServer;
    let ca: string;
    let issuer: string;

    before(async () => {
      tmp = await makeTempDir('oidc-');
      const webCa = TestCa.create({ trustDomain: 'web.test' });
      const cert = webCa.issueCertificate({ uris: [], dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] });
      writeFileSync(join(tmp.path, 'oidc.pem'), cert.certificatesPem);
      writeFileSync(join(tmp.path, 'oidc.key'), cert.privateKeyPem, { mode: 0o600 });
      ca = webCa.rootPem();
      const port = await freePort();
      issuer = `https://localhost:${port}/tessera/${keyType}`;
      server = await startTestServer(tmp.path, [
        `jwt_issuer: ${issuer}`,
        `jwt_key_type: ${keyType}`,
        'oidc_discovery:',
        '  address: 127.0.0.1',
        `  port: ${port}`,
        `  serving_cert_file: { cert_file_path: ${tmp.path}/oidc.pem, key_file_path: ${tmp.path}/oidc.key }`,
      ]);
    });
    after(async () => {
      await server?.stop();
      await tmp?.cleanup();
    });

    const jwks = async () =>
      JSON.parse((await get(`${issuer}/keys`, ca)).body) as { keys: Record<string, string>[] };

    it('serves the discovery document at <issuer>/.well-known/openid-configuration', async () => {
      const r = await get(`${issuer}/.well-known/openid-configuration`, ca);
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(r.body), {
        issuer,
        jwks_uri: `${issuer}/keys`,
        authorization_endpoint: '',
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: keyType === 'ec-p256' ? ['ES256', 'RS256'] : ['RS256'],
      });
      assert.equal(server.oidcDiscoveryPort, Number(new URL(issuer).port));
    });

    it('serves the JWT authorities as a JWK Set with kid, alg and use "sig", not to be cached', async () => {
      const r = await get(`${issuer}/keys`, ca);
      assert.equal(r.status, 200);
      assert.equal(r.headers['cache-control'], 'no-cache, no-store, must-revalidate');
      const keys = (JSON.parse(r.body) as { keys: Record<string, string>[] }).keys;
      assert.equal(keys.length, 1);
      const k = keys[0] as Record<string, string>;
      assert.equal(k.kid, server.authority.jwt.kid);
      assert.equal(k.alg, alg);
      assert.equal(k.use, 'sig');
      assert.equal(k.kty, kty);
      assert.equal(k.d, undefined);
    });

    it('answers 404 elsewhere (no discovery at the host root when the issuer has a path), 405 to other methods, HEAD without a body', async () => {
      const root = new URL(issuer).origin;
      assert.equal((await get(`${root}/.well-known/openid-configuration`, ca)).status, 404);
      const post = await get(`${issuer}/keys`, ca, 'POST');
      assert.equal(post.status, 405);
      assert.equal(post.headers.allow, 'GET, HEAD');
      const head = await get(`${issuer}/keys`, ca, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
    });

    it('publishes a prepared key before it signs, keeps the old one after activation, drops it when revoked', async () => {
      const first = server.authority.jwt.kid;
      const next = await server.authority.prepare('jwt');
      await eventually('the prepared key is in the JWK Set', async () =>
        (await jwks()).keys.some((k) => k.kid === next.id),
      );
      assert.equal(server.authority.jwt.kid, first, 'the prepared key signs nothing yet');
      await server.authority.activate('jwt');
      assert.equal(server.authority.jwt.kid, next.id);
      assert.deepEqual((await jwks()).keys.map((k) => k.kid).sort(), [first, next.id].sort());
      await server.authority.taint('jwt', first);
      assert.ok(
        (await jwks()).keys.some((k) => k.kid === first),
        'a tainted key still verifies until revoked',
      );
      await server.authority.revoke('jwt', first);
      await eventually('the revoked key left the JWK Set', async () =>
        (await jwks()).keys.every((k) => k.kid !== first),
      );
      assert.deepEqual(
        (await jwks()).keys.map((k) => [k.kid, k.alg]),
        [[next.id, alg]],
      );
    });
  });
}

describe('OIDC discovery on a Unix socket (behind a TLS-terminating proxy)', () => {
  let tmp: TempDir;
  let server: RunningServer;

  before(async () => {
    tmp = await makeTempDir('oidc-unix-');
    server = await startTestServer(tmp.path, [
      'jwt_issuer: https://oidc.example.org',
      'oidc_discovery:',
      `  listen_socket_path: ${tmp.path}/oidc/oidc.sock`,
      '  jwks_uri: https://oidc.example.org/jwks.json',
    ]);
  });
  after(async () => {
    await server?.stop();
    await tmp?.cleanup();
  });

  it('serves plain HTTP on the socket, with the configured jwks_uri and the issuer from jwt_issuer', async () => {
    assert.equal(server.oidcDiscoveryPort, undefined);
    const doc = await getOnSocket(`${tmp.path}/oidc/oidc.sock`, '/.well-known/openid-configuration');
    assert.equal(doc.status, 200);
    const d = JSON.parse(doc.body) as { issuer: string; jwks_uri: string };
    assert.equal(d.issuer, 'https://oidc.example.org');
    assert.equal(d.jwks_uri, 'https://oidc.example.org/jwks.json');
    const keys = await getOnSocket(`${tmp.path}/oidc/oidc.sock`, '/jwks.json');
    assert.equal(
      (JSON.parse(keys.body) as { keys: { kid: string }[] }).keys[0]?.kid,
      server.authority.jwt.kid,
    );
    assert.equal((await getOnSocket(`${tmp.path}/oidc/oidc.sock`, '/keys')).status, 404);
  });
});

describe('an RS256 JWT-SVID from the Workload API (jwt_key_type rsa-2048)', () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: Awaited<ReturnType<typeof startTestAgent>>;

  before(async () => {
    tmp = await makeTempDir('oidc-rsa-');
    server = await startTestServer(tmp.path, [
      'jwt_issuer: https://oidc.example.org',
      'jwt_key_type: rsa-2048',
      `oidc_discovery: { listen_socket_path: ${tmp.path}/oidc.sock }`,
    ]);
    await server.datastore.createJoinToken({
      token: 'oidc-rsa-agent-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'oidc',
    });
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: 'spiffe://example.org/tessera/agent/join_token/oidc',
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    agent = await startTestAgent(server, tmp.path, 'oidc-rsa-agent-token-0123', quiet);
  });
  after(async () => {
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  it('verifies with the spiffe library on the Workload API JWT bundle, with ValidateJWTSVID, and with jose on the discovered JWK Set', async () => {
    const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
    try {
      const svid = await client.fetchJwtSvid({ audience: ['reports'] });
      const token = svid.marshal();
      assert.deepEqual(decodeProtectedHeader(token), {
        alg: 'RS256',
        kid: server.authority.jwt.kid,
        typ: 'JWT',
      });
      assert.equal(svid.claims.iss, 'https://oidc.example.org');
      const bundles = await client.fetchJwtBundles();
      const own = bundles.getJwtBundleForTrustDomain(parseTrustDomain('example.org'));
      const key = own.findJwtAuthority(server.authority.jwt.kid);
      assert.equal(key?.asymmetricKeyType, 'rsa');
      assert.equal(key?.asymmetricKeyDetails?.modulusLength, 2048);
      assert.equal(
        parseAndValidateJwtSvid(token, bundles, ['reports']).id.toString(),
        'spiffe://example.org/web',
      );
      assert.equal(
        (await client.validateJwtSvid(token, 'reports')).id.toString(),
        'spiffe://example.org/web',
      );
      const jwks = JSON.parse((await getOnSocket(`${tmp.path}/oidc.sock`, '/keys')).body);
      const verified = await jwtVerify(token, createLocalJWKSet(jwks), {
        issuer: 'https://oidc.example.org',
        audience: 'reports',
        algorithms: ['RS256'],
      });
      assert.equal(verified.payload.sub, 'spiffe://example.org/web');
      await assert.rejects(
        jwtVerify(token, createLocalJWKSet(jwks), { issuer: 'https://oidc.example.org', audience: 'other' }),
        /unexpected "aud" claim value/,
      );
    } finally {
      client.close();
    }
  });
});
