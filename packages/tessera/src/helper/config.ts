// The helper's configuration file (`tessera helper run --config helper.yaml`): spiffe-helper's keys
// (https://github.com/spiffe/spiffe-helper, same names where the concept is the same) in YAML, plus
// a few of Tessera's own (svid_combined_file_name, reload_cmd, fetch_timeout, log, a bind address
// for the health listener). Validated once with every problem listed, then frozen.
import { constants } from 'node:os';
import { isAbsolute, join, normalize, resolve } from 'node:path';
import { LOG_FIELD, type LogConfig } from '../common/config-fields.js';
import { type CrossCheck, type Field, loadConfigFile, validateConfig } from '../common/config-schema.js';

/** Signal names a renew_signal may be (SIGHUP, SIGUSR1, ...), as node:os knows them. */
const SIGNALS = Object.keys(constants.signals);

const checkSignal = (v: string): string | undefined =>
  SIGNALS.includes(v)
    ? undefined
    : `must be a signal name such as SIGHUP or SIGUSR1; got ${JSON.stringify(v)}`;

/** A file under cert_dir: a relative name that stays inside it. */
const checkFileName = (v: string): string | undefined => {
  if (v === '') return 'must not be empty';
  if (isAbsolute(v))
    return `must be a file name relative to cert_dir; got the absolute path ${JSON.stringify(v)}`;
  const n = normalize(v);
  if (n === '..' || n.startsWith('../') || n === '.' || v.endsWith('/'))
    return `must name a file inside cert_dir; got ${JSON.stringify(v)}`;
  return undefined;
};

const fileName = { kind: 'string', check: checkFileName } as const satisfies Field;

const checkUrlPath = (v: string): string | undefined =>
  v.startsWith('/') ? undefined : `must be a URL path starting with "/"; got ${JSON.stringify(v)}`;

export const HELPER_CONFIG_SCHEMA = {
  kind: 'object',
  fields: {
    // The agent's Workload API socket: a path or unix:///path; default SPIFFE_ENDPOINT_SOCKET, else
    // /run/tessera/agent.sock.
    agent_address: { kind: 'string' },
    // The program to run as a child, signalled with renew_signal after each write; the helper
    // forwards SIGTERM/SIGINT to it and exits with its status. cmd_args is one string split at
    // spaces, double quotes grouping (as spiffe-helper does).
    cmd: { kind: 'string' },
    cmd_args: { kind: 'string', default: '' },
    // Where the files go. It must exist; a relative path is taken from the working directory.
    cert_dir: { kind: 'string', required: true },
    // false: write every file once and exit 0 (or exit 1 when that fails within fetch_timeout).
    daemon_mode: { kind: 'bool', default: true },
    // The SVID's intermediates go to the bundle file instead of the SVID file.
    add_intermediates_to_bundle: { kind: 'bool', default: false },
    // The bundle file also holds the CAs of the federated trust domains the agent provides.
    include_federated_domains: { kind: 'bool', default: false },
    // Expired CAs are left out of the bundle file.
    omit_expired: { kind: 'bool', default: false },
    // The signal sent to the child (cmd) or to the process of pid_file_name after each write.
    renew_signal: { kind: 'string', check: checkSignal },
    pid_file_name: { kind: 'string' },
    // Tessera's own: a command run after each write (e.g. pg_ctl reload -D ...), with its arguments
    // split as cmd_args are; it must exit 0 within reload_timeout.
    reload_cmd: { kind: 'string' },
    reload_cmd_args: { kind: 'string', default: '' },
    reload_timeout: { kind: 'duration', default: '30s', min: '100ms' },
    // The X509-SVID: leaf and intermediates, its private key (PKCS#8), the trust bundle (PEM).
    svid_file_name: fileName,
    svid_key_file_name: fileName,
    svid_bundle_file_name: fileName,
    // Tessera's own: the key then the chain in one PEM file (HAProxy's crt, Mosquitto, ...), written
    // with key_file_mode.
    svid_combined_file_name: fileName,
    // The X.509 CRLs of the trust domain (PEM), from the Workload API (written with cert_file_mode,
    // with the X.509 files; see writeX509 in run.ts). Tessera's: spiffe-helper has no such file.
    crl_file_name: fileName,
    // JWT-SVIDs for audiences, each in its file (the compact JWS), re-fetched at half their lifetime.
    jwt_svids: {
      kind: 'list',
      of: {
        kind: 'object',
        fields: {
          jwt_audience: { kind: 'string', required: true },
          jwt_extra_audiences: { kind: 'list', of: { kind: 'string' }, single: true },
          jwt_svid_file_name: { ...fileName, required: true },
        },
      },
    },
    // The JWT bundles as spiffe-helper writes them: {"<trust domain>": "<base64 of the JWKS>"}.
    jwt_bundle_file_name: fileName,
    // Modes, octal as for chmod; applied on every write.
    cert_file_mode: { kind: 'file_mode', default: 0o644 },
    key_file_mode: { kind: 'file_mode', default: 0o600 },
    jwt_bundle_file_mode: { kind: 'file_mode', default: 0o600 },
    jwt_svid_file_mode: { kind: 'file_mode', default: 0o600 },
    // Which SVID to write when the agent gives this process several: the one with this hint.
    hint: { kind: 'string', default: '' },
    // One-shot mode: how long to wait for the Workload API before exiting 1.
    fetch_timeout: { kind: 'duration', default: '30s', min: '100ms' },
    health_checks: {
      kind: 'object',
      fields: {
        listener_enabled: { kind: 'bool', default: false },
        // Tessera's own; spiffe-helper listens on every interface.
        bind_address: { kind: 'string', default: '127.0.0.1' },
        bind_port: { kind: 'int', default: 8081, min: 0, max: 65535 },
        liveness_path: { kind: 'string', default: '/live', check: checkUrlPath },
        readiness_path: { kind: 'string', default: '/ready', check: checkUrlPath },
      },
    },
    log: LOG_FIELD,
  },
} as const satisfies Field;

export interface JwtSvidFileConfig {
  readonly jwt_audience: string;
  readonly jwt_extra_audiences: readonly string[];
  readonly jwt_svid_file_name: string;
}

export interface HelperConfig {
  readonly agent_address?: string;
  readonly cmd?: string;
  readonly cmd_args: string;
  readonly cert_dir: string;
  readonly daemon_mode: boolean;
  readonly add_intermediates_to_bundle: boolean;
  readonly include_federated_domains: boolean;
  readonly omit_expired: boolean;
  readonly renew_signal?: string;
  readonly pid_file_name?: string;
  readonly reload_cmd?: string;
  readonly reload_cmd_args: string;
  /** Milliseconds. */
  readonly reload_timeout: number;
  readonly svid_file_name?: string;
  readonly svid_key_file_name?: string;
  readonly svid_bundle_file_name?: string;
  readonly svid_combined_file_name?: string;
  readonly crl_file_name?: string;
  readonly jwt_svids: readonly JwtSvidFileConfig[];
  readonly jwt_bundle_file_name?: string;
  readonly cert_file_mode: number;
  readonly key_file_mode: number;
  readonly jwt_bundle_file_mode: number;
  readonly jwt_svid_file_mode: number;
  readonly hint: string;
  /** Milliseconds. */
  readonly fetch_timeout: number;
  readonly health_checks: {
    readonly listener_enabled: boolean;
    readonly bind_address: string;
    readonly bind_port: number;
    readonly liveness_path: string;
    readonly readiness_path: string;
  };
  readonly log: LogConfig;
}

/**
 * Splits cmd_args / reload_cmd_args as spiffe-helper does: at spaces, a double-quoted part is one
 * argument ("a b" → a b), "" inside quotes is a quote. Undefined when a quote is not closed.
 */
export function splitArgs(args: string): string[] | undefined {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  let inArg = false;
  for (let i = 0; i < args.length; i++) {
    const c = args[i] as string;
    if (quoted) {
      if (c === '"' && args[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inArg = true;
    } else if (c === ' ') {
      if (inArg) out.push(cur);
      cur = '';
      inArg = false;
    } else {
      cur += c;
      inArg = true;
    }
  }
  if (quoted) return undefined;
  if (inArg) out.push(cur);
  return out;
}

/** What the schema cannot say on its own: which keys go together, and that something is written. */
const crossCheck: CrossCheck = (raw) => {
  const c = raw as unknown as HelperConfig;
  const problems: { path: string; message: string }[] = [];
  const x509 = ['svid_file_name', 'svid_key_file_name', 'svid_bundle_file_name'] as const;
  const set = x509.filter((k) => c[k] !== undefined);
  if (set.length > 0 && set.length < 3)
    for (const k of x509.filter((k) => c[k] === undefined))
      problems.push({
        path: k,
        message: `is required with ${set.join(' and ')}: the SVID, its key and the bundle are written together (all three or none)`,
      });
  if (
    set.length === 0 &&
    c.svid_combined_file_name === undefined &&
    c.jwt_svids.length === 0 &&
    c.jwt_bundle_file_name === undefined
  )
    problems.push({
      path: '',
      message:
        'writes nothing: set svid_file_name, svid_key_file_name and svid_bundle_file_name, or svid_combined_file_name, jwt_svids or jwt_bundle_file_name',
    });
  if (c.crl_file_name !== undefined && set.length === 0 && c.svid_combined_file_name === undefined)
    problems.push({
      path: 'crl_file_name',
      message:
        'is written with the X.509 files: set svid_file_name, svid_key_file_name and svid_bundle_file_name, or svid_combined_file_name, too',
    });
  if (c.pid_file_name !== undefined && c.renew_signal === undefined)
    problems.push({
      path: 'pid_file_name',
      message: 'needs renew_signal: the signal to send the process whose pid it holds (e.g. SIGHUP)',
    });
  if (!c.daemon_mode)
    for (const k of ['cmd', 'pid_file_name', 'renew_signal', 'reload_cmd'] as const)
      if (c[k] !== undefined)
        problems.push({
          path: k,
          message:
            'applies only in daemon mode (daemon_mode: false writes the files once and exits): remove it, or set daemon_mode: true',
        });
  for (const k of ['cmd_args', 'reload_cmd_args'] as const)
    if (splitArgs(c[k]) === undefined)
      problems.push({ path: k, message: 'has a double quote that is not closed' });
  if (c.reload_cmd_args !== '' && c.reload_cmd === undefined)
    problems.push({
      path: 'reload_cmd_args',
      message: 'needs reload_cmd: the program these arguments are for',
    });
  if (c.cmd_args !== '' && c.cmd === undefined)
    problems.push({ path: 'cmd_args', message: 'needs cmd: the program these arguments are for' });
  // Two outputs on one file would overwrite each other.
  const files = new Map<string, string>();
  const claim = (path: string, name: string | undefined) => {
    if (name === undefined) return;
    const n = normalize(name);
    const other = files.get(n);
    if (other !== undefined)
      problems.push({
        path,
        message: `names the same file as ${other} (${JSON.stringify(name)}); give each output its own file`,
      });
    else files.set(n, path);
  };
  for (const k of [...x509, 'svid_combined_file_name', 'crl_file_name', 'jwt_bundle_file_name'] as const)
    claim(k, c[k]);
  for (const [i, j] of c.jwt_svids.entries())
    claim(`jwt_svids[${i}].jwt_svid_file_name`, j.jwt_svid_file_name);
  if (c.health_checks.liveness_path === c.health_checks.readiness_path)
    problems.push({
      path: 'health_checks.readiness_path',
      message: `is the same as liveness_path (${c.health_checks.liveness_path}); give each its own path`,
    });
  return problems;
};

export function parseHelperConfig(text: string, file = 'helper.yaml'): HelperConfig {
  return validateConfig(text, file, HELPER_CONFIG_SCHEMA, crossCheck) as unknown as HelperConfig;
}

export function loadHelperConfig(file: string): HelperConfig {
  return loadConfigFile(file, HELPER_CONFIG_SCHEMA, crossCheck) as unknown as HelperConfig;
}

/** The absolute path of an output file (cert_dir taken from `cwd` when relative). */
export function outputPath(config: HelperConfig, name: string, cwd = process.cwd()): string {
  return join(resolve(cwd, config.cert_dir), name);
}
