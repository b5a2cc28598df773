// npm run bench: SPIFFE verification rates beside openssl's figures from the same run.
import { createVerify, generateKeyPairSync, sign, verify, X509Certificate } from 'node:crypto';
import {
  JwtBundle,
  parseAndValidateJwtSvid,
  parseSpiffeBundle,
  parseTrustDomain,
  SpiffeBundle,
  verifyX509Svid,
  X509Bundle,
} from '@tessera/spiffe';
import { TestCa, TestJwtAuthority } from '@tessera/testkit';
import { bench, opensslSpeed, printTable } from './harness.js';

const td = parseTrustDomain('example.org');
const p256 = opensslSpeed('ecdsap256');

// X509-SVID: leaf -> intermediate -> root (P-256). Two signatures to check: the leaf's and the intermediate's.
const root = TestCa.create({ trustDomain: 'example.org' });
const inter = root.createIntermediate();
const svid = inter.issueX509Svid('spiffe://example.org/workload');
const ders = svid.certificates.map((c) => c.raw);
const bundle = new X509Bundle(td, [root.root]);
const signatures = 2;
const x509FromDer = await bench('X509-SVID chain verify (peer DER, as a handshake gives it)', () =>
  verifyX509Svid(
    ders.map((d) => Buffer.from(d)),
    bundle,
  ),
);
const x509Fresh = await bench('X509-SVID chain verify (new X509Certificate objects each time)', () =>
  verifyX509Svid(
    ders.map((d) => new X509Certificate(d)),
    bundle,
  ),
);
const x509Cached = await bench('X509-SVID chain verify (cached certificate objects)', () =>
  verifyX509Svid(svid.certificates, bundle),
);

// JWT-SVID ES256.
const jwtAuthority = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'k1' });
const jwtBundle = new JwtBundle(td, [['k1', jwtAuthority.publicKey]]);
const token = jwtAuthority.sign({
  sub: 'spiffe://example.org/workload',
  aud: ['svc'],
  exp: Math.floor(Date.now() / 1000) + 3600,
});
const jwt = await bench(
  'JWT-SVID ES256 parseAndValidate',
  () => parseAndValidateJwtSvid(token, jwtBundle, ['svc']),
  { batch: 10 },
);

// Node's own P-256 verify, for context (what node:crypto gives over OpenSSL).
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const data = Buffer.from('x'.repeat(64));
const sig = sign('sha256', data, privateKey);
const nodeVerify = await bench(
  'node:crypto.verify P-256 (context)',
  () => verify('sha256', data, publicKey, sig),
  { batch: 10 },
);
void createVerify;

// A 100-key SPIFFE bundle: 50 X.509 authorities (x5c) and 50 JWT authorities. Parsing the same
// document again (a refresh) reuses decoded certificates; the cold figure parses documents whose
// certificates were never seen.
function bundleDoc(): string {
  const cas = Array.from({ length: 50 }, () => TestCa.create({ trustDomain: 'example.org' }).root);
  const jwts = Array.from({ length: 50 }, (_, i) =>
    TestJwtAuthority.create({ trustDomain: 'example.org', kid: `k${i}` }),
  );
  return new SpiffeBundle({
    trustDomain: td,
    x509Authorities: cas,
    jwtAuthorities: jwts.map((a) => [a.kid, a.publicKey] as const),
    sequenceNumber: 42n,
    refreshHint: 300,
  }).marshal();
}
const coldDocs = Array.from({ length: 8 }, bundleDoc);
const coldTimes = coldDocs
  .map((d) => {
    const t0 = process.hrtime.bigint();
    parseSpiffeBundle(td, d);
    return Number(process.hrtime.bigint() - t0) / 1000;
  })
  .sort((a, b) => a - b);
const coldMedianUs = coldTimes[Math.floor(coldTimes.length / 2)] ?? Number.NaN;
const bundleCold = {
  name: 'SPIFFE bundle parse, 100 keys, cold (8 new documents)',
  iterations: coldTimes.length,
  opsPerSec: 1e6 / coldMedianUs,
  medianUs: coldMedianUs,
  p99Us: coldTimes.at(-1) ?? Number.NaN,
};
const doc = bundleDoc();
const bundleParse = await bench('SPIFFE bundle parse, 100 keys, refresh (same certificates)', () =>
  parseSpiffeBundle(td, doc),
);
const jsonParse = await bench('JSON.parse of the same document (context)', () => JSON.parse(doc), {
  batch: 10,
});

const ok = printTable(
  `SPIFFE verification (openssl speed -seconds 2 -mr ecdsap256: verify ${p256.verify.toFixed(0)}/s, sign ${p256.sign.toFixed(0)}/s)`,
  [
    {
      result: x509FromDer,
      reference: { name: `openssl P-256 verify / ${signatures}`, opsPerSec: p256.verify / signatures },
      goal: 0.4,
    },
    {
      result: x509Fresh,
      reference: { name: `openssl P-256 verify / ${signatures}`, opsPerSec: p256.verify / signatures },
    },
    {
      result: x509Cached,
      reference: { name: `openssl P-256 verify / ${signatures}`, opsPerSec: p256.verify / signatures },
    },
    { result: jwt, reference: { name: 'openssl P-256 verify', opsPerSec: p256.verify }, goal: 0.5 },
    { result: nodeVerify, reference: { name: 'openssl P-256 verify', opsPerSec: p256.verify } },
    { result: bundleCold, reference: { name: 'JSON.parse same doc', opsPerSec: jsonParse.opsPerSec } },
    { result: bundleParse, reference: { name: 'JSON.parse same doc', opsPerSec: jsonParse.opsPerSec } },
    { result: jsonParse },
  ],
);
console.log(`\nbundle document: ${doc.length} bytes, 50 x509-svid + 50 jwt-svid keys`);
if (!ok) process.exitCode = 1;
