// `tessera policy check|lint`: the AuthorizationPolicy engine on its own. `check` decides one request
// for one workload, as the proxy would; `lint` loads policy files and lists every problem with its line.
// Neither talks to a server. A decision is data: check exits 0 whether it allows or denies.
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { isSpiffeError, parseSpiffeId } from '@tessera/spiffe';
import {
  type AuthorizationPolicy,
  createPolicyEngine,
  DEFAULT_ROOT_NAMESPACE,
  formatPolicyProblem,
  loadPolicies,
  PolicyInvalidError,
  type PolicyRequest,
  type PolicyWarning,
  type PolicyWorkload,
  policyName,
} from '../proxy/policy/index.js';
import { printJson, usageError } from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera policy check --policy <file|dir>... --namespace <ns> [--labels k=v,…] [request flags]
       tessera policy lint <file|dir>...

Istio AuthorizationPolicies (security.istio.io/v1 and v1beta1), as tessera proxy applies them.

  check   the decision for one request to one workload: ALLOW or DENY, the policy and rule that
          decided, the AUDIT policies that matched, and warnings. Exits 0 for either decision.
  lint    load the files (a directory: its *.yaml, *.yml and *.json) and list every problem and
          warning with file:line; exits 1 if any problem.

check flags:
  --policy <file|dir>         policy files or directories; repeatable, at least one
  --namespace <ns>            the workload's namespace
  --labels k=v,k=v            the workload's labels (selector.matchLabels is compared with them)
  --root-namespace <ns>       the namespace whose policies apply everywhere (default ${DEFAULT_ROOT_NAMESPACE})
  --protocol http|tcp         an HTTP request (default) or a TCP connection
  --principal <id>            the client's SPIFFE ID (spiffe://td/… or Istio's td/…); none: no client certificate
  --source-ip, --remote-ip, --destination-ip <ip>
  --port <n>                  the destination port
  --sni <name>                the TLS server name
  HTTP only:
  --method <m> (default GET)  --path <p> (default /)  --host <h>  --header 'name: value' (repeatable)
  --request-principal <iss/sub>  --audience <aud> (repeatable)  --presenter <azp>
  --claim name=value          a JWT claim; repeat a name for a list claim
  --output text|json          readable text (default) or JSON for scripts`;

const HTTP_FLAGS = [
  'method',
  'path',
  'host',
  'header',
  'request-principal',
  'audience',
  'presenter',
  'claim',
];

/** `tessera policy …` */
export async function policyCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === 'help' || rest.includes('--help') || rest.includes('-h')) {
    io.out(USAGE);
    return 0;
  }
  switch (sub) {
    case 'check':
      return check(rest, io);
    case 'lint':
      return lint(rest, io);
    default:
      io.err(sub === undefined ? USAGE : `tessera policy: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}

const location = (file: string, line: number | undefined) => `${file}${line === undefined ? '' : `:${line}`}`;

function warningLine(w: PolicyWarning): string {
  return [location(w.file, w.line), w.policy, w.message].filter((x) => x !== undefined).join(': ');
}

function outputFlag(value: string): 'text' | 'json' {
  if (value !== 'text' && value !== 'json') throw usageError(`--output must be text or json; got "${value}"`);
  return value;
}

/** Loads the policies; problems are printed one per line (exit 1), so undefined is returned. */
function load(
  paths: string[],
  io: Io,
  prefix: string,
): { policies: readonly AuthorizationPolicy[]; warnings: PolicyWarning[] } | undefined {
  try {
    return loadPolicies(paths);
  } catch (err) {
    if (!(err instanceof PolicyInvalidError)) throw err;
    for (const p of err.problems) io.err(`${prefix}: ${formatPolicyProblem(p)}`);
    return undefined;
  }
}

/** `app=catalogue,version=v1` (repeatable) as a label map. */
function parseLabels(values: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of values.flatMap((v) => v.split(',')).map((s) => s.trim())) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0)
      throw usageError(`--labels "${item}" is not key=value; give e.g. --labels app=catalogue,version=v1`);
    labels[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return labels;
}

function ipFlag(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (isIP(value) === 0) throw usageError(`--${flag} "${value}" is not an IPv4 or IPv6 address`);
  return value;
}

function principalFlag(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const id = value.startsWith('spiffe://') ? value : `spiffe://${value}`;
  try {
    return parseSpiffeId(id).toString();
  } catch (err) {
    if (isSpiffeError(err)) throw usageError(`--principal "${value}": ${err.message}`);
    throw err;
  }
}

function check(args: string[], io: Io): number {
  const { values: v } = parseArgs({
    args,
    options: {
      policy: { type: 'string', multiple: true },
      namespace: { type: 'string' },
      labels: { type: 'string', multiple: true },
      'root-namespace': { type: 'string' },
      protocol: { type: 'string', default: 'http' },
      principal: { type: 'string' },
      'source-ip': { type: 'string' },
      'remote-ip': { type: 'string' },
      'destination-ip': { type: 'string' },
      port: { type: 'string' },
      sni: { type: 'string' },
      method: { type: 'string' },
      path: { type: 'string' },
      host: { type: 'string' },
      header: { type: 'string', multiple: true },
      'request-principal': { type: 'string' },
      audience: { type: 'string', multiple: true },
      presenter: { type: 'string' },
      claim: { type: 'string', multiple: true },
      output: { type: 'string', default: 'text' },
    },
    strict: true,
    allowPositionals: false,
  });
  const output = outputFlag(v.output);
  const paths = v.policy ?? [];
  if (paths.length === 0) throw usageError('--policy <file|dir> is required (repeatable)');
  if (v.namespace === undefined || v.namespace === '') {
    throw usageError('--namespace is required: the namespace of the workload the request goes to');
  }
  const protocol = v.protocol;
  if (protocol !== 'http' && protocol !== 'tcp')
    throw usageError(`--protocol must be http or tcp; got "${protocol}"`);
  if (protocol === 'tcp') {
    const given = HTTP_FLAGS.filter((f) => (v as Record<string, unknown>)[f] !== undefined);
    if (given.length > 0) {
      throw usageError(`${given.map((f) => `--${f}`).join(', ')}: HTTP only; a TCP connection has none`);
    }
  }
  const rootNamespace = v['root-namespace'];
  if (rootNamespace === '') throw usageError('--root-namespace must not be empty');
  const workload: PolicyWorkload = {
    namespace: v.namespace,
    labels: parseLabels(v.labels ?? []),
    ...(rootNamespace === undefined ? {} : { rootNamespace }),
  };

  let port: number | undefined;
  if (v.port !== undefined) {
    port = Number(v.port);
    if (!/^\d+$/.test(v.port) || port < 1 || port > 65535) {
      throw usageError(`--port "${v.port}" is not a port; give a number from 1 to 65535`);
    }
  }
  const headers: Record<string, string | string[]> = {};
  for (const h of v.header ?? []) {
    const colon = h.indexOf(':');
    if (colon <= 0) throw usageError(`--header "${h}" is not 'name: value'`);
    const name = h.slice(0, colon).trim().toLowerCase();
    const value = h.slice(colon + 1).trim();
    const cur = headers[name];
    headers[name] = cur === undefined ? value : [...(typeof cur === 'string' ? [cur] : cur), value];
  }
  const claims: Record<string, string | string[]> = {};
  for (const c of v.claim ?? []) {
    const eq = c.indexOf('=');
    if (eq <= 0) throw usageError(`--claim "${c}" is not name=value`);
    const name = c.slice(0, eq);
    const cur = claims[name];
    claims[name] =
      cur === undefined ? c.slice(eq + 1) : [...(typeof cur === 'string' ? [cur] : cur), c.slice(eq + 1)];
  }
  const jwt =
    v['request-principal'] !== undefined ||
    v.audience !== undefined ||
    v.presenter !== undefined ||
    v.claim !== undefined;
  if (jwt && v['request-principal'] === undefined) {
    throw usageError(
      '--audience, --presenter and --claim describe a JWT: give its --request-principal (iss/sub) too',
    );
  }
  const path = v.path ?? '/';
  if (path === '') throw usageError('--path must not be empty');

  const sourcePrincipal = principalFlag(v.principal);
  const sourceIp = ipFlag('source-ip', v['source-ip']);
  const remoteIp = ipFlag('remote-ip', v['remote-ip']);
  const destinationIp = ipFlag('destination-ip', v['destination-ip']);
  const request: PolicyRequest = {
    protocol,
    ...(sourcePrincipal === undefined ? {} : { sourcePrincipal }),
    ...(sourceIp === undefined ? {} : { sourceIp }),
    ...(remoteIp === undefined ? {} : { remoteIp }),
    ...(destinationIp === undefined ? {} : { destinationIp }),
    ...(port === undefined ? {} : { destinationPort: port }),
    ...(v.sni === undefined ? {} : { sni: v.sni }),
    ...(protocol === 'http'
      ? { http: { method: v.method ?? 'GET', path, host: v.host ?? '', headers } }
      : {}),
    ...(jwt
      ? {
          auth: {
            principal: v['request-principal']!,
            audiences: v.audience ?? [],
            ...(v.presenter === undefined ? {} : { presenter: v.presenter }),
            claims,
          },
        }
      : {}),
  };

  const loaded = load(paths, io, 'tessera policy check');
  if (loaded === undefined) return 1;
  const engine = createPolicyEngine(loaded.policies, workload, { protocol });
  const decision = engine.evaluate(request);
  const warnings = [...loaded.warnings, ...engine.warnings];
  const byName = new Map(engine.policies.map((p) => [policyName(p), p]));
  const where = (policy: string, rule: number) => {
    const p = byName.get(policy);
    return p === undefined
      ? undefined
      : { file: p.origin.file, line: p.origin.lines[`spec.rules[${rule}]`] ?? p.origin.line };
  };
  const counts = { ALLOW: 0, DENY: 0, AUDIT: 0 };
  for (const p of engine.policies) counts[p.spec.action]++;

  if (output === 'json') {
    printJson(io, {
      decision: decision.allowed ? 'ALLOW' : 'DENY',
      allowed: decision.allowed,
      reason: decision.reason,
      decidedBy:
        decision.decidedBy === undefined
          ? null
          : { ...decision.decidedBy, ...where(decision.decidedBy.policy, decision.decidedBy.rule) },
      audited: decision.audited.map((a) => ({ ...a, ...where(a.policy, a.rule) })),
      workload: {
        namespace: workload.namespace,
        labels: workload.labels,
        rootNamespace: rootNamespace ?? DEFAULT_ROOT_NAMESPACE,
      },
      request,
      policies: { loaded: loaded.policies.length, applying: engine.policies.length, ...counts },
      warnings,
    });
    return 0;
  }
  const ref = (r: { policy: string; action: string; rule: number }) => {
    const w = where(r.policy, r.rule);
    return `${r.policy} (${r.action}) rule ${r.rule}${w === undefined ? '' : ` at ${location(w.file, w.line)}`}`;
  };
  const http = request.http;
  const labels = Object.entries(workload.labels).map(([k, val]) => `${k}=${val}`);
  io.out(decision.allowed ? 'ALLOW' : 'DENY');
  io.out(`reason:     ${decision.reason}`);
  if (decision.decidedBy !== undefined) io.out(`decided by: ${ref(decision.decidedBy)}`);
  io.out(`audited:    ${decision.audited.length === 0 ? 'none' : decision.audited.map(ref).join(', ')}`);
  io.out(
    `request:    ${[
      protocol === 'http' ? `HTTP ${http!.method} ${http!.path}` : 'TCP',
      http?.host ? `host ${http.host}` : undefined,
      port === undefined ? undefined : `port ${port}`,
      sourcePrincipal === undefined ? 'no client certificate' : `from ${sourcePrincipal}`,
      sourceIp === undefined ? undefined : `at ${sourceIp}`,
      request.auth === undefined ? undefined : `JWT ${request.auth.principal}`,
    ]
      .filter((x) => x !== undefined)
      .join(', ')}`,
  );
  io.out(
    `workload:   ${workload.namespace}${labels.length === 0 ? '' : ` {${labels.join(',')}}`}: ${engine.policies.length} of ${loaded.policies.length} ${loaded.policies.length === 1 ? 'policy applies' : 'policies apply'} (${counts.ALLOW} ALLOW, ${counts.DENY} DENY, ${counts.AUDIT} AUDIT)`,
  );
  for (const w of warnings) io.err(`warning: ${warningLine(w)}`);
  return 0;
}

function lint(args: string[], io: Io): number {
  const { values, positionals } = parseArgs({
    args,
    options: { output: { type: 'string', default: 'text' } },
    strict: true,
    allowPositionals: true,
  });
  const output = outputFlag(values.output);
  if (positionals.length === 0) throw usageError('give at least one policy file or directory');
  let policies: readonly AuthorizationPolicy[] = [];
  let warnings: readonly PolicyWarning[];
  let problems: PolicyInvalidError['problems'] = [];
  try {
    ({ policies, warnings } = loadPolicies(positionals));
  } catch (err) {
    if (!(err instanceof PolicyInvalidError)) throw err;
    problems = err.problems;
    warnings = err.warnings;
  }
  const count = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
  const summary =
    problems.length === 0
      ? `${count(policies.length, 'policy', 'policies')}, ${count(warnings.length, 'warning')}`
      : `${count(problems.length, 'error')}, ${count(warnings.length, 'warning')}: the policies do not load`;
  if (output === 'json') {
    printJson(io, {
      valid: problems.length === 0,
      policies: policies.map((p) => ({
        policy: policyName(p),
        action: p.spec.action,
        rules: p.spec.rules.length,
        file: p.origin.file,
        line: p.origin.line,
      })),
      errors: problems,
      warnings,
      summary,
    });
  } else {
    for (const p of problems) io.out(`error: ${formatPolicyProblem(p)}`);
    for (const w of warnings) io.out(`warning: ${warningLine(w)}`);
    io.out(summary);
  }
  return problems.length === 0 ? 0 : 1;
}
