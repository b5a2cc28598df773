import { readFileSync } from 'node:fs';
import {
  parseSpiffeBundle,
  parseTrustDomain,
  parseX509BundlePem,
  SpiffeBundle,
  type TrustDomain,
} from '@tessera/spiffe';
import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import type { Bundle } from '../gen/tessera/common/v1/types_pb.js';
import {
  CliError,
  COMMON_USAGE,
  type Flags,
  parseFlags,
  printJson,
  required,
  usageError,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera bundle show|list|set|delete [flags]

  show     this trust domain's bundle: [--format pem|spiffe]
  list     federated trust domains' bundles: [--id trust-domain] [--format pem|spiffe]
  set      a federated trust domain's bundle: --id trust-domain [--path file] [--format pem|spiffe]
           (reads standard input without --path)
  delete   --id trust-domain

${COMMON_USAGE}`;

function format(f: Flags): 'pem' | 'spiffe' {
  const v = f.string('format') ?? 'pem';
  if (v !== 'pem' && v !== 'spiffe') throw usageError(`--format must be pem or spiffe; got "${v}"`);
  return v;
}

function trustDomain(text: string): TrustDomain {
  try {
    return parseTrustDomain(text);
  } catch (err) {
    throw usageError(`--id: ${(err as Error).message}`);
  }
}

/** A bundle file's text in either format the bundle commands take, as a SPIFFE bundle of `td`. */
export function bundleOfFormat(td: TrustDomain, text: string, format: 'pem' | 'spiffe'): SpiffeBundle {
  return format === 'pem'
    ? SpiffeBundle.fromX509Bundle(parseX509BundlePem(td, text))
    : parseSpiffeBundle(td, text);
}

function decode(b: Bundle): SpiffeBundle {
  return parseSpiffeBundle(parseTrustDomain(b.trustDomain), b.spiffeBundle);
}

/** The bundle as the format asks: PEM certificates, or the SPIFFE bundle document (indented JSON). */
function render(b: Bundle, fmt: 'pem' | 'spiffe'): string {
  if (fmt === 'spiffe')
    return JSON.stringify(JSON.parse(Buffer.from(b.spiffeBundle).toString('utf8')), null, 2);
  return decode(b)
    .x509Authorities.map((c) => c.toString().trimEnd())
    .join('\n');
}

function bundleJson(b: Bundle): unknown {
  return {
    trust_domain: b.trustDomain,
    sequence: b.sequence.toString(),
    spiffe_bundle: JSON.parse(Buffer.from(b.spiffeBundle).toString('utf8')),
  };
}

async function list(f: Flags, io: Io): Promise<number> {
  const fmt = format(f);
  const id = f.string('id');
  const want = id === undefined ? undefined : trustDomain(id).name;
  const bundles = await withClient(f.socket, async (c) => {
    const own = (await c.call(Admin.method.health, {})).trustDomain;
    const all = (await c.call(Admin.method.listBundles, {})).bundles;
    return all.filter((b) => b.trustDomain !== own && (want === undefined || b.trustDomain === want));
  });
  if (want !== undefined && bundles.length === 0)
    throw new CliError(`no bundle is stored for "${want}" (ERR_BUNDLE_NOT_FOUND)`);
  if (f.output === 'json') {
    printJson(io, { bundles: bundles.map(bundleJson) });
    return 0;
  }
  if (bundles.length === 0) {
    io.out('No federated bundles');
    return 0;
  }
  bundles.forEach((b, i) => {
    if (i > 0) io.out('');
    io.out('****************************************');
    io.out(`* ${b.trustDomain}`);
    io.out('****************************************');
    io.out(render(b, fmt));
  });
  return 0;
}

async function set(f: Flags, io: Io): Promise<number> {
  const fmt = format(f);
  const td = trustDomain(required(f.string('id'), 'id'));
  const path = f.string('path');
  let text: string;
  try {
    text = readFileSync(path ?? 0, 'utf8');
  } catch (err) {
    throw new CliError(
      `cannot read ${path ?? 'standard input'}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  let doc: string;
  try {
    doc = bundleOfFormat(td, text, fmt).marshal();
  } catch (err) {
    throw new CliError(`${path ?? 'standard input'}: ${(err as Error).message}`);
  }
  const stored = await withClient(f.socket, (c) =>
    c.call(Admin.method.setBundle, { trustDomain: td.name, spiffeBundle: Buffer.from(doc) }),
  );
  if (f.output === 'json') printJson(io, bundleJson(stored));
  else io.out(`Bundle set for ${stored.trustDomain} (sequence ${stored.sequence})`);
  return 0;
}

/** `tessera bundle …` */
export async function bundleCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'show': {
      const f = parseFlags(rest, { format: { type: 'string' } });
      const fmt = format(f);
      const b = await withClient(f.socket, (c) => c.call(Admin.method.getBundle, {}));
      if (f.output === 'json') printJson(io, bundleJson(b));
      else io.out(render(b, fmt));
      return 0;
    }
    case 'list':
      return list(parseFlags(rest, { id: { type: 'string' }, format: { type: 'string' } }), io);
    case 'set':
      return set(
        parseFlags(rest, { id: { type: 'string' }, path: { type: 'string' }, format: { type: 'string' } }),
        io,
      );
    case 'delete': {
      const f = parseFlags(rest, { id: { type: 'string' } });
      const td = trustDomain(required(f.string('id'), 'id'));
      await withClient(f.socket, (c) => c.call(Admin.method.deleteBundle, { trustDomain: td.name }));
      if (f.output === 'json') printJson(io, { trust_domain: td.name, deleted: true });
      else io.out(`Bundle deleted: ${td.name}`);
      return 0;
    }
    default:
      io.err(sub === undefined ? USAGE : `tessera bundle: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}
