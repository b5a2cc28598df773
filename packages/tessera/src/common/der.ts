/**
 * A minimal DER *encoder* for the authority's hot path (building SVIDs from a precomputed template).
 * Only encoding, and only of values the authority itself produces; parsing stays with ASN.1
 * libraries. Every certificate it helps build is checked by openssl and @peculiar/asn1-x509 in tests.
 */

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Tag-length-value. */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

export const sequence = (...parts: Uint8Array[]): Buffer => tlv(0x30, ...parts);
export const octetString = (content: Uint8Array): Buffer => tlv(0x04, content);
/** BIT STRING with no unused bits. */
export const bitString = (content: Uint8Array): Buffer => tlv(0x03, Buffer.from([0]), content);
/** [n] EXPLICIT, constructed. */
export const explicit = (n: number, content: Uint8Array): Buffer => tlv(0xa0 + n, content);
export const booleanTrue = Buffer.from([0x01, 0x01, 0xff]);

/** INTEGER from unsigned big-endian bytes (a 0x00 is prefixed when the high bit is set). */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const b = Buffer.from(bytes.subarray(start));
  return tlv(0x02, (b[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

/** OBJECT IDENTIFIER from dotted form. */
export function objectIdentifier(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const [a = 0, b = 0, ...rest] = arcs;
  const out: number[] = [a * 40 + b];
  for (const arc of rest) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

const pad = (n: number) => String(n).padStart(2, '0');

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest = `${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}Z`;
  return y < 2050
    ? tlv(0x17, Buffer.from(`${pad(y % 100)}${rest}`, 'ascii'))
    : tlv(0x18, Buffer.from(`${y}${rest}`, 'ascii'));
}

/** An X.509 Extension: SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }. */
export function extension(oid: string, critical: boolean, value: Uint8Array): Buffer {
  return sequence(objectIdentifier(oid), ...(critical ? [booleanTrue] : []), octetString(value));
}

/** GeneralNames for SANs: uniformResourceIdentifier [6] and dNSName [2], both IA5String (implicit). */
export function generalNames(uris: readonly string[], dnsNames: readonly string[]): Buffer {
  return sequence(
    ...uris.map((u) => tlv(0x86, Buffer.from(u, 'ascii'))),
    ...dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'ascii'))),
  );
}

/** A Name of single-attribute RDNs: `[oid, value, 'printable' | 'utf8']` in order. */
export function name(rdns: readonly (readonly [string, string, 'printable' | 'utf8'])[]): Buffer {
  return sequence(
    ...rdns.map(([oid, value, form]) =>
      tlv(
        0x31,
        sequence(objectIdentifier(oid), tlv(form === 'printable' ? 0x13 : 0x0c, Buffer.from(value, 'utf8'))),
      ),
    ),
  );
}
