/**
 * Compiles one rule of a policy into a predicate over a request, for one protocol, the way Istio's
 * builder turns it into an Envoy RBAC policy: a rule is any `from` AND any `to` AND every `when`;
 * within a source or operation every field given AND; a field's values OR; `not*` values NOR. On
 * TCP, HTTP-only fields make an ALLOW rule match nothing and are dropped from DENY and AUDIT rules
 * (which then match more), each occurrence reported. Pure; internal to the policy engine.
 */
import {
  type ConditionKey,
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
  /** The peer's SPIFFE ID (`spiffe://…`), when a service-account match needs it. */
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
  spiffeId: boolean;
}

export interface CompiledMatch {
  readonly match: Predicate;
  /** Set when the rule can only match these exact principals (an index key). */
  readonly principals?: readonly string[];
  /** Set when the rule can only match peers in these exact namespaces (or the principals above). */
  readonly namespaces?: readonly string[];
}

/** A problem of the TCP rule, reported as a warning at the field's line. */
export interface RuleNote {
  readonly path: string;
  readonly message: string;
}

const TRUE: Predicate = () => true;
const FALSE: Predicate = () => false;

function all(ps: readonly Predicate[]): Predicate {
  if (ps.length === 0) return TRUE;
  if (ps.length === 1) return ps[0]!;
  if (ps.length === 2) {
    const [a, b] = ps as [Predicate, Predicate];
    return (c) => a(c) && b(c);
  }
  return (c) => {
    for (const p of ps) if (!p(c)) return false;
    return true;
  };
}

function any(ps: readonly Predicate[]): Predicate {
  if (ps.length === 0) return FALSE;
  if (ps.length === 1) return ps[0]!;
  return (c) => {
    for (const p of ps) if (p(c)) return true;
    return false;
  };
}

type Accessor = (ctx: RequestContext) => unknown;

/** A predicate true when the attribute matches any of `values`. */
function valuesPredicate(
  kind: ValueKind,
  values: readonly string[],
  attribute: 'source' | 'remote' | 'destination' | Accessor,
  policyNamespace: string,
  needs: Needs,
): Predicate {
  const strings = (
    patterns: StringPattern[],
    get: (c: RequestContext) => string | undefined,
    o?: MatcherOptions,
  ) => {
    const m = createStringMatcher(patterns, o);
    return (c: RequestContext) => m(get(c));
  };
  const plain = values.map(parseStringPattern);
  switch (kind) {
    case 'principal':
      return strings(
        values.map((v) => parseStringPattern(normalizePrincipal(v))),
        (c) => c.principal,
      );
    case 'requestPrincipal':
      return strings(plain, (c) => c.auth?.principal);
    case 'namespace':
      return strings(plain, (c) => c.namespace);
    case 'trustDomain':
      return strings(plain, (c) => c.trustDomain);
    case 'host':
      needs.host = true;
      return strings(plain, (c) => c.host, { ignoreCase: true });
    case 'method':
      return strings(plain, (c) => c.method);
    case 'path':
      return strings(values.map(parsePathPattern), (c) => c.path);
    case 'serviceAccount': {
      needs.spiffeId = true;
      // Istio's form: spiffe://<td>/ns/<ns>/[…/]sa/<sa>[/…]; a bare name is in the policy's namespace.
      const regexes = values.map((v) => {
        const [ns, sa] = v.includes('/') ? (v.split('/') as [string, string]) : [policyNamespace, v];
        const q = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        return new RegExp(`^spiffe://.+/ns/${q(ns)}/(.+/|)sa/${q(sa)}(/.+)?$`);
      });
      return (c) => c.spiffeId !== undefined && regexes.some((r) => r.test(c.spiffeId!));
    }
    case 'port': {
      const ports = new Set(values.map(Number));
      return (c) => c.destinationPort !== undefined && ports.has(c.destinationPort);
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
      return (c) => {
        const a = get(c);
        if (a === undefined) return false;
        for (const b of blocks) if (ipBlockContains(b, a)) return true;
        return false;
      };
    }
    default: {
      if (typeof attribute !== 'function') throw new Error(`policy: no accessor for ${kind}`);
      // A string, or (JWT claims and audiences) a list of which any element may match.
      const m = createStringMatcher(plain);
      return (c) => {
        const v = attribute(c);
        if (typeof v === 'string') return m(v);
        if (Array.isArray(v)) {
          for (const x of v) if (typeof x === 'string' && m(x)) return true;
        }
        return false;
      };
    }
  }
}

/** values AND NOT notValues, for one field or condition. */
function fieldPredicate(
  kind: ValueKind,
  values: readonly string[] | undefined,
  notValues: readonly string[] | undefined,
  attribute: 'source' | 'remote' | 'destination' | Accessor,
  policyNamespace: string,
  needs: Needs,
): Predicate[] {
  const out: Predicate[] = [];
  if (values !== undefined && values.length > 0) {
    out.push(valuesPredicate(kind, values, attribute, policyNamespace, needs));
  }
  if (notValues !== undefined && notValues.length > 0) {
    const p = valuesPredicate(kind, notValues, attribute, policyNamespace, needs);
    out.push((c) => !p(c));
  }
  return out;
}

function header(c: RequestContext, name: string): string | undefined {
  const v = c.headers?.[name];
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.join(',');
}

function claim(c: RequestContext, path: readonly string[]): unknown {
  let v: unknown = c.auth?.claims;
  for (const k of path) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
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
function conditionPredicates(
  key: ConditionKey,
  values: readonly string[] | undefined,
  notValues: readonly string[] | undefined,
  ns: string,
  needs: Needs,
): Predicate[] {
  if (key.attribute === 'request.headers') {
    const name = key.header;
    const predicate = (vs: readonly string[]) => {
      const m = createStringMatcher(vs.map(parseStringPattern), { presentMatchesEmpty: true });
      return (c: RequestContext) => m(header(c, name));
    };
    const out: Predicate[] = [];
    if (values !== undefined && values.length > 0) out.push(predicate(values));
    if (notValues !== undefined && notValues.length > 0) {
      const p = predicate(notValues);
      out.push((c) => !p(c));
    }
    return out;
  }
  return fieldPredicate(key.kind, values, notValues, conditionAttribute(key), ns, needs);
}

type FieldValues = Readonly<Record<string, readonly string[] | undefined>>;

function fieldsPredicate(
  object: FieldValues,
  table: Readonly<Record<string, FieldSpec>>,
  path: string,
  skip: (field: string, spec: FieldSpec, path: string) => boolean,
  ns: string,
  needs: Needs,
): Predicate {
  const ps: Predicate[] = [];
  for (const [field, spec] of Object.entries(table)) {
    if (spec.negative) continue;
    const notField = `not${field[0]!.toUpperCase()}${field.slice(1)}`;
    let values = object[field];
    let notValues = object[notField];
    if (values !== undefined && skip(field, spec, `${path}.${field}`)) values = undefined;
    if (notValues !== undefined && skip(notField, spec, `${path}.${notField}`)) notValues = undefined;
    const attribute = field === 'remoteIpBlocks' ? 'remote' : 'source';
    ps.push(...fieldPredicate(spec.kind, values, notValues, attribute, ns, needs));
  }
  return all(ps);
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
    fieldsPredicate(f.source as FieldValues, SOURCE_FIELDS, `${base}.from[${i}].source`, skip, ns, needs),
  );
  const to = (rule.to ?? []).map((t, i) =>
    fieldsPredicate(
      t.operation as FieldValues,
      OPERATION_FIELDS,
      `${base}.to[${i}].operation`,
      skip,
      ns,
      needs,
    ),
  );
  const when: Predicate[] = [];
  (rule.when ?? []).forEach((c, i) => {
    const key = parseConditionKey(c.key);
    if (typeof key === 'string') throw new Error(`policy: ${key}`);
    if (skip(c.key, key, `${base}.when[${i}]`)) return;
    when.push(...conditionPredicates(key, c.values, c.notValues, ns, needs));
  });
  if (void_) return undefined;

  const parts: Predicate[] = [];
  if (from.length > 0) parts.push(any(from));
  if (to.length > 0) parts.push(any(to));
  parts.push(...when);
  return { match: all(parts), ...indexKeys(rule) };
}

/**
 * The exact principals or namespaces a rule requires, when every `from` entry requires some: the
 * engine then looks the rule up by the peer instead of trying it on every request.
 */
function indexKeys(rule: Rule): { principals?: string[]; namespaces?: string[] } {
  if (rule.from === undefined || rule.from.length === 0) return {};
  const principals = new Set<string>();
  const namespaces = new Set<string>();
  const exact = (vs: readonly string[] | undefined) =>
    vs !== undefined && vs.length > 0 && vs.every((v) => !v.includes('*'));
  for (const { source } of rule.from) {
    if (exact(source.principals)) for (const p of source.principals!) principals.add(normalizePrincipal(p));
    else if (exact(source.namespaces)) for (const n of source.namespaces!) namespaces.add(n);
    else return {};
  }
  return {
    ...(principals.size > 0 ? { principals: [...principals] } : {}),
    ...(namespaces.size > 0 ? { namespaces: [...namespaces] } : {}),
  };
}
