// TPM 2.0 public areas (TPMT_PUBLIC, TPM 2.0 Part 2 §12.2.4) as the tpm node attestor needs them:
// parsed from the bytes a TPM (or tpm2-tools) produces, turned into a node:crypto key, and named
// (Part 1 §16: nameAlg || H_nameAlg(TPMT_PUBLIC)). Parsing only; every byte is bounds-checked, and
// anything the attestor does not use (keyed-hash and symmetric objects) is refused.
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';

export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** TPMA_OBJECT bits (Part 2 §8.3). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

const HASHES: Record<number, { name: string; size: number }> = {
  [TPM_ALG.SHA1]: { name: 'sha1', size: 20 },
  [TPM_ALG.SHA256]: { name: 'sha256', size: 32 },
  [TPM_ALG.SHA384]: { name: 'sha384', size: 48 },
  [TPM_ALG.SHA512]: { name: 'sha512', size: 64 },
};

/** node:crypto's name and the digest size of a TPM hash algorithm; throws for any other. */
export function tpmHash(alg: number): { name: string; size: number } {
  const h = HASHES[alg];
  if (h === undefined)
    throw new Error(`hash algorithm 0x${hex4(alg)} is not one of sha1, sha256, sha384, sha512`);
  return h;
}

/** TPM_ECC_CURVE → node:crypto / JWK curve names. */
const CURVES: Record<number, { jwk: string; size: number }> = {
  3: { jwk: 'P-256', size: 32 },
  4: { jwk: 'P-384', size: 48 },
  5: { jwk: 'P-521', size: 66 },
};

export interface TpmSymmetric {
  /** TPM_ALG_NULL when the object has none. */
  readonly algorithm: number;
  readonly keyBits: number;
  readonly mode: number;
}

export interface TpmPublic {
  readonly type: 'rsa' | 'ecc';
  readonly nameAlg: number;
  readonly attributes: number;
  readonly authPolicy: Buffer;
  readonly symmetric: TpmSymmetric;
  /** The signing or encryption scheme (TPM_ALG_NULL for none) and its hash, if it has one. */
  readonly scheme: { readonly algorithm: number; readonly hash?: number };
  /** RSA: key size in bits; ECC: the TPM_ECC_CURVE. */
  readonly rsa?: { readonly bits: number; readonly exponent: number; readonly modulus: Buffer };
  readonly ecc?: { readonly curve: number; readonly x: Buffer; readonly y: Buffer };
  /** The marshalled TPMT_PUBLIC, exactly as parsed (what the name is computed over). */
  readonly bytes: Buffer;
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, '0');
}

/** A bounds-checked big-endian reader of TPM marshalled structures. */
export class TpmReader {
  #off = 0;
  readonly #b: Buffer;
  readonly #what: string;

  constructor(b: Uint8Array, what: string) {
    this.#b = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    this.#what = what;
  }

  get offset(): number {
    return this.#off;
  }

  get remaining(): number {
    return this.#b.length - this.#off;
  }

  #need(n: number): void {
    if (this.#off + n > this.#b.length)
      throw new Error(`${this.#what} is truncated (needs ${n} more bytes at offset ${this.#off})`);
  }

  u8(): number {
    this.#need(1);
    return this.#b.readUInt8(this.#off++);
  }

  u16(): number {
    this.#need(2);
    const v = this.#b.readUInt16BE(this.#off);
    this.#off += 2;
    return v;
  }

  u32(): number {
    this.#need(4);
    const v = this.#b.readUInt32BE(this.#off);
    this.#off += 4;
    return v;
  }

  u64(): bigint {
    this.#need(8);
    const v = this.#b.readBigUInt64BE(this.#off);
    this.#off += 8;
    return v;
  }

  bytes(n: number): Buffer {
    this.#need(n);
    const v = Buffer.from(this.#b.subarray(this.#off, this.#off + n));
    this.#off += n;
    return v;
  }

  /** A TPM2B_*: a 16-bit size, then that many bytes. */
  tpm2b(): Buffer {
    return this.bytes(this.u16());
  }

  end(): void {
    if (this.remaining !== 0) throw new Error(`${this.#what} has ${this.remaining} bytes after its end`);
  }
}

/** A TPM2B: the 16-bit big-endian size, then the bytes. */
export function tpm2b(content: Uint8Array): Buffer {
  if (content.length > 0xffff) throw new RangeError('a TPM2B holds at most 65535 bytes');
  const size = Buffer.alloc(2);
  size.writeUInt16BE(content.length);
  return Buffer.concat([size, content]);
}

function symmetricOf(r: TpmReader): TpmSymmetric {
  const algorithm = r.u16();
  if (algorithm === TPM_ALG.NULL) return { algorithm, keyBits: 0, mode: TPM_ALG.NULL };
  return { algorithm, keyBits: r.u16(), mode: r.u16() };
}

/**
 * Parses a TPMT_PUBLIC of an RSA or ECC key. A TPM2B_PUBLIC (the 16-bit size first, as tpm2-tools
 * writes `-u` files) is accepted too: its size is checked and dropped.
 */
export function parseTpmPublic(input: Uint8Array): TpmPublic {
  let b = Buffer.from(input);
  if (b.length >= 2 && b.readUInt16BE(0) === b.length - 2) b = b.subarray(2);
  const r = new TpmReader(b, 'TPMT_PUBLIC');
  const typeAlg = r.u16();
  if (typeAlg !== TPM_ALG.RSA && typeAlg !== TPM_ALG.ECC)
    throw new Error(`TPMT_PUBLIC: key type 0x${hex4(typeAlg)} is not RSA (0x0001) or ECC (0x0023)`);
  const nameAlg = r.u16();
  tpmHash(nameAlg);
  const attributes = r.u32();
  const authPolicy = r.tpm2b();
  const symmetric = symmetricOf(r);
  const schemeAlg = r.u16();
  let scheme: TpmPublic['scheme'] = { algorithm: schemeAlg };
  if (schemeAlg !== TPM_ALG.NULL && schemeAlg !== TPM_ALG.RSAES) {
    scheme = { algorithm: schemeAlg, hash: r.u16() };
    if (schemeAlg === TPM_ALG.ECDAA) r.u16(); // count
  }
  if (typeAlg === TPM_ALG.RSA) {
    const bits = r.u16();
    const exponent = r.u32() || 65537;
    const modulus = r.tpm2b();
    r.end();
    if (modulus.length * 8 !== bits)
      throw new Error(`TPMT_PUBLIC: RSA modulus of ${modulus.length * 8} bits, declared ${bits}`);
    return {
      type: 'rsa',
      nameAlg,
      attributes,
      authPolicy,
      symmetric,
      scheme,
      rsa: { bits, exponent, modulus },
      bytes: Buffer.from(b),
    };
  }
  const curve = r.u16();
  if (CURVES[curve] === undefined)
    throw new Error(`TPMT_PUBLIC: ECC curve 0x${hex4(curve)} is not NIST P-256, P-384 or P-521`);
  const kdf = r.u16();
  if (kdf !== TPM_ALG.NULL) r.u16();
  const x = r.tpm2b();
  const y = r.tpm2b();
  r.end();
  return {
    type: 'ecc',
    nameAlg,
    attributes,
    authPolicy,
    symmetric,
    scheme,
    ecc: { curve, x, y },
    bytes: Buffer.from(b),
  };
}

/** The object's name: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC). */
export function tpmName(pub: TpmPublic): Buffer {
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(pub.nameAlg);
  return Buffer.concat([alg, createHash(tpmHash(pub.nameAlg).name).update(pub.bytes).digest()]);
}

/** The byte size of a coordinate on a TPM_ECC_CURVE, and its JWK name. */
export function eccCurve(curve: number): { jwk: string; size: number } {
  const c = CURVES[curve];
  if (c === undefined) throw new Error(`ECC curve 0x${hex4(curve)} is not NIST P-256, P-384 or P-521`);
  return c;
}

function pad(b: Buffer, size: number): Buffer {
  if (b.length > size) throw new Error(`ECC coordinate of ${b.length} bytes; the curve's are ${size}`);
  return Buffer.concat([Buffer.alloc(size - b.length), b]);
}

/** The public key as a node:crypto KeyObject. */
export function tpmPublicKey(pub: TpmPublic): KeyObject {
  if (pub.rsa !== undefined) {
    const e = Buffer.alloc(4);
    e.writeUInt32BE(pub.rsa.exponent);
    let i = 0;
    while (i < 3 && e[i] === 0) i++;
    return createPublicKey({
      key: { kty: 'RSA', n: pub.rsa.modulus.toString('base64url'), e: e.subarray(i).toString('base64url') },
      format: 'jwk',
    });
  }
  const ecc = pub.ecc as NonNullable<TpmPublic['ecc']>;
  const c = eccCurve(ecc.curve);
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: c.jwk,
      x: pad(ecc.x, c.size).toString('base64url'),
      y: pad(ecc.y, c.size).toString('base64url'),
    },
    format: 'jwk',
  });
}

/**
 * The EK hash Tessera names a TPM by: SHA-256 of the EK public key's DER SubjectPublicKeyInfo
 * (what `openssl pkey -pubin -outform DER` prints for the EK's PEM), lower-case hex. The same as
 * the community SPIRE tpm plugin's `get_tpm_pubhash`.
 */
export function ekHash(key: KeyObject): string {
  return createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('hex');
}
