import assert from 'node:assert/strict';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { DiskKeyManager } from './disk.js';
import { MemoryKeyManager } from './memory.js';

describe('key managers', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('km-');
  });
  after(() => tmp.cleanup());

  it('disk: keys survive a new manager instance, files 0600 in a 0700 directory', async () => {
    const dir = join(tmp.path, 'keys');
    const a = new DiskKeyManager(dir);
    const key = await a.generateKey('x509-CA-A', 'ec-p384');
    assert.equal(statSync(join(dir, 'x509-CA-A.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    const again = await new DiskKeyManager(dir).getKey('x509-CA-A');
    assert.ok(again?.equals(key));
    assert.equal(again?.asymmetricKeyDetails?.namedCurve, 'secp384r1');
    assert.equal(await a.getKey('missing'), undefined);
    await a.deleteKey('x509-CA-A');
    assert.equal(await a.getKey('x509-CA-A'), undefined);
  });

  it('disk: a corrupt or world-readable key file is one clear error naming the file', async () => {
    const dir = join(tmp.path, 'bad');
    const m = new DiskKeyManager(dir);
    await m.generateKey('k', 'ec-p256');
    writeFileSync(join(dir, 'k.pem'), '-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n', {
      mode: 0o600,
    });
    await assert.rejects(
      m.getKey('k'),
      (e: unknown) =>
        isTesseraError(e, TesseraErrorCode.KEY_FILE) &&
        /k\.pem is not a readable private key/.test(e.message),
    );
    await m.generateKey('open', 'ec-p256');
    chmodSync(join(dir, 'open.pem'), 0o644);
    await assert.rejects(
      m.getKey('open'),
      (e: unknown) => isTesseraError(e, TesseraErrorCode.KEY_FILE) && /chmod 600/.test(e.message),
    );
  });

  it('key ids cannot escape the directory', async () => {
    const m = new DiskKeyManager(join(tmp.path, 'ids'));
    await assert.rejects(m.generateKey('../etc/passwd', 'ec-p256'), TypeError);
    await assert.rejects(new MemoryKeyManager().generateKey('a/b', 'ec-p256'), TypeError);
  });

  it('memory: generate, get, delete', async () => {
    const m = new MemoryKeyManager();
    const k = await m.generateKey('jwt-A', 'rsa-2048');
    assert.ok((await m.getKey('jwt-A'))?.equals(k));
    await m.deleteKey('jwt-A');
    assert.equal(await m.getKey('jwt-A'), undefined);
  });
});
