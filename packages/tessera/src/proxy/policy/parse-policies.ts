/**
 * Reads AuthorizationPolicy resources from YAML or JSON text: one or many documents, `kind: List`
 * wrappers (what `kubectl get -o yaml` prints), other kinds skipped with a warning. Every field is
 * checked against Istio's schema; every problem is collected with its line and thrown together.
 */
import {
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  type Pair,
  parseAllDocuments,
  type YAMLMap,
} from 'yaml';
import {
  checkValue,
  OPERATION_FIELDS,
  parseConditionKey,
  SOURCE_FIELDS,
  suggest,
  type ValueKind,
} from './attributes.js';
import {
  type AuthorizationPolicy,
  type Condition,
  type Operation,
  POLICY_API_VERSIONS,
  policyName,
  type Rule,
  type Source,
} from './authorization-policy.js';
import { PolicyInvalidError, type PolicyProblem } from './policy-error.js';
import type { PolicyAction, PolicyWarning } from './types.js';

const ISTIO_GROUP = 'security.istio.io';
const KIND = 'AuthorizationPolicy';
const DRY_RUN = 'istio.io/dry-run';

/** The fields of Kubernetes ObjectMeta; all but name, namespace and annotations are ignored. */
const METADATA_FIELDS = [
  'name',
  'namespace',
  'labels',
  'annotations',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'generateName',
  'selfLink',
  'finalizers',
  'ownerReferences',
  'managedFields',
];

const REFUSED_SPEC_FIELDS: Record<string, string> = {
  provider:
    'not supported: Tessera has no external authorizer (provider is for action CUSTOM); use ALLOW/DENY',
  targetRef:
    'not supported: Tessera proxies are selected by labels (spec.selector.matchLabels), not by targetRef',
  targetRefs:
    'not supported: Tessera proxies are selected by labels (spec.selector.matchLabels), not by targetRefs',
};

/** The result of reading one file, problems included (loadPolicies throws them with other files'). */
export interface PolicyDocuments {
  policies: AuthorizationPolicy[];
  warnings: PolicyWarning[];
  problems: PolicyProblem[];
}

/**
 * Parses the AuthorizationPolicies in `text` (YAML or JSON; `file` names it in messages). Throws a
 * TesseraError ERR_POLICY_INVALID listing every problem, each as `file:line: ns/name: field: message`.
 */
export function parsePolicies(
  text: string,
  file: string,
): { policies: readonly AuthorizationPolicy[]; warnings: PolicyWarning[] } {
  if (typeof text !== 'string' || typeof file !== 'string') {
    throw new TypeError('parsePolicies: text and file must be strings (file names the text in messages)');
  }
  const r = readPolicyDocuments(text, file);
  checkDuplicates(r.policies, r.problems);
  if (r.problems.length > 0) throw new PolicyInvalidError(r.problems, r.warnings);
  return { policies: Object.freeze(r.policies), warnings: r.warnings };
}

/** Two policies with the same namespace and name are one resource in Kubernetes: refuse the ambiguity. */
export function checkDuplicates(policies: readonly AuthorizationPolicy[], problems: PolicyProblem[]): void {
  const seen = new Map<string, AuthorizationPolicy>();
  for (const p of policies) {
    const name = policyName(p);
    const first = seen.get(name);
    if (first === undefined) {
      seen.set(name, p);
      continue;
    }
    problems.push({
      file: p.origin.file,
      line: p.origin.line,
      policy: name,
      path: 'metadata.name',
      message: `a policy with this namespace and name is already defined at ${first.origin.file}:${first.origin.line}; Kubernetes would keep only one, so give each its own name`,
    });
  }
}

/** Reads every document of a file, collecting problems instead of throwing. */
export function readPolicyDocuments(text: string, file: string): PolicyDocuments {
  const out: PolicyDocuments = { policies: [], warnings: [], problems: [] };
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  if (!Array.isArray(docs)) return out;
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        out.problems.push({
          file,
          line: e.linePos?.[0]?.line ?? lc.linePos(e.pos[0]).line,
          path: '',
          message: `YAML syntax: ${e.message.split('\n')[0]}`,
        });
      }
      continue;
    }
    const root = doc.contents;
    if (root === null || (isScalar(root) && root.value === null)) continue;
    readResource(root as Node, '', { file, lc, out });
  }
  return out;
}

interface Context {
  readonly file: string;
  readonly lc: LineCounter;
  readonly out: PolicyDocuments;
}

interface Entry {
  readonly key: string;
  readonly value: Node | null;
  readonly line: number | undefined;
  /** The path from the resource, e.g. `spec.rules[0].to`. */
  readonly path: string;
}

function lineOf(lc: LineCounter, node: Node | null | undefined): number | undefined {
  const range = node?.range;
  return range === undefined || range === null ? undefined : lc.linePos(range[0]).line;
}

function isNull(node: Node | null | undefined): boolean {
  return node === undefined || node === null || (isScalar(node) && node.value === null);
}

function describe(node: Node | null): string {
  if (isNull(node)) return 'nothing';
  if (isScalar(node))
    return typeof node.value === 'string' ? `the string ${JSON.stringify(node.value)}` : String(node.value);
  if (isMap(node)) return 'a mapping';
  return 'a list';
}

/** A key's scalar value (undefined for a mapping or list) and the key's node, for its line. */
function scalarField(map: YAMLMap<Node, Node>, key: string): { value: unknown; node: Node } | undefined {
  for (const pair of map.items as Pair<Node, Node>[]) {
    if (isScalar(pair.key) && pair.key.value === key) {
      return { value: isScalar(pair.value) ? pair.value.value : undefined, node: pair.key };
    }
  }
  return undefined;
}

/** One resource: an AuthorizationPolicy is read, a List is opened, anything else is skipped. */
function readResource(node: Node, prefix: string, ctx: Context): void {
  const { file, lc, out } = ctx;
  const line = lineOf(lc, node);
  if (!isMap(node)) {
    out.problems.push({
      file,
      line,
      path: prefix,
      message: `expected a Kubernetes resource (a mapping with apiVersion, kind, metadata, spec); got ${describe(node)}`,
    });
    return;
  }
  const map = node as YAMLMap<Node, Node>;
  const kindField = scalarField(map, 'kind');
  const versionField = scalarField(map, 'apiVersion');
  const kind = kindField?.value;
  const apiVersion = versionField?.value;
  const kindLine = lineOf(lc, kindField?.node) ?? line;
  if (typeof kind !== 'string' || kind === '') {
    out.problems.push({
      file,
      line,
      path: `${prefix}${prefix === '' ? '' : '.'}kind`,
      message: `is missing: every document must be a Kubernetes resource; an AuthorizationPolicy starts with apiVersion: ${POLICY_API_VERSIONS[0]} and kind: ${KIND}`,
    });
    return;
  }
  if (kind.endsWith('List')) {
    const items = map.get('items', true) as Node | undefined;
    if (isSeq(items)) {
      items.items.forEach((item, i) => {
        readResource(item as Node, `${prefix}${prefix === '' ? '' : '.'}items[${i}]`, ctx);
      });
      return;
    }
  }
  const group = typeof apiVersion === 'string' ? apiVersion.split('/')[0] : undefined;
  if (kind !== KIND || group !== ISTIO_GROUP) {
    out.warnings.push({
      file,
      line: kindLine,
      message: `skipped a ${kind}${typeof apiVersion === 'string' ? ` (${apiVersion})` : ''}: only ${KIND} resources of ${ISTIO_GROUP} are read`,
    });
    return;
  }
  if (!(POLICY_API_VERSIONS as readonly unknown[]).includes(apiVersion)) {
    out.problems.push({
      file,
      line: lineOf(lc, versionField?.node) ?? line,
      path: `${prefix}${prefix === '' ? '' : '.'}apiVersion`,
      message: `${JSON.stringify(apiVersion)} is not supported; use ${POLICY_API_VERSIONS.join(' or ')}`,
    });
    return;
  }
  new PolicyReader(ctx, prefix, line ?? 1).read(map, apiVersion as AuthorizationPolicy['apiVersion']);
}

/** Reads one AuthorizationPolicy, field by field. */
class PolicyReader {
  readonly #ctx: Context;
  readonly #prefix: string;
  readonly #line: number;
  readonly #problems: Omit<PolicyProblem, 'policy' | 'file'>[] = [];
  readonly #warnings: Omit<PolicyWarning, 'policy' | 'file'>[] = [];
  readonly #lines: Record<string, number> = {};

  constructor(ctx: Context, prefix: string, line: number) {
    this.#ctx = ctx;
    this.#prefix = prefix;
    this.#line = line;
  }

  #fail(path: string, line: number | undefined, message: string): undefined {
    this.#problems.push({ path: this.#prefix === '' ? path : `${this.#prefix}.${path}`, line, message });
    return undefined;
  }

  #lineOf(node: Node | null | undefined): number | undefined {
    return lineOf(this.#ctx.lc, node);
  }

  /** A mapping's entries; unknown keys are problems naming what is allowed there. */
  #map(
    node: Node | null,
    path: string,
    line: number | undefined,
    allowed: readonly string[],
    refused: Record<string, string> = {},
  ): Map<string, Entry> | undefined {
    if (!isMap(node)) {
      return this.#fail(path, line, `must be a mapping (key: value lines); got ${describe(node)}`);
    }
    const entries = new Map<string, Entry>();
    for (const pair of (node as YAMLMap<Node, Node>).items as Pair<Node, Node | null>[]) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const keyLine = this.#lineOf(pair.key) ?? line;
      const sub = path === '' ? key : `${path}.${key}`;
      const refusal = refused[key];
      if (refusal !== undefined) {
        this.#fail(sub, keyLine, refusal);
        continue;
      }
      if (!allowed.includes(key)) {
        this.#fail(
          sub,
          keyLine,
          `unknown field "${key}"${suggest(key, allowed)}; allowed here: ${allowed.join(', ')}`,
        );
        continue;
      }
      if (keyLine !== undefined) this.#lines[sub] = keyLine;
      entries.set(key, { key, value: pair.value ?? null, line: keyLine, path: sub });
    }
    return entries;
  }

  #string(e: Entry): string | undefined {
    const v = e.value;
    if (isScalar(v) && typeof v.value === 'string') return v.value;
    const hint = isScalar(v) && v.value !== null ? ` (quote it: "${String(v.value)}")` : '';
    return this.#fail(e.path, e.line, `must be a string; got ${describe(v)}${hint}`);
  }

  /** A list of strings (numbers too, as decimal strings, when `numbers`), each checked. */
  #strings(e: Entry, kind: ValueKind, numbers = false): string[] | undefined {
    const v = e.value;
    if (isNull(v)) return undefined;
    if (!isSeq(v)) {
      const example = isScalar(v) ? ` ["${String(v.value)}"]` : ' ["value"]';
      return this.#fail(e.path, e.line, `must be a list of strings, e.g.${example}; got ${describe(v)}`);
    }
    const out: string[] = [];
    v.items.forEach((item, i) => {
      const node = item as Node | null;
      const path = `${e.path}[${i}]`;
      const line = this.#lineOf(node) ?? e.line;
      let value: string | undefined;
      if (isScalar(node) && typeof node.value === 'string') value = node.value;
      else if (numbers && isScalar(node) && typeof node.value === 'number') value = String(node.value);
      if (value === undefined) {
        this.#fail(path, line, `must be a string; got ${describe(node)}`);
        return;
      }
      const bad = checkValue(kind, value);
      if (bad !== undefined) this.#fail(path, line, bad);
      else out.push(value);
      if (line !== undefined) this.#lines[path] = line;
    });
    return out;
  }

  read(map: YAMLMap<Node, Node>, apiVersion: AuthorizationPolicy['apiVersion']): void {
    const top = this.#map(map, '', this.#line, ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
    let name: string | undefined;
    let namespace = 'default';
    let dryRun = false;
    const meta = top?.get('metadata');
    if (meta === undefined) {
      this.#fail('metadata.name', this.#line, 'is required: every policy needs metadata.name');
    } else {
      const m = this.#map(meta.value, meta.path, meta.line, METADATA_FIELDS);
      const n = m?.get('name');
      if (n === undefined) this.#fail('metadata.name', meta.line, 'is required: every policy needs a name');
      else {
        name = this.#string(n);
        if (name === '') name = this.#fail(n.path, n.line, 'must not be empty');
      }
      const ns = m?.get('namespace');
      if (ns !== undefined && !isNull(ns.value)) {
        const v = this.#string(ns);
        if (v === '') this.#fail(ns.path, ns.line, 'must not be empty; leave it out for "default"');
        else if (v !== undefined) namespace = v;
      }
      const ann = m?.get('annotations');
      if (ann !== undefined && isMap(ann.value)) {
        const dry = scalarField(ann.value as YAMLMap<Node, Node>, DRY_RUN)?.value;
        dryRun = dry === 'true' || dry === true;
      }
    }

    let action: PolicyAction = 'ALLOW';
    let selector: Record<string, string> | undefined;
    const rules: Rule[] = [];
    const specEntry = top?.get('spec');
    const spec =
      specEntry === undefined || isNull(specEntry.value)
        ? new Map<string, Entry>()
        : this.#map(
            specEntry.value,
            'spec',
            specEntry.line,
            ['selector', 'action', 'rules'],
            REFUSED_SPEC_FIELDS,
          );

    const a = spec?.get('action');
    if (a !== undefined && !isNull(a.value)) {
      const v = this.#string(a);
      if (v === 'ALLOW' || v === 'DENY' || v === 'AUDIT') action = v;
      else if (v === 'CUSTOM') {
        this.#fail(
          a.path,
          a.line,
          'CUSTOM is not supported: Tessera has no external authorizer; use ALLOW/DENY',
        );
      } else if (v !== undefined) {
        const upper = ['ALLOW', 'DENY', 'AUDIT'].includes(v.toUpperCase())
          ? ` (write it in upper case: ${v.toUpperCase()})`
          : '';
        this.#fail(
          a.path,
          a.line,
          `"${v}" is not an action${upper}; the actions are ALLOW (the default), DENY and AUDIT`,
        );
      }
    }

    const sel = spec?.get('selector');
    if (sel !== undefined && !isNull(sel.value)) {
      const before = this.#problems.length;
      const s = this.#map(sel.value, sel.path, sel.line, ['matchLabels']);
      const ml = s?.get('matchLabels');
      selector = {};
      if (ml !== undefined && !isNull(ml.value) && !isMap(ml.value)) {
        this.#fail(ml.path, ml.line, `must be a mapping of label names to values; got ${describe(ml.value)}`);
      } else if (ml !== undefined && isMap(ml.value)) {
        for (const pair of (ml.value as YAMLMap<Node, Node>).items as Pair<Node, Node | null>[]) {
          const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
          const e: Entry = {
            key,
            value: pair.value ?? null,
            line: this.#lineOf(pair.key),
            path: `${ml.path}.${key}`,
          };
          const v = this.#string(e);
          if (v === undefined) continue;
          if (key === '' || key.includes('*') || v.includes('*')) {
            this.#fail(
              e.path,
              e.line,
              'a selector label is an exact key and value; wildcards are not supported',
            );
            continue;
          }
          selector[key] = v;
        }
      }
      if (Object.keys(selector).length === 0 && this.#problems.length === before) {
        this.#warnings.push({
          line: sel.line,
          message: 'spec.selector has no labels: the policy applies to every workload of its namespace',
        });
      }
    }

    const r = spec?.get('rules');
    if (r !== undefined && !isNull(r.value)) {
      if (!isSeq(r.value)) {
        this.#fail(r.path, r.line, `must be a list of rules; got ${describe(r.value)}`);
      } else {
        r.value.items.forEach((item, i) => {
          const rule = this.#rule(
            item as Node | null,
            `${r.path}[${i}]`,
            this.#lineOf(item as Node) ?? r.line,
          );
          if (rule !== undefined) rules.push(rule);
        });
      }
    }
    if (
      action === 'DENY' &&
      rules.length === 0 &&
      (r === undefined || isNull(r.value) || (isSeq(r.value) && r.value.items.length === 0))
    ) {
      this.#fail(
        'spec.rules',
        r?.line ?? specEntry?.line ?? this.#line,
        'a DENY policy without rules never matches, so Istio refuses it; add an empty rule (rules: [{}]) to deny every request',
      );
    }

    const { file, out } = this.#ctx;
    const policy = name === undefined ? undefined : `${namespace}/${name}`;
    const byLine = (a: { line: number | undefined }, b: { line: number | undefined }) =>
      (a.line ?? 0) - (b.line ?? 0);
    for (const p of this.#problems.sort(byLine)) out.problems.push({ file, policy, ...p });
    for (const w of this.#warnings.sort(byLine)) out.warnings.push({ file, policy, ...w });
    if (this.#problems.length > 0 || name === undefined) return;
    if (dryRun) {
      out.warnings.push({
        file,
        line: this.#line,
        policy,
        message: `skipped: annotated ${DRY_RUN}: "true"; Tessera does not evaluate dry-run policies`,
      });
      return;
    }
    const result: AuthorizationPolicy = {
      apiVersion,
      kind: KIND,
      metadata: { name, namespace },
      spec: { ...(selector === undefined ? {} : { selector: { matchLabels: selector } }), action, rules },
      origin: { file, line: this.#line, lines: this.#lines },
    };
    out.policies.push(deepFreeze(result));
  }

  #rule(node: Node | null, path: string, line: number | undefined): Rule | undefined {
    if (isNull(node))
      return this.#fail(
        path,
        line,
        'a rule must not be empty; write {} for a rule that matches every request',
      );
    const m = this.#map(node, path, line, ['from', 'to', 'when']);
    if (m === undefined) return undefined;
    if (line !== undefined) this.#lines[path] = line;
    const rule: { from?: { source: Source }[]; to?: { operation: Operation }[]; when?: Condition[] } = {};
    const from = m.get('from');
    if (from !== undefined && !isNull(from.value)) {
      rule.from = this.#list(from, 'source', (n, p, l) => this.#source(n, p, l));
    }
    const to = m.get('to');
    if (to !== undefined && !isNull(to.value)) {
      rule.to = this.#list(to, 'operation', (n, p, l) => this.#operation(n, p, l));
    }
    const when = m.get('when');
    if (when !== undefined && !isNull(when.value)) {
      if (!isSeq(when.value)) {
        this.#fail(
          when.path,
          when.line,
          `must be a list of conditions (- key: …, values: […]); got ${describe(when.value)}`,
        );
      } else {
        rule.when = [];
        when.value.items.forEach((item, i) => {
          const c = this.#condition(
            item as Node | null,
            `${when.path}[${i}]`,
            this.#lineOf(item as Node) ?? when.line,
          );
          if (c !== undefined) rule.when!.push(c);
        });
      }
    }
    return rule;
  }

  /** `from` / `to`: a non-empty list of `{source: …}` / `{operation: …}`. */
  #list<K extends 'source' | 'operation', T>(
    e: Entry,
    inner: K,
    read: (node: Node | null, path: string, line: number | undefined) => T | undefined,
  ): Record<K, T>[] | undefined {
    if (!isSeq(e.value)) {
      return this.#fail(e.path, e.line, `must be a list (- ${inner}: {…}); got ${describe(e.value)}`);
    }
    if (e.value.items.length === 0) {
      return this.#fail(e.path, e.line, `must not be empty: leave "${e.key}" out to match any ${inner}`);
    }
    const out: Record<K, T>[] = [];
    e.value.items.forEach((item, i) => {
      const path = `${e.path}[${i}]`;
      const line = this.#lineOf(item as Node) ?? e.line;
      if (line !== undefined) this.#lines[path] = line;
      const m = this.#map((item as Node | null) ?? null, path, line, [inner]);
      if (m === undefined) return;
      const x = m.get(inner);
      if (x === undefined || isNull(x.value)) {
        this.#fail(`${path}.${inner}`, line, `is required in each "${e.key}" item`);
        return;
      }
      const v = read(x.value, x.path, x.line);
      if (v !== undefined) out.push({ [inner]: v } as Record<K, T>);
    });
    return out;
  }

  #fields(
    node: Node | null,
    path: string,
    line: number | undefined,
    table: Readonly<Record<string, { kind: ValueKind }>>,
  ): Record<string, string[]> | undefined {
    const names = Object.keys(table);
    const before = this.#problems.length;
    const m = this.#map(node, path, line, names);
    if (m === undefined) return undefined;
    const out: Record<string, string[]> = {};
    for (const [key, e] of m) {
      const spec = table[key]!;
      const values = this.#strings(e, spec.kind, spec.kind === 'port');
      if (values !== undefined && values.length > 0) out[key] = values;
      if (key === 'methods' || key === 'notMethods') this.#checkMethods(e, values ?? []);
    }
    if (Object.keys(out).length === 0 && this.#problems.length === before) {
      this.#fail(path, line, `must not be empty: give at least one of ${names.join(', ')}`);
    }
    return out;
  }

  #checkMethods(e: Entry, values: readonly string[]): void {
    for (const v of values) {
      if (v !== v.toUpperCase()) {
        this.#warnings.push({
          line: e.line,
          message: `${e.path}: "${v}" is not upper case; HTTP methods are case-sensitive, so it never matches a ${v.toUpperCase()} request`,
        });
      }
    }
  }

  #source(node: Node | null, path: string, line: number | undefined): Source | undefined {
    const s = this.#fields(node, path, line, SOURCE_FIELDS);
    if (s === undefined) return undefined;
    const sa = s.serviceAccounts !== undefined || s.notServiceAccounts !== undefined;
    if (sa && (s.principals ?? s.notPrincipals ?? s.namespaces ?? s.notNamespaces) !== undefined) {
      this.#fail(
        path,
        line,
        'serviceAccounts cannot be combined with principals or namespaces in one source',
      );
    }
    for (const key of ['serviceAccounts', 'notServiceAccounts']) {
      if ((s[key]?.length ?? 0) > 16)
        this.#fail(`${path}.${key}`, line, "has more than 16 values (Istio's limit)");
    }
    return s as Source;
  }

  #operation(node: Node | null, path: string, line: number | undefined): Operation | undefined {
    return this.#fields(node, path, line, OPERATION_FIELDS) as Operation | undefined;
  }

  #condition(node: Node | null, path: string, line: number | undefined): Condition | undefined {
    const m = this.#map(node, path, line, ['key', 'values', 'notValues']);
    if (m === undefined) return undefined;
    if (line !== undefined) this.#lines[path] = line;
    const k = m.get('key');
    if (k === undefined)
      return this.#fail(
        `${path}.key`,
        line,
        'is required: the attribute to match, e.g. request.headers[x-token]',
      );
    const key = this.#string(k);
    if (key === undefined) return undefined;
    const parsed = parseConditionKey(key);
    if (typeof parsed === 'string') return this.#fail(k.path, k.line, parsed);
    const c: { key: string; values?: string[]; notValues?: string[] } = { key };
    const before = this.#problems.length;
    for (const field of ['values', 'notValues'] as const) {
      const e = m.get(field);
      if (e === undefined) continue;
      const values = this.#strings(e, parsed.kind, parsed.kind === 'port');
      if (values !== undefined && values.length > 0) c[field] = values;
    }
    if (c.values === undefined && c.notValues === undefined && this.#problems.length === before) {
      return this.#fail(path, line, `needs values or notValues for key ${key}`);
    }
    return c;
  }
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}
