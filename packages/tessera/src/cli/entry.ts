import { readFileSync } from 'node:fs';
import { fromJson, type JsonValue, type MessageInitShape, toJson } from '@bufbuild/protobuf';
import { Admin, CreateEntriesRequestSchema } from '../gen/tessera/admin/v1/admin_pb.js';
import { type Entry, EntrySchema } from '../gen/tessera/common/v1/types_pb.js';
import {
  CliError,
  COMMON_USAGE,
  type Flags,
  parseFlags,
  parseSeconds,
  parseSelector,
  printFields,
  printJson,
  required,
  time,
  usageError,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera entry create|show|update|delete|count [flags]

  create   register a workload: --spiffe-id --parent-id --selector type:value (repeatable)
           [--x509-svid-ttl 1h] [--jwt-svid-ttl 5m] [--dns name]... [--federates-with td]...
           [--admin] [--downstream] [--hint text] [--expires-at time] [--metadata key=value]...
           or a batch: --data entries.json ({"entries": [{"spiffe_id": …}, …]})
  show     list entries: [--entry-id id] [--spiffe-id id] [--parent-id id] [--selector type:value]
  update   change an entry: --entry-id id [--revision n] and the create flags to replace
           (--selector replaces all selectors; --no-admin, --no-downstream clear the flags)
  delete   --entry-id id (repeatable)
  count    how many entries there are

${COMMON_USAGE}`;

const FIELDS = {
  'spiffe-id': { type: 'string' },
  'parent-id': { type: 'string' },
  selector: { type: 'string', multiple: true },
  'x509-svid-ttl': { type: 'string' },
  'jwt-svid-ttl': { type: 'string' },
  dns: { type: 'string', multiple: true },
  'federates-with': { type: 'string', multiple: true },
  admin: { type: 'boolean' },
  downstream: { type: 'boolean' },
  hint: { type: 'string' },
  'expires-at': { type: 'string' },
  metadata: { type: 'string', multiple: true },
} as const;

/** Unix seconds from `1767225600` or an ISO 8601 time. */
function parseTime(text: string, flag: string): bigint {
  if (/^\d+$/.test(text)) return BigInt(text);
  const ms = Date.parse(text);
  if (Number.isNaN(ms))
    throw usageError(`--${flag} must be Unix seconds or an ISO time (2027-01-01T00:00:00Z)`);
  return BigInt(Math.floor(ms / 1000));
}

function parseMetadata(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw usageError(`--metadata "${p}" must be key=value`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

/** The entry fields given as flags (only those given). */
function entryFlags(f: Flags): MessageInitShape<typeof EntrySchema> {
  const e: MessageInitShape<typeof EntrySchema> = {};
  const s = (name: string) => f.string(name);
  if (s('spiffe-id') !== undefined) e.spiffeId = s('spiffe-id');
  if (s('parent-id') !== undefined) e.parentId = s('parent-id');
  if (f.strings('selector').length > 0) e.selectors = f.strings('selector').map(parseSelector);
  const x509 = parseSeconds(s('x509-svid-ttl'), 'x509-svid-ttl');
  if (x509 !== undefined) e.x509SvidTtl = x509;
  const jwt = parseSeconds(s('jwt-svid-ttl'), 'jwt-svid-ttl');
  if (jwt !== undefined) e.jwtSvidTtl = jwt;
  if (f.strings('dns').length > 0) e.dnsNames = f.strings('dns');
  if (f.strings('federates-with').length > 0) e.federatesWith = f.strings('federates-with');
  if (f.bool('admin')) e.admin = true;
  if (f.bool('downstream')) e.downstream = true;
  if (s('hint') !== undefined) e.hint = s('hint');
  const expires = s('expires-at');
  if (expires !== undefined) e.expiresAt = parseTime(expires, 'expires-at');
  if (f.strings('metadata').length > 0) e.metadata = parseMetadata(f.strings('metadata'));
  return e;
}

const ttl = (secs: number) => (secs === 0 ? 'default' : `${secs}s`);

function printEntry(io: Io, e: Entry): void {
  const fields: [string, string | string[]][] = [
    ['Entry ID', e.id],
    ['SPIFFE ID', e.spiffeId],
    ['Parent ID', e.parentId],
    ['Revision', e.revision.toString()],
    ['X509-SVID TTL', ttl(e.x509SvidTtl)],
    ['JWT-SVID TTL', ttl(e.jwtSvidTtl)],
    ['Selector', e.selectors.map((s) => `${s.type}:${s.value}`)],
  ];
  if (e.dnsNames.length > 0) fields.push(['DNS name', e.dnsNames]);
  if (e.federatesWith.length > 0) fields.push(['FederatesWith', e.federatesWith]);
  if (e.admin) fields.push(['Admin', 'true']);
  if (e.downstream) fields.push(['Downstream', 'true']);
  if (e.hint !== '') fields.push(['Hint', e.hint]);
  if (e.expiresAt !== 0n) fields.push(['Expires at', time(e.expiresAt)]);
  const md = Object.entries(e.metadata).sort(([a], [b]) => (a < b ? -1 : 1));
  if (md.length > 0) fields.push(['Metadata', md.map(([k, v]) => `${k}=${v}`)]);
  fields.push(['Created at', time(e.createdAt)], ['Updated at', time(e.updatedAt)]);
  printFields(io, fields);
}

/** An entry as JSON: protobuf JSON with the .proto field names (what --data reads back). */
const entryJson = (e: Entry): JsonValue =>
  toJson(EntrySchema, e, { useProtoFieldName: true, alwaysEmitImplicit: true });

function readBatch(path: string): MessageInitShape<typeof CreateEntriesRequestSchema> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CliError(
      `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  if (Array.isArray(json)) json = { entries: json };
  try {
    return fromJson(CreateEntriesRequestSchema, json as JsonValue, { ignoreUnknownFields: false });
  } catch (err) {
    throw new CliError(`${path}: ${(err as Error).message}`);
  }
}

async function create(f: Flags, io: Io): Promise<number> {
  const data = f.string('data');
  let entries: MessageInitShape<typeof EntrySchema>[];
  if (data !== undefined) {
    const fields = entryFlags(f);
    if (Object.keys(fields).length > 0) throw usageError('--data cannot be combined with entry flags');
    entries = (readBatch(data).entries ?? []) as MessageInitShape<typeof EntrySchema>[];
    if (entries.length === 0) throw new CliError(`${data}: no entries`);
  } else {
    const e = entryFlags(f);
    required(e.spiffeId, 'spiffe-id');
    required(e.parentId, 'parent-id');
    if (e.selectors === undefined) throw usageError('at least one --selector type:value is required');
    entries = [e];
  }
  const r = await withClient(f.socket, (c) => c.call(Admin.method.createEntries, { entries }));
  let failed = 0;
  const json: JsonValue[] = [];
  r.results.forEach((res, i) => {
    const status = res.status;
    const ok = status === undefined || status.code === 0;
    if (!ok) failed++;
    if (f.output === 'json') {
      json.push({
        status: {
          code: status?.code ?? 0,
          message: status?.message ?? '',
          error_code: status?.errorCode ?? '',
        },
        ...(res.entry === undefined ? {} : { entry: entryJson(res.entry) }),
      });
      return;
    }
    if (ok && res.entry !== undefined) {
      if (i > 0) io.out('');
      printEntry(io, res.entry);
    } else {
      // In a batch, name the entry by its place in the file (counted from 1) and its SPIFFE ID.
      const which =
        data === undefined
          ? ''
          : `entry ${i + 1} of ${entries.length}${entries[i]?.spiffeId ? ` (${entries[i]?.spiffeId})` : ''}: `;
      io.err(
        `tessera entry create: ${which}${status?.message ?? 'failed'}${status?.errorCode ? ` (${status.errorCode})` : ''}`,
      );
    }
  });
  if (f.output === 'json') printJson(io, { results: json });
  return failed === 0 ? 0 : 1;
}

async function show(f: Flags, io: Io): Promise<number> {
  const id = f.string('entry-id');
  const entries = await withClient(f.socket, async (c) => {
    if (id !== undefined) return [await c.call(Admin.method.getEntry, { id })];
    const selector = f.string('selector');
    const all: Entry[] = [];
    let pageToken = '';
    do {
      const page = await c.call(Admin.method.listEntries, {
        bySpiffeId: f.string('spiffe-id') ?? '',
        byParentId: f.string('parent-id') ?? '',
        ...(selector === undefined ? {} : { bySelector: parseSelector(selector) }),
        pageSize: 1000,
        pageToken,
      });
      all.push(...page.entries);
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    return all;
  });
  if (f.output === 'json') {
    printJson(io, { entries: entries.map(entryJson) });
    return 0;
  }
  io.out(entries.length === 1 ? 'Found 1 entry' : `Found ${entries.length} entries`);
  for (const e of entries) {
    io.out('');
    printEntry(io, e);
  }
  return 0;
}

async function update(f: Flags, io: Io): Promise<number> {
  const id = required(f.string('entry-id'), 'entry-id');
  const revision = f.string('revision');
  if (revision !== undefined && !/^\d+$/.test(revision)) throw usageError('--revision must be a number');
  const changes = entryFlags(f);
  const updated = await withClient(f.socket, async (c) => {
    const current = await c.call(Admin.method.getEntry, { id });
    const { $typeName: _message, $unknown: _unknown, ...fields } = current;
    const entry: MessageInitShape<typeof EntrySchema> = { ...fields, ...changes };
    if (f.bool('no-admin')) entry.admin = false;
    if (f.bool('no-downstream')) entry.downstream = false;
    // The revision read now, unless the caller names the one it based its change on.
    if (revision !== undefined) entry.revision = BigInt(revision);
    return c.call(Admin.method.updateEntry, { entry });
  });
  if (f.output === 'json') printJson(io, entryJson(updated));
  else printEntry(io, updated);
  return 0;
}

async function remove(f: Flags, io: Io): Promise<number> {
  const ids = f.strings('entry-id');
  if (ids.length === 0) throw usageError('--entry-id is required');
  const r = await withClient(f.socket, (c) => c.call(Admin.method.deleteEntries, { ids }));
  let failed = 0;
  for (const res of r.results) {
    const ok = res.status === undefined || res.status.code === 0;
    if (!ok) failed++;
    if (f.output === 'json') continue;
    if (ok) io.out(`Deleted entry ${res.id}`);
    else
      io.err(
        `tessera entry delete: ${res.id}: ${res.status?.message}${res.status?.errorCode ? ` (${res.status.errorCode})` : ''}`,
      );
  }
  if (f.output === 'json')
    printJson(io, {
      results: r.results.map((x) => ({
        id: x.id,
        status: {
          code: x.status?.code ?? 0,
          message: x.status?.message ?? '',
          error_code: x.status?.errorCode ?? '',
        },
      })),
    });
  return failed === 0 ? 0 : 1;
}

/** `tessera entry …` */
export async function entryCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'create':
      return create(parseFlags(rest, { ...FIELDS, data: { type: 'string' } }), io);
    case 'show':
      return show(
        parseFlags(rest, {
          'entry-id': { type: 'string' },
          'spiffe-id': { type: 'string' },
          'parent-id': { type: 'string' },
          selector: { type: 'string' },
        }),
        io,
      );
    case 'update':
      return update(
        parseFlags(rest, {
          ...FIELDS,
          'entry-id': { type: 'string' },
          revision: { type: 'string' },
          'no-admin': { type: 'boolean' },
          'no-downstream': { type: 'boolean' },
        }),
        io,
      );
    case 'delete':
      return remove(parseFlags(rest, { 'entry-id': { type: 'string', multiple: true } }), io);
    case 'count': {
      const f = parseFlags(rest, {});
      const r = await withClient(f.socket, (c) => c.call(Admin.method.countEntries, {}));
      if (f.output === 'json') printJson(io, { count: Number(r.count) });
      else io.out(`${r.count} registration ${r.count === 1n ? 'entry' : 'entries'}`);
      return 0;
    }
    default:
      io.err(sub === undefined ? USAGE : `tessera entry: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}
