// Character classes and the error texts of the SPIFFE-ID grammar (spec §1; go-spiffe wording,
// so that users who know go-spiffe recognise them).

export const Reason = {
  empty: 'cannot be empty',
  scheme: 'scheme is missing or invalid',
  tdMissing: 'trust domain is missing',
  tdChars: 'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
  pathChars: 'path segment characters are limited to letters, numbers, dots, dashes, and underscores',
  leadingSlash: 'path must have a leading slash',
  emptySegment: 'path cannot contain empty segments',
  dotSegment: 'path cannot contain dot segments',
  trailingSlash: 'path cannot have a trailing slash',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** a-z 0-9 . - _ */
export function isTrustDomainChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f;
}

/** a-z A-Z 0-9 . - _ */
export function isPathChar(c: number): boolean {
  return isTrustDomainChar(c) || (c >= 0x41 && c <= 0x5a);
}

/** Describes the offending character for an error message: `"$" at offset 12`. */
export function describeChar(s: string, i: number): string {
  const cp = s.codePointAt(i) ?? 0;
  const shown =
    cp < 0x20 || cp === 0x7f ? `\\x${cp.toString(16).padStart(2, '0')}` : String.fromCodePoint(cp);
  return `${JSON.stringify(shown)} at offset ${i}`;
}

/**
 * Validates a path as go-spiffe's ValidatePath does: "" is valid; otherwise a leading slash,
 * no empty, "." or ".." segments, no trailing slash, path characters only.
 * Returns undefined when valid, else the reason and the offset it was found at.
 */
export function checkPath(path: string): { reason: Reason; offset: number } | undefined {
  if (path === '') return undefined;
  if (path.charCodeAt(0) !== 0x2f) return { reason: Reason.leadingSlash, offset: 0 };
  let segStart = 0;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x2f) {
      if (i > 0) {
        const bad = checkSegmentEnd(path, segStart, i);
        if (bad) return { reason: bad, offset: segStart };
      }
      segStart = i;
      continue;
    }
    if (!isPathChar(c)) return { reason: Reason.pathChars, offset: i };
  }
  const seg = path.slice(segStart);
  if (seg === '/') return { reason: Reason.trailingSlash, offset: segStart };
  if (seg === '/.' || seg === '/..') return { reason: Reason.dotSegment, offset: segStart };
  return undefined;
}

function checkSegmentEnd(path: string, start: number, end: number): Reason | undefined {
  const seg = path.slice(start, end);
  if (seg === '/') return Reason.emptySegment;
  if (seg === '/.' || seg === '/..') return Reason.dotSegment;
  return undefined;
}
