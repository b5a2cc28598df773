import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TempDir {
  readonly path: string;
  cleanup(): Promise<void>;
}

/**
 * A fresh private directory under the OS temp dir (mode 0700 from mkdtemp). Keep the prefix short:
 * Unix socket paths inside it must stay under the 107-byte sun_path limit.
 */
export async function makeTempDir(prefix = 'tessera-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    cleanup: () => rm(path, { recursive: true, force: true }),
  };
}
