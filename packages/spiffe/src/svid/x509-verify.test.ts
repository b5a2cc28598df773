import assert from 'node:assert/strict';
import type { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { type KeyType, TestCa } from '@tessera/testkit';
import { X509BundleSet } from '../bundle/set.js';
import type { X509BundleSource } from '../bundle/source.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import { type ErrorCode as Code, ErrorCode, isSpiffeError } from '../errors.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { verifyX509Svid } from './x509-verify.js';

const HOUR = 3600_000;
const ID = 'spiffe://example.org/w';
const td = parseTrustDomain('example.org');
const otherTd = parseTrustDomain('other.org');

const root = TestCa.create({ trustDomain: 'example.org' });
const inter1 = root.createIntermediate();
const inter2 = inter1.createIntermediate();
const otherRoot = TestCa.create({ trustDomain: 'other.org' });
const bundle = new X509Bundle(td, [root.root]);
const bundles = new X509BundleSet([bundle, new X509Bundle(otherTd, [otherRoot.root])]);

function failsWith(fn: () => unknown, code: Code, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isSpiffeError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, /^x509svid: /);
    assert.match(err.message, pattern);
    return true;
  });
}

/** The subject DN of a CA in the testkit's "C=..,O=..,OU=.." form. */
function dn(cert: X509Certificate): string {
  return cert.subject.split('\n').join(',');
}

describe('verifyX509Svid accepts', () => {
  const keyCa = (keyType: KeyType) => TestCa.create({ trustDomain: 'example.org', keyType });
  const p384 = keyCa('ec-p384');
  const rsa = keyCa('rsa-2048');
  const ed = keyCa('ed25519');
  const rotated = TestCa.create({ trustDomain: 'example.org' }); // same subject as root, another key
  const rotatedBundles = new X509BundleSet([new X509Bundle(td, [root.root, rotated.root])]);
  const twin = root.createIntermediate(); // same subject as inter1, another key
  const cases: {
    name: string;
    chain: () => X509Certificate[];
    via: () => X509Certificate[];
    source?: X509BundleSource;
  }[] = [
    {
      name: 'a leaf signed by the root',
      chain: () => root.issueX509Svid(ID).certificates,
      via: () => [root.root],
    },
    {
      name: 'a leaf via one intermediate',
      chain: () => inter1.issueX509Svid(ID).certificates,
      via: () => [inter1.certificate, root.root],
    },
    {
      name: 'a leaf via two intermediates',
      chain: () => inter2.issueX509Svid(ID).certificates,
      via: () => [inter2.certificate, inter1.certificate, root.root],
    },
    ...(
      [
        ['P-384', p384, 'ec-p384'],
        ['RSA', rsa, 'rsa-2048'],
        ['Ed25519', ed, 'ed25519'],
      ] as const
    ).map(([name, ca, keyType]) => {
      const inter = ca.createIntermediate({ keyType });
      return {
        name: `a ${name} leaf from a ${name} CA`,
        chain: () => inter.issueX509Svid(ID, { keyType }).certificates,
        via: () => [inter.certificate, ca.root],
        source: new X509Bundle(td, [ca.root]),
      };
    }),
    {
      name: 'intermediates presented out of order',
      chain: () => {
        const [leaf, a, b] = inter2.issueX509Svid(ID).certificates;
        return [leaf, b, a] as X509Certificate[];
      },
      via: () => [inter2.certificate, inter1.certificate, root.root],
    },
    {
      name: 'a chain that also carries the root',
      chain: () => [...inter1.issueX509Svid(ID).certificates, root.root],
      via: () => [inter1.certificate, root.root],
    },
    {
      name: 'a leaf of a rotated root when the bundle holds old and new roots of the same name',
      chain: () => rotated.issueX509Svid(ID).certificates,
      via: () => [rotated.root],
      source: rotatedBundles,
    },
    {
      name: 'two presented intermediates of the same name, the wrong one first',
      chain: () => {
        const [leaf, right] = twin.issueX509Svid(ID).certificates;
        return [leaf, inter1.certificate, right] as X509Certificate[];
      },
      via: () => [twin.certificate, root.root],
    },
    {
      name: 'a bundle that trusts an intermediate directly',
      chain: () => inter1.issueX509Svid(ID).certificates.slice(0, 1),
      via: () => [inter1.certificate],
      source: new X509Bundle(td, [inter1.certificate]),
    },
    {
      name: 'an X509Bundle as its own source',
      chain: () => inter1.issueX509Svid(ID).certificates,
      via: () => [inter1.certificate, root.root],
      source: bundle,
    },
    {
      name: 'a leaf without keyUsage (as go-spiffe Verify; parse requires it)',
      chain: () => root.issueX509Svid(ID, { keyUsage: null }).certificates,
      via: () => [root.root],
    },
    {
      name: 'a leaf without extKeyUsage (EKU is not enforced)',
      chain: () => root.issueX509Svid(ID, { extKeyUsage: [] }).certificates,
      via: () => [root.root],
    },
  ];
  for (const { name, chain, via, source } of cases) {
    it(name, () => {
      const certs = chain();
      for (const input of [certs, certs.map((c) => c.raw)]) {
        const { id, verifiedChain } = verifyX509Svid(input, source ?? bundles);
        assert.equal(id.toString(), ID);
        assert.deepEqual(
          verifiedChain.map((c) => c.fingerprint256),
          [certs[0] as X509Certificate, ...via()].map((c) => c.fingerprint256),
        );
      }
    });
  }

  it('checks validity at options.now', () => {
    const now = Date.now();
    const old = TestCa.create({ trustDomain: 'example.org', notBefore: new Date(now - 4 * HOUR) });
    const certs = old.issueX509Svid(ID, {
      notBefore: new Date(now - 3 * HOUR),
      notAfter: new Date(now - 2 * HOUR),
    }).certificates;
    const oldBundle = new X509Bundle(td, [old.root]);
    const { id } = verifyX509Svid(certs, oldBundle, { now: new Date(now - 2.5 * HOUR) });
    assert.equal(id.toString(), ID);
    assert.throws(() => verifyX509Svid(certs, oldBundle, { now: new Date(Number.NaN) }), TypeError);
    failsWith(() => verifyX509Svid(certs, oldBundle), ErrorCode.X509SVID_VERIFY, /has expired/);
  });

  it('returns the same certificate objects for the same DER (parsed once)', () => {
    const ders = inter1.issueX509Svid(ID).certificates.map((c) => Buffer.from(c.raw));
    const a = verifyX509Svid(ders, bundles).verifiedChain;
    const b = verifyX509Svid(
      ders.map((d) => Buffer.from(d)),
      bundles,
    ).verifiedChain;
    assert.equal(a.length, 3);
    for (const [i, c] of a.entries()) assert.equal(c, b[i]);
  });
});

describe('verifyX509Svid refuses', () => {
  const now = Date.now();
  const expired = { notBefore: new Date(now - 2 * HOUR), notAfter: new Date(now - HOUR) };
  const future = { notBefore: new Date(now + HOUR), notAfter: new Date(now + 2 * HOUR) };
  // other.org's own CA issues an example.org leaf: the other.org root must not vouch for example.org.
  const crossTd = otherRoot.issueX509Svid(ID).certificates;
  const cases: {
    name: string;
    chain: () => (X509Certificate | Uint8Array)[];
    code: Code;
    pattern: RegExp;
    source?: X509BundleSource;
  }[] = [
    // Not an X509-SVID at all: ERR_X509SVID_INVALID.
    {
      name: 'an empty chain',
      chain: () => [],
      code: ErrorCode.X509SVID_INVALID,
      pattern: /empty certificates chain/,
    },
    {
      name: 'garbage DER',
      chain: () => [new Uint8Array([0x30, 0x03, 1, 2, 3])],
      code: ErrorCode.X509SVID_INVALID,
      pattern: /certificate 1 of 1 is not a valid X.509 certificate/,
    },
    {
      name: 'garbage DER after the leaf',
      chain: () => [root.issueX509Svid(ID).certificates[0]!.raw, Buffer.from('garbage')],
      code: ErrorCode.X509SVID_INVALID,
      pattern: /certificate 2 of 2 is not a valid X.509 certificate/,
    },
    {
      name: 'a leaf without a URI SAN',
      chain: () => root.issueX509Svid(ID, { uris: [], dnsNames: ['w.example.org'] }).certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /leaf certificate contains no URI SAN/,
    },
    {
      name: 'a leaf with two URI SANs',
      chain: () => root.issueX509Svid(ID, { uris: [ID, 'spiffe://example.org/b'] }).certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /more than one URI SAN/,
    },
    {
      name: 'a non-SPIFFE URI SAN',
      chain: () => root.issueX509Svid(ID, { uris: ['https://example.org/w'] }).certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /URI SAN is not a valid SPIFFE ID/,
    },
    {
      name: 'a leaf ID without a path',
      chain: () => root.issueX509Svid('spiffe://example.org').certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /has no path/,
    },
    {
      name: 'a CA leaf',
      chain: () => root.issueX509Svid(ID, { isCa: true }).certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /leaf certificate of "spiffe:\/\/example.org\/w" has basicConstraints cA=true/,
    },
    {
      name: 'a leaf with keyCertSign',
      chain: () => root.issueX509Svid(ID, { keyUsage: ['digitalSignature', 'keyCertSign'] }).certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /'keyCertSign' key usage/,
    },
    {
      name: 'a leaf with cRLSign',
      chain: () => root.issueX509Svid(ID, { keyUsage: ['digitalSignature', 'cRLSign'] }).certificates,
      code: ErrorCode.X509SVID_INVALID,
      pattern: /'cRLSign' key usage/,
    },
    // No bundle for the leaf's trust domain: ERR_BUNDLE_NOT_FOUND.
    {
      name: 'a leaf whose trust domain has no bundle (bundle set)',
      chain: () => root.issueX509Svid('spiffe://nobundle.org/w').certificates,
      code: ErrorCode.BUNDLE_NOT_FOUND,
      pattern: /no X.509 bundle for trust domain "nobundle.org" of "spiffe:\/\/nobundle.org\/w"/,
    },
    {
      name: 'a leaf of another trust domain than a single bundle',
      chain: () => otherRoot.issueX509Svid('spiffe://other.org/w').certificates,
      code: ErrorCode.BUNDLE_NOT_FOUND,
      pattern: /trust domain "other.org"/,
      source: bundle,
    },
    {
      name: 'an example.org leaf from the other.org CA when only other.org has a bundle',
      chain: () => crossTd,
      code: ErrorCode.BUNDLE_NOT_FOUND,
      pattern: /trust domain "example.org"/,
      source: new X509BundleSet([new X509Bundle(otherTd, [otherRoot.root])]),
    },
    // Fails verification: ERR_X509SVID_VERIFY.
    {
      name: 'an example.org leaf from the other.org CA (that root is in the other.org bundle only)',
      chain: () => crossTd,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /does not chain to an authority of trust domain "example.org"/,
    },
    {
      name: 'an other.org leaf from the example.org CA',
      chain: () => root.issueX509Svid('spiffe://other.org/w').certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /does not chain to an authority of trust domain "other.org"/,
    },
    {
      name: 'a bundle source that returns another trust domain’s bundle',
      chain: () => crossTd,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /returned the bundle of trust domain "other.org" when asked for "example.org"/,
      source: { getX509BundleForTrustDomain: () => new X509Bundle(otherTd, [otherRoot.root]) },
    },
    {
      name: 'a bundle source that fails otherwise',
      chain: () => root.issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /no X.509 bundle for trust domain "example.org".*\(boom\)/,
      source: {
        getX509BundleForTrustDomain: () => {
          throw new Error('boom');
        },
      },
    },
    {
      name: 'an empty bundle',
      chain: () => root.issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /has no authorities/,
      source: new X509Bundle(td, []),
    },
    {
      name: 'an expired leaf',
      chain: () => root.issueX509Svid(ID, expired).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /leaf certificate has expired \(notAfter .*\) for "spiffe:\/\/example.org\/w"$/,
    },
    {
      name: 'a leaf not valid yet',
      chain: () => root.issueX509Svid(ID, future).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /leaf certificate is not valid yet \(notBefore .*\) for "spiffe:\/\/example.org\/w"$/,
    },
    {
      name: 'an expired intermediate',
      chain: () => root.createIntermediate(expired).issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /intermediate certificate ".*intermediate 1" has expired/,
    },
    {
      name: 'an intermediate not valid yet',
      chain: () => root.createIntermediate(future).issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /intermediate certificate ".*" is not valid yet/,
    },
    {
      name: 'an expired root',
      chain: () => root.issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /bundle authority ".*root" has expired/,
      source: new X509Bundle(td, [TestCa.create({ trustDomain: 'example.org', ...expired }).root]),
    },
    {
      name: 'an intermediate that is not a CA',
      chain: () => root.createIntermediate({ isCa: false }).issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /intermediate certificate ".*" is not a CA/,
    },
    {
      name: 'an intermediate without keyCertSign',
      chain: () => root.createIntermediate({ keyUsage: ['digitalSignature'] }).issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /lacks the 'keyCertSign' key usage/,
    },
    {
      name: 'a leaf from an unknown CA with the root’s name',
      chain: () => TestCa.create({ trustDomain: 'example.org' }).issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /bundle authority ".*example.org root" has the issuer's name but is not its issuer/,
    },
    {
      name: 'a chain that needs an intermediate it did not present',
      chain: () => inter1.issueX509Svid(ID).certificates.slice(0, 1),
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /its issuer ".*intermediate 1" is neither a presented intermediate nor a bundle authority/,
    },
    {
      name: 'an intermediate CA whose path length constraint the chain exceeds',
      chain: () =>
        root.createIntermediate({ pathLen: 0 }).createIntermediate().issueX509Svid(ID).certificates,
      code: ErrorCode.X509SVID_VERIFY,
      pattern: /has path length constraint 0, exceeded by 1 intermediate/,
    },
  ];
  for (const { name, chain, code, pattern, source } of cases) {
    it(name, () => failsWith(() => verifyX509Svid(chain(), source ?? bundles), code, pattern));
  }

  it('a certificate outside its validity window at options.now', () => {
    const certs = root.issueX509Svid(ID).certificates;
    failsWith(
      () => verifyX509Svid(certs, bundles, { now: new Date(Date.now() + 3 * HOUR) }),
      ErrorCode.X509SVID_VERIFY,
      /has expired/,
    );
  });

  it('a forged signature on the leaf', () => {
    const der = Buffer.from(root.issueX509Svid(ID).certificates[0]!.raw);
    der[der.length - 3] = (der[der.length - 3] ?? 0) ^ 0xff; // inside the ECDSA signature value
    failsWith(
      () => verifyX509Svid([der], bundles),
      ErrorCode.X509SVID_VERIFY,
      /signature of ".*" does not verify with the key of bundle authority/,
    );
  });

  it('many look-alike CAs that sign each other, within a bounded number of checks', () => {
    // A rogue CA of example.org (not in the bundle) re-certifies its own key under its own name
    // many times: every presented CA is a valid issuer of every other, and none reaches the root.
    const rogue = TestCa.create({ trustDomain: 'example.org' }).createIntermediate();
    const copies = Array.from(
      { length: 12 },
      () =>
        rogue.issueCertificate({
          uris: ['spiffe://example.org'],
          subject: dn(rogue.certificate),
          publicKey: rogue.certificate.publicKey,
          isCa: true,
          keyUsage: ['digitalSignature', 'keyCertSign', 'cRLSign'],
        }).certificates[0] as X509Certificate,
    );
    const leaf = rogue.issueX509Svid(ID).certificates[0] as X509Certificate;
    const started = performance.now();
    failsWith(
      () => verifyX509Svid([leaf, ...copies], bundles),
      ErrorCode.X509SVID_VERIFY,
      /gave up after 100 candidate issuers/,
    );
    assert.ok(performance.now() - started < 5000, 'path building stayed bounded');
  });
});
