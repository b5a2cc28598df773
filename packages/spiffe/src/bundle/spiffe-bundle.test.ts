import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TestCa, TestJwtAuthority } from '@tessera/testkit';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { JwtBundleSet, SpiffeBundleSet, X509BundleSet } from './set.js';
import { parseSpiffeBundle, SpiffeBundle } from './spiffe-bundle.js';
import { X509Bundle } from './x509-bundle.js';

const td = parseTrustDomain('example.org');
const ca1 = TestCa.create({ trustDomain: 'example.org' });
const ca2 = TestCa.create({ trustDomain: 'example.org', keyType: 'rsa-2048' });
const jwtA = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'a' });
const jwtB = TestJwtAuthority.create({ trustDomain: 'example.org', keyType: 'rsa-2048', kid: 'b' });

function x509Jwk(ca: TestCa): Record<string, unknown> {
  return {
    ...ca.root.publicKey.export({ format: 'jwk' }),
    use: 'x509-svid',
    x5c: [ca.root.raw.toString('base64')],
  };
}

function invalidWith(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      isSpiffeError(err, ErrorCode.BUNDLE_INVALID),
      `expected ERR_BUNDLE_INVALID, got ${String(err)}`,
    );
    assert.match(err.message, pattern);
    return true;
  });
}

describe('parseSpiffeBundle', () => {
  it('reads X.509 and JWT authorities, sequence and refresh hint, and round-trips', () => {
    const doc = JSON.stringify({
      spiffe_sequence: 2,
      spiffe_refresh_hint: 300,
      keys: [x509Jwk(ca1), x509Jwk(ca2), jwtA.jwk(), jwtB.jwk()],
    });
    const b = parseSpiffeBundle(td, doc);
    assert.equal(b.x509Authorities.length, 2);
    assert.equal(b.jwtAuthorities.size, 2);
    assert.equal(b.sequenceNumber, 2n);
    assert.equal(b.refreshHint, 300);
    assert.ok(b.x509Bundle().hasAuthority(ca2.root));
    assert.ok(b.jwtBundle().findJwtAuthority('b')?.equals(jwtB.publicKey));
    const again = parseSpiffeBundle(td, b.marshal());
    assert.ok(again.equals(b));
    assert.equal(again.marshal(), b.marshal());
  });

  it('keeps a sequence above 2^53 exact, up to 2^64-1', () => {
    for (const seq of ['9007199254740993', '18446744073709551615']) {
      const b = parseSpiffeBundle(td, `{"keys":[],"spiffe_sequence":${seq}}`);
      assert.equal(b.sequenceNumber, BigInt(seq));
      assert.match(b.marshal(), new RegExp(`"spiffe_sequence":${seq}}$`));
      assert.equal(parseSpiffeBundle(td, b.marshal()).sequenceNumber, BigInt(seq));
    }
  });

  it('accepts an empty key list (every authority revoked) and no metadata', () => {
    const b = parseSpiffeBundle(td, '{"keys":[]}');
    assert.equal(b.x509Authorities.length, 0);
    assert.equal(b.sequenceNumber, undefined);
    assert.equal(b.refreshHint, undefined);
  });

  it('ignores JWKs with a missing or unknown use, or an unknown kty', () => {
    const noUse = { ...jwtA.jwk(), use: undefined };
    const wit = { ...jwtA.jwk(), kid: 'w', use: 'wit-svid' };
    const oct = { kty: 'oct', k: 'AAAA', kid: 'o', use: 'jwt-svid' };
    const weird = { kty: 'XYZ', use: 'x509-svid', x5c: ['garbage'] };
    const b = parseSpiffeBundle(td, JSON.stringify({ keys: [noUse, wit, oct, weird, jwtB.jwk()] }));
    assert.deepEqual([...b.jwtAuthorities.keys()], ['b']);
    assert.equal(b.x509Authorities.length, 0);
  });

  const cases: [string, string, RegExp][] = [
    ['not JSON', '{"keys": [', /not valid JSON/],
    ['not an object', '[]', /not a JSON object/],
    ['missing keys', '{"spiffe_sequence": 1}', /no authorities found/],
    ['null keys', '{"keys": null}', /no authorities found/],
    ['keys not an array', '{"keys": {}}', /must be an array/],
    ['a key that is not an object', '{"keys": [1]}', /key 0 is not a JSON object/],
    [
      'x5c with two certificates',
      JSON.stringify({
        keys: [{ ...x509Jwk(ca1), x5c: [ca1.root.raw.toString('base64'), ca2.root.raw.toString('base64')] }],
      }),
      /expected a single certificate in x509-svid entry 0; got 2/,
    ],
    ['x509-svid without x5c', JSON.stringify({ keys: [{ ...x509Jwk(ca1), x5c: undefined }] }), /got 0/],
    [
      'x5c whose key differs from the JWK',
      JSON.stringify({
        keys: [
          { ...x509Jwk(ca1), x5c: [TestCa.create({ trustDomain: 'x.org' }).root.raw.toString('base64')] },
        ],
      }),
      /do not match/,
    ],
    [
      'x5c that is not a certificate',
      JSON.stringify({ keys: [{ ...x509Jwk(ca1), x5c: ['AAAA'] }] }),
      /not a valid X.509 certificate/,
    ],
    ['jwt-svid without kid', JSON.stringify({ keys: [{ ...jwtA.jwk(), kid: undefined }] }), /no "kid"/],
    [
      'a duplicate kid',
      JSON.stringify({ keys: [jwtA.jwk(), { ...jwtB.jwk(), kid: 'a' }] }),
      /repeats key ID "a"/,
    ],
    [
      'a jwt-svid key with private members',
      JSON.stringify({ keys: [{ ...jwtA.privateKey.export({ format: 'jwk' }), kid: 'p', use: 'jwt-svid' }] }),
      /private key material/,
    ],
    ['a negative sequence', '{"keys":[],"spiffe_sequence":-1}', /spiffe_sequence/],
    ['a fractional sequence', '{"keys":[],"spiffe_sequence":1.5}', /spiffe_sequence/],
    ['a sequence above 2^64-1', '{"keys":[],"spiffe_sequence":18446744073709551616}', /spiffe_sequence/],
    ['a string sequence', '{"keys":[],"spiffe_sequence":"1"}', /spiffe_sequence/],
    ['a negative refresh hint', '{"keys":[],"spiffe_refresh_hint":-5}', /spiffe_refresh_hint/],
    ['a duplicate top-level member with different values', '{"keys":[],"keys":[1]}', /Duplicate key/],
  ];
  for (const [name, doc, pattern] of cases) {
    it(`refuses ${name}`, () => invalidWith(() => parseSpiffeBundle(td, doc), pattern));
  }
});

describe('bundle sets', () => {
  const other = parseTrustDomain('other.org');
  it('X509BundleSet serves each trust domain its own bundle, sorted, and names a missing one', () => {
    const set = new X509BundleSet([new X509Bundle(other, [ca2.root]), new X509Bundle(td, [ca1.root])]);
    assert.deepEqual(
      set.list().map((b) => b.trustDomain.name),
      ['example.org', 'other.org'],
    );
    assert.ok(set.getX509BundleForTrustDomain(td).hasAuthority(ca1.root));
    assert.ok(!set.getX509BundleForTrustDomain(other).hasAuthority(ca1.root));
    assert.throws(
      () => set.getX509BundleForTrustDomain(parseTrustDomain('none.org')),
      (e: unknown) => isSpiffeError(e, ErrorCode.BUNDLE_NOT_FOUND) && /"none.org"/.test(e.message),
    );
    set.add(new X509Bundle(td, [ca2.root]));
    assert.ok(set.getX509BundleForTrustDomain(td).hasAuthority(ca2.root), 'add replaces');
    assert.ok(set.remove(td));
    assert.equal(set.size, 1);
  });

  it('SpiffeBundleSet is both an X.509 and a JWT bundle source', () => {
    const b = new SpiffeBundle({
      trustDomain: td,
      x509Authorities: [ca1.root],
      jwtAuthorities: [['a', jwtA.publicKey]],
    });
    const set = new SpiffeBundleSet([b]);
    assert.ok(set.getX509BundleForTrustDomain(td).hasAuthority(ca1.root));
    assert.ok(set.getJwtBundleForTrustDomain(td).hasJwtAuthority('a'));
    assert.throws(
      () => set.getJwtBundleForTrustDomain(other),
      (e: unknown) => isSpiffeError(e, ErrorCode.BUNDLE_NOT_FOUND),
    );
    const jset = new JwtBundleSet([b.jwtBundle()]);
    assert.equal(jset.getJwtBundleForTrustDomain(td), b.jwtBundle());
  });
});
