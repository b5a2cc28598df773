// The tpm node attestor, by credential activation (the model of the community SPIRE tpm plugins;
// not SPIRE's DevID-based tpm_devid). The agent sends its TPM's endorsement key (EK) public area,
// the EK certificate when the TPM has one, and the public area of an attestation key (AK) it has
// just created under the EK. The server:
//   1. accepts the EK if its hash is in `ek_hashes`, or if its certificate (whose key must be the
//      EK's) is issued by a CA of `ek_ca_path` — either rule suffices when both are configured;
//   2. checks the AK is a restricted signing key that cannot leave its TPM (fixedTPM, fixedParent,
//      sensitiveDataOrigin), and computes its name from its public area;
//   3. sends a fresh random secret made into a credential for (that EK, that AK name)
//      (TPM2_MakeCredential, make-credential.ts) — and, when `pcrs` is set, a nonce to quote;
//   4. accepts only the very secret back: only the TPM holding the EK's private part, with an
//      object of that name (hence those attributes) loaded, can activate the credential. A quote,
//      when asked, must be signed by that AK over the nonce and the PCR values sent.
// Agent ID: …/tessera/agent/tpm/<EK hash>; selectors tpm:ek_hash:<hash>, tpm:ek_ca:fingerprint:<CA
// SHA-256>, tpm:ek_ca:subject:<CA subject> (when the certificate chained), tpm:pcr:sha256:<i>:<hex>.
import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { TrustDomain } from '@tessera/spiffe';
import type { Field } from '../../../common/config-schema.js';
import { TesseraError, TesseraErrorCode } from '../../../common/errors.js';
import {
  encodeTpmChallenge,
  parseTpmPayload,
  parseTpmResponse,
  type TpmResponse,
} from '../../../common/tpm/tpm-wire.js';
import {
  ekHash,
  parseTpmPublic,
  TPMA_OBJECT,
  type TpmPublic,
  tpmName,
  tpmPublicKey,
} from '../../../common/tpm/tpm2-public.js';
import type { Selector } from '../../datastore/types.js';
import type { NodeAttestorPlugin } from '../registry.js';
import { type AttestationResult, agentId, type NodeAttestor } from '../types.js';
import { makeCredential } from './make-credential.js';
import { verifyQuote } from './quote.js';

export interface TpmAttestorConfig {
  /** EK hashes (ekHash: SHA-256 of the EK's SubjectPublicKeyInfo DER, hex) allowed to attest. */
  readonly ekHashes: readonly string[];
  /** CA certificates an EK certificate may be issued by. */
  readonly ekCas: readonly X509Certificate[];
  /** PCRs of the SHA-256 bank to quote (none: no quote). */
  readonly pcrs: readonly number[];
}

function failed(message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.ATTESTATION_FAILED,
    `tpm: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

const oneLine = (dn: string) => dn.replaceAll('\n', ', ');
const fingerprint = (c: X509Certificate) => createHash('sha256').update(c.raw).digest('hex');
const AK_NEEDS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign;

/** The CA of `cas` that issued `cert` (its signature checked), valid at `now`; undefined if none. */
function issuerOf(
  cert: X509Certificate,
  cas: readonly X509Certificate[],
  now: Date,
): X509Certificate | undefined {
  return cas.find(
    (ca) =>
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey) &&
      new Date(ca.validFrom) <= now &&
      now <= new Date(ca.validTo),
  );
}

export class TpmAttestor implements NodeAttestor {
  readonly type = 'tpm';
  readonly #td: TrustDomain;
  readonly #config: TpmAttestorConfig;
  readonly #hashes: ReadonlySet<string>;
  readonly #random: (n: number) => Buffer;

  constructor(
    trustDomain: TrustDomain,
    config: TpmAttestorConfig,
    random: (n: number) => Buffer = randomBytes,
  ) {
    if (config.ekHashes.length === 0 && config.ekCas.length === 0)
      throw new TypeError('tpm: neither EK hashes nor EK CAs to trust');
    this.#td = trustDomain;
    this.#config = config;
    this.#hashes = new Set(config.ekHashes.map((h) => h.toLowerCase()));
    this.#random = random;
  }

  async attest(
    payload: Uint8Array,
    challenge: (bytes: Uint8Array) => Promise<Uint8Array>,
    now: Date,
  ): Promise<AttestationResult> {
    let ek: TpmPublic;
    let ak: TpmPublic;
    let ekCertificate: Buffer | undefined;
    try {
      const p = parseTpmPayload(payload);
      ekCertificate = p.ekCertificate;
      try {
        ek = parseTpmPublic(p.ekPublic);
      } catch (err) {
        throw new Error(`the EK public area: ${(err as Error).message}`, { cause: err });
      }
      try {
        ak = parseTpmPublic(p.akPublic);
      } catch (err) {
        throw new Error(`the AK public area: ${(err as Error).message}`, { cause: err });
      }
    } catch (err) {
      throw failed((err as Error).message, err);
    }
    const ekKey = tpmPublicKey(ek);
    const hash = ekHash(ekKey);
    const selectors: Selector[] = [{ type: 'tpm', value: `ek_hash:${hash}` }];

    // 1. The EK: by its hash, or by its certificate.
    const byHash = this.#hashes.has(hash);
    let byCa = false;
    let why = '';
    if (this.#config.ekCas.length > 0) {
      if (ekCertificate === undefined) why = 'the agent sent no EK certificate';
      else {
        let cert: X509Certificate;
        try {
          cert = new X509Certificate(ekCertificate);
        } catch (err) {
          throw failed(`the EK certificate is not a DER X.509 certificate: ${(err as Error).message}`, err);
        }
        const certKey = cert.publicKey.export({ type: 'spki', format: 'der' });
        if (!certKey.equals(ekKey.export({ type: 'spki', format: 'der' })))
          throw failed(
            `the EK certificate (subject ${oneLine(cert.subject) || '(empty)'}, issuer ${oneLine(cert.issuer)}) is for another key than the EK sent (EK hash ${hash})`,
          );
        const ca = issuerOf(cert, this.#config.ekCas, now);
        const valid = new Date(cert.validFrom) <= now && now <= new Date(cert.validTo);
        if (ca === undefined)
          why = `its EK certificate (issuer ${oneLine(cert.issuer)}) is not issued by a CA of ek_ca_path`;
        else if (!valid)
          why = `its EK certificate is not valid at ${now.toISOString()} (valid ${cert.validFrom} to ${cert.validTo})`;
        else {
          byCa = true;
          selectors.push(
            { type: 'tpm', value: `ek_ca:fingerprint:${fingerprint(ca)}` },
            { type: 'tpm', value: `ek_ca:subject:${oneLine(ca.subject)}` },
          );
        }
      }
    }
    if (!byHash && !byCa) {
      const rules = [
        ...(this.#hashes.size > 0 ? [`EK hash ${hash} is not in ek_hashes`] : []),
        ...(this.#config.ekCas.length > 0 ? [why] : []),
      ];
      throw failed(`the TPM is not trusted: ${rules.join(', and ')}`);
    }

    // 2. The AK: a restricted signing key that never leaves this TPM.
    if ((ak.attributes & AK_NEEDS) !== AK_NEEDS || (ak.attributes & TPMA_OBJECT.decrypt) !== 0)
      throw failed(
        `the AK (attributes 0x${ak.attributes.toString(16).padStart(8, '0')}) is not a restricted signing key with fixedTPM, fixedParent and sensitiveDataOrigin`,
      );
    const akName = tpmName(ak);

    // 3. The challenge.
    const secret = this.#random(32);
    let made: ReturnType<typeof makeCredential>;
    try {
      made = makeCredential(ek, akName, secret, this.#random);
    } catch (err) {
      throw failed(`cannot make a credential for this EK: ${(err as Error).message}`, err);
    }
    const quote = this.#config.pcrs.length > 0;
    const nonce = quote ? this.#random(32) : undefined;
    const answer = await challenge(
      encodeTpmChallenge({
        idObject: made.idObject,
        encryptedSecret: made.encryptedSecret,
        ...(nonce === undefined ? {} : { nonce, pcrs: this.#config.pcrs }),
      }),
    );

    // 4. The answer.
    let response: TpmResponse;
    try {
      response = parseTpmResponse(answer);
    } catch (err) {
      throw failed((err as Error).message, err);
    }
    if (response.secret.length !== secret.length || !timingSafeEqual(response.secret, secret))
      throw failed(
        `the credential activation answer is wrong (EK hash ${hash}): the TPM that answered does not hold this EK with this AK loaded, or the answer is not to this attestation's challenge`,
      );
    if (nonce !== undefined) {
      if (response.quote === undefined)
        throw failed(`the agent sent no quote of PCRs ${this.#config.pcrs.join(',')}`);
      let values: Map<number, Buffer>;
      try {
        values = verifyQuote(
          ak,
          response.quote.attest,
          response.quote.signature,
          nonce,
          this.#config.pcrs,
          response.quote.pcrValues,
        );
      } catch (err) {
        throw failed(`the quote (EK hash ${hash}): ${(err as Error).message}`, err);
      }
      for (const [i, v] of values)
        selectors.push({ type: 'tpm', value: `pcr:sha256:${i}:${v.toString('hex')}` });
    }
    return { spiffeId: agentId(this.#td, 'tpm', hash), selectors };
  }
}

const HEX64 = /^[0-9a-fA-F]{64}$/;

/** Reads the CA certificates of a PEM file, a DER file, or a directory of such files. */
export function readEkCas(path: string): X509Certificate[] {
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .sort()
        .map((f) => join(path, f))
        .filter((f) => statSync(f).isFile())
    : [path];
  const out: X509Certificate[] = [];
  for (const f of files) {
    const data = readFileSync(f);
    const pems = data
      .toString('latin1')
      .match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
    try {
      if (pems !== null) for (const p of pems) out.push(new X509Certificate(p));
      else out.push(new X509Certificate(data));
    } catch (err) {
      throw new Error(`ek_ca_path: ${f} holds an unreadable certificate: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  if (out.length === 0) throw new Error(`ek_ca_path: ${path} holds no certificate`);
  return out;
}

interface TpmSection {
  ek_hashes: string[];
  ek_ca_path?: string;
  pcrs: number[];
}

export const tpmNodeAttestor: NodeAttestorPlugin = {
  name: 'tpm',
  config: {
    kind: 'object',
    fields: {
      ek_hashes: {
        kind: 'list',
        single: true,
        of: {
          kind: 'string',
          check: (v) =>
            HEX64.test(v)
              ? undefined
              : 'must be an EK hash: 64 hex digits, the SHA-256 of the EK public key (tessera agent tpm ek-hash prints it)',
        },
      },
      ek_ca_path: { kind: 'string' },
      pcrs: { kind: 'list', of: { kind: 'int', min: 0, max: 23 } },
    },
  } as Field & { kind: 'object' },
  create(config, ctx) {
    const c = config as TpmSection;
    if (c.ek_hashes.length === 0 && c.ek_ca_path === undefined)
      throw new Error(
        'set ek_hashes (EK hashes allowed to attest), ek_ca_path (EK CA certificates), or both',
      );
    let ekCas: X509Certificate[] = [];
    if (c.ek_ca_path !== undefined) {
      try {
        ekCas = readEkCas(c.ek_ca_path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw code === undefined
          ? err
          : new Error(`ek_ca_path: cannot read ${c.ek_ca_path}: ${code}`, { cause: err });
      }
    }
    ctx.logger.info('tpm node attestor enabled', {
      ek_hashes: c.ek_hashes.length,
      ek_cas: ekCas.length,
      pcrs: c.pcrs.join(','),
    });
    return new TpmAttestor(ctx.trustDomain, { ekHashes: c.ek_hashes, ekCas, pcrs: c.pcrs });
  },
};
