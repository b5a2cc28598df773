import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import type { SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';

// Signature algorithms a CSR may use, and the hash each implies.
const CSR_ALGORITHMS: Record<string, string | null> = {
  '1.2.840.10045.4.3.2': 'sha256', // ecdsa-with-SHA256
  '1.2.840.10045.4.3.3': 'sha384', // ecdsa-with-SHA384
  '1.2.840.10045.4.3.4': 'sha512', // ecdsa-with-SHA512
  '1.2.840.113549.1.1.11': 'sha256', // sha256WithRSAEncryption
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.3.101.112': null, // Ed25519
};

export interface ParsedCsr {
  publicKey: KeyObject;
  spki: SubjectPublicKeyInfo;
}

function bad(message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.CSR_INVALID,
    `csr: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Parses a PKCS#10 CSR (DER) and checks that it is signed by the key it carries (proof of
 * possession). Only the public key is used: the authority decides every other field. Refuses
 * malformed DER, unknown signature algorithms, weak RSA keys and bad signatures, naming which.
 */
export function parseCsr(der: Uint8Array): ParsedCsr {
  let csr: CertificationRequest;
  try {
    csr = AsnConvert.parse(der, CertificationRequest);
  } catch (err) {
    throw bad(`not a DER PKCS#10 certification request (${(err as Error).message})`, err);
  }
  const hash = CSR_ALGORITHMS[csr.signatureAlgorithm.algorithm];
  if (hash === undefined)
    throw bad(
      `signature algorithm ${csr.signatureAlgorithm.algorithm} is not accepted; use ECDSA, RSA with SHA-2, or Ed25519`,
    );
  const spki = csr.certificationRequestInfo.subjectPKInfo;
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({
      key: Buffer.from(AsnConvert.serialize(spki)),
      format: 'der',
      type: 'spki',
    });
  } catch (err) {
    throw bad(`the public key cannot be read (${(err as Error).message})`, err);
  }
  const type = publicKey.asymmetricKeyType;
  if (type === 'rsa' && (publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
    throw bad('RSA keys must have at least 2048 bits');
  if (type !== 'ec' && type !== 'rsa' && type !== 'ed25519')
    throw bad(`key type ${type} is not accepted; use EC P-256/P-384, RSA or Ed25519`);
  const raw = csr.certificationRequestInfoRaw;
  if (raw === undefined) throw bad('the signed part of the request cannot be located');
  let ok = false;
  try {
    ok = verify(hash, Buffer.from(raw), publicKey, Buffer.from(csr.signature));
  } catch (err) {
    throw bad(`the signature cannot be checked (${(err as Error).message})`, err);
  }
  if (!ok) throw bad('the signature does not verify with the request’s own key (no proof of possession)');
  return { publicKey, spki };
}
