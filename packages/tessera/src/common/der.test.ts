import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Time } from '@peculiar/asn1-x509';
import * as der from './der.js';

describe('DER encoder (checked against @peculiar/asn1-schema)', () => {
  it('object identifiers, including multi-byte arcs', () => {
    for (const oid of ['2.5.29.17', '1.2.840.10045.4.3.2', '1.3.6.1.5.5.7.3.2', '1.2.840.113549.1.1.11']) {
      assert.deepEqual(
        der.sequence(der.objectIdentifier(oid)),
        Buffer.from(AsnConvert.serialize(new AlgorithmIdentifier({ algorithm: oid }))),
        oid,
      );
    }
  });
  it('times: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280)', () => {
    for (const iso of ['2026-11-24T15:00:07Z', '2049-12-31T23:59:59Z', '2050-01-01T00:00:00Z']) {
      const d = new Date(iso);
      assert.deepEqual(der.time(d), Buffer.from(AsnConvert.serialize(new Time(d))), iso);
    }
  });
  it('names match what the schema layer encodes', async () => {
    const { toName } = await import('./x509.js');
    assert.deepEqual(
      der.name([
        ['2.5.4.6', 'US', 'printable'],
        ['2.5.4.10', 'SPIFFE', 'utf8'],
        ['2.5.4.3', 'web.example.org', 'utf8'],
      ]),
      Buffer.from(
        AsnConvert.serialize(
          toName({ country: 'US', organization: 'SPIFFE', commonName: 'web.example.org' }),
        ),
      ),
    );
  });
  it('integers stay positive and minimal; lengths over 127 bytes use the long form', () => {
    assert.deepEqual(
      der.unsignedInteger(Buffer.from([0x80, 1])),
      Buffer.from([0x02, 0x03, 0x00, 0x80, 0x01]),
    );
    assert.deepEqual(der.unsignedInteger(Buffer.from([0, 0, 5])), Buffer.from([0x02, 0x01, 0x05]));
    const long = der.octetString(Buffer.alloc(300));
    assert.deepEqual(long.subarray(0, 4), Buffer.from([0x04, 0x82, 0x01, 0x2c]));
  });
});
