/**
 * Istio's string values: exact `abc`, prefix `abc*`, suffix `*abc`, presence `*` (any non-empty
 * value), and for paths Envoy URI templates (`/foo/{*}`, `/foo/{**}`). Checked at load, compiled to
 * one predicate per field so that a list of values costs one Set lookup plus the wildcards.
 * Internal to the policy engine.
 */

export type StringPattern =
  | { readonly kind: 'exact' | 'prefix' | 'suffix'; readonly value: string }
  | { readonly kind: 'present' }
  | { readonly kind: 'template'; readonly regex: RegExp };

const PATTERN_HELP = 'use an exact value, a prefix (abc*), a suffix (*abc) or * (any non-empty value)';

/** Checks a value; a string says what is wrong. */
export function checkStringPattern(value: string): string | undefined {
  if (value === '') return `empty value; ${PATTERN_HELP}`;
  const stars = value.split('*').length - 1;
  if (stars === 0 || value === '*') return undefined;
  if (stars > 1) return `"${value}" has ${stars} wildcards; at most one is allowed: ${PATTERN_HELP}`;
  if (!value.startsWith('*') && !value.endsWith('*')) {
    return `"${value}" has a wildcard in the middle, which Istio matches literally; ${PATTERN_HELP}`;
  }
  return undefined;
}

/** Parses a checked value (see checkStringPattern). */
export function parseStringPattern(value: string): StringPattern {
  if (value === '*') return { kind: 'present' };
  if (value.endsWith('*')) return { kind: 'prefix', value: value.slice(0, -1) };
  if (value.startsWith('*')) return { kind: 'suffix', value: value.slice(1) };
  return { kind: 'exact', value };
}

// Envoy's URI template operators: `*` is one path segment of pchar (RFC 3986, less `*` and `=`), `**`
// any run of pchar and `/`. Istio writes them `{*}` and `{**}`.
const PCHAR = "a-zA-Z0-9\\-._~%!$&'()+,;:@";
const VALID_LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$/;

export function isPathTemplate(path: string): boolean {
  return path.includes('{*}') || path.includes('{**}');
}

/** Checks a `paths` value: a pattern, or a URI template as Istio validates it. */
export function checkPathPattern(path: string): string | undefined {
  if (!isPathTemplate(path)) {
    if (path.includes('{') || path.includes('}')) {
      return `"${path}" has "{" or "}" outside a path template; the template operators are {*} (one segment) and {**} (any segments, last)`;
    }
    return checkStringPattern(path);
  }
  let sawAny = false;
  for (const glob of path.replace(/^\/+|\/+$/g, '').split('/')) {
    if (glob === '{*}' || glob === '{**}') {
      if (sawAny) return `"${path}": {**} must be the last operator of a path template`;
      sawAny = glob === '{**}';
      continue;
    }
    if (glob.includes('{') || glob.includes('}') || !VALID_LITERAL.test(glob)) {
      return `"${path}": the segment "${glob}" is not allowed in a path template; a segment is {*}, {**} or literal characters (letters, digits, -._~%!$&'()+,;:@=), and * is only allowed as {*} or {**}`;
    }
  }
  return undefined;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Parses a checked `paths` value (see checkPathPattern). */
export function parsePathPattern(path: string): StringPattern {
  if (!isPathTemplate(path)) return parseStringPattern(path);
  const source = path
    .split(/(\{\*\*\}|\{\*\})/)
    .map((part) => (part === '{**}' ? `[${PCHAR}/]*` : part === '{*}' ? `[${PCHAR}]+` : escapeRegExp(part)))
    .join('');
  return { kind: 'template', regex: new RegExp(`^${source}$`) };
}

export interface MatcherOptions {
  /** Hosts compare case-insensitively: the patterns are lower-cased; the caller lower-cases inputs. */
  ignoreCase?: boolean;
  /** Headers: `*` matches a header that is present even if empty (Envoy's present_match). */
  presentMatchesEmpty?: boolean;
}

/** A predicate true when the input matches any of the patterns; an absent input matches none. */
export type StringMatcher = (input: string | undefined) => boolean;

/** Up to this many exact values are compared in turn rather than looked up in a Set. */
const SMALL_EXACT = 8;

export function createStringMatcher(
  patterns: readonly StringPattern[],
  options: MatcherOptions = {},
): StringMatcher {
  const fold = options.ignoreCase === true ? (s: string) => s.toLowerCase() : (s: string) => s;
  const exact = new Set<string>();
  const prefixes: string[] = [];
  const suffixes: string[] = [];
  const regexes: RegExp[] = [];
  let present = false;
  for (const p of patterns) {
    switch (p.kind) {
      case 'present':
        present = true;
        break;
      case 'exact':
        exact.add(fold(p.value));
        break;
      case 'prefix':
        prefixes.push(fold(p.value));
        break;
      case 'suffix':
        suffixes.push(fold(p.value));
        break;
      case 'template':
        regexes.push(p.regex);
        break;
    }
  }
  const emptyPresent = options.presentMatchesEmpty === true;
  if (present) return (s) => s !== undefined && (emptyPresent || s !== '');
  // A few values are compared one by one: a Set would hash the input first, and inputs (paths,
  // principals) are new strings on every request, whose hash V8 has not computed yet.
  const few = exact.size <= SMALL_EXACT ? [...exact] : undefined;
  const isExact: StringMatcher =
    few === undefined
      ? (s) => s !== undefined && exact.has(s)
      : few.length === 1
        ? (s) => s === few[0]
        : (s) => {
            for (const v of few) if (s === v) return true;
            return false;
          };
  if (prefixes.length === 0 && suffixes.length === 0 && regexes.length === 0) return isExact;
  // V8's startsWith/endsWith compare character by character (~3 ns each), and inputs often share a
  // long start with the patterns (example.org/ns/…): the character at the far end of the pattern
  // rejects most inputs first.
  const pre = prefixes.map((v) => ({ v, n: v.length, c: v.charCodeAt(v.length - 1) }));
  const suf = suffixes.map((v) => ({ v, n: v.length, c: v.charCodeAt(0) }));
  return (s) => {
    if (s === undefined) return false;
    if (exact.size > 0 && isExact(s)) return true;
    const len = s.length;
    for (const p of pre) {
      if (len >= p.n && (p.n === 0 || s.charCodeAt(p.n - 1) === p.c) && s.startsWith(p.v)) return true;
    }
    for (const x of suf) {
      if (len >= x.n && (x.n === 0 || s.charCodeAt(len - x.n) === x.c) && s.endsWith(x.v)) return true;
    }
    for (const r of regexes) if (r.test(s)) return true;
    return false;
  };
}
