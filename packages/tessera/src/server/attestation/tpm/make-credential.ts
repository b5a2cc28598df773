// TPM2_MakeCredential done outside the TPM (TPM 2.0 Part 1 §24 "Credential Protection", Part 3
// §12.6, Part 1 §11.4.10 for KDFa/KDFe, Part 1 Annex B.10.3 / C.6.1 for the seed): protocol framing
// around node:crypto primitives (RSA-OAEP, ECDH, HMAC, AES-CFB), no cipher of our own.
//
//   seed            random (RSA EK: encrypted with RSA-OAEP, label "IDENTITY\0")
//                   or KDFe(Z, "IDENTITY", ephemeral x, EK x) after ECDH (ECC EK: the ephemeral point sent)
//   symKey          KDFa(seed, "STORAGE", name of the AK, "", EK symmetric key bits)
//   encIdentity     AES-CFB(symKey, IV 0, TPM2B(credential))
//   hmacKey         KDFa(seed, "INTEGRITY", "", "", digest bits)
//   integrityHMAC   HMAC(hmacKey, encIdentity || name of the AK)
//   TPM2B_ID_OBJECT = TPM2B(integrityHMAC) || encIdentity
//
// Only a TPM holding the EK's private part and an object with that name can recover the credential
// (TPM2_ActivateCredential checks the HMAC, which covers the name).
import {
  constants,
  createCipheriv,
  createHash,
  createHmac,
  diffieHellman,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import {
  eccCurve,
  TPM_ALG,
  TPMA_OBJECT,
  type TpmPublic,
  tpm2b,
  tpmHash,
  tpmPublicKey,
} from '../../../common/tpm/tpm2-public.js';

export interface MadeCredential {
  /** The contents of the TPM2B_ID_OBJECT (integrity HMAC and encrypted credential). */
  readonly idObject: Buffer;
  /** The contents of the TPM2B_ENCRYPTED_SECRET (the seed, encrypted to the EK). */
  readonly encryptedSecret: Buffer;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/** KDFa (Part 1 §11.4.10.2): SP 800-108 counter mode with HMAC; labels end with a 0 octet. */
export function kdfa(
  hash: string,
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  for (let counter = 1; have * 8 < bits; counter++) {
    const block = createHmac(hash, key)
      .update(u32(counter))
      .update(label)
      .update(Buffer.from([0]))
      .update(contextU)
      .update(contextV)
      .update(u32(bits))
      .digest();
    out.push(block);
    have += block.length;
  }
  return Buffer.concat(out).subarray(0, Math.ceil(bits / 8));
}

/** KDFe (Part 1 §11.4.10.3): SP 800-56A concatenation KDF; `use` ends with a 0 octet. */
export function kdfe(
  hash: string,
  z: Uint8Array,
  use: string,
  partyU: Uint8Array,
  partyV: Uint8Array,
  bits: number,
): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  for (let counter = 1; have * 8 < bits; counter++) {
    const block = createHash(hash)
      .update(u32(counter))
      .update(z)
      .update(use)
      .update(Buffer.from([0]))
      .update(partyU)
      .update(partyV)
      .digest();
    out.push(block);
    have += block.length;
  }
  return Buffer.concat(out).subarray(0, Math.ceil(bits / 8));
}

/** The EK's symmetric algorithm, which must be AES in CFB mode (every TCG EK template is). */
function aesOf(ek: TpmPublic): string {
  const s = ek.symmetric;
  if (s.algorithm !== TPM_ALG.AES || s.mode !== TPM_ALG.CFB || ![128, 192, 256].includes(s.keyBits))
    throw new Error(
      `the EK's symmetric algorithm is 0x${s.algorithm.toString(16)}/${s.keyBits}/mode 0x${s.mode.toString(16)}; a credential can be made only for an EK with AES-128/192/256 in CFB mode`,
    );
  return `aes-${s.keyBits}-cfb`;
}

/**
 * Encrypts `credential` (at most the EK nameAlg's digest size) to `ek` for the object named
 * `objectName`, as TPM2_MakeCredential would. `random` is for tests (the seed); ECC uses a fresh
 * ephemeral key from node:crypto.
 */
export function makeCredential(
  ek: TpmPublic,
  objectName: Uint8Array,
  credential: Uint8Array,
  random: (n: number) => Buffer = randomBytes,
): MadeCredential {
  const { name: hash, size } = tpmHash(ek.nameAlg);
  if (credential.length > size)
    throw new RangeError(`a credential holds at most ${size} bytes for this EK; got ${credential.length}`);
  const need = TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
  if ((ek.attributes & need) !== need || (ek.attributes & TPMA_OBJECT.sign) !== 0)
    throw new Error('the EK is not a restricted decryption key (its attributes say so)');
  const cipher = aesOf(ek);
  let seed: Buffer;
  let encryptedSecret: Buffer;
  if (ek.type === 'rsa') {
    seed = random(size);
    encryptedSecret = publicEncrypt(
      {
        key: tpmPublicKey(ek),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: hash,
        oaepLabel: Buffer.from('IDENTITY\0'),
      },
      seed,
    );
  } else {
    const ecc = ek.ecc as NonNullable<TpmPublic['ecc']>;
    const curve = eccCurve(ecc.curve);
    const eph = generateKeyPairSync('ec', { namedCurve: curve.jwk });
    const jwk = eph.publicKey.export({ format: 'jwk' });
    const x = Buffer.from(jwk.x as string, 'base64url');
    const y = Buffer.from(jwk.y as string, 'base64url');
    const z = diffieHellman({ privateKey: eph.privateKey, publicKey: tpmPublicKey(ek) });
    seed = kdfe(hash, z, 'IDENTITY', x, ecc.x, size * 8);
    encryptedSecret = Buffer.concat([tpm2b(x), tpm2b(y)]);
  }
  const symKey = kdfa(hash, seed, 'STORAGE', objectName, Buffer.alloc(0), ek.symmetric.keyBits);
  const c = createCipheriv(cipher, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([c.update(tpm2b(credential)), c.final()]);
  const hmacKey = kdfa(hash, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), size * 8);
  const integrity = createHmac(hash, hmacKey).update(encIdentity).update(objectName).digest();
  return { idObject: Buffer.concat([tpm2b(integrity), encIdentity]), encryptedSecret };
}
