/**
 * Building and signing the authority's CA certificates and CRLs: the ASN.1 from @peculiar/asn1-x509, the
 * signature from node:crypto. (X509-SVIDs, on the hot path, come from a DER template in X509Authority.)
 */
import { createHash, type KeyObject, randomFillSync, sign, X509Certificate } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  CertificateList,
  CRLNumber,
  CRLReason,
  Extension,
  Extensions,
  GeneralName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_cRLNumber,
  id_ce_cRLReasons,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  RevokedCertificate,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  TBSCertList,
  Time,
  Validity,
  Version,
} from '@peculiar/asn1-x509';

export interface DistinguishedName {
  country?: string;
  organization?: string;
  organizationalUnit?: string;
  commonName?: string;
  serialNumber?: string;
}

const OIDS: [keyof DistinguishedName, string, 'printableString' | 'utf8String'][] = [
  ['country', '2.5.4.6', 'printableString'],
  ['organization', '2.5.4.10', 'utf8String'],
  ['organizationalUnit', '2.5.4.11', 'utf8String'],
  ['commonName', '2.5.4.3', 'utf8String'],
  ['serialNumber', '2.5.4.5', 'printableString'],
];

export function toName(dn: DistinguishedName): Name {
  return new Name(
    OIDS.flatMap(([field, type, form]) => {
      const v = dn[field];
      if (v === undefined || v === '') return [];
      return [
        new RelativeDistinguishedName([
          new AttributeTypeAndValue({ type, value: new AttributeValue({ [form]: v }) }),
        ]),
      ];
    }),
  );
}

function toArrayBuffer(b: Buffer): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** The signature algorithm for a signing key: ECDSA with the curve's hash, RSA PKCS#1 v1.5 SHA-256, Ed25519. */
export function signatureAlgorithm(key: KeyObject): { alg: AlgorithmIdentifier; hash: string | null } {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const p384 = key.asymmetricKeyDetails?.namedCurve === 'secp384r1';
      return {
        alg: new AlgorithmIdentifier({ algorithm: p384 ? '1.2.840.10045.4.3.3' : '1.2.840.10045.4.3.2' }),
        hash: p384 ? 'sha384' : 'sha256',
      };
    }
    case 'rsa':
      return {
        alg: new AlgorithmIdentifier({ algorithm: '1.2.840.113549.1.1.11', parameters: null }),
        hash: 'sha256',
      };
    case 'ed25519':
      return { alg: new AlgorithmIdentifier({ algorithm: '1.3.101.112' }), hash: null };
    default:
      throw new TypeError(`x509: cannot sign with a ${key.asymmetricKeyType} key`);
  }
}

export function spkiOf(publicKey: KeyObject): SubjectPublicKeyInfo {
  return AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo);
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: SubjectPublicKeyInfo): ArrayBuffer {
  return toArrayBuffer(createHash('sha1').update(new Uint8Array(spki.subjectPublicKey)).digest());
}

function ext(extnID: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

/** A random positive serial of 16 bytes (no leading zero octet, never negative: Go >= 1.23 rejects those). */
/** CSPRNG output, drawn 4 KiB at a time: one randomBytes call per serial cost ~8 µs per SVID. */
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

export function randomSerial(): ArrayBuffer {
  if (poolOffset + 16 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const s = Buffer.from(pool.subarray(poolOffset, poolOffset + 16));
  poolOffset += 16;
  s[0] = ((s[0] ?? 0) & 0x7f) | 0x01;
  return toArrayBuffer(s);
}

/** A CA certificate (cA, keyCertSign + cRLSign). Leaves are built from a DER template in X509Authority. */
export interface CaCertificateTemplate {
  subject: Name;
  subjectPublicKey: SubjectPublicKeyInfo;
  notBefore: Date;
  notAfter: Date;
  /** The trust domain ID, `spiffe://<td>` (spec §2.3: a signing certificate SHOULD carry it). */
  uris: readonly string[];
}

export interface Issuer {
  name: Name;
  privateKey: KeyObject;
  /** SubjectKeyIdentifier of the issuer (AKI of what it signs). */
  keyId: ArrayBuffer;
}

/** Builds and signs a CA certificate; for a self-signed one, `issuer` holds the CA's own name and key. */
export function signCaCertificate(t: CaCertificateTemplate, issuer: Issuer): X509Certificate {
  const { alg, hash } = signatureAlgorithm(issuer.privateKey);
  const subjectKeyId = keyIdentifier(t.subjectPublicKey);
  const names = t.uris.map((u) => new GeneralName({ uniformResourceIdentifier: u }));
  const extensions = [
    ext(id_ce_basicConstraints, true, new BasicConstraints({ cA: true })),
    ext(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)),
    ext(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(subjectKeyId)),
    ext(
      id_ce_authorityKeyIdentifier,
      false,
      new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(issuer.keyId) }),
    ),
    // With an empty subject the SAN must be critical (RFC 5280 4.1.2.6).
    ...(names.length === 0
      ? []
      : [ext(id_ce_subjectAltName, t.subject.length === 0, new SubjectAlternativeName(names))]),
  ];
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: randomSerial(),
    signature: alg,
    issuer: issuer.name,
    validity: new Validity({
      notBefore: new Date(Math.floor(t.notBefore.getTime() / 1000) * 1000),
      notAfter: new Date(Math.floor(t.notAfter.getTime() / 1000) * 1000),
    }),
    subject: t.subject,
    subjectPublicKeyInfo: t.subjectPublicKey,
    extensions: new Extensions(extensions),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = sign(hash, tbsDer, issuer.privateKey);
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: alg,
    signatureValue: toArrayBuffer(signature),
  });
  return new X509Certificate(Buffer.from(AsnConvert.serialize(cert)));
}

/** The subject Name of a certificate, as the issuer Name of what it signs. */
export function subjectName(cert: X509Certificate): Name {
  return AsnConvert.parse(cert.raw, Certificate).tbsCertificate.subject;
}

/** The PEM `CERTIFICATE` blocks of a text, in order (each caller says what an absent or bad one means). */
export function pemCertificateBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

/** One revoked certificate, as a CRL lists it. */
export interface RevokedSerial {
  /** Hex, as X509Certificate.serialNumber prints it. */
  serial: string;
  revokedAt: Date;
  /** RFC 5280 CRLReason; omitted from the entry when undefined. */
  reason?: number;
}

/** Whole seconds: CRL times are encoded without fractions. */
const seconds = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

/** The DER INTEGER content of a hex serial: minimal, with a leading zero octet when the top bit is set. */
function serialBytes(hex: string): ArrayBuffer {
  let h = BigInt(`0x${hex}`).toString(16);
  if (h.length % 2 === 1) h = `0${h}`;
  const b = Buffer.from(h, 'hex');
  return toArrayBuffer((b[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

/**
 * Signs an X.509 v2 CRL (RFC 5280 §5) with an authority's CA key: issuer = the CA's subject,
 * authorityKeyIdentifier = its key ID, cRLNumber `number`, one entry per revoked serial (with a
 * reasonCode extension when a reason is given). Returns the DER.
 */
export function signX509Crl(
  ca: { certificate: X509Certificate; privateKey: KeyObject },
  crl: { number: bigint; thisUpdate: Date; nextUpdate: Date; revoked: readonly RevokedSerial[] },
): Buffer {
  const { alg, hash } = signatureAlgorithm(ca.privateKey);
  const revoked = crl.revoked.map(
    (r) =>
      new RevokedCertificate({
        userCertificate: serialBytes(r.serial),
        revocationDate: new Time(seconds(r.revokedAt)),
        ...(r.reason === undefined
          ? {}
          : { crlEntryExtensions: [ext(id_ce_cRLReasons, false, new CRLReason(r.reason))] }),
      }),
  );
  const tbs = new TBSCertList({
    version: Version.v2,
    signature: alg,
    issuer: subjectName(ca.certificate),
    thisUpdate: new Time(seconds(crl.thisUpdate)),
    nextUpdate: new Time(seconds(crl.nextUpdate)),
    ...(revoked.length === 0 ? {} : { revokedCertificates: revoked }),
    crlExtensions: [
      ext(
        id_ce_authorityKeyIdentifier,
        false,
        new AuthorityKeyIdentifier({
          keyIdentifier: new KeyIdentifier(keyIdentifier(spkiOf(ca.certificate.publicKey))),
        }),
      ),
      ext(id_ce_cRLNumber, false, new CRLNumber(Number(crl.number))),
    ],
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const list = new CertificateList({
    tbsCertList: tbs,
    signatureAlgorithm: alg,
    signature: toArrayBuffer(sign(hash, tbsDer, ca.privateKey)),
  });
  return Buffer.from(AsnConvert.serialize(list));
}
