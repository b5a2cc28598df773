/**
 * IP addresses and CIDR blocks as numbers, for `ipBlocks`, `remoteIpBlocks`, `source.ip`,
 * `remote.ip` and `destination.ip`. Pure (no node:net): parsed once, matched by comparing masked
 * 32-bit words. Internal to the policy engine.
 */

/** An address: IPv4 as one word, IPv6 as four (most significant first). */
export interface IpAddress {
  readonly v6: boolean;
  readonly words: readonly number[];
}

/** A block: the address with the host bits cleared, the prefix length, and each word's mask. */
export interface IpBlock {
  readonly v6: boolean;
  readonly words: readonly number[];
  readonly prefix: number;
  readonly masks: readonly number[];
}

/** Dotted-quad IPv4 as one word; no leading zeros (as Go's netip, which Istio validates with). */
function parseV4Word(text: string): number | undefined {
  let word = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || dots === 3) return undefined;
      word = word * 256 + part;
      part = 0;
      digits = 0;
      dots++;
      continue;
    }
    if (c < 0x30 || c > 0x39 || (digits > 0 && part === 0)) return undefined;
    part = part * 10 + (c - 0x30);
    if (part > 255) return undefined;
    digits++;
  }
  return dots === 3 && digits > 0 ? word * 256 + part : undefined;
}

function parseV6Words(text: string): number[] | undefined {
  if (text.length < 2) return undefined;
  let groups: number[];
  const parseGroups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const out: number[] = [];
    const parts = s.split(':');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (i === parts.length - 1 && part.includes('.')) {
        const w = parseV4Word(part);
        if (w === undefined) return undefined;
        out.push(w >>> 16, w & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
      out.push(Number.parseInt(part, 16));
    }
    return out;
  };
  const gap = text.indexOf('::');
  if (gap >= 0) {
    if (text.indexOf('::', gap + 1) >= 0) return undefined;
    const head = parseGroups(text.slice(0, gap));
    const tail = parseGroups(text.slice(gap + 2));
    if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text);
    if (all === undefined || all.length !== 8) return undefined;
    groups = all;
  }
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2) words.push(groups[i]! * 0x10000 + groups[i + 1]!);
  return words;
}

/** An IPv4 or IPv6 address (no zone), or undefined. */
export function parseIpAddress(text: string): IpAddress | undefined {
  const v4 = parseV4Word(text);
  if (v4 !== undefined) return { v6: false, words: [v4] };
  if (!text.includes(':')) return undefined;
  const words = parseV6Words(text);
  return words === undefined ? undefined : { v6: true, words };
}

/**
 * The address of a peer as a socket reports it: a zone (`%eth0`) is dropped and an IPv4-mapped
 * IPv6 address (`::ffff:10.1.2.3`, what a dual-stack listener sees) is the IPv4 address, so IPv4
 * blocks match it.
 */
export function parsePeerAddress(text: string): IpAddress | undefined {
  const zone = text.indexOf('%');
  const a = parseIpAddress(zone >= 0 ? text.slice(0, zone) : text);
  if (a?.v6 === true && a.words[0] === 0 && a.words[1] === 0 && a.words[2] === 0xffff) {
    return { v6: false, words: [a.words[3]!] };
  }
  return a;
}

function mask(word: number, bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return word;
  return (word & ~(0xffffffff >>> bits)) >>> 0;
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128); a string says what is wrong. */
export function parseIpBlock(text: string): IpBlock | string {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const addr = parseIpAddress(addrText);
  if (addr === undefined) {
    return `"${text}" is not an IP address or CIDR block; give an IPv4 or IPv6 address (203.0.113.4, 2001:db8::1) or a block (203.0.113.0/24, 2001:db8::/32)`;
  }
  const max = addr.v6 ? 128 : 32;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) {
      return `"${text}" has a bad prefix length "${p}"; it must be a number from 0 to ${max}`;
    }
    prefix = Number(p);
  }
  const words = addr.words.map((w, i) => mask(w, prefix - 32 * i));
  const masks = addr.words.map((_, i) => mask(0xffffffff, prefix - 32 * i));
  return { v6: addr.v6, words, prefix, masks };
}

/** Whether `addr` is inside `block` (an IPv4 address is never inside an IPv6 block, and back). */
export function ipBlockContains(block: IpBlock, addr: IpAddress): boolean {
  if (block.v6 !== addr.v6) return false;
  const n = block.words.length;
  for (let i = 0; i < n; i++) {
    if ((addr.words[i]! & block.masks[i]!) >>> 0 !== block.words[i]) return false;
  }
  return true;
}
