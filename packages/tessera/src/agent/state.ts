// What the agent keeps on disk so that a restart resumes without a new join token: its own SVID
// (chain, PEM), its private key (PKCS#8 PEM, 0600) and the trust domain's bundle (SPIFFE bundle
// JSON). Workload keys and SVIDs are never written. Files are replaced atomically.
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseSpiffeBundle, type SpiffeBundle, type TrustDomain } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';
import { pemCertificateBlocks } from '../common/x509.js';

export interface AgentState {
  chain: X509Certificate[];
  key: KeyObject;
  bundle: SpiffeBundle;
}

const SVID = 'agent-svid.pem';
const KEY = 'agent-key.pem';
const BUNDLE = 'bundle.json';

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** The saved state, or undefined when there is none; a damaged state is an error naming the file. */
export function loadAgentState(dir: string, trustDomain: TrustDomain): AgentState | undefined {
  let svidPem: string;
  try {
    svidPem = readFileSync(join(dir, SVID), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TesseraError(
      TesseraErrorCode.KEY_FILE,
      `agent: cannot read ${join(dir, SVID)}: ${(err as Error).message}`,
    );
  }
  const read = <T>(file: string, parse: (text: string) => T): T => {
    try {
      return parse(readFileSync(join(dir, file), 'utf8'));
    } catch (err) {
      throw new TesseraError(
        TesseraErrorCode.KEY_FILE,
        `agent: ${join(dir, file)} is unreadable or damaged (${(err as Error).message}); remove ${dir} and attest the agent again`,
        { cause: err },
      );
    }
  };
  const chain = read(SVID, () => pemCertificateBlocks(svidPem).map((b) => new X509Certificate(b)));
  const key = read(KEY, (t) => createPrivateKey(t));
  const bundle = read(BUNDLE, (t) => parseSpiffeBundle(trustDomain, t));
  if (chain.length === 0 || !chain[0]?.checkPrivateKey(key))
    throw new TesseraError(
      TesseraErrorCode.KEY_FILE,
      `agent: ${join(dir, KEY)} is not the key of ${join(dir, SVID)}; remove ${dir} and attest the agent again`,
    );
  return { chain, key, bundle };
}

/** Where the bundle is saved in `dir`. */
export function savedBundlePath(dir: string): string {
  return join(dir, BUNDLE);
}

/**
 * The saved bundle alone (what the server last sent), or undefined when there is none; whether or
 * not an agent SVID is saved with it. A damaged file is an error naming it.
 */
export function loadSavedBundle(dir: string, trustDomain: TrustDomain): SpiffeBundle | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, BUNDLE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TesseraError(
      TesseraErrorCode.KEY_FILE,
      `agent: cannot read ${join(dir, BUNDLE)}: ${(err as Error).message}`,
    );
  }
  try {
    return parseSpiffeBundle(trustDomain, text);
  } catch (err) {
    throw new TesseraError(
      TesseraErrorCode.KEY_FILE,
      `agent: ${join(dir, BUNDLE)} is damaged (${(err as Error).message})`,
      { cause: err },
    );
  }
}

export function saveAgentSvid(dir: string, chain: readonly X509Certificate[], key: KeyObject): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeAtomic(join(dir, KEY), key.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  writeAtomic(join(dir, SVID), chain.map((c) => c.toString()).join(''), 0o644);
}

export function saveBundle(dir: string, bundle: SpiffeBundle): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeAtomic(join(dir, BUNDLE), bundle.marshal(), 0o644);
}
