/**
 * What a rule can match on: the fields of `source` and `operation`, the `when` keys, the kind of
 * value each takes and how it is checked, and which are HTTP-only (Istio's TCP rule). The loader
 * checks with these tables and the engine compiles with them, so the two cannot disagree.
 * Internal to the policy engine.
 */
import { parseIpBlock } from './ip-block.js';
import { checkPathPattern, checkStringPattern } from './string-pattern.js';

/** How a field's values are checked and matched. */
export type ValueKind =
  | 'principal'
  | 'requestPrincipal'
  | 'namespace'
  | 'serviceAccount'
  | 'trustDomain'
  | 'ip'
  | 'port'
  | 'host'
  | 'method'
  | 'path'
  | 'string';

export interface FieldSpec {
  readonly kind: ValueKind;
  /** HTTP-only: on TCP an ALLOW rule using it matches nothing; a DENY or AUDIT rule ignores it. */
  readonly httpOnly: boolean;
  /** The positive field a `not*` field negates (itself for positive fields). */
  readonly positive: string;
  readonly negative: boolean;
}

function fields(table: Record<string, [ValueKind, boolean]>): Readonly<Record<string, FieldSpec>> {
  const out: Record<string, FieldSpec> = {};
  for (const [name, [kind, httpOnly]] of Object.entries(table)) {
    out[name] = { kind, httpOnly, positive: name, negative: false };
    const not = `not${name[0]!.toUpperCase()}${name.slice(1)}`;
    out[not] = { kind, httpOnly, positive: name, negative: true };
  }
  return out;
}

/** `source` fields, in the order Istio documents them, each followed by its `not*` twin. */
export const SOURCE_FIELDS = fields({
  principals: ['principal', false],
  requestPrincipals: ['requestPrincipal', true],
  namespaces: ['namespace', false],
  serviceAccounts: ['serviceAccount', false],
  trustDomains: ['trustDomain', false],
  ipBlocks: ['ip', false],
  remoteIpBlocks: ['ip', false],
});

/** `operation` fields. */
export const OPERATION_FIELDS = fields({
  hosts: ['host', true],
  ports: ['port', false],
  methods: ['method', true],
  paths: ['path', true],
});

/** A `when` key, parsed. */
export type ConditionKey =
  | {
      readonly attribute: 'request.headers';
      readonly header: string;
      readonly kind: ValueKind;
      readonly httpOnly: true;
    }
  | {
      readonly attribute: 'request.auth.claims';
      readonly claim: readonly string[];
      readonly kind: ValueKind;
      readonly httpOnly: true;
    }
  | { readonly attribute: SimpleAttribute; readonly kind: ValueKind; readonly httpOnly: boolean };

const SIMPLE_ATTRIBUTES = {
  'source.ip': ['ip', false],
  'remote.ip': ['ip', false],
  'source.namespace': ['namespace', false],
  'source.principal': ['principal', false],
  'source.serviceAccount': ['serviceAccount', false],
  'source.trustDomain': ['trustDomain', false],
  'request.auth.principal': ['requestPrincipal', true],
  'request.auth.audiences': ['string', true],
  'request.auth.presenter': ['string', true],
  'destination.ip': ['ip', false],
  'destination.port': ['port', false],
  'connection.sni': ['string', false],
} as const satisfies Record<string, readonly [ValueKind, boolean]>;

export type SimpleAttribute = keyof typeof SIMPLE_ATTRIBUTES;

/** Every key accepted, as messages list them. */
export const CONDITION_KEYS: readonly string[] = [
  'request.headers[<name>]',
  'source.ip',
  'remote.ip',
  'source.namespace',
  'source.principal',
  'source.serviceAccount',
  'source.trustDomain',
  'request.auth.principal',
  'request.auth.audiences',
  'request.auth.presenter',
  'request.auth.claims[<name>]',
  'destination.ip',
  'destination.port',
  'connection.sni',
];

/** Parses a `when` key; a string says what is wrong. */
export function parseConditionKey(key: string): ConditionKey | string {
  const simple = (SIMPLE_ATTRIBUTES as Record<string, readonly [ValueKind, boolean]>)[key];
  if (simple !== undefined) {
    return { attribute: key as SimpleAttribute, kind: simple[0], httpOnly: simple[1] };
  }
  if (key.startsWith('request.headers')) {
    const m = /^request\.headers\[([^[\]]+)\]$/.exec(key);
    if (m === null) return `"${key}" is not request.headers[<name>], e.g. request.headers[x-token]`;
    return { attribute: 'request.headers', header: m[1]!.toLowerCase(), kind: 'string', httpOnly: true };
  }
  if (key.startsWith('request.auth.claims')) {
    const rest = key.slice('request.auth.claims'.length);
    const claim: string[] = [];
    const re = /\[([^[\]]+)\]/y;
    let m: RegExpExecArray | null = re.exec(rest);
    while (m !== null) {
      claim.push(m[1]!);
      if (re.lastIndex === rest.length) break;
      m = re.exec(rest);
    }
    if (claim.length === 0 || re.lastIndex !== rest.length) {
      return `"${key}" is not request.auth.claims[<name>] (or [<name>][<nested name>]…), e.g. request.auth.claims[groups]`;
    }
    return { attribute: 'request.auth.claims', claim, kind: 'string', httpOnly: true };
  }
  if (key.startsWith('experimental.envoy.filters.')) {
    return `"${key}" is not supported: Tessera is not Envoy and has no filter metadata to match`;
  }
  if (key === 'destination.namespace') return `"${key}" is replaced by the policy's metadata.namespace`;
  if (key.startsWith('destination.labels')) return `"${key}" is replaced by spec.selector.matchLabels`;
  if (key === 'destination.name' || key === 'destination.user') {
    return `"${key}" was removed from Istio after v1alpha1`;
  }
  return `unknown key "${key}"${suggest(
    key,
    CONDITION_KEYS.map((k) => k.replace(/\[<name>\]$/, '')),
  )}; the keys are ${CONDITION_KEYS.join(', ')}`;
}

const SPIFFE = 'spiffe://';
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const PATH_SEGMENT = /^[a-zA-Z0-9._-]+$/;
const ID_CHARS = /^[a-zA-Z0-9._/-]*$/;
const PRINCIPAL_HELP =
  'a principal is <trust domain>/<path> as Istio writes it (cluster.local/ns/default/sa/sleep) or a SPIFFE ID (spiffe://cluster.local/ns/default/sa/sleep), optionally with * at the start or end';

/** A principal pattern or peer ID without the `spiffe://` scheme: Istio's form. */
export function normalizePrincipal(value: string): string {
  return value.startsWith(SPIFFE) ? value.slice(SPIFFE.length) : value;
}

function checkPrincipal(raw: string): string | undefined {
  const value = normalizePrincipal(raw);
  const bad = checkStringPattern(value);
  if (bad !== undefined) return bad;
  if (value === '*') return undefined;
  if (value.startsWith('*')) {
    return ID_CHARS.test(value.slice(1))
      ? undefined
      : `"${raw}" has characters a SPIFFE ID cannot have; ${PRINCIPAL_HELP}`;
  }
  const prefix = value.endsWith('*');
  const body = prefix ? value.slice(0, -1) : value;
  const slash = body.indexOf('/');
  const td = slash < 0 ? body : body.slice(0, slash);
  if (!TRUST_DOMAIN.test(td)) {
    const why = /[A-Z]/.test(td)
      ? 'its trust domain has an upper-case letter (SPIFFE trust domains are lower case)'
      : td === ''
        ? 'it has no trust domain'
        : 'its trust domain has characters other than lower-case letters, digits, dots, dashes and underscores';
    return `"${raw}" is not a valid principal: ${why}; ${PRINCIPAL_HELP}`;
  }
  if (slash < 0) {
    return prefix ? undefined : `"${raw}" is not a valid principal: it has no path; ${PRINCIPAL_HELP}`;
  }
  const segments = body.slice(slash + 1).split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    // With a prefix pattern, the last segment may be partial (…/sa/*) or empty (…/ns/foo/*).
    if (prefix && i === segments.length - 1 && (s === '' || PATH_SEGMENT.test(s))) continue;
    if (s === '' || s === '.' || s === '..' || !PATH_SEGMENT.test(s)) {
      return `"${raw}" is not a valid principal: the path segment "${s}" must be non-empty letters, digits, dots, dashes or underscores (not . or ..); ${PRINCIPAL_HELP}`;
    }
  }
  return undefined;
}

function checkServiceAccount(value: string): string | undefined {
  if (value === '') return 'empty value; give <service account> or <namespace>/<service account>';
  if (value.includes('*')) return `"${value}": serviceAccounts take no wildcard`;
  const parts = value.split('/');
  if (parts.length > 2 || parts.some((p) => p === '')) {
    return `"${value}" is not <service account> or <namespace>/<service account>`;
  }
  if (value.length > 320) return `"${value}" is longer than 320 characters`;
  return undefined;
}

function checkPort(value: string): string | undefined {
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
    return `"${value}" is not a port; a port is a number from 1 to 65535`;
  }
  return undefined;
}

/** Checks one value of a field or condition of the given kind; a string says what is wrong. */
export function checkValue(kind: ValueKind, value: string): string | undefined {
  switch (kind) {
    case 'principal':
      return checkPrincipal(value);
    case 'serviceAccount':
      return checkServiceAccount(value);
    case 'ip': {
      const b = parseIpBlock(value);
      return typeof b === 'string' ? b : undefined;
    }
    case 'port':
      return checkPort(value);
    case 'path':
      return checkPathPattern(value);
    case 'namespace':
    case 'trustDomain': {
      const bad = checkStringPattern(value);
      if (bad !== undefined) return bad;
      if (value.includes('/')) {
        return `"${value}" has a "/"; a ${kind === 'namespace' ? 'namespace' : 'trust domain'} has none`;
      }
      return undefined;
    }
    default:
      return checkStringPattern(value);
  }
}

/** ` (did you mean "x"?)` when a candidate is a likely misspelling of `word`, else ''. */
export function suggest(word: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = distance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.floor(word.length / 3));
  return best !== undefined && bestDistance <= limit ? ` (did you mean "${best}"?)` : '';
}

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
