import { parseArgs } from 'node:util';
import { DEFAULT_TCTI, Tpm2Tools } from '../agent/node-attestation/tpm2-tools.js';
import { ekHash, parseTpmPublic, tpmPublicKey } from '../common/tpm/tpm2-public.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera agent tpm ek-hash [--tcti <tcti>] [--ek-algorithm rsa|ecc]

  ek-hash   print this machine's EK hash, the value for the server's node_attestors.tpm.ek_hashes
            (SHA-256 of the EK public key's DER SubjectPublicKeyInfo, hex); runs tpm2-tools
            --tcti          default ${DEFAULT_TCTI} (e.g. swtpm:host=127.0.0.1,port=2321)
            --ek-algorithm  default rsa`;

/** `tessera agent tpm …` */
export async function agentTpmCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'ek-hash') {
    io.err(sub === undefined ? USAGE : `tessera agent tpm: unknown command "${sub}"\n\n${USAGE}`);
    return 2;
  }
  let values: { tcti?: string; 'ek-algorithm'?: string };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { tcti: { type: 'string' }, 'ek-algorithm': { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    io.err(`tessera agent tpm ek-hash: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const alg = values['ek-algorithm'] ?? 'rsa';
  if (alg !== 'rsa' && alg !== 'ecc') {
    io.err(`tessera agent tpm ek-hash: --ek-algorithm must be rsa or ecc; got "${alg}"`);
    return 2;
  }
  const tpm = new Tpm2Tools({ tcti: values.tcti ?? DEFAULT_TCTI });
  try {
    io.out(ekHash(tpmPublicKey(parseTpmPublic(await tpm.createEk(alg)))));
    return 0;
  } catch (err) {
    io.err(`tessera agent tpm ek-hash: ${(err as Error).message}`);
    return 1;
  } finally {
    tpm.close();
  }
}
