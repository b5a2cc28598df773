import assert from 'node:assert/strict';
import { generateKeyPairSync, type X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { generateKey, type IssuedSvid, type KeyType, TestCa } from '@tessera/testkit';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { idFromCertificate, parseX509Svid, parseX509SvidRaw, X509Svid } from './x509-svid.js';

const root = TestCa.create({ trustDomain: 'example.org' });
const inter1 = root.createIntermediate();
const inter2 = inter1.createIntermediate();
const ID = 'spiffe://example.org/workload';

function invalidWith(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      isSpiffeError(err, ErrorCode.X509SVID_INVALID),
      `expected ERR_X509SVID_INVALID, got ${String(err)}`,
    );
    assert.match(err.message, /^x509svid: /);
    assert.match(err.message, pattern);
    return true;
  });
}

/** Both input forms must give the same verdict. */
function parseBoth(s: IssuedSvid): [X509Svid, X509Svid] {
  return [
    parseX509Svid(s.certificatesPem, s.privateKeyPem),
    parseX509SvidRaw(s.certificatesDer, s.privateKeyDer),
  ];
}

describe('parseX509Svid and parseX509SvidRaw accept', () => {
  const cases: [string, () => IssuedSvid, number][] = [
    ['a leaf signed by the root', () => root.issueX509Svid(ID), 1],
    ['a leaf and one intermediate', () => inter1.issueX509Svid(ID), 2],
    ['a leaf and two intermediates', () => inter2.issueX509Svid(ID), 3],
    ...(['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]).map(
      (keyType): [string, () => IssuedSvid, number] => [
        `a ${keyType} key`,
        () => inter1.issueX509Svid(ID, { keyType }),
        2,
      ],
    ),
    ['a leaf without basicConstraints', () => root.issueX509Svid(ID, { basicConstraints: false }), 1],
    ['a leaf with DNS SANs too', () => root.issueX509Svid(ID, { dnsNames: ['w.example.org'] }), 1],
  ];
  for (const [name, make, length] of cases) {
    it(name, () => {
      const issued = make();
      for (const svid of parseBoth(issued)) {
        assert.equal(svid.id.toString(), ID);
        assert.equal(svid.hint, '');
        assert.equal(svid.certificates.length, length);
        assert.equal(svid.leaf.fingerprint256, issued.certificates[0]?.fingerprint256);
        assert.equal(svid.privateKey.asymmetricKeyType, issued.privateKey.asymmetricKeyType);
        assert.equal(svid.expiresAt.getTime(), Date.parse(issued.certificates[0]?.validTo ?? ''));
        assert.equal(svid.getX509Svid(), svid);
      }
    });
  }

  it('keeps the hint', () => {
    const s = root.issueX509Svid(ID);
    assert.equal(parseX509Svid(s.certificatesPem, s.privateKeyPem, 'internal').hint, 'internal');
    assert.equal(parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, 'external').hint, 'external');
  });

  it('skips PEM blocks of other types, so one file can hold the chain and the key', () => {
    const s = inter1.issueX509Svid(ID);
    const combined =
      s.privateKeyPem + s.certificatesPem + '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n';
    const svid = parseX509Svid(combined, combined);
    assert.equal(svid.id.toString(), ID);
    assert.equal(svid.certificates.length, 2);
    assert.deepEqual(svid.marshalRaw().privateKey, s.privateKeyDer);
  });

  it('accepts PEM given as bytes', () => {
    const s = root.issueX509Svid(ID);
    const svid = parseX509Svid(Buffer.from(s.certificatesPem), Buffer.from(s.privateKeyPem));
    assert.equal(svid.id.toString(), ID);
  });

  it('marshal and marshalRaw round-trip byte for byte', () => {
    for (const keyType of ['ec-p256', 'ed25519', 'rsa-2048'] as KeyType[]) {
      const issued = inter2.issueX509Svid(ID, { keyType });
      const svid = parseX509SvidRaw(issued.certificatesDer, issued.privateKeyDer);
      const raw = svid.marshalRaw();
      assert.deepEqual(raw.certificates, issued.certificatesDer);
      assert.deepEqual(raw.privateKey, issued.privateKeyDer);
      const pem = svid.marshal();
      assert.equal(pem.certificates, issued.certificatesPem);
      assert.match(pem.privateKey, /^-----BEGIN PRIVATE KEY-----\n/);
      const again = parseX509Svid(pem.certificates, pem.privateKey);
      assert.ok(again.id.equals(svid.id));
      assert.deepEqual(again.marshalRaw(), raw);
    }
  });

  it('freezes the chain it holds', () => {
    const issued = inter1.issueX509Svid(ID);
    const svid = parseX509SvidRaw(issued.certificatesDer, issued.privateKeyDer);
    assert.ok(Object.isFrozen(svid.certificates));
    assert.throws(() => (svid.certificates as X509Certificate[]).pop(), TypeError);
    assert.equal(svid.certificates.length, 2);
    invalidWith(() => new X509Svid(svid.id, [], svid.privateKey), /empty certificates chain/);
  });
});

describe('parseX509Svid and parseX509SvidRaw refuse', () => {
  const other = root.issueX509Svid('spiffe://example.org/other');
  const nonCa = root.createIntermediate({ isCa: false });
  const cases: [string, () => IssuedSvid, RegExp][] = [
    [
      'a key that does not match the leaf',
      () => root.issueX509Svid(ID, { privateKey: other.privateKey }),
      /private key does not match the leaf certificate's public key/,
    ],
    [
      'a key of another type than the leaf',
      () => root.issueX509Svid(ID, { privateKey: generateKey('ed25519').privateKey }),
      /private key does not match the leaf certificate's public key/,
    ],
    [
      'a leaf without URI SAN',
      () => root.issueX509Svid(ID, { uris: [] }),
      /leaf certificate contains no URI SAN/,
    ],
    [
      'a leaf with only a DNS SAN',
      () => root.issueX509Svid(ID, { uris: [], dnsNames: ['w.example.org'] }),
      /contains no URI SAN/,
    ],
    [
      'a leaf with two URI SANs',
      () => root.issueX509Svid(ID, { uris: [ID, 'spiffe://example.org/b'] }),
      /more than one URI SAN \("spiffe:\/\/example.org\/workload", "spiffe:\/\/example.org\/b"\)/,
    ],
    [
      'a non-SPIFFE URI SAN',
      () => root.issueX509Svid(ID, { uris: ['https://example.org/workload'] }),
      /URI SAN is not a valid SPIFFE ID: .*scheme is missing or invalid/,
    ],
    [
      'an invalid SPIFFE ID',
      () => root.issueX509Svid(ID, { uris: ['spiffe://Example.org/w'] }),
      /URI SAN is not a valid SPIFFE ID: .*trust domain characters/,
    ],
    ['a leaf ID without path', () => root.issueX509Svid('spiffe://example.org'), /has no path/],
    [
      'a CA leaf',
      () => root.issueX509Svid(ID, { isCa: true }),
      /cA=true; an X509-SVID leaf must not be a CA/,
    ],
    [
      'a leaf without digitalSignature',
      () => root.issueX509Svid(ID, { keyUsage: ['keyEncipherment'] }),
      /must have 'digitalSignature' set as key usage/,
    ],
    [
      'a leaf without keyUsage',
      () => root.issueX509Svid(ID, { keyUsage: null }),
      /has no keyUsage extension; it must have 'digitalSignature'/,
    ],
    [
      'a leaf with keyCertSign',
      () => root.issueX509Svid(ID, { keyUsage: ['digitalSignature', 'keyCertSign'] }),
      /'keyCertSign' key usage; a leaf must not sign certificates/,
    ],
    [
      'a leaf with cRLSign',
      () => root.issueX509Svid(ID, { keyUsage: ['digitalSignature', 'cRLSign'] }),
      /'cRLSign' key usage/,
    ],
    ['an intermediate that is not a CA', () => nonCa.issueX509Svid(ID), /certificate 2 of 2 is not a CA/],
    [
      'a higher intermediate that is not a CA',
      () => nonCa.createIntermediate().issueX509Svid(ID),
      /certificate 3 of 3 is not a CA/,
    ],
    [
      'an intermediate without keyCertSign',
      () => root.createIntermediate({ keyUsage: ['digitalSignature', 'cRLSign'] }).issueX509Svid(ID),
      /certificate 2 of 2 lacks the 'keyCertSign' key usage/,
    ],
    [
      'an intermediate without keyUsage',
      () => root.createIntermediate({ keyUsage: null }).issueX509Svid(ID),
      /certificate 2 of 2 lacks the 'keyCertSign' key usage/,
    ],
  ];
  for (const [name, make, pattern] of cases) {
    it(name, () => {
      const s = make();
      invalidWith(() => parseX509Svid(s.certificatesPem, s.privateKeyPem), pattern);
      invalidWith(() => parseX509SvidRaw(s.certificatesDer, s.privateKeyDer), pattern);
    });
  }

  const good = root.issueX509Svid(ID);
  const inputs: [string, () => unknown, RegExp][] = [
    [
      'empty DER chain',
      () => parseX509SvidRaw(new Uint8Array(), good.privateKeyDer),
      /empty certificates chain/,
    ],
    ['empty PEM chain', () => parseX509Svid('', good.privateKeyPem), /empty certificates chain/],
    [
      'garbage DER',
      () => parseX509SvidRaw(Buffer.from('garbage'), good.privateKeyDer),
      /cannot parse certificate chain DER/,
    ],
    [
      'a DER SEQUENCE that is not a certificate',
      () => parseX509SvidRaw(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]), good.privateKeyDer),
      /certificate 1 of 1 is not a valid X.509 certificate/,
    ],
    [
      'a good leaf followed by garbage',
      () =>
        parseX509SvidRaw(
          Buffer.concat([good.certificatesDer, Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01])]),
          good.privateKeyDer,
        ),
      /certificate 2 of 2 is not a valid X.509 certificate/,
    ],
    [
      'a chain PEM with only a private key block',
      () => parseX509Svid(good.privateKeyPem, good.privateKeyPem),
      /no CERTIFICATE PEM block in the certificate chain input \(found "PRIVATE KEY"\)/,
    ],
    [
      'a certificate PEM block with bad base64',
      () =>
        parseX509Svid('-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n', good.privateKeyPem),
      /cannot parse certificate chain PEM/,
    ],
    ['garbage key DER', () => parseX509SvidRaw(good.certificatesDer, Buffer.from('garbage')), /PKCS#8/],
    [
      'no key PEM block',
      () => parseX509Svid(good.certificatesPem, ''),
      /no PEM block found in the private key/,
    ],
    [
      'two key PEM blocks',
      () => parseX509Svid(good.certificatesPem, good.privateKeyPem + good.privateKeyPem),
      /expected one "PRIVATE KEY" PEM block in the private key input; got 2/,
    ],
    [
      'a certificate where the key belongs',
      () => parseX509Svid(good.certificatesPem, good.certificatesPem),
      /no "PRIVATE KEY" PEM block in the private key input \(found "CERTIFICATE"\)/,
    ],
    [
      'a SEC 1 EC key',
      () =>
        parseX509Svid(
          good.certificatesPem,
          good.privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
        ),
      /\(found "EC PRIVATE KEY"\); the key must be unencrypted PKCS#8/,
    ],
    [
      'an X25519 key',
      () =>
        parseX509SvidRaw(
          good.certificatesDer,
          generateKeyPairSync('x25519').privateKey.export({ type: 'pkcs8', format: 'der' }),
        ),
      /private key type "x25519" is not supported/,
    ],
  ];
  for (const [name, fn, pattern] of inputs) {
    it(name, () => invalidWith(fn, pattern));
  }
});

describe('idFromCertificate', () => {
  it('reads the single URI SAN of a leaf or a CA', () => {
    assert.equal(
      idFromCertificate(root.issueX509Svid('spiffe://example.org/x/y').certificates[0]!).path,
      '/x/y',
    );
    const caId = idFromCertificate(root.certificate);
    assert.equal(caId.toString(), 'spiffe://example.org');
  });

  const cases: [string, () => X509Certificate, RegExp][] = [
    [
      'no URI SAN',
      () => root.issueX509Svid(ID, { uris: [] }).certificates[0]!,
      /^x509svid: certificate contains no URI SAN/,
    ],
    [
      'two URI SANs',
      () => root.issueX509Svid(ID, { uris: [ID, ID] }).certificates[0]!,
      /contains more than one URI SAN/,
    ],
    [
      'a non-SPIFFE URI',
      () => root.issueX509Svid(ID, { uris: ['urn:x'] }).certificates[0]!,
      /not a valid SPIFFE ID/,
    ],
  ];
  for (const [name, cert, pattern] of cases) {
    it(`refuses ${name}`, () => invalidWith(() => idFromCertificate(cert()), pattern));
  }
});
