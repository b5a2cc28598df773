/**
 * OIDC relying parties nobody here wrote — coreos/go-oidc v3, PyJWT's PyJWKClient and oauth2-proxy —
 * against a real tessera server serving OIDC discovery (oidc_discovery over HTTPS, an issuer with a
 * path, a private CA's certificate for localhost) and JWT-SVIDs fetched from a real agent's Workload
 * API, for both JWT key types (ES256 and RS256). Each must accept a JWT-SVID by discovery and refuse
 * one for another audience, an expired one (an entry with a 2 s JWT TTL) and one signed by a key
 * that was rotated out and revoked (prepare, activate, taint, revoke).
 * Same rules as the other interop suites: without the peers (setup.sh) the suite is skipped loudly,
 * with TESSERA_REQUIRE_INTEROP=1 it fails.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createWorkloadApiClient, parseSpiffeId, type WorkloadApiClient } from '@tessera/spiffe';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { decodeProtectedHeader } from 'jose';
import {
  goOidcVerify,
  OAUTH2_PROXY,
  type Oauth2Proxy,
  PYTHON_OIDC_VERIFY,
  pyJwtVerify,
  type RpRequest,
  type RpVerdict,
  startOauth2Proxy,
} from './oidc-peers.js';
import { interopUnavailable } from './verdicts.js';

const skip = interopUnavailable('OIDC relying parties (go-oidc, PyJWT, oauth2-proxy)', [
  OAUTH2_PROXY,
  PYTHON_OIDC_VERIFY,
]);

const uid = process.getuid?.() ?? 0;
const quiet = createLogger({ level: 'error', write: () => undefined });
const AUDIENCE = 'reports';

function accepted(v: RpVerdict, who: string): asserts v is RpVerdict & { verdict: 'accepted' } {
  assert.equal(v.verdict, 'accepted', `${who}: ${JSON.stringify(v)}`);
}

function refused(v: RpVerdict, who: string, why: RegExp): void {
  assert.equal(v.verdict, 'refused', `${who} should refuse: ${JSON.stringify(v)}`);
  assert.match((v as { error: string }).error, why, who);
}

for (const keyType of ['ec-p256', 'rsa-2048'] as const) {
  const alg = keyType === 'ec-p256' ? 'ES256' : 'RS256';

  describe(`OIDC relying parties and JWT-SVIDs from the agent (jwt_key_type ${keyType}, ${alg})`, {
    skip,
    timeout: 180_000,
  }, () => {
    let tmp: TempDir;
    let server: RunningServer;
    let agent: RunningAgent;
    let client: WorkloadApiClient;
    let proxy: Oauth2Proxy;
    let issuer: string;
    let ca: string;

    const token = async (audience = AUDIENCE, spiffeId = 'spiffe://example.org/web') =>
      (await client.fetchJwtSvid({ audience: [audience], subject: parseSpiffeId(spiffeId) })).marshal();
    const request = (t: string): RpRequest => ({ issuer, audience: AUDIENCE, token: t, ca });

    before(async () => {
      tmp = await makeTempDir('oidc-interop-');
      const webCa = TestCa.create({ trustDomain: 'web.test' });
      const cert = webCa.issueCertificate({ uris: [], dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] });
      await writeFile(join(tmp.path, 'oidc.pem'), cert.certificatesPem);
      await writeFile(join(tmp.path, 'oidc.key'), cert.privateKeyPem, { mode: 0o600 });
      ca = join(tmp.path, 'web-ca.pem');
      await writeFile(ca, webCa.rootPem());
      const port = await freePort();
      // An issuer with a path (spire #5480, #6408): discovery at <issuer>/.well-known/openid-configuration.
      issuer = `https://localhost:${port}/tessera/${keyType}`;
      server = await startTestServer(tmp.path, [
        `jwt_issuer: ${issuer}`,
        `jwt_key_type: ${keyType}`,
        'oidc_discovery:',
        '  address: 127.0.0.1',
        `  port: ${port}`,
        `  serving_cert_file: { cert_file_path: ${tmp.path}/oidc.pem, key_file_path: ${tmp.path}/oidc.key }`,
      ]);
      await server.datastore.createJoinToken({
        token: `oidc-interop-token-${keyType}`,
        expiresAt: new Date(Date.now() + 60_000),
        agentName: 'oidc',
      });
      const parentId = 'spiffe://example.org/tessera/agent/join_token/oidc';
      const selectors = [{ type: 'unix', value: `uid:${uid}` }];
      await server.datastore.createEntry({ spiffeId: 'spiffe://example.org/web', parentId, selectors });
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/short-lived',
        parentId,
        selectors,
        jwtSvidTtl: 2,
      });
      agent = await startTestAgent(server, tmp.path, `oidc-interop-token-${keyType}`, quiet);
      client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
      proxy = await startOauth2Proxy({ issuer, audience: AUDIENCE, ca });
    });

    after(async () => {
      client?.close();
      await proxy?.close();
      await agent?.stop();
      await server?.stop();
      await tmp?.cleanup();
    });

    test(`go-oidc, PyJWT and oauth2-proxy accept a ${alg} JWT-SVID from the Workload API by discovery`, async () => {
      const t = await token();
      assert.equal(decodeProtectedHeader(t).alg, alg);
      const go = await goOidcVerify(request(t));
      accepted(go, 'go-oidc');
      assert.equal(go.subject, 'spiffe://example.org/web');
      assert.equal(go.issuer, issuer);
      assert.deepEqual(go.audience, [AUDIENCE]);
      assert.equal(go.jwks_uri, `${issuer}/keys`);
      assert.ok(go.algorithms?.includes(alg), JSON.stringify(go.algorithms));
      const py = await pyJwtVerify(request(t));
      accepted(py, 'PyJWT');
      assert.equal(py.subject, 'spiffe://example.org/web');
      assert.equal(py.alg, alg);
      assert.equal(py.kid, server.authority.jwt.kid);
      assert.deepEqual(await proxy.check(t), { status: 202, user: 'spiffe://example.org/web' });
    });

    test('all three refuse a JWT-SVID for another audience', async () => {
      const t = await token('billing');
      refused(await goOidcVerify(request(t)), 'go-oidc', /expected audience "reports" got \["billing"\]/);
      refused(await pyJwtVerify(request(t)), 'PyJWT', /Audience doesn't match/);
      assert.equal((await proxy.check(t)).status, 401);
    });

    test('all three refuse an expired JWT-SVID (2 s TTL; none of them allows leeway on exp)', async () => {
      const t = await token(AUDIENCE, 'spiffe://example.org/short-lived');
      const exp = (
        JSON.parse(Buffer.from(t.split('.')[1] as string, 'base64url').toString()) as { exp: number }
      ).exp;
      assert.ok(exp - Date.now() / 1000 <= 2, 'the entry TTL applies');
      await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 1100));
      refused(await goOidcVerify(request(t)), 'go-oidc', /token is expired/);
      refused(await pyJwtVerify(request(t)), 'PyJWT', /Signature has expired/);
      assert.equal((await proxy.check(t)).status, 401);
    });

    test('all three refuse a JWT-SVID signed by a key that was rotated out and revoked; a new token verifies', async () => {
      const before = await token();
      const oldKid = server.authority.jwt.kid;
      assert.equal(decodeProtectedHeader(before).kid, oldKid);
      // Cached by the long-running oauth2-proxy before the rotation.
      assert.equal((await proxy.check(before)).status, 202);
      const next = await server.authority.prepare('jwt');
      // Published before it signs: a relying party can learn it while the old key still signs.
      const py = await pyJwtVerify(request(before));
      accepted(py, 'PyJWT (old key still in the JWK Set)');
      await server.authority.activate('jwt');
      await server.authority.taint('jwt', oldKid);
      await server.authority.revoke('jwt', oldKid);
      refused(await goOidcVerify(request(before)), 'go-oidc', /failed to verify signature/);
      refused(
        await pyJwtVerify(request(before)),
        'PyJWT',
        new RegExp(`Unable to find a signing key that matches: "${oldKid}"`),
      );
      // What docs/oidc.md warns of: go-oidc (inside oauth2-proxy) re-fetches the JWK Set only for a
      // kid it does not know, so a process that had the revoked key cached still accepts its tokens
      // until it meets a token of a new key (or restarts). Revocation is as fast as relying parties' caches.
      assert.equal(
        (await proxy.check(before)).status,
        202,
        'the long-running oauth2-proxy still has the old key',
      );
      const fresh = await startOauth2Proxy({ issuer, audience: AUDIENCE, ca });
      try {
        assert.equal((await fresh.check(before)).status, 401, 'a fresh oauth2-proxy refuses the revoked key');
        // The agent dropped its cached JWT-SVIDs when the key was tainted: this one is from the new key.
        const after = await token();
        assert.equal(decodeProtectedHeader(after).kid, next.id);
        accepted(await goOidcVerify(request(after)), 'go-oidc (new key)');
        accepted(await pyJwtVerify(request(after)), 'PyJWT (new key)');
        assert.equal((await fresh.check(after)).status, 202);
        // The new kid makes the long-running one re-fetch the JWK Set, which no longer holds the old key.
        assert.equal(
          (await proxy.check(after)).status,
          202,
          'the long-running oauth2-proxy learns the new kid',
        );
        assert.equal((await proxy.check(before)).status, 401, 'and then refuses the revoked key');
      } finally {
        await fresh.close();
      }
    });
  });
}
