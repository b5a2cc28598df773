/**
 * Validates a YAML configuration file against a declarative schema, reporting every problem at
 * once, each with its key path, file and line; the result has defaults applied and is frozen.
 */
import { readFileSync } from 'node:fs';
import {
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type YAMLMap,
  type YAMLSeq,
} from 'yaml';
import { parseDuration } from './duration.js';

export type Field =
  | {
      kind: 'string';
      required?: boolean;
      default?: string;
      check?: (v: string) => string | undefined;
      doc?: string;
    }
  | { kind: 'int'; required?: boolean; default?: number; min?: number; max?: number }
  | { kind: 'bool'; default?: boolean }
  | { kind: 'duration'; default?: string; min?: string }
  | { kind: 'enum'; values: readonly string[]; default?: string }
  /**
   * A Unix file mode written in octal as for chmod, quoted or not: 0644, 644, 0o644, "0600". The
   * digits are read as octal whatever YAML makes of them (plain 0644 is the integer 644 to YAML 1.2).
   */
  | { kind: 'file_mode'; default?: number }
  /**
   * With `optional: true`, an absent object is left out (undefined) instead of filled with defaults;
   * its key written with no value (`systemd:`) is the object with its defaults, as `systemd: {}`.
   * `aliases` names keys of other products (SPIRE's) that mean one of ours: an unknown key found
   * there is answered with ours (`default_x509_svid_ttl` → `x509_svid_ttl`).
   */
  | {
      kind: 'object';
      fields: Record<string, Field>;
      required?: boolean;
      optional?: boolean;
      aliases?: Record<string, string>;
    }
  /**
   * A YAML sequence whose items all follow `of`; absent = an empty list unless required. With
   * `single: true`, one item written without the list (`key: a`) is a list of that one (`[a]`).
   */
  | { kind: 'list'; of: Field; required?: boolean; minItems?: number; single?: boolean }
  /** A mapping of free-form keys (checked by `checkKey`) to values that all follow `of`. */
  | { kind: 'map'; of: Field; checkKey?: (key: string) => string | undefined }
  /** A mapping of free-form keys to strings, e.g. labels. */
  | { kind: 'string_map'; check?: (key: string, value: string) => string | undefined }
  /** Exactly one of the named objects, e.g. `datastore: { sqlite: {…} }`. */
  | {
      kind: 'choice';
      options: Record<string, Field & { kind: 'object' }>;
      required?: boolean;
      default?: string;
    };

export interface ConfigProblem {
  path: string;
  line: number | undefined;
  message: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly problems: readonly ConfigProblem[];
  readonly file: string;

  constructor(file: string, problems: ConfigProblem[]) {
    super(
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n` +
        problems
          .map(
            (p) =>
              `  ${file}${p.line === undefined ? '' : `:${p.line}`}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`,
          )
          .join('\n'),
    );
    this.file = file;
    this.problems = problems;
  }
}

type Value = string | number | boolean | { [k: string]: Value } | Value[] | undefined;

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/**
 * Problems that involve more than one key (e.g. a section that needs another key set), found on the
 * validated values; each names the key path it is about, and is reported with that key's line.
 */
export type CrossCheck = (config: Record<string, Value>) => { path: string; message: string }[];

/**
 * Validates YAML `text` (from `file`, for messages) against an object schema, then `crossCheck`
 * when every key passed on its own. Throws ConfigError.
 */
export function validateConfig(
  text: string,
  file: string,
  schema: Field & { kind: 'object' },
  crossCheck?: CrossCheck,
): Record<string, Value> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  const problems: ConfigProblem[] = [];
  /** The line of each key path checked (a key left out: its section's), for crossCheck's problems. */
  const lines = new Map<string, number>();
  const lineOf = (node: Node | null | undefined) =>
    node?.range === undefined || node.range === null ? undefined : lc.linePos(node.range[0]).line;
  for (const e of doc.errors)
    problems.push({
      path: '',
      line: e.linePos?.[0]?.line ?? lc.linePos(e.pos[0]).line,
      message: `YAML syntax: ${e.message.split('\n')[0]}`,
    });
  if (problems.length > 0) throw new ConfigError(file, problems);

  const check = (
    field: Field,
    node: Node | null | undefined,
    path: string,
    keyLine: number | undefined,
  ): Value => {
    const line = keyLine ?? lineOf(node);
    if (line !== undefined && !lines.has(path)) lines.set(path, line);
    const fail = (message: string) => {
      problems.push({ path, line, message });
      return undefined;
    };
    const present = node !== undefined && node !== null && !(isScalar(node) && node.value === null);
    if (!present) {
      switch (field.kind) {
        case 'object':
          if (field.required === true) return fail('is required');
          if (field.optional === true && node === undefined) return undefined;
          return objectDefaults(field, path);
        case 'choice':
          if (field.default !== undefined)
            return {
              [field.default]: objectDefaults(
                field.options[field.default] as Field & { kind: 'object' },
                `${path}.${field.default}`,
              ),
            };
          return field.required === true
            ? fail(`is required: one of ${Object.keys(field.options).join(', ')}`)
            : undefined;
        case 'string':
        case 'int':
          if (field.required === true) return fail('is required');
          return field.default;
        case 'list':
          if (field.required === true) return fail('is required');
          return [];
        case 'string_map':
        case 'map':
          return {};
        case 'duration':
          return field.default === undefined ? undefined : (parseDuration(field.default) as number);
        default:
          return field.default;
      }
    }
    switch (field.kind) {
      case 'object':
      case 'choice': {
        if (!isMap(node)) return fail('must be a mapping (key: value lines)');
        const map = node as YAMLMap<Node, Node>;
        const allowed = field.kind === 'object' ? field.fields : field.options;
        const out: Record<string, Value> = {};
        for (const pair of map.items) {
          const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
          const kLine = lineOf(pair.key);
          const sub = allowed[key];
          const subPath = path === '' ? key : `${path}.${key}`;
          if (sub === undefined) {
            const alias = field.kind === 'object' ? field.aliases?.[key] : undefined;
            const near = alias === undefined ? nearest(key, Object.keys(allowed)) : undefined;
            const hint =
              alias !== undefined
                ? `${key} is SPIRE's name; tessera's is ${alias}. `
                : near !== undefined
                  ? `did you mean ${near}? `
                  : '';
            problems.push({
              path: subPath,
              line: kLine,
              message: `unknown key; ${hint}allowed here: ${Object.keys(allowed).join(', ')}`,
            });
            continue;
          }
          out[key] = check(sub, pair.value, subPath, kLine);
        }
        if (field.kind === 'choice') {
          const chosen = Object.keys(out);
          if (chosen.length !== 1)
            return fail(
              `must name exactly one of ${Object.keys(field.options).join(', ')}; found ${chosen.length === 0 ? 'none' : chosen.join(', ')}`,
            );
          return out;
        }
        for (const [k, sub] of Object.entries(field.fields)) {
          if (!(k in out)) {
            const v = check(sub, undefined, path === '' ? k : `${path}.${k}`, line);
            if (v !== undefined) out[k] = v;
          }
        }
        return out;
      }
      case 'list': {
        if (!isSeq(node) && field.single === true && !isMap(node)) return [check(field.of, node, path, line)];
        if (!isSeq(node))
          return fail(
            `must be ${field.single === true ? 'one item or ' : ''}a list (lines starting with "- "); got ${describe(node)}`,
          );
        const items = (node as YAMLSeq<Node>).items;
        if (field.minItems !== undefined && items.length < field.minItems)
          return fail(`must have at least ${field.minItems} item${field.minItems === 1 ? '' : 's'}`);
        return items.map((item, i) => check(field.of, item, `${path}[${i}]`, lineOf(item)));
      }
      case 'map': {
        if (!isMap(node)) return fail('must be a mapping (key: value lines)');
        const out: Record<string, Value> = {};
        for (const pair of (node as YAMLMap<Node, Node>).items) {
          const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
          const subPath = path === '' ? key : `${path}.${key}`;
          const why = field.checkKey?.(key);
          if (why !== undefined) {
            problems.push({ path: subPath, line: lineOf(pair.key), message: why });
            continue;
          }
          out[key] = check(field.of, pair.value, subPath, lineOf(pair.key));
        }
        return out;
      }
      case 'string_map': {
        if (!isMap(node)) return fail('must be a mapping (key: value lines)');
        const out: Record<string, Value> = {};
        for (const pair of (node as YAMLMap<Node, Node>).items) {
          const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
          const v = pair.value;
          const subPath = path === '' ? key : `${path}.${key}`;
          if (
            !isScalar(v) ||
            (typeof v.value !== 'string' && typeof v.value !== 'number' && typeof v.value !== 'boolean')
          ) {
            problems.push({
              path: subPath,
              line: lineOf(pair.key),
              message: `must be a string; got ${describe(v)}`,
            });
            continue;
          }
          const why = field.check?.(key, String(v.value));
          if (why !== undefined) problems.push({ path: subPath, line: lineOf(pair.key), message: why });
          else out[key] = String(v.value);
        }
        return out;
      }
      case 'string': {
        if (!isScalar(node) || typeof node.value !== 'string')
          return fail(`must be a string; got ${describe(node)}`);
        const why = field.check?.(node.value);
        return why === undefined ? node.value : fail(why);
      }
      case 'int': {
        if (!isScalar(node) || typeof node.value !== 'number' || !Number.isInteger(node.value))
          return fail(`must be a whole number; got ${describe(node)}`);
        if (field.min !== undefined && node.value < field.min)
          return fail(`must be at least ${field.min}; got ${node.value}`);
        if (field.max !== undefined && node.value > field.max)
          return fail(`must be at most ${field.max}; got ${node.value}`);
        return node.value;
      }
      case 'bool':
        if (!isScalar(node) || typeof node.value !== 'boolean')
          return fail(`must be true or false; got ${describe(node)}`);
        return node.value;
      case 'duration': {
        const ms = isScalar(node) && typeof node.value === 'string' ? parseDuration(node.value) : undefined;
        if (ms === undefined)
          return fail(`must be a duration such as 90s, 5m, 1h30m or 24h; got ${describe(node)}`);
        const min = field.min === undefined ? undefined : parseDuration(field.min);
        if (min !== undefined && ms < min) return fail(`must be at least ${field.min}`);
        return ms;
      }
      case 'file_mode': {
        const text = !isScalar(node)
          ? undefined
          : typeof node.value === 'string'
            ? node.value
            : typeof node.value === 'number'
              ? (node.source ?? String(node.value))
              : undefined;
        const m = text === undefined ? null : /^(?:0o?)?([0-7]{1,4})$/.exec(text.trim());
        if (m === null)
          return fail(
            `must be an octal file mode such as 0644 or 0600 (as for chmod); got ${describe(node)}`,
          );
        return Number.parseInt(m[1] as string, 8);
      }
      case 'enum':
        if (!isScalar(node) || typeof node.value !== 'string' || !field.values.includes(node.value)) {
          return fail(`must be one of ${field.values.join(', ')}; got ${describe(node)}`);
        }
        return node.value;
    }
  };

  const objectDefaults = (
    field: Field & { kind: 'object' },
    path: string,
  ): Record<string, Value> | undefined => {
    const out: Record<string, Value> = {};
    for (const [k, sub] of Object.entries(field.fields)) {
      const v = check(sub, undefined, `${path}.${k}`, undefined);
      if (v !== undefined) out[k] = v;
    }
    return out;
  };

  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) {
    problems.push({ path: '', line: 1, message: 'the file is empty' });
    throw new ConfigError(file, problems);
  }
  const result = check(schema, root as Node, '', 1) as Record<string, Value>;
  if (problems.length === 0 && crossCheck !== undefined)
    for (const p of crossCheck(result)) problems.push({ ...p, line: lines.get(p.path) });
  if (problems.length > 0) throw new ConfigError(file, problems);
  return deepFreeze(result);
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(
        (prev[j] ?? 0) + 1,
        (cur[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** The allowed key a mistyped one most likely meant (a few edits away, or the same words reordered), if any. */
function nearest(key: string, allowed: readonly string[]): string | undefined {
  const words = (k: string) => k.toLowerCase().split(/[_-]/).sort().join('_');
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const a of allowed) {
    const d = words(a) === words(key) ? 0 : distance(key.toLowerCase(), a);
    if (d < bestD) {
      bestD = d;
      best = a;
    }
  }
  return bestD <= Math.max(1, Math.floor(key.length / 4)) ? best : undefined;
}

function describe(node: Node | null | undefined): string {
  if (isScalar(node)) return JSON.stringify(node.value);
  if (isMap(node)) return 'a mapping';
  return 'a list';
}

/** Reads and validates a file; a missing or unreadable file is one ConfigError. */
export function loadConfigFile(
  file: string,
  schema: Field & { kind: 'object' },
  crossCheck?: CrossCheck,
): Record<string, Value> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [
      {
        path: '',
        line: undefined,
        message: `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      },
    ]);
  }
  return validateConfig(text, file, schema, crossCheck);
}
