import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  KeyUsage,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
} from '@peculiar/asn1-x509';
import { parseTrustDomain, parseX509SvidRaw, verifyX509Svid, X509Bundle } from '@tessera/spiffe';
import { createCsr, generateKey, type KeyType, makeTempDir, type TempDir } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { parseCsr } from './csr.js';
import { authorityKeyId } from './manager.js';
import { BACKDATE_MS, type CaKeyType, X509Authority } from './x509-authority.js';

const td = parseTrustDomain('example.org');
const HOUR = 3600_000;
const subject = { country: 'US', organization: 'SPIFFE' };

function refused(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isTesseraError(e), String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('X509Authority', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('ca-');
  });
  after(() => tmp.cleanup());

  for (const keyType of ['ec-p256', 'ec-p384', 'rsa-2048'] as CaKeyType[]) {
    it(`a ${keyType} CA issues from a CSR an X509-SVID that openssl and the spiffe library accept`, () => {
      const now = new Date();
      const ca = X509Authority.createSelfSigned({ trustDomain: td, keyType, ttlMs: 24 * HOUR, subject, now });
      assert.equal(ca.certificate.ca, true);
      assert.equal(ca.certificate.subjectAltName, 'URI:spiffe://example.org');
      const key = generateKey();
      const {
        chain,
        expiresAt,
        serial: reported,
      } = ca.issueX509Svid({
        csr: createCsr(key.publicKey, key.privateKey),
        spiffeId: 'spiffe://example.org/web',
        dnsNames: ['web.example.org'],
        ttlMs: HOUR,
        now,
      });
      assert.equal(chain.length, 1);
      const leaf = chain[0]!;
      assert.equal(leaf.subjectAltName, 'URI:spiffe://example.org/web, DNS:web.example.org');
      assert.match(leaf.subject, /CN=web.example.org/);
      assert.equal(
        new Date(leaf.validFrom).getTime(),
        Math.floor((now.getTime() - BACKDATE_MS) / 1000) * 1000,
      );
      assert.equal(new Date(leaf.validTo).getTime(), expiresAt.getTime());
      const svid = parseX509SvidRaw(leaf.raw, key.privateKey.export({ type: 'pkcs8', format: 'der' }));
      assert.equal(svid.id.toString(), 'spiffe://example.org/web');
      assert.equal(verifyX509Svid([leaf.raw], new X509Bundle(td, [ca.certificate])).id.path, '/web');
      const rootFile = join(tmp.path, `${keyType}-root.pem`);
      const leafFile = join(tmp.path, `${keyType}-leaf.pem`);
      writeFileSync(rootFile, ca.certificate.toString());
      writeFileSync(leafFile, leaf.toString());
      assert.match(
        execFileSync('openssl', ['verify', '-CAfile', rootFile, '-purpose', 'sslclient', leafFile], {
          encoding: 'utf8',
        }),
        /OK/,
      );
      const serial = BigInt(`0x${leaf.serialNumber}`);
      assert.ok(serial > 0n && leaf.serialNumber.length <= 40);
      assert.equal(reported, leaf.serialNumber, 'the serial reported without parsing the leaf is the leaf’s');
    });
  }

  it('reports each serial exactly as node:crypto prints it, whatever its leading digits', () => {
    const now = new Date();
    const ca = X509Authority.createSelfSigned({
      trustDomain: td,
      keyType: 'ec-p256',
      ttlMs: HOUR,
      subject: { country: 'US', organization: 'SPIFFE' },
      now,
    });
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leading = new Set<string>();
    for (let i = 0; i < 400; i++) {
      const issued = ca.issueX509Svid({ publicKey, spiffeId: 'spiffe://example.org/s', ttlMs: HOUR, now });
      assert.equal(issued.serial, issued.chain[0]?.serialNumber);
      leading.add(issued.serial[0] as string);
    }
    assert.ok(leading.has('0'), 'serials starting with a 0 nibble were covered');
  });

  it('the template-built leaf has exactly the extensions of the spec, read back with @peculiar/asn1-x509', () => {
    const now = new Date();
    const ca = X509Authority.createSelfSigned({
      trustDomain: td,
      keyType: 'ec-p256',
      ttlMs: HOUR,
      subject,
      now,
    });
    const key = generateKey();
    const { chainDer } = ca.issueX509Svid({
      publicKey: key.publicKey,
      spiffeId: 'spiffe://example.org/a/b',
      ttlMs: HOUR,
      now,
    });
    const cert = AsnConvert.parse(chainDer[0]!, Certificate);
    const byId = new Map((cert.tbsCertificate.extensions ?? []).map((e) => [e.extnID, e]));
    const bc = byId.get(id_ce_basicConstraints)!;
    assert.equal(bc.critical, true);
    assert.equal(AsnConvert.parse(bc.extnValue.buffer, BasicConstraints).cA, false);
    const ku = byId.get(id_ce_keyUsage)!;
    assert.equal(ku.critical, true);
    assert.equal(
      AsnConvert.parse(ku.extnValue.buffer, KeyUsage).toNumber(),
      1 | 4 | 16,
      'digitalSignature | keyEncipherment | keyAgreement',
    );
    assert.deepEqual(
      [...AsnConvert.parse(byId.get(id_ce_extKeyUsage)!.extnValue.buffer, ExtendedKeyUsage)].map(String),
      ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'],
    );
    const san = AsnConvert.parse(byId.get(id_ce_subjectAltName)!.extnValue.buffer, SubjectAlternativeName);
    assert.deepEqual(
      [...san].map((n) => n.uniformResourceIdentifier),
      ['spiffe://example.org/a/b'],
    );
    const ski = Buffer.from(
      AsnConvert.parse(byId.get(id_ce_subjectKeyIdentifier)!.extnValue.buffer, SubjectKeyIdentifier).buffer,
    );
    const aki = AsnConvert.parse(
      byId.get(id_ce_authorityKeyIdentifier)!.extnValue.buffer,
      AuthorityKeyIdentifier,
    );
    assert.equal(ski.length, 20);
    const caExt = AsnConvert.parse(ca.certificate.raw, Certificate).tbsCertificate.extensions?.find(
      (e) => e.extnID === id_ce_subjectKeyIdentifier,
    );
    const caSki = Buffer.from(AsnConvert.parse(caExt!.extnValue.buffer, SubjectKeyIdentifier).buffer);
    assert.deepEqual(Buffer.from(aki.keyIdentifier!.buffer), caSki, 'AKI is the CA’s SKI');
    assert.equal(cert.tbsCertificate.version, 2);
    assert.ok(new X509Certificate(chainDer[0]!).verify(ca.certificate.publicKey));
  });

  it('is known by its subject key ID, as the authority manager names it', () => {
    const ca = X509Authority.createSelfSigned({
      trustDomain: td,
      keyType: 'ec-p256',
      ttlMs: HOUR,
      subject: { country: 'US', organization: 'SPIFFE' },
      now: new Date(),
    });
    assert.equal(ca.id, authorityKeyId(ca.certificate));
    assert.match(ca.id, /^[0-9a-f]{40}$/);
  });

  it('caps the TTL at the CA’s own expiry', () => {
    const now = new Date();
    const ca = X509Authority.createSelfSigned({
      trustDomain: td,
      keyType: 'ec-p256',
      ttlMs: HOUR,
      subject,
      now,
    });
    const { expiresAt } = ca.issueX509Svid({
      publicKey: generateKey().publicKey,
      spiffeId: 'spiffe://example.org/w',
      ttlMs: 10 * HOUR,
      now,
    });
    assert.equal(expiresAt.getTime(), ca.notAfter.getTime());
  });

  it('refuses IDs outside its trust domain or without a path, bad TTLs and DNS names, and an expired CA', () => {
    const now = new Date();
    const ca = X509Authority.createSelfSigned({
      trustDomain: td,
      keyType: 'ec-p256',
      ttlMs: HOUR,
      subject,
      now,
    });
    const publicKey = generateKey().publicKey;
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ spiffeId: 'spiffe://other.org/w' }, /not in trust domain "example.org"/],
      [{ spiffeId: 'spiffe://example.org' }, /needs a path/],
      [{ spiffeId: 'http://example.org/w' }, /cannot issue for/],
      [{ ttlMs: 0 }, /TTL must be a positive/],
      [{ dnsNames: ['not a host'] }, /DNS name/],
      [{ now: new Date(now.getTime() + 2 * HOUR) }, /the CA expired/],
    ];
    for (const [extra, pattern] of cases) {
      refused(
        () => ca.issueX509Svid({ publicKey, spiffeId: 'spiffe://example.org/w', ttlMs: HOUR, now, ...extra }),
        TesseraErrorCode.CA_ISSUE,
        pattern,
      );
    }
  });
});

describe('parseCsr', () => {
  for (const kt of ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
    it(`accepts a ${kt} CSR signed by its own key`, () => {
      const k = generateKey(kt);
      assert.ok(parseCsr(createCsr(k.publicKey, k.privateKey)).publicKey.equals(k.publicKey));
    });
  }
  it('refuses a CSR signed by another key, garbage, and a truncated request', () => {
    const a = generateKey();
    const b = generateKey();
    refused(
      () => parseCsr(createCsr(a.publicKey, b.privateKey)),
      TesseraErrorCode.CSR_INVALID,
      /no proof of possession/,
    );
    refused(() => parseCsr(Buffer.from('not a csr')), TesseraErrorCode.CSR_INVALID, /not a DER PKCS#10/);
    const good = createCsr(a.publicKey, a.privateKey);
    refused(
      () => parseCsr(good.subarray(0, good.length - 10)),
      TesseraErrorCode.CSR_INVALID,
      /not a DER PKCS#10|signature/,
    );
  });
});
