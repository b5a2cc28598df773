import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKey, type IssuedSvid, type KeyType, TestCa } from '@tessera/testkit';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { idFromCertificate, parseX509Svid, parseX509SvidRaw } from './x509-svid.js';

const root = TestCa.create({ trustDomain: 'example.org' });
const inter = root.createIntermediate();

function invalidWith(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      isSpiffeError(err, ErrorCode.X509SVID_INVALID),
      `expected ERR_X509SVID_INVALID, got ${String(err)}`,
    );
    assert.match(err.message, pattern);
    return true;
  });
}

describe('parseX509Svid', () => {
  for (const keyType of ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
    it(`parses a ${keyType} SVID from PEM and from DER, and round-trips both`, () => {
      const issued = inter.issueX509Svid('spiffe://example.org/workload', { keyType });
      const fromPem = parseX509Svid(issued.certificatesPem, issued.privateKeyPem, 'internal');
      assert.equal(fromPem.id.toString(), 'spiffe://example.org/workload');
      assert.equal(fromPem.hint, 'internal');
      assert.equal(fromPem.certificates.length, 2);
      assert.equal(fromPem.expiresAt.getTime(), new Date(issued.certificates[0]?.validTo ?? 0).getTime());
      const fromDer = parseX509SvidRaw(issued.certificatesDer, issued.privateKeyDer);
      assert.equal(fromDer.hint, '');
      assert.deepEqual(fromDer.marshalRaw().certificates, issued.certificatesDer);
      assert.deepEqual(fromDer.marshalRaw().privateKey, issued.privateKeyDer);
      const again = parseX509Svid(fromDer.marshal().certificates, fromDer.marshal().privateKey);
      assert.ok(again.id.equals(fromDer.id));
      assert.equal(again.getX509Svid(), again);
    });
  }

  const other = root.issueX509Svid('spiffe://example.org/other');
  const cases: [string, () => IssuedSvid, RegExp][] = [
    [
      'a key that does not match the leaf',
      () =>
        root.issueX509Svid('spiffe://example.org/w', { privateKey: other.privateKey, keyType: 'ec-p256' }),
      /does not match private key/,
    ],
    [
      'a leaf without URI SAN',
      () => root.issueX509Svid('spiffe://example.org/w', { uris: [] }),
      /no URI SAN/,
    ],
    [
      'a leaf with two URI SANs',
      () => root.issueX509Svid('x', { uris: ['spiffe://example.org/a', 'spiffe://example.org/b'] }),
      /more than one URI SAN/,
    ],
    ['a leaf ID without path', () => root.issueX509Svid('spiffe://example.org'), /has no path/],
    ['a CA leaf', () => root.issueX509Svid('spiffe://example.org/w', { isCa: true }), /CA flag/],
    [
      'a leaf without digitalSignature',
      () => root.issueX509Svid('spiffe://example.org/w', { keyUsage: ['keyEncipherment'] }),
      /digitalSignature/,
    ],
    [
      'a leaf without keyUsage',
      () => root.issueX509Svid('spiffe://example.org/w', { keyUsage: null }),
      /digitalSignature/,
    ],
    [
      'a leaf with keyCertSign',
      () => root.issueX509Svid('spiffe://example.org/w', { keyUsage: ['digitalSignature', 'keyCertSign'] }),
      /keyCertSign/,
    ],
    [
      'a leaf with cRLSign',
      () => root.issueX509Svid('spiffe://example.org/w', { keyUsage: ['digitalSignature', 'cRLSign'] }),
      /cRLSign/,
    ],
    [
      'a non-CA signing certificate',
      () => root.createIntermediate({ isCa: false }).issueX509Svid('spiffe://example.org/w'),
      /signing certificate 2 of 2 must have CA flag/,
    ],
    [
      'a signing certificate without keyCertSign',
      () =>
        root.createIntermediate({ keyUsage: ['digitalSignature'] }).issueX509Svid('spiffe://example.org/w'),
      /'keyCertSign'/,
    ],
  ];
  for (const [name, make, pattern] of cases) {
    it(`refuses ${name}`, () => {
      const s = make();
      invalidWith(() => parseX509Svid(s.certificatesPem, s.privateKeyPem), pattern);
      invalidWith(() => parseX509SvidRaw(s.certificatesDer, s.privateKeyDer), pattern);
    });
  }

  it('refuses malformed input with the reason', () => {
    const s = root.issueX509Svid('spiffe://example.org/w');
    invalidWith(() => parseX509SvidRaw(new Uint8Array(), s.privateKeyDer), /empty certificates chain/);
    invalidWith(
      () => parseX509SvidRaw(Buffer.from('garbage'), s.privateKeyDer),
      /cannot parse certificate chain DER/,
    );
    invalidWith(() => parseX509SvidRaw(s.certificatesDer, Buffer.from('garbage')), /PKCS#8/);
    invalidWith(() => parseX509Svid('', s.privateKeyPem), /empty certificates chain/);
    invalidWith(() => parseX509Svid(s.privateKeyPem, s.privateKeyPem), /only CERTIFICATE blocks/);
    invalidWith(
      () => parseX509Svid(s.certificatesPem, s.certificatesPem),
      /expected one private key PEM block|"CERTIFICATE"/,
    );
    const sec1 = generateKey().privateKey.export({ type: 'sec1', format: 'pem' }).toString();
    invalidWith(() => parseX509Svid(s.certificatesPem, sec1), /EC PRIVATE KEY/);
  });

  it('idFromCertificate reads the single URI SAN', () => {
    const s = root.issueX509Svid('spiffe://example.org/x/y');
    assert.equal(idFromCertificate(s.certificates[0]!).path, '/x/y');
    invalidWith(
      () => idFromCertificate(root.issueX509Svid('x', { uris: [] }).certificates[0]!),
      /no URI SAN/,
    );
  });
});
