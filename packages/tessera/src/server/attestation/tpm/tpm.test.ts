// The tpm attestor's server side without a TPM: MakeCredential opened again by a software
// ActivateCredential written from the spec (RSA and ECC EKs), the public-area parser, and the
// configuration. The same code against a real TPM (swtpm + tpm2-tools) is test/interop/tpm.test.ts.
import assert from 'node:assert/strict';
import {
  constants,
  createDecipheriv,
  createHmac,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
} from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseTrustDomain } from '@tessera/spiffe';
import { makeTempDir, TestCa } from '@tessera/testkit';
import { ConfigError } from '../../../common/config-schema.js';
import { createLogger } from '../../../common/log.js';
import { encodeTpmPayload } from '../../../common/tpm/tpm-wire.js';
import {
  ekHash,
  parseTpmPublic,
  TPMA_OBJECT,
  type TpmPublic,
  TpmReader,
  tpm2b,
  tpmName,
  tpmPublicKey,
} from '../../../common/tpm/tpm2-public.js';
import { parseServerConfig } from '../../config.js';
import type { Datastore } from '../../datastore/types.js';
import { kdfa, kdfe, makeCredential } from './make-credential.js';
import { TpmAttestor, tpmNodeAttestor } from './tpm.js';

const td = parseTrustDomain('example.org');
const EK_ATTRS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.adminWithPolicy |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.decrypt;
const AK_ATTRS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign;

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const u32 = (n: number) => Buffer.from([n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);

/** A TPMT_PUBLIC for a software key, as a TPM would marshal it (AES-128-CFB symmetric for an EK). */
function marshal(key: KeyObject, attributes: number): Buffer {
  const jwk = key.export({ format: 'jwk' });
  const decrypt = (attributes & TPMA_OBJECT.decrypt) !== 0;
  const sym = decrypt ? Buffer.concat([u16(0x0006), u16(128), u16(0x0043)]) : u16(0x0010);
  const head = (type: number) =>
    Buffer.concat([u16(type), u16(0x000b), u32(attributes), tpm2b(Buffer.alloc(0)), sym]);
  if (jwk.kty === 'RSA') {
    const n = Buffer.from(jwk.n as string, 'base64url');
    const scheme = decrypt ? u16(0x0010) : Buffer.concat([u16(0x0014), u16(0x000b)]);
    return Buffer.concat([head(0x0001), scheme, u16(n.length * 8), u32(0), tpm2b(n)]);
  }
  const scheme = decrypt ? u16(0x0010) : Buffer.concat([u16(0x0018), u16(0x000b)]);
  return Buffer.concat([
    head(0x0023),
    scheme,
    u16(0x0003),
    u16(0x0010),
    tpm2b(Buffer.from(jwk.x as string, 'base64url')),
    tpm2b(Buffer.from(jwk.y as string, 'base64url')),
  ]);
}

/** TPM2_ActivateCredential in software, from Part 1 §24 and Part 3 §12.5: returns the credential. */
function activate(
  ek: TpmPublic,
  ekPrivate: KeyObject,
  akName: Buffer,
  idObject: Buffer,
  secret: Buffer,
): Buffer {
  let seed: Buffer;
  if (ek.type === 'rsa') {
    seed = privateDecrypt(
      {
        key: ekPrivate,
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
        oaepLabel: Buffer.from('IDENTITY\0'),
      },
      secret,
    );
  } else {
    const r = new TpmReader(secret, 'TPMS_ECC_POINT');
    const x = r.tpm2b();
    const y = r.tpm2b();
    const eph = tpmPublicKey({ ...ek, ecc: { curve: 0x0003, x, y } });
    const z = diffieHellman({ privateKey: ekPrivate, publicKey: eph });
    seed = kdfe('sha256', z, 'IDENTITY', x, ek.ecc?.x ?? Buffer.alloc(0), 256);
  }
  const r = new TpmReader(idObject, 'TPM2B_ID_OBJECT');
  const integrity = r.tpm2b();
  const encIdentity = r.bytes(r.remaining);
  const hmacKey = kdfa('sha256', seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), 256);
  const expected = createHmac('sha256', hmacKey).update(encIdentity).update(akName).digest();
  if (!expected.equals(integrity)) throw new Error('integrity check failed');
  const symKey = kdfa('sha256', seed, 'STORAGE', akName, Buffer.alloc(0), 128);
  const d = createDecipheriv('aes-128-cfb', symKey, Buffer.alloc(16));
  const plain = Buffer.concat([d.update(encIdentity), d.final()]);
  return new TpmReader(plain, 'TPM2B_DIGEST').tpm2b();
}

describe('tpm MakeCredential (software ActivateCredential from the spec)', () => {
  for (const kind of ['rsa', 'ec'] as const) {
    it(`an ${kind === 'rsa' ? 'RSA 2048' : 'ECC P-256'} EK: the credential opens with the EK's key and the AK's name, not with another name`, () => {
      const ekKeys =
        kind === 'rsa'
          ? generateKeyPairSync('rsa', { modulusLength: 2048 })
          : generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const ek = parseTpmPublic(tpm2b(marshal(ekKeys.publicKey, EK_ATTRS)));
      assert.equal(ekHash(tpmPublicKey(ek)), ekHash(ekKeys.publicKey));
      const ak = parseTpmPublic(
        marshal(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, AK_ATTRS),
      );
      const name = tpmName(ak);
      assert.equal(name.length, 34);
      const credential = Buffer.alloc(32, 0x5a);
      const made = makeCredential(ek, name, credential);
      assert.deepEqual(
        activate(ek, ekKeys.privateKey, name, made.idObject, made.encryptedSecret),
        credential,
      );
      const other = Buffer.from(name);
      other[33] = (other[33] as number) ^ 1;
      assert.throws(
        () => activate(ek, ekKeys.privateKey, other, made.idObject, made.encryptedSecret),
        /integrity/,
      );
      assert.throws(() => makeCredential(ek, name, Buffer.alloc(33)), /at most 32 bytes/);
    });
  }

  it('refuses to make a credential for a key that is not a restricted decryption key', () => {
    const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const signing = parseTpmPublic(marshal(key, AK_ATTRS));
    assert.throws(
      () => makeCredential(signing, Buffer.alloc(34), Buffer.alloc(32)),
      /not a restricted decryption key/,
    );
  });

  it('parses TPMT_PUBLIC strictly: truncated or trailing bytes, other key types are refused', () => {
    const good = marshal(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, AK_ATTRS);
    assert.throws(() => parseTpmPublic(good.subarray(0, good.length - 1)), /TPMT_PUBLIC is truncated/);
    assert.throws(() => parseTpmPublic(Buffer.concat([good, Buffer.from([0])])), /bytes after its end/);
    const keyedHash = Buffer.from(good);
    keyedHash.writeUInt16BE(0x0008, 0);
    assert.throws(() => parseTpmPublic(keyedHash), /key type 0x0008 is not RSA/);
  });
});

describe('tpm attestor', () => {
  it('refuses an EK that no rule trusts, naming the hash, before any challenge', async () => {
    const ekKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ekPublic = marshal(ekKeys.publicKey, EK_ATTRS);
    const akPublic = marshal(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, AK_ATTRS);
    const a = new TpmAttestor(td, { ekHashes: ['0'.repeat(64)], ekCas: [], pcrs: [] });
    await assert.rejects(
      a.attest(encodeTpmPayload({ ekPublic, akPublic }), () => assert.fail('no challenge'), new Date()),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_ATTESTATION_FAILED');
        assert.equal(
          err.message,
          `tpm: the TPM is not trusted: EK hash ${ekHash(ekKeys.publicKey)} is not in ek_hashes`,
        );
        return true;
      },
    );
    await assert.rejects(
      a.attest(Buffer.from('{"version":2}'), () => assert.fail('no challenge'), new Date()),
      /tpm: the payload's version is 2; this server speaks 1/,
    );
  });

  it('server.yaml: ek_hashes must be hashes, and one of ek_hashes / ek_ca_path is needed; ek_ca_path is read at start', async () => {
    assert.throws(
      () => parseServerConfig('trust_domain: example.org\nnode_attestors:\n  tpm:\n    ek_hashes: [abc]\n'),
      (err: ConfigError) => {
        assert.ok(err instanceof ConfigError);
        assert.match(
          err.message,
          /:4: node_attestors\.tpm\.ek_hashes\[0\]: must be an EK hash: 64 hex digits/,
        );
        return true;
      },
    );
    const ctx = {
      trustDomain: td,
      datastore: {} as Datastore,
      logger: createLogger({ level: 'error', write: () => undefined }),
      now: () => new Date(),
    };
    const section = (yaml: string) =>
      (
        parseServerConfig(`trust_domain: example.org\nnode_attestors:\n  tpm: ${yaml}\n`)
          .node_attestors as unknown as Record<string, unknown>
      ).tpm;
    assert.throws(
      () => tpmNodeAttestor.create(section('{}'), ctx),
      /set ek_hashes .*, ek_ca_path .*, or both/,
    );
    const tmp = await makeTempDir('tpm-unit-');
    try {
      assert.throws(
        () => tpmNodeAttestor.create(section(`{ ek_ca_path: ${tmp.path}/none }`), ctx),
        /ek_ca_path: cannot read .*none: ENOENT/,
      );
      writeFileSync(join(tmp.path, 'junk.pem'), 'not a certificate');
      assert.throws(
        () => tpmNodeAttestor.create(section(`{ ek_ca_path: ${tmp.path} }`), ctx),
        /junk\.pem holds an unreadable certificate/,
      );
      writeFileSync(join(tmp.path, 'junk.pem'), TestCa.create({ trustDomain: 'ek.example' }).rootPem());
      assert.equal(
        (await tpmNodeAttestor.create(section(`{ ek_ca_path: ${tmp.path}, pcrs: [7] }`), ctx)).type,
        'tpm',
      );
    } finally {
      await tmp.cleanup();
    }
  });
});
