// The agent's TPM, through tpm2-tools (tpm2_createek, tpm2_createak, tpm2_nvread,
// tpm2_activatecredential, tpm2_quote…) run as child processes with TPM2TOOLS_TCTI set. There is no
// maintained TPM 2.0 library for Node (TSS.JS, npm `tss.js`, rests on the unmaintained ffi-napi
// native addon); tpm2-tools is the tpm2-software project's own CLI over its TSS, packaged by every
// distribution, and reaches any TPM its TCTIs do: the kernel's resource manager (device:/dev/tpmrm0),
// a raw device, swtpm, mssim.
//
// Objects are kept as tpm2-tools context files in a private temporary directory; every step ends
// by flushing the transient objects it loaded (tpm2_flushcontext -t), as a resource manager would,
// so a TPM without one (swtpm, /dev/tpm0) does not run out of object slots.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** TCG EK certificate NV indexes (TCG EK Credential Profile §2.2.1.4): RSA 2048, ECC NIST P-256. */
export const EK_CERT_NV_INDEX = { rsa: 0x01c00002, ecc: 0x01c0000a } as const;

export const DEFAULT_TCTI = 'device:/dev/tpmrm0';
const TOOL_TIMEOUT_MS = 30_000;

export interface Tpm2ToolsOptions {
  /** The TCTI string, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`. */
  readonly tcti: string;
  /** Where the tpm2_* binaries are (default: PATH). */
  readonly toolsDir?: string;
}

/** One TPM through tpm2-tools, its objects in a private working directory until `close`. */
export class Tpm2Tools {
  readonly #o: Tpm2ToolsOptions;
  readonly dir: string;

  constructor(o: Tpm2ToolsOptions) {
    this.#o = o;
    this.dir = mkdtempSync(join(tmpdir(), 'tessera-tpm-'));
  }

  /** Runs `tool args…` in the working directory; rejects with the tool's own message on failure. */
  run(tool: string, args: readonly string[]): Promise<string> {
    const file = this.#o.toolsDir === undefined ? tool : join(this.#o.toolsDir, tool);
    return new Promise((resolve, reject) => {
      execFile(
        file,
        [...args],
        {
          cwd: this.dir,
          env: { ...process.env, TPM2TOOLS_TCTI: this.#o.tcti },
          timeout: TOOL_TIMEOUT_MS,
          maxBuffer: 1 << 20,
        },
        (err, stdout, stderr) => {
          if (err === null) return resolve(stdout);
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT')
            return reject(
              new Error(
                `${file} not found: install tpm2-tools (Debian/Ubuntu: apt-get install tpm2-tools; Fedora/RHEL: dnf install tpm2-tools)`,
              ),
            );
          const said = stderr
            .split('\n')
            .map((l) => l.trim())
            .filter((l) => l !== '' && !l.startsWith('WARN'))
            .slice(-3)
            .join('; ');
          reject(
            new Error(
              `${tool} failed (tcti ${this.#o.tcti}${err.killed ? `, killed after ${TOOL_TIMEOUT_MS} ms` : ''}): ${said || err.message}`,
            ),
          );
        },
      );
    });
  }

  /** Flushes every transient object and loaded session of this connection. */
  async flush(): Promise<void> {
    let first: unknown;
    for (const what of ['-t', '-s'])
      await this.run('tpm2_flushcontext', [what]).catch((err: unknown) => {
        first ??= err;
      });
    if (first !== undefined) throw first;
  }

  /** Runs a step, then flushes what it loaded, whether it succeeded or not. */
  async step<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } finally {
      await this.flush().catch(() => undefined);
    }
  }

  /**
   * Creates the EK from the TCG default template (the same key every time: it derives from the
   * endorsement seed) into ek.ctx; returns its TPM2B_PUBLIC.
   */
  async createEk(alg: 'rsa' | 'ecc'): Promise<Buffer> {
    return this.step(async () => {
      await this.run('tpm2_createek', ['-c', 'ek.ctx', '-G', alg, '-u', 'ek.pub']);
      return readFileSync(join(this.dir, 'ek.pub'));
    });
  }

  /**
   * Creates an AK under the EK (restricted signing, fixedTPM, fixedParent, sensitiveDataOrigin: the
   * tpm2_createak template) into ak.ctx; returns its TPM2B_PUBLIC.
   */
  async createAk(alg: 'rsa' | 'ecc'): Promise<Buffer> {
    return this.step(async () => {
      await this.run('tpm2_createak', [
        '-C',
        'ek.ctx',
        '-c',
        'ak.ctx',
        '-G',
        alg,
        '-g',
        'sha256',
        '-s',
        alg === 'rsa' ? 'rsassa' : 'ecdsa',
        '-u',
        'ak.pub',
      ]);
      return readFileSync(join(this.dir, 'ak.pub'));
    });
  }

  /**
   * The EK certificate from its TCG NV index, as DER (NV indexes are often padded past the
   * certificate's end: the DER length decides); undefined when the TPM has none.
   */
  async readEkCertificate(alg: 'rsa' | 'ecc'): Promise<Buffer | undefined> {
    const index = `0x${EK_CERT_NV_INDEX[alg].toString(16)}`;
    try {
      await this.run('tpm2_nvreadpublic', [index]);
    } catch {
      return undefined;
    }
    await this.run('tpm2_nvread', ['-C', 'o', '-o', 'ek.crt', index]);
    return derPrefix(readFileSync(join(this.dir, 'ek.crt')));
  }

  /**
   * TPM2_ActivateCredential with the AK and the EK (authorised by a policy session with
   * PolicySecret on the endorsement hierarchy, as the EK's policy requires); returns the credential.
   */
  async activateCredential(idObject: Uint8Array, encryptedSecret: Uint8Array): Promise<Buffer> {
    // tpm2-tools' credential file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    const header = Buffer.alloc(8);
    header.writeUInt32BE(0xbadcc0de, 0);
    header.writeUInt32BE(1, 4);
    const size = (b: Uint8Array) => {
      const s = Buffer.alloc(2);
      s.writeUInt16BE(b.length);
      return s;
    };
    writeFileSync(
      join(this.dir, 'cred.in'),
      Buffer.concat([header, size(idObject), idObject, size(encryptedSecret), encryptedSecret]),
    );
    return this.step(async () => {
      await this.run('tpm2_startauthsession', ['--policy-session', '-S', 'session.ctx']);
      await this.run('tpm2_policysecret', ['-S', 'session.ctx', '-c', 'e']);
      await this.run('tpm2_activatecredential', [
        '-c',
        'ak.ctx',
        '-C',
        'ek.ctx',
        '-i',
        'cred.in',
        '-o',
        'cred.out',
        '-P',
        'session:session.ctx',
      ]);
      const out = readFileSync(join(this.dir, 'cred.out'));
      rmSync(join(this.dir, 'cred.out'));
      return out;
    });
  }

  /** TPM2_Quote with the AK over SHA-256 PCRs `pcrs`, qualified by `nonce`. */
  async quote(
    nonce: Uint8Array,
    pcrs: readonly number[],
  ): Promise<{ attest: Buffer; signature: Buffer; pcrValues: Buffer[] }> {
    return this.step(async () => {
      await this.run('tpm2_quote', [
        '-c',
        'ak.ctx',
        '-l',
        `sha256:${[...pcrs].sort((a, b) => a - b).join(',')}`,
        '-q',
        Buffer.from(nonce).toString('hex'),
        '-g',
        'sha256',
        '-m',
        'quote.msg',
        '-s',
        'quote.sig',
        '-o',
        'quote.pcrs',
        '-F',
        'values',
      ]);
      const values = readFileSync(join(this.dir, 'quote.pcrs'));
      const pcrValues: Buffer[] = [];
      for (let i = 0; i + 32 <= values.length; i += 32)
        pcrValues.push(Buffer.from(values.subarray(i, i + 32)));
      return {
        attest: readFileSync(join(this.dir, 'quote.msg')),
        signature: readFileSync(join(this.dir, 'quote.sig')),
        pcrValues,
      };
    });
  }

  /** Removes the working directory (idempotent). */
  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The DER element at the start of `b` (a certificate), without what follows it. */
export function derPrefix(b: Buffer): Buffer {
  if (b.length < 2 || b[0] !== 0x30)
    throw new Error('the EK certificate NV index does not hold a DER certificate');
  const first = b[1] as number;
  let len = first;
  let head = 2;
  if (first & 0x80) {
    const n = first & 0x7f;
    if (n < 1 || n > 3 || b.length < 2 + n)
      throw new Error('the EK certificate NV index holds a bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[2 + i] as number);
    head = 2 + n;
  }
  if (head + len > b.length) throw new Error('the EK certificate in its NV index is truncated');
  return Buffer.from(b.subarray(0, head + len));
}
