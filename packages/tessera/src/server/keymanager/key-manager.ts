import type { KeyObject } from 'node:crypto';

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

/** Where the authority's private keys live. One file per plugin: disk.ts, memory.ts. */
export interface KeyManager {
  /** Creates (or replaces) the key named `id`. */
  generateKey(id: string, type: KeyType): Promise<KeyObject>;
  getKey(id: string): Promise<KeyObject | undefined>;
  deleteKey(id: string): Promise<void>;
}

const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Key names become file names: letters, digits, ".", "_" and "-" only. */
export function checkKeyId(id: string): void {
  if (!KEY_ID.test(id))
    throw new TypeError(
      `keymanager: key id ${JSON.stringify(id)} must be 1-128 letters, digits, ".", "_" or "-"`,
    );
}
