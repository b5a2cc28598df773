/**
 * The policy engine: the AuthorizationPolicies that apply to one workload, compiled once, and the
 * decision for each request in Istio's order — any matching DENY denies; with no ALLOW policy the
 * request is allowed; a matching ALLOW allows; otherwise it is denied. AUDIT policies only mark.
 * Pure: no I/O, no node:net.
 */
import { normalizePrincipal } from './attributes.js';
import { type AuthorizationPolicy, policyName } from './authorization-policy.js';
import {
  type CompiledMatch,
  checkRule,
  compileRule,
  firstSegment,
  ipBucket,
  type Needs,
  type RequestContext,
  type RuleNote,
} from './compile-rule.js';
import { type IpAddress, parsePeerAddress } from './ip-block.js';
import { policyPath } from './normalize-path.js';
import { PolicyInvalidError, type PolicyProblem } from './policy-error.js';
import type {
  PolicyAction,
  PolicyDecision,
  PolicyRef,
  PolicyRequest,
  PolicyWarning,
  PolicyWorkload,
} from './types.js';

/** Istio's default root namespace: its policies apply to every workload of the mesh. */
export const DEFAULT_ROOT_NAMESPACE = 'istio-system';

export interface PolicyEngineOptions {
  /**
   * The protocol of the listener the engine serves. With it, only that protocol's rules are compiled
   * and requests must carry it; without it, both are compiled and each request's `protocol` picks.
   * TCP warnings (HTTP-only fields) are reported unless the protocol is `http`.
   */
  protocol?: 'http' | 'tcp';
}

export interface PolicyEngine {
  /** The decision for one HTTP request or TCP connection. */
  evaluate(request: PolicyRequest): PolicyDecision;
  /** Found while compiling: HTTP-only fields under TCP, each with its file, line and policy. */
  readonly warnings: readonly PolicyWarning[];
  /** The policies that apply to the workload, in load order. */
  readonly policies: readonly AuthorizationPolicy[];
}

interface CompiledRule extends CompiledMatch {
  readonly ordinal: number;
  readonly ref: PolicyRef;
  /** The decision this rule gives when it decides (DENY or ALLOW), shared and frozen. */
  readonly decision: PolicyDecision;
}

/**
 * Rules of one action, indexed by what they require of the peer: an exact principal, a principal
 * prefix or suffix (looked up by the request principal's prefix or suffix of each length in use), or
 * an exact namespace. Lists are in load order.
 */
interface RuleSet {
  readonly byPrincipal: Map<string, CompiledRule[]>;
  readonly byPrefix: Map<string, CompiledRule[]>;
  /** The prefix lengths in byPrefix, ascending. */
  readonly prefixLengths: number[];
  readonly bySuffix: Map<string, CompiledRule[]>;
  readonly suffixLengths: number[];
  readonly byNamespace: Map<string, CompiledRule[]>;
  readonly byIpBucket: Map<number, CompiledRule[]>;
  readonly byPathSegment: Map<string, CompiledRule[]>;
  readonly byMethod: Map<string, CompiledRule[]>;
  /** Rules not indexed: tried on every request. */
  readonly rest: CompiledRule[];
  size: number;
}

/**
 * What the engine derives from one source principal, once: its parts, and for each action the lists
 * of rules indexed under it (by exact principal, its prefixes and suffixes, its namespace).
 */
interface Peer {
  readonly principal: string;
  readonly spiffeId: string;
  readonly namespace: string | undefined;
  readonly trustDomain: string;
  readonly deny: readonly CompiledRule[][];
  readonly allow: readonly CompiledRule[][];
  readonly audit: readonly CompiledRule[][];
}

/** How many peers (and addresses) an engine remembers; past it the memory is cleared and filled again. */
const PEER_CACHE_SIZE = 10_000;

const NO_LISTS: readonly CompiledRule[][] = Object.freeze([]);

interface Variant {
  readonly deny: RuleSet;
  readonly allow: RuleSet;
  readonly audit: RuleSet;
  /** Peers seen, by the request's `sourcePrincipal` exactly as given (the rules never change). */
  readonly peers: Map<string, Peer>;
  /** How many ALLOW policies apply (an ALLOW policy whose rules cannot match still applies). */
  readonly allowPolicies: number;
  readonly noAllowPolicy: PolicyDecision;
  readonly noAllowMatched: PolicyDecision;
}

const NO_AUDIT: readonly PolicyRef[] = Object.freeze([]);

/** Whether `policy` applies to `workload`: its namespace (or the root one) and every selector label. */
function applies(policy: AuthorizationPolicy, workload: PolicyWorkload, root: string): boolean {
  const ns = policy.metadata.namespace;
  if (ns !== workload.namespace && ns !== root) return false;
  const labels = policy.spec.selector?.matchLabels;
  if (labels === undefined) return true;
  for (const [k, v] of Object.entries(labels)) {
    if (!Object.hasOwn(workload.labels, k) || workload.labels[k] !== v) return false;
  }
  return true;
}

function emptySet(): RuleSet {
  return {
    byPrincipal: new Map(),
    byPrefix: new Map(),
    prefixLengths: [],
    bySuffix: new Map(),
    suffixLengths: [],
    byNamespace: new Map(),
    byIpBucket: new Map(),
    byPathSegment: new Map(),
    byMethod: new Map(),
    rest: [],
    size: 0,
  };
}

function addTo<K extends string | number>(
  map: Map<K, CompiledRule[]>,
  key: K,
  rule: CompiledRule,
  lengths?: number[],
): void {
  const list = map.get(key);
  if (list === undefined) {
    map.set(key, [rule]);
    if (lengths !== undefined && typeof key === 'string' && !lengths.includes(key.length)) {
      lengths.push(key.length);
      lengths.sort((a, b) => a - b);
    }
  } else if (list.at(-1) !== rule) list.push(rule);
}

function addRule(set: RuleSet, rule: CompiledRule): void {
  set.size++;
  const ix = rule.index;
  if (ix === undefined) {
    set.rest.push(rule);
    return;
  }
  switch (ix.kind) {
    case 'peer':
      for (const p of ix.principals) addTo(set.byPrincipal, p, rule);
      for (const p of ix.principalPrefixes) addTo(set.byPrefix, p, rule, set.prefixLengths);
      for (const p of ix.principalSuffixes) addTo(set.bySuffix, p, rule, set.suffixLengths);
      for (const n of ix.namespaces) addTo(set.byNamespace, n, rule);
      break;
    case 'ip':
      for (const b of ix.buckets) addTo(set.byIpBucket, b, rule);
      break;
    case 'path':
      for (const s of ix.segments) addTo(set.byPathSegment, s, rule);
      break;
    case 'method':
      for (const m of ix.methods) addTo(set.byMethod, m, rule);
      break;
  }
}

function decision(allowed: boolean, reason: string, decidedBy?: PolicyRef): PolicyDecision {
  return Object.freeze({
    allowed,
    reason,
    audited: NO_AUDIT,
    ...(decidedBy === undefined ? {} : { decidedBy }),
  });
}

function listNames(names: readonly string[]): string {
  const shown = names.slice(0, 5).join(', ');
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}

function compileVariant(
  policies: readonly AuthorizationPolicy[],
  protocol: 'http' | 'tcp',
  needs: Needs,
  warnings: PolicyWarning[] | undefined,
): Variant {
  const sets: Record<PolicyAction, RuleSet> = {
    ALLOW: emptySet(),
    DENY: emptySet(),
    AUDIT: emptySet(),
  };
  const allowNames: string[] = [];
  let ordinal = 0;
  for (const policy of policies) {
    const name = policyName(policy);
    const action = policy.spec.action;
    if (action === 'ALLOW') allowNames.push(name);
    policy.spec.rules.forEach((_, i) => {
      const notes: RuleNote[] = [];
      const compiled = compileRule(policy, i, protocol, needs, notes);
      for (const n of notes) {
        warnings?.push({
          file: policy.origin.file,
          line: policy.origin.lines[n.path] ?? policy.origin.line,
          policy: name,
          message: n.message,
        });
      }
      if (compiled === undefined) return;
      const ref: PolicyRef = Object.freeze({ policy: name, action, rule: i });
      const rule: CompiledRule = {
        ...compiled,
        ordinal: ordinal++,
        ref,
        decision:
          action === 'DENY'
            ? decision(false, `denied by DENY policy ${name} rule ${i}`, ref)
            : decision(true, `allowed by ALLOW policy ${name} rule ${i}`, ref),
      };
      addRule(sets[action], rule);
    });
  }
  const n = allowNames.length;
  return {
    deny: sets.DENY,
    allow: sets.ALLOW,
    audit: sets.AUDIT,
    peers: new Map(),
    allowPolicies: n,
    noAllowPolicy: decision(
      true,
      'allowed: no DENY policy matched and no ALLOW policy applies to the workload',
    ),
    noAllowMatched: decision(
      false,
      `denied: no ALLOW policy matched (${n} ALLOW ${n === 1 ? 'policy applies' : 'policies apply'} to the workload: ${listNames(allowNames)})`,
    ),
  };
}

/** The first rule of `list` (sorted by ordinal) that matches and comes before `best`. */
function scan(
  list: readonly CompiledRule[],
  ctx: RequestContext,
  best: CompiledRule | undefined,
): CompiledRule | undefined {
  const limit = best === undefined ? Number.POSITIVE_INFINITY : best.ordinal;
  for (const r of list) {
    if (r.ordinal >= limit) break;
    if (r.match(ctx)) return r;
  }
  return best;
}

/**
 * The lists of `set` indexed under a peer: its exact principal, each prefix and suffix of it of a
 * length in use, its namespace. Computed once per peer (see Peer).
 */
function peerLists(set: RuleSet, principal: string, namespace: string | undefined): CompiledRule[][] {
  const out: CompiledRule[][] = [];
  const add = (list: CompiledRule[] | undefined) => {
    if (list !== undefined) out.push(list);
  };
  add(set.byPrincipal.get(principal));
  for (const n of set.prefixLengths) {
    if (n > principal.length) break;
    add(set.byPrefix.get(principal.slice(0, n)));
  }
  for (const n of set.suffixLengths) {
    if (n > principal.length) break;
    add(set.bySuffix.get(principal.slice(principal.length - n)));
  }
  if (namespace !== undefined) add(set.byNamespace.get(namespace));
  return out;
}

/** The request's keys into the indexes that are not about the peer, computed once per request. */
interface RequestKeys {
  bucket: number | undefined;
  segment: string | undefined;
}

/**
 * Puts in `out` every list of `set` that may hold a rule matching the request: the peer's lists,
 * then those of its address's bucket, the path's first segment and the method, and the rules not
 * indexed. Returns how many; `out` is the engine's scratch array (evaluate is synchronous).
 */
function candidates(
  set: RuleSet,
  peer: readonly CompiledRule[][],
  ctx: RequestContext,
  keys: RequestKeys,
  out: CompiledRule[][],
): number {
  let n = 0;
  for (const list of peer) out[n++] = list;
  if (set.byIpBucket.size > 0 && keys.bucket !== undefined) {
    const list = set.byIpBucket.get(keys.bucket);
    if (list !== undefined) out[n++] = list;
  }
  if (set.byPathSegment.size > 0 && keys.segment !== undefined) {
    const list = set.byPathSegment.get(keys.segment);
    if (list !== undefined) out[n++] = list;
  }
  if (set.byMethod.size > 0 && ctx.method !== undefined) {
    const list = set.byMethod.get(ctx.method);
    if (list !== undefined) out[n++] = list;
  }
  if (set.rest.length > 0) out[n++] = set.rest;
  return n;
}

/** The first matching rule in load order. */
function firstMatch(
  set: RuleSet,
  peer: readonly CompiledRule[][],
  ctx: RequestContext,
  keys: RequestKeys,
  scratch: CompiledRule[][],
): CompiledRule | undefined {
  if (set.size === 0) return undefined;
  const n = candidates(set, peer, ctx, keys, scratch);
  let best: CompiledRule | undefined;
  for (let i = 0; i < n; i++) best = scan(scratch[i]!, ctx, best);
  return best;
}

/** Every AUDIT policy with a matching rule (its first matching rule), in load order. */
function audits(
  set: RuleSet,
  peer: readonly CompiledRule[][],
  ctx: RequestContext,
  keys: RequestKeys,
  scratch: CompiledRule[][],
): readonly PolicyRef[] {
  if (set.size === 0) return NO_AUDIT;
  const n = candidates(set, peer, ctx, keys, scratch);
  let matched: CompiledRule[] | undefined;
  for (let i = 0; i < n; i++) {
    for (const r of scratch[i]!) {
      if (r.match(ctx)) {
        if (matched === undefined) matched = [];
        matched.push(r);
      }
    }
  }
  if (matched === undefined) return NO_AUDIT;
  matched.sort((a, b) => a.ordinal - b.ordinal);
  const refs: PolicyRef[] = [];
  for (const r of matched) {
    if (refs.length === 0 || refs.at(-1)!.policy !== r.ref.policy) refs.push(r.ref);
  }
  return Object.freeze(refs);
}

/** The namespace in a principal's `/ns/<name>/` segment, as Istio's `source.namespace` reads it. */
function namespaceOf(principal: string): string | undefined {
  const i = principal.indexOf('/ns/');
  if (i < 0) return undefined;
  const end = principal.indexOf('/', i + 4);
  return end <= i + 4 ? undefined : principal.slice(i + 4, end);
}

/**
 * Compiles the policies that apply to `workload` (its namespace and the root namespace, selector
 * labels all present and equal) for fast decisions. Throws a TypeError for a malformed workload, and
 * ERR_POLICY_INVALID for a policy built by hand with a value the loader would have refused.
 */
export function createPolicyEngine(
  policies: readonly AuthorizationPolicy[],
  workload: PolicyWorkload,
  options: PolicyEngineOptions = {},
): PolicyEngine {
  if (!Array.isArray(policies))
    throw new TypeError('createPolicyEngine: policies must be an array (from loadPolicies or parsePolicies)');
  if (typeof workload?.namespace !== 'string' || workload.namespace === '') {
    throw new TypeError('createPolicyEngine: workload.namespace must be a non-empty string');
  }
  if (typeof workload.labels !== 'object' || workload.labels === null) {
    throw new TypeError('createPolicyEngine: workload.labels must be an object of label names to values');
  }
  const only = options.protocol;
  if (only !== undefined && only !== 'http' && only !== 'tcp') {
    throw new TypeError(`createPolicyEngine: protocol must be "http" or "tcp"; got ${JSON.stringify(only)}`);
  }
  const root = workload.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const selected = Object.freeze(policies.filter((p) => applies(p, workload, root)));
  const problems: PolicyProblem[] = [];
  for (const p of selected) {
    const name = policyName(p);
    const at = (path: string) => p.origin?.lines?.[path] ?? p.origin?.line;
    const action: string = p.spec.action;
    if (action !== 'ALLOW' && action !== 'DENY' && action !== 'AUDIT') {
      problems.push({
        file: p.origin?.file ?? '',
        line: at('spec.action'),
        policy: name,
        path: 'spec.action',
        message: `"${action}" is not ALLOW, DENY or AUDIT`,
      });
    }
    for (let i = 0; i < p.spec.rules.length; i++) {
      for (const n of checkRule(p, i)) {
        problems.push({
          file: p.origin?.file ?? '',
          line: at(n.path),
          policy: name,
          path: n.path,
          message: n.message,
        });
      }
    }
  }
  if (problems.length > 0) throw new PolicyInvalidError(problems);
  const warnings: PolicyWarning[] = [];
  const needs: Needs = {
    sourceIp: false,
    remoteIp: false,
    destinationIp: false,
    host: false,
  };
  const variants: { http?: Variant; tcp?: Variant } = {};
  if (only !== 'tcp') variants.http = compileVariant(selected, 'http', needs, undefined);
  if (only !== 'http') variants.tcp = compileVariant(selected, 'tcp', needs, warnings);

  // One context, refilled per call: evaluate is synchronous, so it is never shared by two calls.
  const ctx: RequestContext = {
    principal: undefined,
    spiffeId: undefined,
    namespace: undefined,
    trustDomain: undefined,
    sourceIp: undefined,
    remoteIp: undefined,
    destinationIp: undefined,
    destinationPort: undefined,
    sni: undefined,
    method: undefined,
    path: undefined,
    host: undefined,
    headers: undefined,
    auth: undefined,
  };

  const keys: RequestKeys = { bucket: undefined, segment: undefined };
  const scratch: CompiledRule[][] = [];

  /** Derives and remembers what the engine needs of a source principal (see Peer). */
  const remember = (v: Variant, sourcePrincipal: string): Peer => {
    const principal = normalizePrincipal(sourcePrincipal);
    const namespace = namespaceOf(principal);
    const slash = principal.indexOf('/');
    const peer: Peer = {
      principal,
      spiffeId: `spiffe://${principal}`,
      namespace,
      trustDomain: slash < 0 ? principal : principal.slice(0, slash),
      deny: peerLists(v.deny, principal, namespace),
      allow: peerLists(v.allow, principal, namespace),
      audit: peerLists(v.audit, principal, namespace),
    };
    if (v.peers.size >= PEER_CACHE_SIZE) v.peers.clear();
    v.peers.set(sourcePrincipal, peer);
    return peer;
  };

  // Addresses parsed, by their text: a connection's requests all come from one address.
  const addresses = new Map<string, IpAddress | undefined>();
  const address = (text: string): IpAddress | undefined => {
    let a = addresses.get(text);
    if (a === undefined && !addresses.has(text)) {
      a = parsePeerAddress(text);
      if (addresses.size >= PEER_CACHE_SIZE) addresses.clear();
      addresses.set(text, a);
    }
    return a;
  };

  const evaluate = (req: PolicyRequest): PolicyDecision => {
    if (typeof req !== 'object' || req === null)
      throw new TypeError('evaluate: the request must be a PolicyRequest object');
    const v = req.protocol === 'http' ? variants.http : req.protocol === 'tcp' ? variants.tcp : undefined;
    if (v === undefined) {
      throw new TypeError(
        req.protocol === 'http' || req.protocol === 'tcp'
          ? `evaluate: this engine was created for ${only} requests; got a ${req.protocol} request`
          : `evaluate: request.protocol must be "http" or "tcp"; got ${JSON.stringify(req.protocol)}`,
      );
    }
    const sp = req.sourcePrincipal;
    const peer = sp === undefined || sp === '' ? undefined : (v.peers.get(sp) ?? remember(v, sp));
    ctx.principal = peer?.principal;
    ctx.spiffeId = peer?.spiffeId;
    ctx.namespace = peer?.namespace;
    ctx.trustDomain = peer?.trustDomain;
    ctx.sourceIp = needs.sourceIp && req.sourceIp !== undefined ? address(req.sourceIp) : undefined;
    const remote = req.remoteIp ?? req.sourceIp;
    ctx.remoteIp = needs.remoteIp && remote !== undefined ? address(remote) : undefined;
    ctx.destinationIp =
      needs.destinationIp && req.destinationIp !== undefined ? address(req.destinationIp) : undefined;
    ctx.destinationPort = req.destinationPort;
    ctx.sni = req.sni;
    const http = req.protocol === 'http' ? req.http : undefined;
    ctx.method = http?.method;
    ctx.path = http === undefined ? undefined : policyPath(http.path);
    ctx.host = needs.host && http !== undefined ? http.host.toLowerCase() : undefined;
    ctx.headers = http?.headers;
    ctx.auth = req.protocol === 'http' ? req.auth : undefined;
    keys.bucket = ctx.sourceIp === undefined ? undefined : ipBucket(ctx.sourceIp);
    keys.segment = ctx.path === undefined ? undefined : firstSegment(ctx.path);

    const audited = audits(v.audit, peer?.audit ?? NO_LISTS, ctx, keys, scratch);
    const deny = firstMatch(v.deny, peer?.deny ?? NO_LISTS, ctx, keys, scratch);
    let d: PolicyDecision;
    if (deny !== undefined) d = deny.decision;
    else if (v.allowPolicies === 0) d = v.noAllowPolicy;
    else d = firstMatch(v.allow, peer?.allow ?? NO_LISTS, ctx, keys, scratch)?.decision ?? v.noAllowMatched;
    return audited === NO_AUDIT ? d : Object.freeze({ ...d, audited });
  };

  return Object.freeze({ evaluate, warnings: Object.freeze(warnings), policies: selected });
}
