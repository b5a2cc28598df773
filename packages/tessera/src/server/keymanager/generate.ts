import { generateKeyPair, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { KeyType } from './key-manager.js';

const gen = promisify(generateKeyPair);

function params(type: KeyType): ['ec', { namedCurve: string }] | ['rsa', { modulusLength: number }] {
  switch (type) {
    case 'ec-p256':
      return ['ec', { namedCurve: 'P-256' }];
    case 'ec-p384':
      return ['ec', { namedCurve: 'P-384' }];
    case 'rsa-2048':
      return ['rsa', { modulusLength: 2048 }];
  }
}

/** A key pair of the configured type, synchronously (tests and ephemeral keys). */
export function generateKeyPairOfType(type: KeyType): { privateKey: KeyObject; publicKey: KeyObject } {
  const [alg, opts] = params(type);
  return alg === 'ec'
    ? generateKeyPairSync('ec', opts as { namedCurve: string })
    : generateKeyPairSync('rsa', opts as { modulusLength: number });
}

/** A private key of the configured type, off the main thread (RSA generation takes tens of ms). */
export async function generatePrivateKey(type: KeyType): Promise<KeyObject> {
  const [alg, opts] = params(type);
  const pair =
    alg === 'ec'
      ? await gen('ec', opts as { namedCurve: string })
      : await gen('rsa', opts as { modulusLength: number });
  return pair.privateKey;
}
