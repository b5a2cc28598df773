import { createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { generatePrivateKey } from './generate.js';
import { checkKeyId, type KeyManager, type KeyType } from './key-manager.js';

/**
 * Keys as PKCS#8 PEM files, mode 0600, in a 0700 directory. Writes are atomic (temp file, fsync,
 * rename), so a crash leaves either the old key or the new one, never half a key.
 */
export class DiskKeyManager implements KeyManager {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  #path(id: string): string {
    checkKeyId(id);
    return join(this.dir, `${id}.pem`);
  }

  async generateKey(id: string, type: KeyType): Promise<KeyObject> {
    const path = this.#path(id);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const key = await generatePrivateKey(type);
    const tmp = `${path}.tmp-${process.pid}`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(key.export({ type: 'pkcs8', format: 'pem' }));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    return key;
  }

  async getKey(id: string): Promise<KeyObject | undefined> {
    const path = this.#path(id);
    let text: string;
    try {
      const st = await stat(path);
      if ((st.mode & 0o077) !== 0) {
        throw new TesseraError(
          TesseraErrorCode.KEY_FILE,
          `keymanager: ${path} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${path}`,
        );
      }
      const fh = await open(path, 'r');
      try {
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (err instanceof TesseraError) throw err;
      throw new TesseraError(
        TesseraErrorCode.KEY_FILE,
        `keymanager: cannot read ${path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    try {
      return createPrivateKey({ key: text, format: 'pem' });
    } catch (err) {
      throw new TesseraError(
        TesseraErrorCode.KEY_FILE,
        `keymanager: ${path} is not a readable private key (corrupt or truncated); restore it from backup, or delete it to rotate to a new key`,
        { cause: err },
      );
    }
  }

  async deleteKey(id: string): Promise<void> {
    await rm(this.#path(id), { force: true });
  }
}
