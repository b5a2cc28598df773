// PEM is text framing around DER, not ASN.1: splitting it is string work (RFC 7468).

export interface PemBlock {
  type: string;
  der: Buffer;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/** Every PEM block in `text`, in order. Text outside blocks (comments) is ignored, as OpenSSL does. */
export function parsePemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const body = (m[2] ?? '').replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) {
      throw new Error(`PEM block "${m[1]}" number ${out.length + 1} has invalid base64`);
    }
    out.push({ type: m[1] ?? '', der: Buffer.from(body, 'base64') });
  }
  return out;
}

export function toPem(type: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join('\n')}\n-----END ${type}-----\n`;
}

/** True when the input looks like PEM text rather than DER bytes. */
export function looksLikePem(input: string | Uint8Array): boolean {
  const head =
    typeof input === 'string'
      ? input.slice(0, 4096)
      : Buffer.from(input.subarray(0, 4096)).toString('latin1');
  return head.includes('-----BEGIN ');
}
