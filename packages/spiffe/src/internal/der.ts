import * as asn1js from 'asn1js';

/**
 * Splits a concatenation of DER-encoded structures (as the Workload API sends certificate
 * chains and bundles) into its elements, using asn1js to find each element's length.
 * Throws an Error with the element index and offset when the bytes are not a DER sequence run.
 */
export function splitDer(input: Uint8Array): Buffer[] {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const view = buf.subarray(offset);
    const parsed = asn1js.fromBER(view);
    if (parsed.offset === -1 || parsed.result.error) {
      throw new Error(
        `element ${out.length + 1} at byte ${offset} is not valid DER: ${parsed.result.error || 'cannot decode'}`,
      );
    }
    if (!(parsed.result instanceof asn1js.Sequence)) {
      throw new Error(`element ${out.length + 1} at byte ${offset} is not a DER SEQUENCE`);
    }
    const len = parsed.offset;
    out.push(Buffer.from(view.subarray(0, len)));
    offset += len;
  }
  return out;
}
