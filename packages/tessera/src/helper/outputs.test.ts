import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import {
  JwtBundle,
  JwtBundleSet,
  parseTrustDomain,
  parseX509Svid,
  X509Bundle,
  X509BundleSet,
  type X509Context,
} from '@tessera/spiffe';
import { generateKey, TestCa } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../common/errors.js';
import { jwtBundlesFile, jwtRefreshDelayMs, x509Files } from './outputs.js';

const td = parseTrustDomain('example.org');
const root = TestCa.create({ trustDomain: 'example.org' });
const intermediate = root.createIntermediate();
const partner = TestCa.create({ trustDomain: 'partner.org' });
const expiredCa = TestCa.create({
  trustDomain: 'example.org',
  notBefore: new Date(Date.now() - 7200_000),
  notAfter: new Date(Date.now() - 3600_000),
});
const svid = (id: string, hint: string) => {
  const issued = intermediate.issueCertificate({ spiffeId: id });
  return parseX509Svid(issued.certificatesPem, issued.privateKeyPem, hint);
};
const ctx: X509Context = {
  svids: [svid('spiffe://example.org/web', 'web'), svid('spiffe://example.org/api', 'api')],
  crls: [],
  bundles: new X509BundleSet([
    new X509Bundle(td, [root.certificate, expiredCa.certificate]),
    new X509Bundle(parseTrustDomain('partner.org'), [partner.certificate]),
  ]),
};
const opts = {
  hint: '',
  addIntermediatesToBundle: false,
  includeFederatedDomains: false,
  omitExpired: false,
  now: new Date(),
};
const certs = (pem: string) =>
  [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map(
    (m) => new X509Certificate(m[0]).fingerprint256,
  );

test("spiffe-helper's layout: the chain in the SVID file, the own trust domain's CAs in the bundle", () => {
  const f = x509Files(ctx, opts);
  assert.equal(f.svid.id.toString(), 'spiffe://example.org/web');
  assert.deepEqual(certs(f.certificates), [
    f.svid.leaf.fingerprint256,
    intermediate.certificate.fingerprint256,
  ]);
  assert.deepEqual(certs(f.bundle), [root.certificate.fingerprint256, expiredCa.certificate.fingerprint256]);
  assert.match(f.privateKey, /^-----BEGIN PRIVATE KEY-----\n/);
  assert.equal(f.combined, f.privateKey + f.certificates);
});

test('add_intermediates_to_bundle, include_federated_domains, omit_expired, hint', () => {
  const f = x509Files(ctx, {
    ...opts,
    hint: 'api',
    addIntermediatesToBundle: true,
    includeFederatedDomains: true,
    omitExpired: true,
  });
  assert.equal(f.svid.id.toString(), 'spiffe://example.org/api');
  assert.deepEqual(certs(f.certificates), [f.svid.leaf.fingerprint256]);
  assert.deepEqual(certs(f.bundle), [
    root.certificate.fingerprint256,
    intermediate.certificate.fingerprint256,
    partner.certificate.fingerprint256,
  ]);
  // The combined file keeps the whole chain: it is what the program presents.
  assert.equal(certs(f.combined).length, 2);
  assert.throws(
    () => x509Files(ctx, { ...opts, hint: 'db' }),
    (err: unknown) =>
      isTesseraError(err, TesseraErrorCode.HELPER_FETCH) &&
      err.message.includes('no X509-SVID has the hint "db"') &&
      err.message.includes('"web", "api"'),
  );
});

test('the JWT bundle file as spiffe-helper writes it; JWT-SVIDs fetched again at half their lifetime', () => {
  const key = generateKey().publicKey;
  const file = jwtBundlesFile(new JwtBundleSet([new JwtBundle(td, [['k1', key]])]));
  const parsed = JSON.parse(file) as Record<string, string>;
  assert.deepEqual(Object.keys(parsed), ['example.org']);
  const jwks = JSON.parse(Buffer.from(parsed['example.org'] as string, 'base64').toString());
  assert.equal(jwks.keys[0].kid, 'k1');
  const now = new Date('2026-01-01T00:00:00Z');
  assert.equal(jwtRefreshDelayMs({ expiresAt: new Date(now.getTime() + 300_000) }, now), 150_000);
  assert.equal(jwtRefreshDelayMs({ expiresAt: new Date(now.getTime() + 500) }, now), 1000);
});
