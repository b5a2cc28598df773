/**
 * Istio's default path normalization (`BASE`), which its sidecars apply before authorization and to
 * the request sent on: percent-encoded unreserved characters decoded once (`%2e` `.`, `%61` `a`…;
 * never `%2f` or `%5c`), `\` as `/`, and `.` and `..` segments resolved as RFC 3986 says. Slashes are
 * not merged. The engine matches `paths` against the normalized path, so `/public/../admin` and
 * `/%61dmin` meet a DENY on `/admin*`; a proxy should forward the same normalized path. Pure.
 */

/** Whether a byte value is decoded by BASE: `-` `.` `0-9` `A-Z` `_` `a-z` `~`. */
function decodable(c: number): boolean {
  return (
    c === 0x2d ||
    c === 0x2e ||
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    c === 0x5f ||
    (c >= 0x61 && c <= 0x7a) ||
    c === 0x7e
  );
}

function decodeUnreserved(path: string): string {
  return path.replace(/%([0-9a-fA-F]{2})/g, (all, hex: string) => {
    const c = Number.parseInt(hex, 16);
    return decodable(c) ? String.fromCharCode(c) : all;
  });
}

/** RFC 3986 section 5.2.4, for a path starting with `/`. */
function removeDotSegments(path: string): string {
  const segments = path.split('/');
  const out: string[] = [];
  let trailing = false;
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === '.' || s === '..') {
      if (s === '..') out.pop();
      trailing = last;
      continue;
    }
    out.push(s);
    trailing = false;
  }
  return `/${out.join('/')}${trailing && out.length > 0 ? '/' : ''}`;
}

/** Where the path of a request target ends: at the query string or fragment, if any. */
function pathEnd(target: string): number {
  let end = target.length;
  const q = target.indexOf('?');
  if (q >= 0) end = q;
  const h = target.indexOf('#');
  if (h >= 0 && h < end) end = h;
  return end;
}

function normalize(path: string): string | undefined {
  if (!path.startsWith('/')) return path;
  const pct = path.includes('%');
  if (pct && path.includes('%00')) return undefined;
  if (!pct && !path.includes('\\') && !path.includes('/.')) return path;
  let p = pct ? decodeUnreserved(path) : path;
  p = p.replaceAll('\\', '/');
  return p.includes('/.') ? removeDotSegments(p) : p;
}

/**
 * The request target normalized as Istio's BASE option does, the query string (and fragment) kept
 * as they are; undefined when the path has `%00`, which Istio refuses with 400. A target that does
 * not start with `/` (`*`, an absolute URI) is returned unchanged.
 */
export function normalizePath(target: string): string | undefined {
  const end = pathEnd(target);
  if (end === target.length) return normalize(target);
  const n = normalize(target.slice(0, end));
  return n === undefined ? undefined : n + target.slice(end);
}

/** The path that `paths` are matched against: normalized, without query string or fragment. */
export function policyPath(target: string): string {
  const end = pathEnd(target);
  const path = end === target.length ? target : target.slice(0, end);
  return normalize(path) ?? path;
}
