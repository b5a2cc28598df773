// The signature of an EC2 instance identity document: a PKCS#7 (CMS, RFC 5652) SignedData, as the
// instance metadata service serves it at /latest/dynamic/instance-identity/rsa2048 — base64 of BER
// (indefinite lengths, the document enveloped as a constructed OCTET STRING), one signer, SHA-256
// with RSA-2048, signed attributes, no certificates inside: the verifier brings AWS's certificate
// for the region. Structures are read with @peculiar/asn1-cms and asn1js; the signature is checked
// with node:crypto.
import { constants, createHash, verify, type X509Certificate } from 'node:crypto';
import {
  ContentInfo,
  id_contentType,
  id_data,
  id_messageDigest,
  id_signedData,
  id_signingTime,
  SignedData,
  type SignerInfo,
} from '@peculiar/asn1-cms';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { Certificate, id_ce_subjectKeyIdentifier, SubjectKeyIdentifier, Time } from '@peculiar/asn1-x509';
import * as asn1js from 'asn1js';

/** A problem with the signature; the message says which check failed. */
export class IidSignatureError extends Error {
  override readonly name = 'IidSignatureError';
}

const fail = (message: string, cause?: unknown): IidSignatureError =>
  new IidSignatureError(message, cause === undefined ? undefined : { cause });

const DIGESTS: Record<string, string> = {
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
const SHA1 = '1.3.14.3.2.26';
const RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
/** sha*WithRSAEncryption, by the digest each implies. */
const RSA_WITH: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
const DSA_OIDS = new Set(['1.2.840.10040.4.1', '1.2.840.10040.4.3']);

/** A SignedData read from its encoding, not yet verified. */
export interface ParsedSignedData {
  /** The enveloped content; undefined for a detached signature. */
  readonly content: Buffer | undefined;
  readonly signerInfo: SignerInfo;
  /** The DER of the signed attributes as signed (tagged SET OF), or undefined when there are none. */
  readonly signedAttributes: Buffer | undefined;
}

export interface VerifiedSignedData {
  readonly content: Buffer;
  /** The configured certificate whose key made the signature. */
  readonly signer: X509Certificate;
  /** The signingTime attribute, when present. */
  readonly signingTime: Date | undefined;
}

/** The DER (or BER) of a signature given as base64, with or without PEM armour and line breaks. */
export function decodeSignature(text: string): Buffer {
  const body = text
    .replace(/-----(BEGIN|END) PKCS7-----/g, '')
    .replace(/\s+/g, '')
    .trim();
  if (body === '') throw fail('the signature is empty');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0)
    throw fail('the signature is not base64 (as the instance metadata service serves it)');
  return Buffer.from(body, 'base64');
}

/** Reads a PKCS#7 SignedData with one signer; throws IidSignatureError naming what is malformed. */
export function parseSignedData(der: Buffer): ParsedSignedData {
  const ber = asn1js.fromBER(new Uint8Array(der));
  if (ber.offset === -1) throw fail(`the signature is not ASN.1: ${ber.result.error}`);
  if (ber.offset !== der.length) throw fail('the signature has bytes after its ASN.1 structure');
  let signed: SignedData;
  try {
    const info = AsnConvert.parse(der, ContentInfo);
    if (info.contentType !== id_signedData)
      throw fail(`the signature is a PKCS#7 ${info.contentType}, not a SignedData (${id_signedData})`);
    signed = AsnConvert.parse(info.content, SignedData);
  } catch (err) {
    if (err instanceof IidSignatureError) throw err;
    throw fail(`the signature is not a PKCS#7 SignedData: ${(err as Error).message}`, err);
  }
  if (signed.encapContentInfo.eContentType !== id_data)
    throw fail(
      `the signed content is of type ${signed.encapContentInfo.eContentType}, not data (${id_data})`,
    );
  if (signed.signerInfos.length !== 1)
    throw fail(`the signature has ${signed.signerInfos.length} signers; AWS signs with exactly one`);
  const signerInfo = signed.signerInfos[0] as SignerInfo;
  return { content: contentOf(signed), signerInfo, signedAttributes: signedAttributesOf(ber.result) };
}

function contentOf(signed: SignedData): Buffer | undefined {
  const e = signed.encapContentInfo.eContent;
  if (e === undefined) return undefined;
  if (e.single !== undefined) return Buffer.from(e.single.buffer);
  if (e.any === undefined) return undefined;
  // BER: a constructed OCTET STRING (how AWS and `openssl cms -stream` envelop the document).
  const parsed = asn1js.fromBER(e.any);
  if (parsed.offset === -1 || !(parsed.result instanceof asn1js.OctetString))
    throw fail('the signed content is not an OCTET STRING');
  return Buffer.from(parsed.result.getValue());
}

/**
 * The signed attributes exactly as encoded, re-tagged as the SET OF they are signed as (RFC 5652
 * §5.4): the signature covers these bytes, so they are taken from the input, never re-encoded.
 */
function signedAttributesOf(root: asn1js.AsnType): Buffer | undefined {
  type Node = { idBlock: { tagClass: number; tagNumber: number }; valueBlock: { value?: Node[] } };
  const children = (n: Node | undefined): Node[] => n?.valueBlock.value ?? [];
  const signedData = children(children(root as unknown as Node)[1])[0];
  const infos = children(signedData);
  const signerInfo = children(infos[infos.length - 1])[0];
  const attrs = children(signerInfo).find((n) => n.idBlock.tagClass === 3 && n.idBlock.tagNumber === 0);
  if (attrs === undefined) return undefined;
  const raw = Buffer.from((attrs as unknown as { valueBeforeDecodeView: Uint8Array }).valueBeforeDecodeView);
  raw[0] = 0x31;
  return raw;
}

function certificateMatches(cert: X509Certificate, info: SignerInfo): boolean {
  const parsed = AsnConvert.parse(cert.raw, Certificate).tbsCertificate;
  const ias = info.sid.issuerAndSerialNumber;
  if (ias !== undefined)
    return (
      Buffer.from(ias.serialNumber).equals(Buffer.from(parsed.serialNumber)) &&
      Buffer.from(AsnConvert.serialize(ias.issuer)).equals(Buffer.from(AsnConvert.serialize(parsed.issuer)))
    );
  const ski = info.sid.subjectKeyIdentifier;
  if (ski === undefined) return false;
  const ext = parsed.extensions?.find((x) => x.extnID === id_ce_subjectKeyIdentifier);
  if (ext === undefined) return false;
  const own = AsnConvert.parse(ext.extnValue, SubjectKeyIdentifier);
  return Buffer.from(own.buffer).equals(Buffer.from(ski.buffer));
}

function describeSigner(info: SignerInfo): string {
  const ias = info.sid.issuerAndSerialNumber;
  if (ias !== undefined) return `serial ${Buffer.from(ias.serialNumber).toString('hex').toUpperCase()}`;
  const ski = info.sid.subjectKeyIdentifier;
  return ski === undefined
    ? 'an unnamed signer'
    : `subject key ID ${Buffer.from(ski.buffer).toString('hex')}`;
}

function attribute(info: SignerInfo, type: string): ArrayBuffer | undefined {
  const found = (info.signedAttrs ?? []).filter((a) => a.attrType === type);
  if (found.length > 1 || (found[0] !== undefined && found[0].attrValues.length !== 1))
    throw fail(`the signed attribute ${type} must appear once with one value`);
  return found[0]?.attrValues[0];
}

/**
 * Verifies a SignedData over `content` with one of `certificates` (the signer named in the
 * SignerInfo), as RFC 5652 §5.6 says: with signed attributes, their content type and message
 * digest must match and the signature covers them; without, it covers the content. A signing time,
 * when present, must fall within the signer certificate's validity (as SPIRE's pkcs7 library checks).
 */
export function verifySignedData(
  parsed: ParsedSignedData,
  content: Buffer,
  certificates: readonly X509Certificate[],
): VerifiedSignedData {
  const info = parsed.signerInfo;
  const sigAlg = info.signatureAlgorithm.algorithm;
  const digestOid = info.digestAlgorithm.algorithm;
  if (DSA_OIDS.has(sigAlg) || digestOid === SHA1)
    throw fail(
      'the signature uses SHA-1 or DSA (as the instance-identity/pkcs7 one does); send the instance-identity/rsa2048 signature (SHA-256 with RSA-2048)',
    );
  const hash = DIGESTS[digestOid];
  if (hash === undefined) throw fail(`the digest algorithm ${digestOid} is not accepted; AWS uses SHA-256`);
  if (sigAlg !== RSA_ENCRYPTION && RSA_WITH[sigAlg] === undefined)
    throw fail(`the signature algorithm ${sigAlg} is not accepted; AWS signs with RSA (PKCS#1 v1.5)`);
  if (RSA_WITH[sigAlg] !== undefined && RSA_WITH[sigAlg] !== hash)
    throw fail(`the signature algorithm ${sigAlg} does not go with the digest algorithm ${digestOid}`);
  const signer = certificates.find((c) => certificateMatches(c, info));
  if (signer === undefined)
    throw fail(
      `the signer (${describeSigner(info)}) is none of the ${certificates.length} configured AWS certificate(s)`,
    );
  let signedBytes = content;
  let signingTime: Date | undefined;
  if (parsed.signedAttributes !== undefined) {
    const type = attribute(info, id_contentType);
    if (type === undefined) throw fail('the signed attributes have no content type');
    const oid = asn1js.fromBER(type).result;
    if (!(oid instanceof asn1js.ObjectIdentifier) || oid.getValue() !== id_data)
      throw fail('the signed content-type attribute is not data');
    const digest = attribute(info, id_messageDigest);
    if (digest === undefined) throw fail('the signed attributes have no message digest');
    const expected = Buffer.from(AsnConvert.parse(digest, OctetString).buffer);
    if (!expected.equals(createHash(hash).update(content).digest()))
      throw fail('the document is not the one signed (its digest differs from the signed message digest)');
    const time = attribute(info, id_signingTime);
    if (time !== undefined) {
      try {
        signingTime = AsnConvert.parse(time, Time).getTime();
      } catch (err) {
        throw fail(`the signing time is not a time: ${(err as Error).message}`, err);
      }
      if (signingTime < new Date(signer.validFrom) || signingTime > new Date(signer.validTo))
        throw fail(
          `the signing time ${signingTime.toISOString()} is outside the validity of the AWS certificate (${signer.validFrom} – ${signer.validTo})`,
        );
    }
    signedBytes = parsed.signedAttributes;
  }
  if (signer.publicKey.asymmetricKeyType !== 'rsa')
    throw fail(
      `the AWS certificate that names the signer has a ${signer.publicKey.asymmetricKeyType} key, not RSA`,
    );
  const ok = verify(
    hash,
    signedBytes,
    { key: signer.publicKey, padding: constants.RSA_PKCS1_PADDING },
    Buffer.from(info.signature.buffer),
  );
  if (!ok)
    throw fail(
      `the signature does not verify with the AWS certificate ${signer.subject.replaceAll('\n', ', ')} (serial ${signer.serialNumber})`,
    );
  return { content, signer, signingTime };
}
