import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { KeyType } from './key-manager.js';

const gen = promisify(generateKeyPair);

export async function generatePrivateKey(type: KeyType): Promise<KeyObject> {
  switch (type) {
    case 'ec-p256':
      return (await gen('ec', { namedCurve: 'P-256' })).privateKey;
    case 'ec-p384':
      return (await gen('ec', { namedCurve: 'P-384' })).privateKey;
    case 'rsa-2048':
      return (await gen('rsa', { modulusLength: 2048 })).privateKey;
  }
}
