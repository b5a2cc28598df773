// What the SPIFFE rules need from a certificate, decoded once with @peculiar/asn1-x509 and
// cached per X509Certificate object: verification runs on every TLS handshake and is benchmarked.
import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  KeyUsage,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509';

export const KU_DIGITAL_SIGNATURE = 1;
export const KU_KEY_CERT_SIGN = 32;
export const KU_CRL_SIGN = 64;

// Extensions whose semantics we either enforce or that carry no constraint on path validation.
// A critical extension outside this list makes the certificate unusable (RFC 5280 4.2).
const KNOWN_EXTENSIONS = new Set([
  id_ce_basicConstraints,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  '2.5.29.37', // extKeyUsage: not enforced for SPIFFE (go-spiffe verifies with "any" usage)
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.31', // cRLDistributionPoints
  '1.3.6.1.5.5.7.1.1', // authorityInfoAccess
  '2.5.29.32', // certificatePolicies
]);

export interface CertInfo {
  /** URI SANs in order. */
  readonly uris: readonly string[];
  /** basicConstraints present. */
  readonly hasBasicConstraints: boolean;
  readonly isCa: boolean;
  readonly pathLen: number | undefined;
  /** keyUsage bits (digitalSignature = 1, keyCertSign = 32, cRLSign = 64); undefined when absent. */
  readonly keyUsage: number | undefined;
  readonly notBefore: number;
  readonly notAfter: number;
  /** OIDs of critical extensions we do not process. */
  readonly unhandledCritical: readonly string[];
  /** nameConstraints present (not supported: such chains are refused). */
  readonly hasNameConstraints: boolean;
  readonly publicKey: KeyObject;
  readonly selfIssued: boolean;
  /** Distinguished names as node:crypto prints them, for issuer matching. */
  readonly subject: string;
  readonly issuer: string;
}

const cache = new WeakMap<X509Certificate, CertInfo>();
// A TLS peer presents the same chain on every handshake for the SVID's lifetime, each time as new
// X509Certificate objects; decoding is a pure function of the DER, so results are also kept by
// SHA-256 fingerprint (bounded, least recently used first out).
const byFingerprint = new Map<string, CertInfo>();
const MAX_FINGERPRINTS = 4096;

/** Decodes the fields the SPIFFE rules need. Throws an Error (with the ASN.1 reason) on a malformed certificate. */
export function certInfo(cert: X509Certificate): CertInfo {
  const hit = cache.get(cert);
  if (hit !== undefined) return hit;
  const fingerprint = cert.fingerprint256;
  const known = byFingerprint.get(fingerprint);
  if (known !== undefined) {
    byFingerprint.delete(fingerprint);
    byFingerprint.set(fingerprint, known);
    cache.set(cert, known);
    return known;
  }
  const parsed = AsnConvert.parse(cert.raw, Certificate);
  const tbs = parsed.tbsCertificate;
  let uris: string[] = [];
  let hasBasicConstraints = false;
  let isCa = false;
  let pathLen: number | undefined;
  let keyUsage: number | undefined;
  let hasNameConstraints = false;
  const unhandledCritical: string[] = [];
  for (const ext of tbs.extensions ?? []) {
    const value = ext.extnValue.buffer;
    switch (ext.extnID) {
      case id_ce_subjectAltName: {
        const san = AsnConvert.parse(value, SubjectAlternativeName);
        uris = san.flatMap((n) =>
          n.uniformResourceIdentifier === undefined ? [] : [n.uniformResourceIdentifier],
        );
        break;
      }
      case id_ce_basicConstraints: {
        const bc = AsnConvert.parse(value, BasicConstraints);
        hasBasicConstraints = true;
        isCa = bc.cA;
        pathLen = bc.pathLenConstraint;
        break;
      }
      case id_ce_keyUsage:
        keyUsage = AsnConvert.parse(value, KeyUsage).toNumber();
        break;
      case '2.5.29.30':
        hasNameConstraints = true;
        break;
      default:
        if (ext.critical && !KNOWN_EXTENSIONS.has(ext.extnID)) unhandledCritical.push(ext.extnID);
    }
  }
  const info: CertInfo = {
    uris,
    hasBasicConstraints,
    isCa,
    pathLen,
    keyUsage,
    notBefore: tbs.validity.notBefore.getTime().getTime(),
    notAfter: tbs.validity.notAfter.getTime().getTime(),
    unhandledCritical,
    hasNameConstraints,
    publicKey: cert.publicKey,
    selfIssued: cert.subject === cert.issuer,
    subject: cert.subject,
    issuer: cert.issuer,
  };
  cache.set(cert, info);
  byFingerprint.set(fingerprint, info);
  if (byFingerprint.size > MAX_FINGERPRINTS)
    byFingerprint.delete(byFingerprint.keys().next().value as string);
  return info;
}

// Building an X509Certificate costs ~120 µs (more than an ECDSA verify); peers send the same DER on
// every handshake, so objects are reused by SHA-256 of the DER (immutable, bounded LRU).
const byDer = new Map<string, X509Certificate>();

/** An X509Certificate for `der`, reused when the same DER was seen recently. Throws like the constructor. */
export function certificateFromDer(der: Uint8Array): X509Certificate {
  const key = createHash('sha256').update(der).digest('base64');
  const hit = byDer.get(key);
  if (hit !== undefined) {
    byDer.delete(key);
    byDer.set(key, hit);
    return hit;
  }
  const cert = new X509Certificate(der);
  byDer.set(key, cert);
  if (byDer.size > MAX_FINGERPRINTS) byDer.delete(byDer.keys().next().value as string);
  return cert;
}
