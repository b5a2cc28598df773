// What every admin command shares: the --socket and --output flags, the connection to the server's
// admin socket, errors as one line (the server's message and its TesseraError code), and output as
// readable text or JSON.
import { resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { DescMethod, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { DEFAULT_ADMIN_SOCKET } from '../common/default-paths.js';
import { parseDuration } from '../common/duration.js';
import { errorCodeOf, grpcErrorText, ServiceClient } from '../common/grpc.js';
import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import { CliError, usageError } from './cli-error.js';
import type { Io } from './main.js';

export const DEFAULT_SOCKET = DEFAULT_ADMIN_SOCKET;
/** No admin call takes long; a stuck server must not hang a script. */
const CALL_TIMEOUT_MS = 30_000;

export { CliError, usageError } from './cli-error.js';

const COMMON = {
  socket: { type: 'string', default: DEFAULT_SOCKET },
  output: { type: 'string', default: 'text' },
} as const;

export const COMMON_USAGE = `  --socket <path>    the server's admin socket (default ${DEFAULT_SOCKET})
  --output text|json  readable text (default) or JSON for scripts`;

type Options = NonNullable<ParseArgsConfig['options']>;

/** A subcommand's parsed flags. */
export interface Flags {
  readonly socket: string;
  readonly output: 'text' | 'json';
  string(name: string): string | undefined;
  strings(name: string): string[];
  bool(name: string): boolean;
}

/** SPIRE's flags whose tessera spelling is not simply the kebab-case of the name. */
const SPIRE_FLAG_NAMES: Record<string, string> = {
  socketPath: 'socket',
  x509SVIDTTL: 'x509-svid-ttl',
  jwtSVIDTTL: 'jwt-svid-ttl',
  entryExpiry: 'expires-at',
};

/** `spiffeID` → `spiffe-id`, `bundleEndpointURL` → `bundle-endpoint-url`, `x509SVIDTTL` → `x509-svid-ttl`. */
function kebab(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1-$2')
    .toLowerCase();
}

/**
 * SPIRE's single-dash camelCase flags (`-spiffeID`, `-parentID`, `-selector`, `-socketPath`,
 * `-entryID`, `-data`, …) as tessera's (`--spiffe-id`, …) when this command has that flag, so an
 * operator's SPIRE muscle memory works; anything else is left for the parser to refuse.
 */
export function spireFlags(args: readonly string[], known: readonly string[]): string[] {
  return args.map((a) => {
    const m = a.match(/^-([a-zA-Z][a-zA-Z0-9]+)(=.*)?$/);
    if (m === null) return a;
    const name = SPIRE_FLAG_NAMES[m[1] as string] ?? kebab(m[1] as string);
    if (known.includes(name)) return `--${name}${m[2] ?? ''}`;
    throw usageError(
      `unknown flag ${a}; this command's flags are ${known.map((k) => `--${k}`).join(', ')} (SPIRE's -camelCase names are taken where tessera has the flag)`,
    );
  });
}

/** Parses a subcommand's flags plus --socket and --output; unknown flags are usage errors. */
export function parseFlags(args: string[], options: Options): Flags {
  const { values } = parseArgs({
    args: spireFlags(args, [...Object.keys(COMMON), ...Object.keys(options)]),
    options: { ...COMMON, ...options },
    strict: true,
    allowPositionals: false,
  });
  const v = values as Record<string, string | boolean | (string | boolean)[] | undefined>;
  const output = v.output;
  if (output !== 'text' && output !== 'json')
    throw usageError(`--output must be text or json; got "${output}"`);
  return {
    socket: String(v.socket),
    output,
    string: (name) => {
      const x = v[name];
      return typeof x === 'string' ? x : undefined;
    },
    strings: (name) => {
      const x = v[name];
      return Array.isArray(x) ? x.map(String) : typeof x === 'string' ? [x] : [];
    },
    bool: (name) => v[name] === true,
  };
}

/** A required flag's value, or a usage error naming it. */
export function required<T>(value: T | undefined, flag: string): T {
  if (value === undefined || value === '') throw usageError(`--${flag} is required`);
  return value;
}

/** Seconds from `600`, or a duration such as `10m`; undefined when not given. */
export function parseSeconds(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  const ms = parseDuration(value);
  if (ms === undefined || ms % 1000 !== 0)
    throw usageError(`--${flag} must be whole seconds (600) or a duration (10m, 1h); got "${value}"`);
  return ms / 1000;
}

type AdminMethods = typeof Admin.method;

/** A connection to the admin socket; `call` turns failures into one-line CliErrors. */
export class AdminClient {
  readonly socket: string;
  readonly #client: ServiceClient<AdminMethods>;

  constructor(socket: string) {
    this.socket = resolve(socket);
    this.#client = new ServiceClient(Admin, `unix:${this.socket}`, grpc.credentials.createInsecure());
  }

  async call<M extends DescMethod>(
    method: M,
    request: MessageInitShape<M['input']>,
  ): Promise<MessageShape<M['output']>> {
    try {
      return (await this.#client.unary(method, request as never, {
        deadline: new Date(Date.now() + CALL_TIMEOUT_MS),
      })) as MessageShape<M['output']>;
    } catch (err) {
      throw this.#describe(err);
    }
  }

  #describe(err: unknown): CliError {
    const e = err as grpc.ServiceError;
    if (e.code === grpc.status.UNAVAILABLE) {
      const details = grpcErrorText(e);
      if (/ENOENT|ECONNREFUSED/.test(details))
        return new CliError(`cannot connect to the server at ${this.socket}: is it running?`);
      if (/EACCES|EPERM/.test(details))
        return new CliError(
          `cannot connect to the server at ${this.socket}: permission denied; run as root or as the server's user`,
        );
      return new CliError(`cannot connect to the server at ${this.socket}: ${details}`);
    }
    if (e.code === grpc.status.DEADLINE_EXCEEDED)
      return new CliError(`the server at ${this.socket} did not answer within ${CALL_TIMEOUT_MS / 1000} s`);
    const code = errorCodeOf(err);
    return new CliError(`${grpcErrorText(err)}${code === undefined ? '' : ` (${code})`}`);
  }

  close(): void {
    this.#client.close();
  }
}

/** Runs `fn` with a client on `socket`, closing it afterwards. */
export async function withClient<T>(socket: string, fn: (client: AdminClient) => Promise<T>): Promise<T> {
  const client = new AdminClient(socket);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Prints `value` as indented JSON (bigints as strings, as protobuf JSON does for int64). */
export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
}

/** `label : value` lines, labels padded to one width (SPIRE's layout). */
export function printFields(
  io: Io,
  fields: readonly (readonly [string, string | readonly string[]])[],
): void {
  const width = Math.max(...fields.map(([l]) => l.length));
  for (const [label, value] of fields) {
    for (const v of typeof value === 'string' ? [value] : value) io.out(`${label.padEnd(width)} : ${v}`);
  }
}

/** A table with a header row; columns padded to their widest cell. */
export function printTable(io: Io, header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  io.out(line(header));
  for (const r of rows) io.out(line(r));
}

/** Unix seconds as an ISO time; 0 as `never`. */
export function time(secs: bigint | number): string {
  const n = Number(secs);
  return n === 0 ? 'never' : new Date(n * 1000).toISOString();
}

/** A `type:value` selector from the command line (`unix:uid:1000`: type `unix`, value `uid:1000`). */
export function parseSelector(text: string): { type: string; value: string } {
  const i = text.indexOf(':');
  if (i <= 0 || i === text.length - 1)
    throw usageError(`selector "${text}" must be type:value, e.g. unix:uid:1000`);
  return { type: text.slice(0, i), value: text.slice(i + 1) };
}
