import { verify as verifySignature, type X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  Certificate,
  CertificateList,
  CRLNumber,
  CRLReason,
  id_ce_cRLNumber,
  id_ce_cRLReasons,
} from '@peculiar/asn1-x509';
import * as asn1js from 'asn1js';
import { ErrorCode, SpiffeError } from '../errors.js';
import { splitDer } from '../internal/der.js';
import { parsePemBlocks, toPem } from '../internal/pem.js';

/** One revoked certificate on a CRL. */
export interface X509CrlEntry {
  /** The serial number, upper-case hex without leading zeros (normalizeSerial). */
  readonly serial: string;
  readonly revokedAt: Date;
  /** RFC 5280 CRLReason (1 = keyCompromise …); undefined when the entry carries none. */
  readonly reason: number | undefined;
}

/**
 * A certificate revocation list (RFC 5280 §5): which serials the authority that signed it revoked.
 * Parsed only; whether it is genuine is `signedBy(ca)`, which checks the issuer name and signature.
 */
export interface X509Crl {
  /** DER. */
  readonly raw: Buffer;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  /** The cRLNumber extension (grows with every new CRL of one authority), when present. */
  readonly crlNumber: bigint | undefined;
  /** Revoked certificates by normalised serial. */
  readonly entries: ReadonlyMap<string, X509CrlEntry>;
  /** True when `ca` issued this CRL: the CRL's issuer is the CA's subject and its signature verifies. */
  signedBy(ca: X509Certificate): boolean;
  /** The entry for `serial` (any hex form X509Certificate.serialNumber prints), if revoked here. */
  entryFor(serial: string): X509CrlEntry | undefined;
  toPem(): string;
}

/** What the TLS helpers and verifiers read revocation lists from (an X509Source, or a fixed list). */
export interface X509CrlSource {
  getX509Crls(): readonly X509Crl[];
}

/** A hex serial number in one canonical form: upper case, no leading zeros ("0" for zero). */
export function normalizeSerial(hex: string): string {
  const h = hex.replace(/:/g, '').trim();
  if (!/^[0-9A-Fa-f]+$/.test(h))
    throw new TypeError(`x509crl: serial number ${JSON.stringify(hex)} is not hexadecimal`);
  return BigInt(`0x${h}`).toString(16).toUpperCase();
}

function invalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.X509CRL_INVALID,
    `x509crl: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/** Signature algorithms of CRLs: the digest node's crypto.verify takes (null: the key decides, Ed25519). */
const SIGNATURE_HASH: Readonly<Record<string, string | null>> = {
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.3.101.112': null,
};

const bytesEqual = (a: ArrayBuffer | Uint8Array, b: ArrayBuffer | Uint8Array) =>
  Buffer.from(a as ArrayBuffer).equals(Buffer.from(b as ArrayBuffer));

/** Parses one DER CRL. Throws ERR_X509CRL_INVALID naming what is wrong. */
export function parseX509Crl(der: Uint8Array): X509Crl {
  const raw = Buffer.from(der);
  let list: CertificateList;
  let tbsDer: Buffer;
  try {
    list = AsnConvert.parse(raw, CertificateList);
    // The signed bytes exactly as they came: the first element inside the outer SEQUENCE.
    const content = contentOf(raw);
    const first = asn1js.fromBER(content);
    if (first.offset === -1 || first.result.error) throw new Error('its tbsCertList cannot be decoded');
    tbsDer = content.subarray(0, first.offset);
  } catch (err) {
    throw invalid(`not a DER certificate revocation list: ${(err as Error).message}`, err);
  }
  const tbs = list.tbsCertList;
  const hash = SIGNATURE_HASH[list.signatureAlgorithm.algorithm];
  const issuerDer = Buffer.from(AsnConvert.serialize(tbs.issuer));
  let crlNumber: bigint | undefined;
  for (const ext of tbs.crlExtensions ?? []) {
    if (ext.extnID === id_ce_cRLNumber) {
      crlNumber = BigInt(AsnConvert.parse(ext.extnValue, CRLNumber).value);
    } else if (ext.critical) {
      throw invalid(`the CRL has an unsupported critical extension ${ext.extnID}`);
    }
  }
  const entries = new Map<string, X509CrlEntry>();
  for (const r of tbs.revokedCertificates ?? []) {
    const serial = normalizeSerial(Buffer.from(r.userCertificate).toString('hex') || '0');
    let reason: number | undefined;
    for (const ext of r.crlEntryExtensions ?? []) {
      if (ext.extnID === id_ce_cRLReasons) reason = AsnConvert.parse(ext.extnValue, CRLReason).reason;
      else if (ext.critical)
        throw invalid(`revoked serial ${serial} has an unsupported critical extension ${ext.extnID}`);
    }
    entries.set(serial, { serial, revokedAt: r.revocationDate.getTime(), reason });
  }
  const signature = Buffer.from(list.signature);
  const crl: X509Crl = {
    raw,
    thisUpdate: tbs.thisUpdate.getTime(),
    nextUpdate: tbs.nextUpdate?.getTime(),
    crlNumber,
    entries,
    signedBy(ca) {
      if (hash === undefined) return false;
      const subject = AsnConvert.parse(ca.raw, Certificate).tbsCertificate.subject;
      if (!bytesEqual(AsnConvert.serialize(subject), issuerDer)) return false;
      try {
        return verifySignature(hash, tbsDer, ca.publicKey, signature);
      } catch {
        return false;
      }
    },
    entryFor(serial) {
      return entries.get(normalizeSerial(serial));
    },
    toPem() {
      return toPem('X509 CRL', raw);
    },
  };
  return crl;
}

/** The content octets of a DER SEQUENCE (its tag and length stripped). */
function contentOf(der: Buffer): Buffer {
  if (der[0] !== 0x30) throw new Error('it does not start with a SEQUENCE');
  const first = der[1] ?? 0;
  if (first < 0x80) return der.subarray(2, 2 + first);
  const n = first & 0x7f;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + (der[2 + i] ?? 0);
  return der.subarray(2 + n, 2 + n + len);
}

/**
 * CRLs from PEM text ("X509 CRL" blocks) or from concatenated DER (as the Workload API's `crl`
 * fields carry one each). Throws ERR_X509CRL_INVALID.
 */
export function parseX509Crls(input: string | Uint8Array): X509Crl[] {
  if (typeof input === 'string') {
    const blocks = parsePemBlocks(input).filter((b) => b.type === 'X509 CRL');
    if (blocks.length === 0 && input.trim() !== '') throw invalid('no "X509 CRL" PEM block in the text');
    return blocks.map((b) => parseX509Crl(b.der));
  }
  let parts: Buffer[];
  try {
    parts = splitDer(input);
  } catch (err) {
    throw invalid(`not DER CRLs: ${(err as Error).message}`, err);
  }
  return parts.map((p) => parseX509Crl(p));
}

/**
 * Refuses a verified chain (leaf first, ending with the trusted authority) when the issuer of one
 * of its certificates revoked it on a CRL that issuer signed. A certificate whose issuer has no CRL
 * here is not refused: revocation is what the CRLs say, nothing more (SPIRE sends none).
 * Throws ERR_X509SVID_REVOKED saying which serial, by whom, when and why.
 */
export function checkX509Revocation(
  verifiedChain: readonly X509Certificate[],
  crls: readonly X509Crl[],
): void {
  for (let i = 0; i + 1 < verifiedChain.length; i++) {
    const cert = verifiedChain[i] as X509Certificate;
    const issuer = verifiedChain[i + 1] as X509Certificate;
    for (const crl of crls) {
      const entry = crl.entryFor(cert.serialNumber);
      if (entry === undefined || !crl.signedBy(issuer)) continue;
      const what = i === 0 ? 'the X509-SVID' : `intermediate ${i}`;
      throw new SpiffeError(
        ErrorCode.X509SVID_REVOKED,
        `x509svid: ${what} with serial ${entry.serial} was revoked by its authority (${oneLine(issuer.subject)}) at ${entry.revokedAt.toISOString()}${entry.reason === undefined ? '' : `, reason ${reasonName(entry.reason)}`}${crl.crlNumber === undefined ? '' : `, CRL number ${crl.crlNumber}`}`,
      );
    }
  }
}

const oneLine = (name: string) => name.split('\n').join(', ');

/** RFC 5280 §5.3.1 reason codes by name, as `tessera x509 revoke --reason` takes them. */
export const CRL_REASONS: Readonly<Record<string, number>> = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
};

/** The RFC 5280 name of a reason code ("keyCompromise"), or its number. */
export function reasonName(code: number): string {
  return Object.entries(CRL_REASONS).find(([, c]) => c === code)?.[0] ?? String(code);
}
