// What the SPIFFE rules need from a certificate, decoded once with @peculiar/asn1-x509 and cached:
// verification runs on every TLS handshake and is benchmarked.
//
// Two caches, both safe because an X509Certificate and its DER are immutable:
// - per object (WeakMap), for callers that keep their X509Certificate objects (bundles, own SVIDs);
// - per DER content (a bounded LRU keyed by the exact bytes, not a hash), for callers that build a
//   fresh X509Certificate (or hand us DER) on every handshake for the same peer chain.
import { type KeyObject, X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  id_ce_nameConstraints,
  id_ce_subjectAltName,
  KeyUsage,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509';

/** keyUsage bits as @peculiar/asn1-x509 numbers them (KeyUsageFlags). */
export const KU_DIGITAL_SIGNATURE = 1;
export const KU_KEY_CERT_SIGN = 32;
export const KU_CRL_SIGN = 64;

// Extensions whose semantics we enforce, or that place no constraint on path validation.
// A critical extension outside this list makes the certificate unusable (RFC 5280 4.2).
const KNOWN_EXTENSIONS: ReadonlySet<string> = new Set([
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
  /** basicConstraints cA (false when the extension is absent). */
  readonly isCa: boolean;
  readonly pathLen: number | undefined;
  /** keyUsage bits (KU_* above); undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  /** Validity window in epoch milliseconds. */
  readonly notBefore: number;
  readonly notAfter: number;
  /** OIDs of critical extensions we do not process. */
  readonly unhandledCritical: readonly string[];
  /** nameConstraints present (not supported: such chains are refused). */
  readonly hasNameConstraints: boolean;
  readonly publicKey: KeyObject;
  /** Subject and issuer names as node:crypto prints them, for issuer candidate matching. */
  readonly subject: string;
  readonly issuer: string;
  readonly selfIssued: boolean;
}

/** True when `bit` (a KU_* constant) is set; false when keyUsage is absent. */
export function hasKeyUsage(info: CertInfo, bit: number): boolean {
  return info.keyUsage !== undefined && (info.keyUsage & bit) !== 0;
}

interface Entry {
  readonly cert: X509Certificate;
  /** Decoded on first use; an Error when the certificate's extensions are malformed. */
  info?: CertInfo | Error;
}

const byObject = new WeakMap<X509Certificate, CertInfo | Error>();
const byDer = new Map<string, Entry>();
/** Enough for every peer and authority a busy process sees; each entry is a few kilobytes. */
const MAX_DER_ENTRIES = 1024;

function lookup(key: string): Entry | undefined {
  const e = byDer.get(key);
  if (e !== undefined) {
    // Move to the back: Map iteration order is insertion order, so the front is least recently used.
    byDer.delete(key);
    byDer.set(key, e);
  }
  return e;
}

function remember(key: string, e: Entry): void {
  byDer.set(key, e);
  if (byDer.size > MAX_DER_ENTRIES) {
    const oldest = byDer.keys().next();
    if (oldest.done !== true) byDer.delete(oldest.value);
  }
}

function derKey(der: Uint8Array): string {
  return Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('latin1');
}

/**
 * An X509Certificate for `der`, reusing the object made for the same bytes before. Throws the
 * node:crypto error when the bytes are not a certificate (failures are not cached).
 */
export function certificateFromDer(der: Uint8Array): X509Certificate {
  const key = derKey(der);
  const hit = lookup(key);
  if (hit !== undefined) return hit.cert;
  const cert = new X509Certificate(der);
  remember(key, { cert });
  return cert;
}

/**
 * The fields the SPIFFE rules need. Throws an Error (with the ASN.1 reason) when the certificate's
 * extensions cannot be decoded; the failure is cached as well, so a bad peer costs one decode.
 */
export function certInfo(cert: X509Certificate): CertInfo {
  let info = byObject.get(cert);
  if (info === undefined) {
    const key = derKey(cert.raw);
    let entry = lookup(key);
    if (entry === undefined) {
      entry = { cert };
      remember(key, entry);
    }
    if (entry.info === undefined) entry.info = decode(cert);
    info = entry.info;
    byObject.set(cert, info);
  }
  if (info instanceof Error) throw info;
  return info;
}

function decode(cert: X509Certificate): CertInfo | Error {
  try {
    const tbs = AsnConvert.parse(cert.raw, Certificate).tbsCertificate;
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
        case id_ce_subjectAltName:
          uris = AsnConvert.parse(value, SubjectAlternativeName).flatMap((n) =>
            n.uniformResourceIdentifier === undefined ? [] : [n.uniformResourceIdentifier],
          );
          break;
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
        case id_ce_nameConstraints:
          hasNameConstraints = true;
          break;
        default:
          if (ext.critical && !KNOWN_EXTENSIONS.has(ext.extnID)) unhandledCritical.push(ext.extnID);
      }
    }
    return Object.freeze({
      uris: Object.freeze(uris),
      hasBasicConstraints,
      isCa,
      pathLen,
      keyUsage,
      notBefore: tbs.validity.notBefore.getTime().getTime(),
      notAfter: tbs.validity.notAfter.getTime().getTime(),
      unhandledCritical: Object.freeze(unhandledCritical),
      hasNameConstraints,
      publicKey: cert.publicKey,
      subject: cert.subject,
      issuer: cert.issuer,
      selfIssued: cert.subject === cert.issuer,
    });
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** A distinguished name as node:crypto prints it (one attribute per line), on one line for messages. */
export function oneLineName(name: string): string {
  return name.replace(/\n/g, ', ');
}
