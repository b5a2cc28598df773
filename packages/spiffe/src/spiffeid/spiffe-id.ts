import { ErrorCode, SpiffeError } from '../errors.js';
import { checkPath, describeChar, isTrustDomainChar, Reason } from './charset.js';
import { makeTrustDomain, type TrustDomain } from './trust-domain.js';

const PREFIX = 'spiffe://';

/**
 * A SPIFFE ID: `spiffe://<trust domain><path>`. Immutable; compared byte for byte, as
 * go-spiffe does. Build one with parseSpiffeId, spiffeIdFromPath or spiffeIdFromSegments.
 */
export class SpiffeId {
  readonly trustDomain: TrustDomain;
  /** The path, `""` or starting with `/` (e.g. `/ns/prod/sa/web`). */
  readonly path: string;
  readonly #string: string;

  private constructor(trustDomain: TrustDomain, path: string) {
    this.trustDomain = trustDomain;
    this.path = path;
    this.#string = `${PREFIX}${trustDomain.name}${path}`;
  }

  /** @internal parts must already be valid. */
  static fromValidatedParts(trustDomain: TrustDomain, path: string): SpiffeId {
    return new SpiffeId(trustDomain, path);
  }

  /** True when this ID belongs to the trust domain `td`. */
  memberOf(td: TrustDomain): boolean {
    return this.trustDomain.equals(td);
  }

  /** True for the trust domain's own ID (no path), as carried by CA certificates. */
  isTrustDomainId(): boolean {
    return this.path === '';
  }

  /** The path's segments: `/ns/prod` gives `["ns", "prod"]`. */
  segments(): string[] {
    return this.path === '' ? [] : this.path.slice(1).split('/');
  }

  /** A new ID in the same trust domain with `path` replacing this one's. */
  replacePath(path: string): SpiffeId {
    return spiffeIdFromPath(this.trustDomain, path);
  }

  /** A new ID with the given segments appended to this one's path. */
  appendSegments(...segments: string[]): SpiffeId {
    return spiffeIdFromPath(this.trustDomain, this.path + joinPathSegments(...segments));
  }

  toString(): string {
    return this.#string;
  }

  toJSON(): string {
    return this.#string;
  }

  equals(other: SpiffeId | undefined | null): boolean {
    return other != null && other.#string === this.#string;
  }

  compare(other: SpiffeId): number {
    return this.#string < other.#string ? -1 : this.#string > other.#string ? 1 : 0;
  }
}

type Check = { ok: true; td: string; path: string } | { ok: false; reason: Reason; detail?: string };

/** Scans a SPIFFE ID string exactly as go-spiffe's FromString does; the first error wins. */
function checkId(input: string): Check {
  if (input === '') return { ok: false, reason: Reason.empty };
  if (!input.startsWith(PREFIX)) return { ok: false, reason: Reason.scheme };
  let i = PREFIX.length;
  for (; i < input.length; i++) {
    const c = input.charCodeAt(i);
    if (c === 0x2f) break;
    if (!isTrustDomainChar(c))
      return { ok: false, reason: Reason.tdChars, detail: `found ${describeChar(input, i)}` };
  }
  if (i === PREFIX.length) return { ok: false, reason: Reason.tdMissing };
  const td = input.slice(PREFIX.length, i);
  const path = input.slice(i);
  const bad = checkPath(path);
  if (bad) {
    const at = i + bad.offset;
    const detail = bad.reason === Reason.pathChars ? `found ${describeChar(input, at)}` : `at offset ${at}`;
    return { ok: false, reason: bad.reason, detail };
  }
  return { ok: true, td, path };
}

function describe(check: Extract<Check, { ok: false }>): string {
  return check.detail ? `${check.reason} (${check.detail})` : check.reason;
}

/**
 * Parses a SPIFFE ID. Throws a SpiffeError with code ERR_SPIFFEID_INVALID whose message names the
 * input and the rule broken, e.g. `spiffeid: invalid SPIFFE ID "spiffe://td/a/": path cannot have a
 * trailing slash`.
 */
export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') throw new TypeError('spiffeid: SPIFFE ID must be a string');
  const check = checkId(input);
  if (!check.ok) {
    throw new SpiffeError(
      ErrorCode.SPIFFEID_INVALID,
      `spiffeid: invalid SPIFFE ID ${JSON.stringify(input)}: ${describe(check)}`,
    );
  }
  return SpiffeId.fromValidatedParts(makeTrustDomain(check.td), check.path);
}

/** @internal the trust-domain part of parseTrustDomain for inputs that look like IDs. */
export function trustDomainOfIdString(input: string): TrustDomain {
  const check = checkId(input);
  if (!check.ok) {
    throw new SpiffeError(
      ErrorCode.TRUST_DOMAIN_INVALID,
      `spiffeid: invalid trust domain ${JSON.stringify(input)}: ${describe(check)}`,
    );
  }
  return makeTrustDomain(check.td);
}

/** Builds an ID from a trust domain and a path that must start with `/` (or be empty). */
export function spiffeIdFromPath(td: TrustDomain, path: string): SpiffeId {
  const bad = checkPath(path);
  if (bad) {
    throw new SpiffeError(
      ErrorCode.SPIFFEID_INVALID,
      `spiffeid: invalid path ${JSON.stringify(path)} for trust domain "${td.name}": ${bad.reason}`,
    );
  }
  return SpiffeId.fromValidatedParts(td, path);
}

/** Builds an ID from path segments: `spiffeIdFromSegments(td, "ns", "prod")` is `spiffe://td/ns/prod`. */
export function spiffeIdFromSegments(td: TrustDomain, ...segments: string[]): SpiffeId {
  return SpiffeId.fromValidatedParts(td, joinPathSegments(...segments));
}

/** Joins segments into a path (`/a/b`), refusing empty, dot and slash-containing segments. */
export function joinPathSegments(...segments: string[]): string {
  let out = '';
  for (const seg of segments) {
    // A slash inside a segment is a character error (go-spiffe), not an empty segment.
    const slash = seg.indexOf('/');
    const bad = slash >= 0 ? { reason: Reason.pathChars } : checkPath(`/${seg}`);
    if (bad) {
      const reason = bad.reason === Reason.trailingSlash ? Reason.emptySegment : bad.reason;
      throw new SpiffeError(
        ErrorCode.SPIFFEID_INVALID,
        `spiffeid: invalid path segment ${JSON.stringify(seg)}: ${reason}`,
      );
    }
    out += `/${seg}`;
  }
  return out;
}

/** Validates a path (`""`, or `/seg/seg`); throws ERR_SPIFFEID_INVALID naming the rule broken. */
export function validatePath(path: string): void {
  const bad = checkPath(path);
  if (bad)
    throw new SpiffeError(
      ErrorCode.SPIFFEID_INVALID,
      `spiffeid: invalid path ${JSON.stringify(path)}: ${bad.reason}`,
    );
}
