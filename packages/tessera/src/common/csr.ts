import { createPublicKey, type KeyObject, sign } from 'node:crypto';
import { CertificationRequest, CertificationRequestInfo } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Name, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';

/**
 * A PKCS#10 certificate signing request (DER) for the key pair of `privateKey`, signed with it
 * (proof of possession). The subject is empty: the authority decides every field but the key.
 * EC P-256/P-384 (ECDSA with SHA-256/384), RSA (SHA-256) and Ed25519 keys.
 */
export function createCsr(privateKey: KeyObject): Buffer {
  if (privateKey.type !== 'private') throw new TypeError('csr: createCsr needs a private key');
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const info = new CertificationRequestInfo({
    version: 0,
    subject: new Name(),
    subjectPKInfo: AsnConvert.parse(spki, SubjectPublicKeyInfo),
  });
  const infoDer = Buffer.from(AsnConvert.serialize(info));
  const type = privateKey.asymmetricKeyType;
  const p384 = privateKey.asymmetricKeyDetails?.namedCurve === 'secp384r1';
  let oid: string;
  let hash: string | null;
  if (type === 'ec')
    [oid, hash] = p384 ? ['1.2.840.10045.4.3.3', 'sha384'] : ['1.2.840.10045.4.3.2', 'sha256'];
  else if (type === 'rsa') [oid, hash] = ['1.2.840.113549.1.1.11', 'sha256'];
  else if (type === 'ed25519') [oid, hash] = ['1.3.101.112', null];
  else throw new TypeError(`csr: cannot sign a CSR with a ${type} key; use EC, RSA or Ed25519`);
  const signature = sign(hash, infoDer, privateKey);
  const csr = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({
      algorithm: oid,
      ...(type === 'rsa' ? { parameters: null } : {}),
    }),
    signature: new Uint8Array(signature).buffer,
  });
  return Buffer.from(AsnConvert.serialize(csr));
}
