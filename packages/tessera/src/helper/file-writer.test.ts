import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTempDir } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../common/errors.js';
import { checkWritableDir, writeFileAtomic } from './file-writer.js';

const mode = (p: string) => statSync(p).mode & 0o7777;

test('the mode is the configured one after every write, whatever the umask or a chmod in between', async () => {
  const tmp = await makeTempDir('fw-');
  try {
    const f = join(tmp.path, 'key.pem');
    const old = process.umask(0o077);
    try {
      writeFileAtomic(f, 'one', 0o644);
    } finally {
      process.umask(old);
    }
    assert.equal(mode(f), 0o644);
    chmodSync(f, 0o666);
    writeFileAtomic(f, 'two', 0o600);
    assert.equal(mode(f), 0o600);
    chmodSync(f, 0o777);
    writeFileAtomic(f, 'three', 0o600);
    assert.equal(mode(f), 0o600);
    assert.equal(readFileSync(f, 'utf8'), 'three');
    // Replacement is a rename: a new inode each time, and no temporary file left behind.
    const ino = statSync(f).ino;
    writeFileAtomic(f, 'four', 0o600);
    assert.notEqual(statSync(f).ino, ino);
    assert.deepEqual(readdirSync(tmp.path), ['key.pem']);
  } finally {
    await tmp.cleanup();
  }
});

test('a failed write names the file and what to do, and leaves the old file and no temporary', async () => {
  const tmp = await makeTempDir('fw-');
  try {
    const missing = join(tmp.path, 'nope', 'svid.pem');
    assert.throws(
      () => writeFileAtomic(missing, 'x', 0o644),
      (err: unknown) =>
        isTesseraError(err, TesseraErrorCode.HELPER_WRITE) &&
        err.message.includes(join(tmp.path, 'nope')) &&
        /does not exist: create it/.test(err.message),
    );
    assert.match(checkWritableDir(join(tmp.path, 'nope')) ?? '', /does not exist/);
    // A directory where the file should be: rename fails, the temporary is removed.
    mkdirSync(join(tmp.path, 'svid.pem'));
    writeFileSync(join(tmp.path, 'svid.pem', 'inner'), 'keep');
    assert.throws(
      () => writeFileAtomic(join(tmp.path, 'svid.pem'), 'x', 0o644),
      (err: unknown) => isTesseraError(err, TesseraErrorCode.HELPER_WRITE) && /rename/.test(err.message),
    );
    assert.deepEqual(readdirSync(tmp.path), ['svid.pem']);
    assert.equal(checkWritableDir(tmp.path), undefined);
  } finally {
    await tmp.cleanup();
  }
});
