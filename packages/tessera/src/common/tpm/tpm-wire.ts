// What the tpm node attestor's agent and server send each other: JSON objects (UTF-8) whose binary
// fields are base64, each TPM structure as the TPM marshals it. One round trip:
//   payload    {version: 1, ek_public, ek_certificate?, ak_public}          agent → server
//   challenge  {id_object, encrypted_secret, nonce?, pcrs?}                 server → agent
//   response   {secret, quote?: {attest, signature, pcr_values[]}}          agent → server
// ek_public / ak_public are TPMT_PUBLIC; id_object / encrypted_secret are the contents of the
// TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET TPM2_MakeCredential returns; attest is a TPMS_ATTEST,
// signature a TPMT_SIGNATURE; pcr_values are the SHA-256 bank's values of `pcrs`, in that order.

export interface TpmPayload {
  readonly ekPublic: Buffer;
  readonly ekCertificate?: Buffer;
  readonly akPublic: Buffer;
}

export interface TpmChallenge {
  readonly idObject: Buffer;
  readonly encryptedSecret: Buffer;
  /** Present when the server wants a quote over `pcrs` (SHA-256 bank) qualified by this nonce. */
  readonly nonce?: Buffer;
  readonly pcrs?: readonly number[];
}

export interface TpmQuote {
  readonly attest: Buffer;
  readonly signature: Buffer;
  readonly pcrValues: readonly Buffer[];
}

export interface TpmResponse {
  readonly secret: Buffer;
  readonly quote?: TpmQuote;
}

/** Largest message either side accepts (EK certificates are a few KiB). */
export const TPM_MESSAGE_MAX = 64 * 1024;

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

function json(bytes: Uint8Array, what: string): Record<string, unknown> {
  if (bytes.length > TPM_MESSAGE_MAX)
    throw new Error(`the ${what} is ${bytes.length} bytes; at most ${TPM_MESSAGE_MAX}`);
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new Error(`the ${what} is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`the ${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function bin(o: Record<string, unknown>, key: string, what: string): Buffer {
  const v = o[key];
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v))
    throw new Error(`the ${what}'s ${key} is not a base64 string`);
  return Buffer.from(v, 'base64');
}

function optionalBin(o: Record<string, unknown>, key: string, what: string): Buffer | undefined {
  return o[key] === undefined ? undefined : bin(o, key, what);
}

export function encodeTpmPayload(p: TpmPayload): Buffer {
  return Buffer.from(
    JSON.stringify({
      version: 1,
      ek_public: b64(p.ekPublic),
      ...(p.ekCertificate === undefined ? {} : { ek_certificate: b64(p.ekCertificate) }),
      ak_public: b64(p.akPublic),
    }),
  );
}

export function parseTpmPayload(bytes: Uint8Array): TpmPayload {
  const o = json(bytes, 'payload');
  if (o.version !== 1)
    throw new Error(`the payload's version is ${JSON.stringify(o.version)}; this server speaks 1`);
  const ekCertificate = optionalBin(o, 'ek_certificate', 'payload');
  return {
    ekPublic: bin(o, 'ek_public', 'payload'),
    ...(ekCertificate === undefined ? {} : { ekCertificate }),
    akPublic: bin(o, 'ak_public', 'payload'),
  };
}

export function encodeTpmChallenge(c: TpmChallenge): Buffer {
  return Buffer.from(
    JSON.stringify({
      id_object: b64(c.idObject),
      encrypted_secret: b64(c.encryptedSecret),
      ...(c.nonce === undefined ? {} : { nonce: b64(c.nonce), pcrs: c.pcrs ?? [] }),
    }),
  );
}

export function parseTpmChallenge(bytes: Uint8Array): TpmChallenge {
  const o = json(bytes, 'challenge');
  const nonce = optionalBin(o, 'nonce', 'challenge');
  const pcrs = o.pcrs;
  if (
    nonce !== undefined &&
    (!Array.isArray(pcrs) || !pcrs.every((i) => Number.isInteger(i) && i >= 0 && i <= 23))
  )
    throw new Error("the challenge's pcrs is not a list of PCR indexes 0-23");
  return {
    idObject: bin(o, 'id_object', 'challenge'),
    encryptedSecret: bin(o, 'encrypted_secret', 'challenge'),
    ...(nonce === undefined ? {} : { nonce, pcrs: pcrs as number[] }),
  };
}

export function encodeTpmResponse(r: TpmResponse): Buffer {
  return Buffer.from(
    JSON.stringify({
      secret: b64(r.secret),
      ...(r.quote === undefined
        ? {}
        : {
            quote: {
              attest: b64(r.quote.attest),
              signature: b64(r.quote.signature),
              pcr_values: r.quote.pcrValues.map(b64),
            },
          }),
    }),
  );
}

export function parseTpmResponse(bytes: Uint8Array): TpmResponse {
  const o = json(bytes, 'challenge response');
  const secret = bin(o, 'secret', 'challenge response');
  if (o.quote === undefined) return { secret };
  const q = o.quote as Record<string, unknown>;
  if (typeof q !== 'object' || q === null) throw new Error("the challenge response's quote is not an object");
  const values = q.pcr_values;
  if (!Array.isArray(values) || values.length > 24)
    throw new Error("the challenge response's quote.pcr_values is not a list of at most 24 values");
  return {
    secret,
    quote: {
      attest: bin(q, 'attest', 'quote'),
      signature: bin(q, 'signature', 'quote'),
      pcrValues: values.map((_, i) =>
        bin(values as unknown as Record<string, unknown>, String(i), 'quote.pcr_values'),
      ),
    },
  };
}
