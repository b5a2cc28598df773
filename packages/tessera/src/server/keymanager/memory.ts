import type { KeyObject } from 'node:crypto';
import { generatePrivateKey } from './generate.js';
import { checkKeyId, type KeyManager, type KeyType } from './key-manager.js';

/** Keys in memory only: lost on restart, so every start creates a new CA. For tests and ephemeral servers. */
export class MemoryKeyManager implements KeyManager {
  readonly #keys = new Map<string, KeyObject>();

  async generateKey(id: string, type: KeyType): Promise<KeyObject> {
    checkKeyId(id);
    const key = await generatePrivateKey(type);
    this.#keys.set(id, key);
    return key;
  }

  async getKey(id: string): Promise<KeyObject | undefined> {
    return this.#keys.get(id);
  }

  async deleteKey(id: string): Promise<void> {
    this.#keys.delete(id);
  }
}
