import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import * as asn1js from 'asn1js';
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

// EC curves whose keys can be imported as a JWK from the raw point (cheaper than SPKI decoding in Node 20).
const EC_CURVES: Record<string, { crv: string; size: number }> = {
  '1.2.840.10045.3.1.7': { crv: 'P-256', size: 32 },
  '1.3.132.0.34': { crv: 'P-384', size: 48 },
};

export interface ParsedCsr {
  publicKey: KeyObject;
  /** DER SubjectPublicKeyInfo, exactly as in the request. */
  spkiDer: Buffer;
  /** The subjectPublicKey BIT STRING contents (for the SubjectKeyIdentifier). */
  publicKeyBits: Buffer;
}

function bad(message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.CSR_INVALID,
    `csr: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

function children(node: asn1js.AsnType | undefined, what: string): asn1js.AsnType[] {
  if (!(node instanceof asn1js.Sequence)) throw bad(`${what} is not a SEQUENCE`);
  return node.valueBlock.value;
}

function raw(node: asn1js.AsnType): Buffer {
  return Buffer.from(node.valueBeforeDecodeView);
}

/**
 * Parses a PKCS#10 CSR (DER, with asn1js) and checks that it is signed by the key it carries
 * (proof of possession). Only the public key is used: the authority decides every other field.
 * Refuses malformed DER, unknown signature algorithms, weak RSA keys and bad signatures, naming which.
 */
export function parseCsr(der: Uint8Array): ParsedCsr {
  const parsed = asn1js.fromBER(der);
  if (parsed.offset === -1 || parsed.result.error !== '' || parsed.offset !== der.length) {
    throw bad(
      `not a DER PKCS#10 certification request (${parsed.result.error || 'trailing or truncated data'})`,
    );
  }
  let cri: asn1js.AsnType;
  let spkiNode: asn1js.AsnType;
  let algOid: string;
  let signature: Buffer;
  let bits: Buffer;
  let keyAlgOid: string;
  let keyParamOid: string | undefined;
  try {
    const [criNode, algNode, sigNode] = children(parsed.result, 'the request');
    cri = criNode as asn1js.AsnType;
    const [, , spki] = children(cri, 'certificationRequestInfo');
    spkiNode = spki as asn1js.AsnType;
    const [keyAlg, keyBits] = children(spkiNode, 'subjectPKInfo');
    const [keyOid, keyParam] = children(keyAlg, 'the key algorithm');
    keyAlgOid = (keyOid as asn1js.ObjectIdentifier).valueBlock.toString();
    keyParamOid = keyParam instanceof asn1js.ObjectIdentifier ? keyParam.valueBlock.toString() : undefined;
    if (!(keyBits instanceof asn1js.BitString)) throw bad('subjectPublicKey is not a BIT STRING');
    bits = Buffer.from(keyBits.valueBlock.valueHexView);
    const [sigOid] = children(algNode, 'signatureAlgorithm');
    if (!(sigOid instanceof asn1js.ObjectIdentifier)) throw bad('signatureAlgorithm has no OID');
    algOid = sigOid.valueBlock.toString();
    if (!(sigNode instanceof asn1js.BitString)) throw bad('signature is not a BIT STRING');
    signature = Buffer.from(sigNode.valueBlock.valueHexView);
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw bad(`not a DER PKCS#10 certification request (${(err as Error).message})`, err);
  }
  const hash = CSR_ALGORITHMS[algOid];
  if (hash === undefined)
    throw bad(`signature algorithm ${algOid} is not accepted; use ECDSA, RSA with SHA-2, or Ed25519`);
  const spkiDer = raw(spkiNode);
  let publicKey: KeyObject;
  try {
    const curve =
      keyAlgOid === '1.2.840.10045.2.1' && keyParamOid !== undefined ? EC_CURVES[keyParamOid] : undefined;
    publicKey =
      curve !== undefined && bits.length === 1 + 2 * curve.size && bits[0] === 0x04
        ? createPublicKey({
            key: {
              kty: 'EC',
              crv: curve.crv,
              x: bits.subarray(1, 1 + curve.size).toString('base64url'),
              y: bits.subarray(1 + curve.size).toString('base64url'),
            },
            format: 'jwk',
          })
        : createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (err) {
    throw bad(`the public key cannot be read (${(err as Error).message})`, err);
  }
  const type = publicKey.asymmetricKeyType;
  if (type === 'rsa' && (publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
    throw bad('RSA keys must have at least 2048 bits');
  if (type !== 'ec' && type !== 'rsa' && type !== 'ed25519')
    throw bad(`key type ${type} is not accepted; use EC P-256/P-384, RSA or Ed25519`);
  let ok = false;
  try {
    ok = verify(hash, raw(cri), publicKey, signature);
  } catch (err) {
    throw bad(`the signature cannot be checked (${(err as Error).message})`, err);
  }
  if (!ok) throw bad('the signature does not verify with the request’s own key (no proof of possession)');
  return { publicKey, spkiDer, publicKeyBits: bits };
}
