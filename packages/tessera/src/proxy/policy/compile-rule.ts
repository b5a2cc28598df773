/**
 * Compiles one rule of a policy into a predicate over a request, for one protocol, the way Istio's
 * builder turns it into an Envoy RBAC policy: a rule is any `from` AND any `to` AND every `when`;
 * within a source or operation every field given AND; a field's values OR; `not*` values NOR. On
 * TCP, HTTP-only fields make an ALLOW rule match nothing and are dropped from DENY and AUDIT rules
 * (which then match more), each occurrence reported. Pure; internal to the policy engine.
 */
import {
  type ConditionKey,
  checkValue,
  type FieldSpec,
  normalizePrincipal,
  OPERATION_FIELDS,
  parseConditionKey,
  SOURCE_FIELDS,
  type ValueKind,
} from './attributes.js';
import type { AuthorizationPolicy, Rule } from './authorization-policy.js';
import { type IpAddress, type IpBlock, ipBlockContains, parseIpBlock } from './ip-block.js';
import {
  createStringMatcher,
  type MatcherOptions,
  parsePathPattern,
  parseStringPattern,
  type StringPattern,
} from './string-pattern.js';
import type { PolicyRequest } from './types.js';

/** A request's attributes, normalised once per evaluation. */
export interface RequestContext {
  /** The peer's principal in Istio's form (no `spiffe://`). */
  principal: string | undefined;
  /** The peer's SPIFFE ID (`spiffe://…`). */
  spiffeId: string | undefined;
  namespace: string | undefined;
  trustDomain: string | undefined;
  sourceIp: IpAddress | undefined;
  remoteIp: IpAddress | undefined;
  destinationIp: IpAddress | undefined;
  destinationPort: number | undefined;
  sni: string | undefined;
  method: string | undefined;
  /** The path without query string or fragment. */
  path: string | undefined;
  /** Lower-cased. */
  host: string | undefined;
  headers: NonNullable<PolicyRequest['http']>['headers'] | undefined;
  auth: PolicyRequest['auth'];
}

export type Predicate = (ctx: RequestContext) => boolean;

/** Which request attributes some rule looks at, so evaluation prepares only those. */
export interface Needs {
  sourceIp: boolean;
  remoteIp: boolean;
  destinationIp: boolean;
  host: boolean;
}

/**
 * What a rule requires of every request it matches, so that the engine finds the rule by the
 * request instead of trying it on every one: the peer (an exact principal, a principal prefix or
 * suffix, or an exact namespace, whichever each source requires), else the peer address's bucket
 * (see ipBucket), else the first path segment, else the method. Only necessary conditions: the
 * rule's own test still decides.
 */
export type RuleIndex =
  | {
      readonly kind: 'peer';
      readonly principals: readonly string[];
      readonly principalPrefixes: readonly string[];
      readonly principalSuffixes: readonly string[];
      readonly namespaces: readonly string[];
    }
  | { readonly kind: 'ip'; readonly buckets: readonly number[] }
  | { readonly kind: 'path'; readonly segments: readonly string[] }
  | { readonly kind: 'method'; readonly methods: readonly string[] };

export interface CompiledMatch {
  readonly match: Predicate;
  readonly index?: RuleIndex;
}

/**
 * An address's bucket: its first octet (IPv4, 0–255) or 256 + its first 16 bits (IPv6). A number,
 * so that looking it up hashes nothing.
 */
export function ipBucket(a: IpAddress): number {
  return a.v6 ? 256 + (a.words[0]! >>> 16) : a.words[0]! >>> 24;
}

/** The first segment of a path: `/admin/x` → `admin`, `/` → ``. */
export function firstSegment(path: string): string {
  const end = path.indexOf('/', 1);
  return end < 0 ? path.slice(1) : path.slice(1, end);
}

/** A problem of the TCP rule, reported as a warning at the field's line. */
export interface RuleNote {
  readonly path: string;
  readonly message: string;
}

/**
 * A predicate and a rough cost, so that the conjunctions and disjunctions of a rule try the cheap
 * tests (a Set lookup, a port) before the dear ones (prefixes, regular expressions, IP blocks).
 */
interface Test {
  readonly p: Predicate;
  readonly cost: number;
  /** For a conjunction: its parts, so an enclosing conjunction merges them and orders them all. */
  readonly parts?: readonly Test[];
}

const byCost = (a: Test, b: Test) => a.cost - b.cost;
const costOf = (ts: readonly Test[]) => ts.reduce((n, t) => n + t.cost, 0);

function all(tests: readonly Test[]): Test {
  const ts = tests.flatMap((t) => t.parts ?? [t]).sort(byCost);
  const cost = costOf(ts);
  if (ts.length === 0) return { p: () => true, cost: 0 };
  if (ts.length === 1) return ts[0]!;
  const ps = ts.map((t) => t.p);
  if (ps.length === 2) {
    const [a, b] = ps as [Predicate, Predicate];
    return { p: (c) => a(c) && b(c), cost, parts: ts };
  }
  return {
    p: (c) => {
      for (const p of ps) if (!p(c)) return false;
      return true;
    },
    cost,
    parts: ts,
  };
}

function any(tests: readonly Test[]): Test {
  const ts = [...tests].sort(byCost);
  const cost = costOf(ts);
  if (ts.length === 0) return { p: () => false, cost: 0 };
  if (ts.length === 1) return ts[0]!;
  const ps = ts.map((t) => t.p);
  return {
    p: (c) => {
      for (const p of ps) if (p(c)) return true;
      return false;
    },
    cost,
  };
}

function not(t: Test): Test {
  const p = t.p;
  return { p: (c) => !p(c), cost: t.cost };
}

/** Set lookups are cheap; every prefix, suffix or template costs a string scan. */
function patternsCost(patterns: readonly StringPattern[]): number {
  let cost = 1;
  for (const p of patterns)
    if (p.kind !== 'exact' && p.kind !== 'present') cost += p.kind === 'template' ? 8 : 4;
  return cost;
}

type Accessor = (ctx: RequestContext) => unknown;

/** A test true when the attribute matches any of `values`. */
function valuesTest(
  kind: ValueKind,
  values: readonly string[],
  attribute: 'source' | 'remote' | 'destination' | Accessor,
  policyNamespace: string,
  needs: Needs,
): Test {
  const strings = (
    patterns: StringPattern[],
    get: (c: RequestContext) => string | undefined,
    o?: MatcherOptions,
  ): Test => {
    const m = createStringMatcher(patterns, o);
    return { p: (c) => m(get(c)), cost: patternsCost(patterns) };
  };
  const plain = () => values.map(parseStringPattern);
  switch (kind) {
    case 'principal':
      return strings(
        values.map((v) => parseStringPattern(normalizePrincipal(v))),
        (c) => c.principal,
      );
    case 'requestPrincipal':
      return strings(plain(), (c) => c.auth?.principal);
    case 'namespace':
      return strings(plain(), (c) => c.namespace);
    case 'trustDomain':
      return strings(plain(), (c) => c.trustDomain);
    case 'host':
      needs.host = true;
      return strings(plain(), (c) => c.host, { ignoreCase: true });
    case 'method':
      return strings(plain(), (c) => c.method);
    case 'path':
      return strings(values.map(parsePathPattern), (c) => c.path);
    case 'serviceAccount': {
      // Istio's form: spiffe://<td>/ns/<ns>/[…/]sa/<sa>[/…]; a bare name is in the policy's namespace.
      const regexes = values.map((v) => {
        const [ns, sa] = v.includes('/') ? (v.split('/') as [string, string]) : [policyNamespace, v];
        const q = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        return new RegExp(`^spiffe://.+/ns/${q(ns)}/(.+/|)sa/${q(sa)}(/.+)?$`);
      });
      return {
        p: (c) => c.spiffeId !== undefined && regexes.some((r) => r.test(c.spiffeId!)),
        cost: 8 * regexes.length,
      };
    }
    case 'port': {
      const ports = new Set(values.map(Number));
      return { p: (c) => c.destinationPort !== undefined && ports.has(c.destinationPort), cost: 1 };
    }
    case 'ip': {
      const blocks = values.map((v) => parseIpBlock(v) as IpBlock);
      let get: (c: RequestContext) => IpAddress | undefined;
      if (attribute === 'remote') {
        needs.remoteIp = true;
        get = (c) => c.remoteIp;
      } else if (attribute === 'destination') {
        needs.destinationIp = true;
        get = (c) => c.destinationIp;
      } else {
        needs.sourceIp = true;
        get = (c) => c.sourceIp;
      }
      return {
        p: (c) => {
          const a = get(c);
          if (a === undefined) return false;
          for (const b of blocks) if (ipBlockContains(b, a)) return true;
          return false;
        },
        cost: 2 * blocks.length,
      };
    }
    default: {
      if (typeof attribute !== 'function') throw new Error(`policy: no accessor for ${kind}`);
      // A string, or (JWT claims and audiences) a list of which any element may match.
      const patterns = plain();
      const m = createStringMatcher(patterns);
      return {
        p: (c) => {
          const v = attribute(c);
          if (typeof v === 'string') return m(v);
          if (Array.isArray(v)) {
            for (const x of v) if (typeof x === 'string' && m(x)) return true;
          }
          return false;
        },
        cost: 2 + patternsCost(patterns),
      };
    }
  }
}

/** values AND NOT notValues, for one field or condition. */
function fieldTests(
  kind: ValueKind,
  values: readonly string[] | undefined,
  notValues: readonly string[] | undefined,
  attribute: 'source' | 'remote' | 'destination' | Accessor,
  policyNamespace: string,
  needs: Needs,
): Test[] {
  const out: Test[] = [];
  if (values !== undefined && values.length > 0) {
    out.push(valuesTest(kind, values, attribute, policyNamespace, needs));
  }
  if (notValues !== undefined && notValues.length > 0) {
    out.push(not(valuesTest(kind, notValues, attribute, policyNamespace, needs)));
  }
  return out;
}

/**
 * A request header, own properties only: headers objects (Node's among them) inherit from
 * Object.prototype, whose `constructor` or `toString` is no header.
 */
function header(c: RequestContext, name: string): string | undefined {
  const h = c.headers;
  if (h === undefined) return undefined;
  const v = h[name];
  // Checked only when something was found: most headers asked for are absent.
  if (v === undefined || !Object.hasOwn(h, name)) return undefined;
  return typeof v === 'string' ? v : Array.isArray(v) ? v.join(',') : undefined;
}

function claim(c: RequestContext, path: readonly string[]): unknown {
  let v: unknown = c.auth?.claims;
  for (const k of path) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, k)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

function conditionAttribute(key: ConditionKey): 'source' | 'remote' | 'destination' | Accessor {
  switch (key.attribute) {
    case 'request.headers': {
      const name = key.header;
      return (c) => header(c, name);
    }
    case 'request.auth.claims': {
      const path = key.claim;
      return (c) => claim(c, path);
    }
    case 'source.ip':
      return 'source';
    case 'remote.ip':
      return 'remote';
    case 'destination.ip':
      return 'destination';
    case 'request.auth.audiences':
      return (c) => c.auth?.audiences;
    case 'request.auth.presenter':
      return (c) => c.auth?.presenter;
    case 'connection.sni':
      return (c) => c.sni;
    default:
      // Attributes whose kind names its accessor (principal, namespace, port…).
      return 'source';
  }
}

/** Headers use Envoy's present_match for `*`: a header that is present matches even when empty. */
function conditionTests(
  key: ConditionKey,
  values: readonly string[] | undefined,
  notValues: readonly string[] | undefined,
  ns: string,
  needs: Needs,
): Test[] {
  if (key.attribute === 'request.headers') {
    const name = key.header;
    const test = (vs: readonly string[]): Test => {
      const patterns = vs.map(parseStringPattern);
      const m = createStringMatcher(patterns, { presentMatchesEmpty: true });
      return { p: (c) => m(header(c, name)), cost: 1 + patternsCost(patterns) };
    };
    const out: Test[] = [];
    if (values !== undefined && values.length > 0) out.push(test(values));
    if (notValues !== undefined && notValues.length > 0) out.push(not(test(notValues)));
    return out;
  }
  return fieldTests(key.kind, values, notValues, conditionAttribute(key), ns, needs);
}

type FieldValues = Readonly<Record<string, readonly string[] | undefined>>;

function fieldsTest(
  object: FieldValues,
  table: Readonly<Record<string, FieldSpec>>,
  path: string,
  skip: (field: string, spec: FieldSpec, path: string) => boolean,
  ns: string,
  needs: Needs,
): Test {
  const ts: Test[] = [];
  for (const [field, spec] of Object.entries(table)) {
    if (spec.negative) continue;
    const notField = `not${field[0]!.toUpperCase()}${field.slice(1)}`;
    let values = object[field];
    let notValues = object[notField];
    if (values !== undefined && skip(field, spec, `${path}.${field}`)) values = undefined;
    if (notValues !== undefined && skip(notField, spec, `${path}.${notField}`)) notValues = undefined;
    const attribute = field === 'remoteIpBlocks' ? 'remote' : 'source';
    ts.push(...fieldTests(spec.kind, values, notValues, attribute, ns, needs));
  }
  return all(ts);
}

/**
 * Checks rule `index` again as the loader does, for policies built by hand rather than loaded: a
 * value the engine cannot compile must not silently never match (in a DENY rule, that would allow).
 */
export function checkRule(policy: AuthorizationPolicy, index: number): RuleNote[] {
  const out: RuleNote[] = [];
  const rule = policy.spec.rules[index];
  const base = `spec.rules[${index}]`;
  if (typeof rule !== 'object' || rule === null) return [{ path: base, message: 'is not a rule object' }];
  const values = (path: string, kind: ValueKind, vs: unknown) => {
    if (vs === undefined) return;
    if (!Array.isArray(vs)) {
      out.push({ path, message: 'must be a list of strings' });
      return;
    }
    vs.forEach((v, i) => {
      const bad = typeof v === 'string' ? checkValue(kind, v) : 'must be a string';
      if (bad !== undefined) out.push({ path: `${path}[${i}]`, message: bad });
    });
  };
  const fields = (path: string, object: unknown, table: Readonly<Record<string, FieldSpec>>) => {
    if (typeof object !== 'object' || object === null) {
      out.push({ path, message: 'must be an object' });
      return;
    }
    for (const [k, v] of Object.entries(object)) {
      const spec = table[k];
      if (spec === undefined) out.push({ path: `${path}.${k}`, message: `unknown field "${k}"` });
      else values(`${path}.${k}`, spec.kind, v);
    }
  };
  (rule.from ?? []).forEach((f, i) => {
    fields(`${base}.from[${i}].source`, f?.source, SOURCE_FIELDS);
  });
  (rule.to ?? []).forEach((t, i) => {
    fields(`${base}.to[${i}].operation`, t?.operation, OPERATION_FIELDS);
  });
  (rule.when ?? []).forEach((c, i) => {
    const key = typeof c?.key === 'string' ? parseConditionKey(c.key) : 'a condition needs a key';
    if (typeof key === 'string') out.push({ path: `${base}.when[${i}]`, message: key });
    else {
      values(`${base}.when[${i}].values`, key.kind, c.values);
      values(`${base}.when[${i}].notValues`, key.kind, c.notValues);
    }
  });
  return out;
}

/**
 * Compiles rule `index` of `policy` for `protocol`. Returns undefined for an ALLOW rule that cannot
 * match on this protocol; `notes` receives one entry per HTTP-only field on TCP.
 */
export function compileRule(
  policy: AuthorizationPolicy,
  index: number,
  protocol: 'http' | 'tcp',
  needs: Needs,
  notes: RuleNote[],
): CompiledMatch | undefined {
  const rule: Rule = policy.spec.rules[index]!;
  const action = policy.spec.action;
  const ns = policy.metadata.namespace;
  const base = `spec.rules[${index}]`;
  let void_ = false;
  /** Whether an HTTP-only field is left out here; notes it, and voids an ALLOW rule. */
  const skip = (field: string, spec: { httpOnly: boolean }, path: string): boolean => {
    if (protocol !== 'tcp' || !spec.httpOnly) return false;
    const what = path.endsWith(field) ? path : `${path} (${field})`;
    if (action === 'ALLOW') {
      void_ = true;
      notes.push({
        path,
        message: `${what} is HTTP-only: on TCP connections ALLOW rule ${index} matches nothing (Istio ignores the rule)`,
      });
    } else {
      notes.push({
        path,
        message: `${what} is HTTP-only: on TCP connections it is ignored, so ${action} rule ${index} matches more connections than on HTTP (as in Istio); scope the rule with ports`,
      });
    }
    return true;
  };

  const from = (rule.from ?? []).map((f, i) =>
    fieldsTest(f.source as FieldValues, SOURCE_FIELDS, `${base}.from[${i}].source`, skip, ns, needs),
  );
  const to = (rule.to ?? []).map((t, i) =>
    fieldsTest(t.operation as FieldValues, OPERATION_FIELDS, `${base}.to[${i}].operation`, skip, ns, needs),
  );
  const when: Test[] = [];
  (rule.when ?? []).forEach((c, i) => {
    const key = parseConditionKey(c.key);
    if (typeof key === 'string') throw new Error(`policy: ${key}`);
    if (skip(c.key, key, `${base}.when[${i}]`)) return;
    when.push(...conditionTests(key, c.values, c.notValues, ns, needs));
  });
  if (void_) return undefined;

  const parts: Test[] = [];
  if (from.length > 0) parts.push(any(from));
  if (to.length > 0) parts.push(any(to));
  parts.push(...when);
  const peer = indexOf(rule, protocol);
  return { match: all(parts).p, ...(peer === undefined ? {} : { index: peer }) };
}

function indexOf(rule: Rule, protocol: 'http' | 'tcp'): RuleIndex | undefined {
  return (
    peerIndex(rule) ??
    ipIndex(rule) ??
    (protocol === 'http' ? (pathIndex(rule) ?? methodIndex(rule)) : undefined)
  );
}

/**
 * When every `from` entry requires a principal pattern (exact, prefix or suffix; not presence) or an
 * exact namespace.
 */
function peerIndex(rule: Rule): RuleIndex | undefined {
  if (rule.from === undefined || rule.from.length === 0) return undefined;
  const principals = new Set<string>();
  const principalPrefixes = new Set<string>();
  const principalSuffixes = new Set<string>();
  const namespaces = new Set<string>();
  for (const { source } of rule.from) {
    const ps = (source.principals ?? []).map((v) => parseStringPattern(normalizePrincipal(v)));
    if (ps.length > 0 && ps.every((p) => p.kind === 'exact' || p.kind === 'prefix' || p.kind === 'suffix')) {
      for (const p of ps) {
        const set =
          p.kind === 'exact' ? principals : p.kind === 'prefix' ? principalPrefixes : principalSuffixes;
        set.add((p as { value: string }).value);
      }
    } else if (source.namespaces?.every((n) => !n.includes('*'))) {
      for (const n of source.namespaces) namespaces.add(n);
    } else {
      return undefined;
    }
  }
  return {
    kind: 'peer',
    principals: [...principals],
    principalPrefixes: [...principalPrefixes],
    principalSuffixes: [...principalSuffixes],
    namespaces: [...namespaces],
  };
}

/** When every `from` entry requires ipBlocks of at least /8 (IPv4) or /16 (IPv6). */
function ipIndex(rule: Rule): RuleIndex | undefined {
  if (rule.from === undefined || rule.from.length === 0) return undefined;
  const buckets = new Set<number>();
  for (const { source } of rule.from) {
    if (source.ipBlocks === undefined) return undefined;
    for (const v of source.ipBlocks) {
      const b = parseIpBlock(v);
      if (typeof b === 'string' || b.prefix < (b.v6 ? 16 : 8)) return undefined;
      buckets.add(ipBucket(b));
    }
  }
  return { kind: 'ip', buckets: [...buckets] };
}

/** When every `to` entry requires paths that all fix the first segment (`/admin`, `/admin/*`). */
function pathIndex(rule: Rule): RuleIndex | undefined {
  if (rule.to === undefined || rule.to.length === 0) return undefined;
  const segments = new Set<string>();
  for (const { operation } of rule.to) {
    if (operation.paths === undefined) return undefined;
    for (const v of operation.paths) {
      const p = parsePathPattern(v);
      if (p.kind === 'exact' && p.value.startsWith('/')) segments.add(firstSegment(p.value));
      else if (p.kind === 'prefix' && p.value.startsWith('/') && p.value.indexOf('/', 1) > 0) {
        segments.add(firstSegment(p.value));
      } else return undefined;
    }
  }
  return { kind: 'path', segments: [...segments] };
}

/** When every `to` entry requires exact methods. */
function methodIndex(rule: Rule): RuleIndex | undefined {
  if (rule.to === undefined || rule.to.length === 0) return undefined;
  const methods = new Set<string>();
  for (const { operation } of rule.to) {
    if (operation.methods === undefined || operation.methods.some((m) => m.includes('*'))) return undefined;
    for (const m of operation.methods) methods.add(m);
  }
  return { kind: 'method', methods: [...methods] };
}
