import assert from 'node:assert/strict';
import type { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { TestCa } from '@tessera/testkit';
import type { X509BundleSource } from '../bundle/source.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { parseTrustDomain, type TrustDomain } from '../spiffeid/trust-domain.js';
import { verifyX509Svid } from './x509-verify.js';

const td = parseTrustDomain('example.org');
const otherTd = parseTrustDomain('other.org');
const HOUR = 3600_000;

function source(...bundles: X509Bundle[]): X509BundleSource {
  return {
    getX509BundleForTrustDomain(t: TrustDomain): X509Bundle {
      const b = bundles.find((x) => x.trustDomain.equals(t));
      if (b === undefined) throw new Error(`no bundle for ${t}`);
      return b;
    },
  };
}

const root = TestCa.create({ trustDomain: 'example.org' });
const inter1 = root.createIntermediate();
const inter2 = inter1.createIntermediate();
const otherRoot = TestCa.create({ trustDomain: 'other.org' });
const bundle = new X509Bundle(td, [root.root]);
const bundles = source(bundle, new X509Bundle(otherTd, [otherRoot.root]));

function refusedWith(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      isSpiffeError(err, ErrorCode.X509SVID_VERIFY),
      `expected ERR_X509SVID_VERIFY, got ${String(err)}`,
    );
    assert.match(err.message, pattern);
    return true;
  });
}

describe('verifyX509Svid accepts', () => {
  const cases: [string, () => X509Certificate[], number][] = [
    ['a leaf signed by the root', () => root.issueX509Svid('spiffe://example.org/w').certificates, 2],
    ['a leaf via one intermediate', () => inter1.issueX509Svid('spiffe://example.org/w').certificates, 3],
    ['a leaf via two intermediates', () => inter2.issueX509Svid('spiffe://example.org/w').certificates, 4],
    [
      'a P-384 leaf',
      () => root.issueX509Svid('spiffe://example.org/w', { keyType: 'ec-p384' }).certificates,
      2,
    ],
    [
      'an RSA leaf',
      () => root.issueX509Svid('spiffe://example.org/w', { keyType: 'rsa-2048' }).certificates,
      2,
    ],
    [
      'an Ed25519 leaf',
      () => root.issueX509Svid('spiffe://example.org/w', { keyType: 'ed25519' }).certificates,
      2,
    ],
    [
      'intermediates presented out of order',
      () => {
        const [leaf, a, b] = inter2.issueX509Svid('spiffe://example.org/w').certificates;
        return [leaf, b, a] as X509Certificate[];
      },
      4,
    ],
  ];
  for (const [name, chain, length] of cases) {
    it(name, () => {
      const certs = chain();
      const { id, verifiedChain } = verifyX509Svid(certs, bundles);
      assert.equal(id.toString(), 'spiffe://example.org/w');
      assert.equal(verifiedChain.length, length);
      assert.equal(verifiedChain[0], certs[0]);
      assert.equal(verifiedChain.at(-1)?.fingerprint256, root.root.fingerprint256);
    });
  }

  it('DER input as the Workload API and TLS deliver it', () => {
    const svid = inter1.issueX509Svid('spiffe://example.org/w');
    const { id } = verifyX509Svid(
      svid.certificates.map((c) => c.raw),
      bundles,
    );
    assert.equal(id.path, '/w');
  });
});

describe('verifyX509Svid refuses', () => {
  const now = Date.now();
  const cases: [string, () => X509Certificate[], RegExp, X509BundleSource?][] = [
    ['an empty chain', () => [], /empty certificates chain/],
    [
      'a leaf without a URI SAN',
      () => root.issueX509Svid('spiffe://example.org/w', { uris: [] }).certificates,
      /no URI SAN/,
    ],
    [
      'a leaf with two URI SANs',
      () =>
        root.issueX509Svid('x', { uris: ['spiffe://example.org/a', 'spiffe://example.org/b'] }).certificates,
      /more than one URI SAN/,
    ],
    [
      'a non-SPIFFE URI SAN',
      () => root.issueX509Svid('x', { uris: ['https://example.org/a'] }).certificates,
      /not a valid SPIFFE ID/,
    ],
    [
      'a leaf ID without a path',
      () => root.issueX509Svid('spiffe://example.org').certificates,
      /has no path/,
    ],
    [
      'a CA leaf',
      () => root.issueX509Svid('spiffe://example.org/w', { isCa: true }).certificates,
      /CA flag set to true/,
    ],
    [
      'a leaf with keyCertSign',
      () =>
        root.issueX509Svid('spiffe://example.org/w', { keyUsage: ['digitalSignature', 'keyCertSign'] })
          .certificates,
      /KeyCertSign/,
    ],
    [
      'a leaf with cRLSign',
      () =>
        root.issueX509Svid('spiffe://example.org/w', { keyUsage: ['digitalSignature', 'cRLSign'] })
          .certificates,
      /KeyCrlSign/,
    ],
    [
      'an expired leaf',
      () =>
        root.issueX509Svid('spiffe://example.org/w', {
          notBefore: new Date(now - 2 * HOUR),
          notAfter: new Date(now - HOUR),
        }).certificates,
      /leaf certificate has expired/,
    ],
    [
      'a leaf not valid yet',
      () =>
        root.issueX509Svid('spiffe://example.org/w', {
          notBefore: new Date(now + HOUR),
          notAfter: new Date(now + 2 * HOUR),
        }).certificates,
      /not valid yet/,
    ],
    [
      'an expired intermediate',
      () =>
        root
          .createIntermediate({ notBefore: new Date(now - 2 * HOUR), notAfter: new Date(now - HOUR) })
          .issueX509Svid('spiffe://example.org/w').certificates,
      /has expired/,
    ],
    [
      'an intermediate that is not a CA',
      () => root.createIntermediate({ isCa: false }).issueX509Svid('spiffe://example.org/w').certificates,
      /is not a CA/,
    ],
    [
      'an intermediate without keyCertSign',
      () =>
        root.createIntermediate({ keyUsage: ['digitalSignature'] }).issueX509Svid('spiffe://example.org/w')
          .certificates,
      /keyCertSign/,
    ],
    [
      'a leaf from an unknown CA',
      () =>
        TestCa.create({ trustDomain: 'example.org' }).issueX509Svid('spiffe://example.org/w').certificates,
      /does not chain/,
    ],
    [
      'a leaf of another trust domain signed by this trust domain’s CA',
      () => root.issueX509Svid('spiffe://other.org/w').certificates,
      /does not chain to an authority of trust domain "other.org"/,
    ],
    [
      'a leaf whose trust domain has no bundle',
      () => root.issueX509Svid('spiffe://nobundle.org/w').certificates,
      /could not get X.509 bundle for trust domain "nobundle.org"/,
    ],
    [
      'a leaf when its bundle is empty',
      () => root.issueX509Svid('spiffe://example.org/w').certificates,
      /has no authorities/,
      source(new X509Bundle(td, [])),
    ],
    [
      'a chain that needs an intermediate it did not present',
      () => inter1.issueX509Svid('spiffe://example.org/w').certificates.slice(0, 1),
      /does not chain/,
    ],
  ];
  for (const [name, chain, pattern, src] of cases) {
    it(name, () => refusedWith(() => verifyX509Svid(chain(), src ?? bundles), pattern));
  }

  it('an intermediate CA with a path length constraint that the chain exceeds', () => {
    const constrained = root.createIntermediate({ pathLen: 0 });
    const below = constrained.createIntermediate();
    refusedWith(
      () => verifyX509Svid(below.issueX509Svid('spiffe://example.org/w').certificates, bundles),
      /path length constraint 0 exceeded/,
    );
  });

  it('a certificate outside its validity window at a chosen time', () => {
    const certs = root.issueX509Svid('spiffe://example.org/w').certificates;
    refusedWith(
      () => verifyX509Svid(certs, bundles, { now: new Date(Date.now() + 3 * HOUR) }),
      /has expired/,
    );
  });

  it('garbage DER', () => {
    refusedWith(
      () => verifyX509Svid([new Uint8Array([0x30, 0x03, 1, 2, 3])], bundles),
      /not a valid X.509 certificate/,
    );
  });
});
