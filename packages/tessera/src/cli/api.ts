// `tessera api …`: a client of any SPIFFE Workload API — ours or SPIRE's — as `spire-agent api` is.
// It prints what the API hands this process; files are written only with --write.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import {
  createWorkloadApiClient,
  DEFAULT_WORKLOAD_API_SOCKET,
  defaultWorkloadApiAddress,
  ErrorCode,
  isSpiffeError,
  type JwtBundleSet,
  type JwtSvid,
  parseSpiffeId,
  SPIFFE_ENDPOINT_SOCKET,
  type WorkloadApiClient,
  type X509BundleSet,
  type X509Context,
  type X509Svid,
} from '@tessera/spiffe';
import { parseDuration } from '../common/duration.js';
import { CliError, printFields, printJson, printTable, usageError } from './admin-client.js';
import type { Io } from './main.js';

const DEFAULT_TIMEOUT = '10s';

const USAGE = `usage: tessera api <command> [flags]

  fetch x509 [--write dir]       this process's X509-SVIDs and the X.509 bundles to verify peers with;
                                 --write writes svid.N.pem, svid.N.key (0600), bundle.pem and
                                 federated_bundle.<td>.pem into dir
  fetch jwt --audience a [--audience b]... [--spiffe-id id]
                                 JWT-SVIDs for the audiences (prints the tokens)
  fetch bundles                  the X.509 and JWT bundles, per trust domain
  watch [--count N]              every X.509 update until interrupted, or until N updates
  validate --audience a (--token jwt | --token-file file|-)
                                 asks the Workload API whether a JWT-SVID is valid for the audience

  --socket <addr>     the Workload API: a socket path, unix:///path or tcp://ip:port
                      (default $${SPIFFE_ENDPOINT_SOCKET}, else ${DEFAULT_WORKLOAD_API_SOCKET})
  --timeout <dur>     give up on an answer after this long (default ${DEFAULT_TIMEOUT}; not for watch)
  --output text|json  readable text (default) or JSON for scripts (watch: one object per line)

Works against any SPIFFE Workload API (Tessera's agent, SPIRE's agent, ...).`;

type Options = NonNullable<ParseArgsConfig['options']>;

interface ApiFlags {
  readonly address: string;
  readonly output: 'text' | 'json';
  readonly timeoutMs: number;
  /** --timeout as given, for messages. */
  readonly timeout: string;
  string(name: string): string | undefined;
  strings(name: string): string[];
}

/**
 * The Workload API address: --socket, else the library's default (SPIFFE_ENDPOINT_SOCKET, else the
 * agent's default socket); a bare path becomes unix://.
 */
export function workloadApiAddress(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const given = flag ?? defaultWorkloadApiAddress(env);
  if (/^[a-z][a-z0-9+.-]*:/i.test(given)) return given;
  return `unix://${resolve(given).split('/').map(encodeURIComponent).join('/')}`;
}

function parseApiFlags(args: string[], options: Options): ApiFlags {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: 'string' },
      output: { type: 'string', default: 'text' },
      timeout: { type: 'string', default: DEFAULT_TIMEOUT },
      ...options,
    },
    strict: true,
    allowPositionals: false,
  });
  const v = values as Record<string, string | boolean | (string | boolean)[] | undefined>;
  if (v.output !== 'text' && v.output !== 'json')
    throw usageError(`--output must be text or json; got "${v.output}"`);
  const timeoutMs = parseDuration(String(v.timeout));
  if (timeoutMs === undefined || timeoutMs === 0)
    throw usageError(`--timeout must be a duration such as 10s or 1m; got "${v.timeout}"`);
  const socket = typeof v.socket === 'string' ? v.socket : undefined;
  if (socket === '') throw usageError('--socket must not be empty');
  return {
    address: workloadApiAddress(socket),
    output: v.output,
    timeoutMs,
    timeout: String(v.timeout),
    string: (name) => {
      const x = v[name];
      return typeof x === 'string' ? x : undefined;
    },
    strings: (name) => {
      const x = v[name];
      return Array.isArray(x) ? x.map(String) : typeof x === 'string' ? [x] : [];
    },
  };
}

/** A client on `f.address`; a malformed address is a usage error naming where it came from. */
function connect(f: ApiFlags): WorkloadApiClient {
  try {
    return createWorkloadApiClient({ address: f.address });
  } catch (err) {
    if (isSpiffeError(err, ErrorCode.WORKLOADAPI_ADDRESS)) throw usageError(err.message);
    throw err;
  }
}

function uidText(): string {
  return typeof process.getuid === 'function' ? `uid ${process.getuid()}, gid ${process.getgid?.()}` : 'pid';
}

/** The gRPC status details somewhere down the error's cause chain; '' if none. */
function grpcDetails(err: unknown): string {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const details = (e as { details?: unknown }).details;
    if (typeof details === 'string') return details;
    e = (e as { cause?: unknown }).cause;
  }
  return '';
}

/** One line for a failed call: what went wrong and what to do, without the library's stack. */
function describe(err: unknown, address: string, timedOut: boolean, timeout: string): CliError {
  if (!isSpiffeError(err)) return new CliError((err as Error).message ?? String(err));
  const details = grpcDetails(err);
  switch (err.code) {
    case ErrorCode.WORKLOADAPI_PERMISSION_DENIED: {
      // The agent said why (e.g. that its server banned it): registering an entry would not help.
      if (details !== '' && details !== 'no identity issued')
        return new CliError(`the Workload API at ${address} refused this process (${uidText()}): ${details}`);
      const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
      return new CliError(
        `no identity was issued to this process (${uidText()}) by the Workload API at ${address}` +
          `${details === '' ? '' : ` (PermissionDenied: ${details})`}; register an entry whose selectors match this process` +
          `${uid === undefined ? '' : `, e.g. unix:uid:${uid}`}, or run it as the user an entry names`,
      );
    }
    case ErrorCode.WORKLOADAPI_UNAVAILABLE: {
      const path = address.startsWith('unix:') ? address.replace(/^unix:(\/\/)?/, '') : address;
      if (/ENOENT/.test(details))
        return new CliError(
          `no Workload API socket at ${path}: is the agent running? (set --socket or ${SPIFFE_ENDPOINT_SOCKET})`,
        );
      if (/ECONNREFUSED/.test(details))
        return new CliError(`nothing is listening on ${path}: is the agent running?`);
      if (/EACCES|EPERM/.test(details)) return new CliError(`cannot connect to ${path}: permission denied`);
      return new CliError(`cannot reach the Workload API at ${address}: ${details || err.message}`);
    }
    case ErrorCode.ABORTED:
      if (timedOut) return new CliError(`the Workload API at ${address} did not answer within ${timeout}`);
      return new CliError(err.message);
    case ErrorCode.JWTSVID_VERIFY:
      return new CliError(
        details === ''
          ? `the token is not valid: ${err.message}`
          : `the Workload API refused the token: ${details}`,
      );
    default:
      return new CliError(err.message);
  }
}

/** Runs one call with the --timeout, closing the client after; failures become one-line CliErrors. */
async function call<T>(
  f: ApiFlags,
  fn: (client: WorkloadApiClient, signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const client = connect(f);
  const signal = AbortSignal.timeout(f.timeoutMs);
  try {
    return await fn(client, signal);
  } catch (err) {
    throw describe(err, client.address.uri, signal.aborted, f.timeout);
  } finally {
    client.close();
  }
}

const seconds = (d: Date) => Math.floor(d.getTime() / 1000);

/** DNS names of a certificate's subjectAltName ("DNS:a, URI:spiffe://…, DNS:b"). */
function dnsNames(san: string | undefined): string[] {
  if (san === undefined) return [];
  return san
    .split(', ')
    .filter((n) => n.startsWith('DNS:'))
    .map((n) => n.slice(4));
}

interface SvidView {
  spiffe_id: string;
  hint: string;
  serial: string;
  not_before: number;
  expires_at: number;
  dns_names: string[];
  intermediates: number;
}

function svidView(s: X509Svid): SvidView {
  return {
    spiffe_id: s.id.toString(),
    hint: s.hint,
    serial: s.leaf.serialNumber,
    not_before: seconds(new Date(s.leaf.validFrom)),
    expires_at: seconds(s.expiresAt),
    dns_names: dnsNames(s.leaf.subjectAltName),
    intermediates: s.certificates.length - 1,
  };
}

interface X509BundleView {
  trust_domain: string;
  authorities: number;
  /** false for the trust domain of one of the SVIDs. */
  federated: boolean;
}

function x509BundleViews(ctx: X509Context): X509BundleView[] {
  const own = new Set(ctx.svids.map((s) => s.id.trustDomain.name));
  return ctx.bundles.list().map((b) => ({
    trust_domain: b.trustDomain.name,
    authorities: b.authorities.length,
    federated: !own.has(b.trustDomain.name),
  }));
}

const time = (secs: number) => new Date(secs * 1000).toISOString();
const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

function printSvid(io: Io, v: SvidView): void {
  printFields(io, [
    ['SPIFFE ID', v.spiffe_id],
    ['Hint', v.hint === '' ? '(none)' : v.hint],
    ['Serial', v.serial],
    ['Valid after', time(v.not_before)],
    ['Valid until', time(v.expires_at)],
    ['DNS names', v.dns_names.length === 0 ? '(none)' : v.dns_names],
    ['Intermediates', String(v.intermediates)],
  ]);
}

function printX509Context(io: Io, svids: readonly SvidView[], bundles: readonly X509BundleView[]): void {
  for (const v of svids) {
    io.out('');
    printSvid(io, v);
  }
  io.out('');
  printTable(
    io,
    ['Trust domain', 'Authorities', 'Bundle'],
    bundles.map((b) => [b.trust_domain, String(b.authorities), b.federated ? 'federated' : 'own']),
  );
}

/** Writes the SVIDs, their keys (0600, created new) and the bundles as PEM into `dir`. */
function writeX509Files(dir: string, ctx: X509Context): string[] {
  const files: string[] = [];
  const own = new Set(ctx.svids.map((s) => s.id.trustDomain.name));
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    ctx.svids.forEach((s, i) => {
      const { certificates, privateKey } = s.marshal();
      const cert = join(dir, `svid.${i}.pem`);
      const key = join(dir, `svid.${i}.key`);
      writeFileSync(cert, certificates, { mode: 0o644 });
      // Created new with 0600, so the key is never readable by others, not even briefly.
      rmSync(key, { force: true });
      writeFileSync(key, privateKey, { mode: 0o600, flag: 'wx' });
      files.push(cert, key);
    });
    const ownPem = ctx.bundles
      .list()
      .filter((b) => own.has(b.trustDomain.name))
      .map((b) => b.toPem())
      .join('');
    const bundle = join(dir, 'bundle.pem');
    writeFileSync(bundle, ownPem, { mode: 0o644 });
    files.push(bundle);
    for (const b of ctx.bundles.list().filter((x) => !own.has(x.trustDomain.name))) {
      const file = join(dir, `federated_bundle.${b.trustDomain.name}.pem`);
      writeFileSync(file, b.toPem(), { mode: 0o644 });
      files.push(file);
    }
  } catch (err) {
    throw new CliError(`cannot write to ${dir}: ${(err as Error).message}`);
  }
  return files;
}

async function fetchX509(args: string[], io: Io): Promise<number> {
  const f = parseApiFlags(args, { write: { type: 'string' } });
  const ctx = await call(f, (c, signal) => c.fetchX509Context({ signal }));
  const svids = ctx.svids.map(svidView);
  const bundles = x509BundleViews(ctx);
  const dir = f.string('write');
  const files = dir === undefined ? undefined : writeX509Files(dir, ctx);
  if (f.output === 'json') {
    printJson(io, { svids, bundles, ...(files === undefined ? {} : { files }) });
    return 0;
  }
  io.out(`Received ${plural(svids.length, 'X509-SVID')} from ${f.address}`);
  printX509Context(io, svids, bundles);
  if (files !== undefined) {
    io.out('');
    io.out(`Wrote ${files.length} files to ${dir}:`);
    for (const file of files) io.out(`  ${file}`);
  }
  return 0;
}

function jwtView(s: JwtSvid) {
  return {
    spiffe_id: s.id.toString(),
    hint: s.hint,
    audience: [...s.audience],
    expires_at: seconds(s.expiresAt),
    token: s.marshal(),
  };
}

async function fetchJwt(args: string[], io: Io): Promise<number> {
  const f = parseApiFlags(args, {
    audience: { type: 'string', multiple: true },
    'spiffe-id': { type: 'string' },
  });
  const audience = f.strings('audience');
  if (audience.length === 0 || audience.includes('')) throw usageError('--audience is required (repeatable)');
  const id = f.string('spiffe-id');
  let subject: ReturnType<typeof parseSpiffeId> | undefined;
  if (id !== undefined) {
    try {
      subject = parseSpiffeId(id);
    } catch (err) {
      throw usageError(`--spiffe-id: ${(err as Error).message}`);
    }
  }
  const svids = await call(f, (c, signal) =>
    c.fetchJwtSvids(subject === undefined ? { audience } : { audience, subject }, { signal }),
  );
  const views = svids.map(jwtView);
  if (f.output === 'json') {
    printJson(io, { svids: views });
    return 0;
  }
  io.out(`Received ${plural(views.length, 'JWT-SVID')} from ${f.address}`);
  for (const v of views) {
    io.out('');
    printFields(io, [
      ['SPIFFE ID', v.spiffe_id],
      ['Hint', v.hint === '' ? '(none)' : v.hint],
      ['Audience', v.audience.join(', ')],
      ['Expires', time(v.expires_at)],
      ['Token', v.token],
    ]);
  }
  return 0;
}

interface BundlesView {
  trust_domain: string;
  x509_authorities: number;
  jwt_authorities: number;
  jwt_key_ids: string[];
}

function bundlesView(x509: X509BundleSet, jwt: JwtBundleSet): BundlesView[] {
  const names = new Set([...x509.list(), ...jwt.list()].map((b) => b.trustDomain.name));
  const byName = <B extends { trustDomain: { name: string } }>(list: B[], name: string) =>
    list.find((b) => b.trustDomain.name === name);
  return [...names].sort().map((name) => {
    const j = byName(jwt.list(), name);
    return {
      trust_domain: name,
      x509_authorities: byName(x509.list(), name)?.authorities.length ?? 0,
      jwt_authorities: j?.authorities.size ?? 0,
      jwt_key_ids: j === undefined ? [] : [...j.authorities.keys()].sort(),
    };
  });
}

async function fetchBundles(args: string[], io: Io): Promise<number> {
  const f = parseApiFlags(args, {});
  const [x509, jwt] = await call(f, (c, signal) =>
    Promise.all([c.fetchX509Bundles({ signal }), c.fetchJwtBundles({ signal })]),
  );
  const bundles = bundlesView(x509, jwt);
  if (f.output === 'json') {
    printJson(io, { bundles });
    return 0;
  }
  io.out(`Received bundles of ${plural(bundles.length, 'trust domain')} from ${f.address}`);
  io.out('');
  printTable(
    io,
    ['Trust domain', 'X.509 authorities', 'JWT authorities', 'JWT key IDs'],
    bundles.map((b) => [
      b.trust_domain,
      String(b.x509_authorities),
      String(b.jwt_authorities),
      b.jwt_key_ids.join(', '),
    ]),
  );
  return 0;
}

async function watch(args: string[], io: Io): Promise<number> {
  const f = parseApiFlags(args, { count: { type: 'string' } });
  const countText = f.string('count');
  const count = countText === undefined ? undefined : Number(countText);
  if (count !== undefined && !(Number.isSafeInteger(count) && count > 0))
    throw usageError(`--count must be a positive whole number; got "${countText}"`);
  const client = connect(f);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let updates = 0;
  if (f.output === 'text') io.out(`Watching the Workload API at ${f.address} for X.509 updates`);
  try {
    await client.watchX509Context(
      {
        onUpdate(ctx) {
          if (stop.signal.aborted) return;
          updates += 1;
          const svids = ctx.svids.map(svidView);
          const bundles = x509BundleViews(ctx);
          const receivedAt = new Date().toISOString();
          if (f.output === 'json') {
            io.out(JSON.stringify({ update: updates, received_at: receivedAt, svids, bundles }));
          } else {
            io.out('');
            io.out(`Update ${updates} at ${receivedAt}: ${plural(svids.length, 'X509-SVID')}`);
            printX509Context(io, svids, bundles);
          }
          if (count !== undefined && updates >= count) stop.abort();
        },
        onError(err) {
          // INVALID_ARGUMENT ends the watch (it is thrown and reported below); anything else is retried.
          if ((err.cause as { code?: unknown } | undefined)?.code === grpc.status.INVALID_ARGUMENT) return;
          // The watch reconnects by itself; say why it is waiting, on one line.
          io.err(`tessera api watch: ${describe(err, client.address.uri, false, '').message}; retrying`);
        },
      },
      stop.signal,
    );
  } catch (err) {
    throw describe(err, client.address.uri, false, '');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    client.close();
  }
  return 0;
}

function readToken(f: ApiFlags): string {
  const token = f.string('token');
  const file = f.string('token-file');
  if ((token === undefined) === (file === undefined))
    throw usageError('exactly one of --token and --token-file is required');
  if (token !== undefined) return token.trim();
  try {
    return readFileSync(file === '-' ? 0 : (file as string), 'utf8').trim();
  } catch (err) {
    throw new CliError(`cannot read the token from ${file}: ${(err as Error).message}`);
  }
}

async function validate(args: string[], io: Io): Promise<number> {
  const f = parseApiFlags(args, {
    audience: { type: 'string' },
    token: { type: 'string' },
    'token-file': { type: 'string' },
  });
  const audience = f.string('audience');
  if (audience === undefined || audience === '') throw usageError('--audience is required');
  const token = readToken(f);
  if (token === '') throw usageError('the token is empty');
  const svid = await call(f, (c, signal) => c.validateJwtSvid(token, audience, { signal }));
  const view = {
    valid: true,
    spiffe_id: svid.id.toString(),
    audience: [...svid.audience],
    expires_at: seconds(svid.expiresAt),
    claims: svid.claims,
  };
  if (f.output === 'json') {
    printJson(io, view);
    return 0;
  }
  io.out('SVID is valid.');
  printFields(io, [
    ['SPIFFE ID', view.spiffe_id],
    ['Audience', view.audience.join(', ')],
    ['Expires', time(view.expires_at)],
    ['Claims', JSON.stringify(view.claims)],
  ]);
  return 0;
}

/** `tessera api …` */
export async function apiCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'fetch': {
      const [kind, ...flags] = rest;
      if (kind === 'x509') return fetchX509(flags, io);
      if (kind === 'jwt') return fetchJwt(flags, io);
      if (kind === 'bundles') return fetchBundles(flags, io);
      io.err(
        kind === undefined || kind.startsWith('-')
          ? `tessera api fetch: say what to fetch: x509, jwt or bundles\n\n${USAGE}`
          : `tessera api fetch: unknown kind "${kind}"; use x509, jwt or bundles\n\n${USAGE}`,
      );
      return 2;
    }
    case 'watch':
      return watch(rest, io);
    case 'validate':
      return validate(rest, io);
    case 'help':
    case '--help':
    case '-h':
      io.out(USAGE);
      return 0;
    default:
      io.err(sub === undefined ? USAGE : `tessera api: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}
