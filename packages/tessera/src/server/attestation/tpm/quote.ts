// A TPM2_Quote checked outside the TPM: the TPMS_ATTEST (Part 2 §10.12.12) signed by the AK
// (TPMT_SIGNATURE, Part 2 §11.3.4), qualified by the server's nonce, over the SHA-256 bank's PCRs
// the server asked for, whose values the agent sends and the quote's PCR digest vouches for.
import { constants, createHash, timingSafeEqual, verify } from 'node:crypto';
import {
  eccCurve,
  TPM_ALG,
  type TpmPublic,
  TpmReader,
  tpmHash,
  tpmPublicKey,
} from '../../../common/tpm/tpm2-public.js';

const TPM_GENERATED_VALUE = 0xff544347;
const TPM_ST_ATTEST_QUOTE = 0x8018;

interface ParsedQuote {
  readonly extraData: Buffer;
  readonly selections: readonly { hash: number; pcrs: number[] }[];
  readonly pcrDigest: Buffer;
}

function parseQuoteAttest(attest: Uint8Array): ParsedQuote {
  const r = new TpmReader(attest, 'the quote (TPMS_ATTEST)');
  if (r.u32() !== TPM_GENERATED_VALUE)
    throw new Error('the quote is not a TPM-generated structure (bad magic)');
  const type = r.u16();
  if (type !== TPM_ST_ATTEST_QUOTE)
    throw new Error(`the attestation is of type 0x${type.toString(16)}, not a quote`);
  r.tpm2b(); // qualifiedSigner
  const extraData = r.tpm2b();
  r.u64(); // clock
  r.u32(); // resetCount
  r.u32(); // restartCount
  r.u8(); // safe
  r.u64(); // firmwareVersion
  const count = r.u32();
  if (count > 16) throw new Error(`the quote selects ${count} PCR banks`);
  const selections: { hash: number; pcrs: number[] }[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16();
    const bitmap = r.bytes(r.u8());
    const pcrs: number[] = [];
    bitmap.forEach((byte, j) => {
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(j * 8 + bit);
    });
    selections.push({ hash, pcrs });
  }
  const pcrDigest = r.tpm2b();
  r.end();
  return { extraData, selections, pcrDigest };
}

/** Verifies the signature; returns the hash it was made with (the quote's PCR digest uses it too). */
function verifySignature(ak: TpmPublic, message: Uint8Array, signature: Uint8Array): string {
  const r = new TpmReader(signature, 'the quote signature (TPMT_SIGNATURE)');
  const alg = r.u16();
  const hash = tpmHash(r.u16()).name;
  const key = tpmPublicKey(ak);
  let ok: boolean;
  if (alg === TPM_ALG.RSASSA || alg === TPM_ALG.RSAPSS) {
    const sig = r.tpm2b();
    r.end();
    ok = verify(
      hash,
      message,
      alg === TPM_ALG.RSASSA
        ? key
        : { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
      sig,
    );
  } else if (alg === TPM_ALG.ECDSA) {
    if (ak.ecc === undefined) throw new Error('the quote is signed with ECDSA but the AK is an RSA key');
    const n = eccCurve(ak.ecc.curve).size;
    const rr = r.tpm2b();
    const ss = r.tpm2b();
    r.end();
    const fix = (v: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, n - v.length)), v]);
    ok = verify(hash, message, { key, dsaEncoding: 'ieee-p1363' }, Buffer.concat([fix(rr), fix(ss)]));
  } else {
    throw new Error(
      `the quote is signed with scheme 0x${alg.toString(16)}; RSASSA, RSAPSS and ECDSA are accepted`,
    );
  }
  if (!ok) throw new Error('the quote is not signed by the AK');
  return hash;
}

/**
 * Checks a quote: signed by `ak`, qualified by `nonce`, over exactly the SHA-256 PCRs `pcrs`, with
 * `values` matching its PCR digest. Returns the values by PCR index. Throws saying what failed.
 */
export function verifyQuote(
  ak: TpmPublic,
  attest: Uint8Array,
  signature: Uint8Array,
  nonce: Uint8Array,
  pcrs: readonly number[],
  values: readonly Buffer[],
): Map<number, Buffer> {
  const hash = verifySignature(ak, attest, signature);
  const q = parseQuoteAttest(attest);
  if (q.extraData.length !== nonce.length || !timingSafeEqual(q.extraData, nonce))
    throw new Error("the quote is not over this attestation's nonce (a replayed or stale quote)");
  const want = [...new Set(pcrs)].sort((a, b) => a - b);
  const sel = q.selections.filter((s) => s.pcrs.length > 0);
  if (sel.length !== 1 || sel[0]?.hash !== TPM_ALG.SHA256 || sel[0].pcrs.join(',') !== want.join(','))
    throw new Error(
      `the quote covers ${sel.map((s) => `0x${s.hash.toString(16)}:${s.pcrs.join(',')}`).join(' ') || 'no PCR'}; asked for sha256:${want.join(',')}`,
    );
  if (values.length !== want.length || values.some((v) => v.length !== 32))
    throw new Error(`the response holds ${values.length} PCR values; expected ${want.length} SHA-256 values`);
  const digest = createHash(hash).update(Buffer.concat(values)).digest();
  if (!digest.equals(q.pcrDigest))
    throw new Error('the PCR values sent do not match the digest the TPM quoted');
  return new Map(want.map((i, k) => [i, values[k] as Buffer]));
}
