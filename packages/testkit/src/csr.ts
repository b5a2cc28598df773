import { type KeyObject, sign } from 'node:crypto';
import { CertificationRequest, CertificationRequestInfo } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Name, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';

/**
 * A PKCS#10 CSR (DER) for `publicKey`, signed with `signingKey` (normally its own private key; pass
 * another key to get a CSR without proof of possession).
 */
export function createCsr(publicKey: KeyObject, signingKey: KeyObject): Buffer {
  const info = new CertificationRequestInfo({
    version: 0,
    subject: new Name(),
    subjectPKInfo: AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo),
  });
  const infoDer = Buffer.from(AsnConvert.serialize(info));
  const type = signingKey.asymmetricKeyType;
  const p384 = signingKey.asymmetricKeyDetails?.namedCurve === 'secp384r1';
  const [oid, hash] =
    type === 'ec'
      ? [p384 ? '1.2.840.10045.4.3.3' : '1.2.840.10045.4.3.2', p384 ? 'sha384' : 'sha256']
      : type === 'rsa'
        ? ['1.2.840.113549.1.1.11', 'sha256']
        : ['1.3.101.112', null];
  const signature = sign(hash, infoDer, signingKey);
  const csr = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({
      algorithm: oid,
      ...(type === 'rsa' ? { parameters: null } : {}),
    }),
    signature: signature.buffer.slice(
      signature.byteOffset,
      signature.byteOffset + signature.byteLength,
    ) as ArrayBuffer,
  });
  return Buffer.from(AsnConvert.serialize(csr));
}
