// The agent's side of the tpm node attestor (server/attestation/tpm/tpm.ts): reads the TPM's EK
// (and its certificate from NV, or from ek_certificate_path), creates a fresh AK under it, sends
// both public areas; answers the server's challenge with TPM2_ActivateCredential (and TPM2_Quote
// when asked). The TPM is reached through tpm2-tools (tpm2-tools.ts) and the configured TCTI.
import { readFileSync } from 'node:fs';
import type { Field } from '../../common/config-schema.js';
import {
  encodeTpmPayload,
  encodeTpmResponse,
  parseTpmChallenge,
  type TpmQuote,
} from '../../common/tpm/tpm-wire.js';
import type { AgentNodeAttestorPlugin, NodeEvidence } from './registry.js';
import { DEFAULT_TCTI, derPrefix, Tpm2Tools } from './tpm2-tools.js';

export interface AgentTpmConfig {
  tcti: string;
  ek_algorithm: 'rsa' | 'ecc';
  ek_certificate_path?: string;
  tools_dir?: string;
}

/** How long the AK's context files are kept for the server's challenge, if none comes. */
const AK_KEPT_MS = 120_000;

/** Working directories not yet removed: removed at exit at the latest (one listener for all). */
const open = new Set<Tpm2Tools>();
let exitHook = false;

function track(tpm: Tpm2Tools): () => void {
  open.add(tpm);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const t of open) t.close();
    });
  }
  const timer = setTimeout(() => done(), AK_KEPT_MS);
  timer.unref();
  const done = () => {
    clearTimeout(timer);
    open.delete(tpm);
    tpm.close();
  };
  return done;
}

/** Reads a certificate file (PEM or DER) as DER. */
function readCertificate(path: string): Buffer {
  const data = readFileSync(path);
  const pem = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(data.toString('latin1'));
  return pem === null ? derPrefix(data) : Buffer.from((pem[1] as string).replace(/\s+/g, ''), 'base64');
}

/** The evidence of the TPM `config` names: the EK, its certificate, a new AK, and how to answer. */
export async function tpmEvidence(
  config: AgentTpmConfig,
  logger?: { info(msg: string, fields?: Record<string, unknown>): void },
): Promise<NodeEvidence> {
  const tpm = new Tpm2Tools({
    tcti: config.tcti,
    ...(config.tools_dir === undefined ? {} : { toolsDir: config.tools_dir }),
  });
  const done = track(tpm);
  try {
    const ekPublic = await tpm.createEk(config.ek_algorithm);
    let ekCertificate: Buffer | undefined;
    if (config.ek_certificate_path !== undefined) {
      try {
        ekCertificate = readCertificate(config.ek_certificate_path);
      } catch (err) {
        throw new Error(
          `ek_certificate_path: cannot read ${config.ek_certificate_path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          { cause: err },
        );
      }
    } else {
      ekCertificate = await tpm.readEkCertificate(config.ek_algorithm);
      if (ekCertificate === undefined)
        logger?.info('tpm: the TPM holds no EK certificate in NV; attesting with the EK alone', {
          tcti: config.tcti,
        });
    }
    const akPublic = await tpm.createAk(config.ek_algorithm);
    return {
      type: 'tpm',
      payload: encodeTpmPayload({
        ekPublic,
        ...(ekCertificate === undefined ? {} : { ekCertificate }),
        akPublic,
      }),
      // The AK's files stay until AK_KEPT_MS or exit: the same evidence may be offered to the
      // next server when one goes away mid-attestation.
      respond: async (bytes) => {
        const c = parseTpmChallenge(bytes);
        const secret = await tpm.activateCredential(c.idObject, c.encryptedSecret);
        let quote: TpmQuote | undefined;
        if (c.nonce !== undefined) quote = await tpm.quote(c.nonce, c.pcrs ?? []);
        return encodeTpmResponse({ secret, ...(quote === undefined ? {} : { quote }) });
      },
    };
  } catch (err) {
    done();
    throw err;
  }
}

export const tpmAgentNodeAttestor: AgentNodeAttestorPlugin = {
  name: 'tpm',
  config: {
    kind: 'object',
    fields: {
      tcti: { kind: 'string', default: DEFAULT_TCTI },
      ek_algorithm: { kind: 'enum', values: ['rsa', 'ecc'], default: 'rsa' },
      ek_certificate_path: { kind: 'string' },
      tools_dir: { kind: 'string' },
    },
  } as Field & { kind: 'object' },
  evidence(config, ctx) {
    return tpmEvidence(config as AgentTpmConfig, ctx.logger);
  },
};
