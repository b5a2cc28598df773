import { readFileSync } from 'node:fs';
import { parseTrustDomain, type SpiffeBundle, type TrustDomain } from '@tessera/spiffe';
import { Admin, type FederationRelationship } from '../gen/tessera/admin/v1/admin_pb.js';
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
import { bundleOfFormat } from './bundle.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera federation create|list|show|update|delete|refresh [flags]

  create   a relationship with a foreign trust domain, stored in the datastore:
             --trust-domain td --bundle-endpoint-url https://host:port[/path]
             --bundle-endpoint-profile https_spiffe --endpoint-spiffe-id spiffe://td/spire/server
               [--trust-domain-bundle-path file [--trust-domain-bundle-format pem|spiffe]]
                 (the peer's bundle, to authenticate the first fetch: spire-server bundle show
                 -format spiffe, or tessera bundle show --format spiffe, run there)
             --bundle-endpoint-profile https_web [--ca-bundle-path roots.pem]
                 (roots of a private CA; default the system's)
  list     every relationship (server.yaml's too), with its last refresh
  show     --trust-domain td: one relationship, its bundle and refresh status
  update   --trust-domain td and the create flags to change (the others are kept)
  delete   --trust-domain td: stops fetching and removes its bundle (workloads stop trusting it)
  refresh  --trust-domain td: fetch its bundle now and print the outcome

${COMMON_USAGE}`;

const RELATIONSHIP_FLAGS = {
  'trust-domain': { type: 'string' },
  'bundle-endpoint-url': { type: 'string' },
  'bundle-endpoint-profile': { type: 'string' },
  'endpoint-spiffe-id': { type: 'string' },
  'trust-domain-bundle-path': { type: 'string' },
  'trust-domain-bundle-format': { type: 'string' },
  'ca-bundle-path': { type: 'string' },
} as const;

function trustDomain(f: Flags): TrustDomain {
  const text = required(f.string('trust-domain'), 'trust-domain');
  try {
    return parseTrustDomain(text);
  } catch (err) {
    throw usageError(`--trust-domain: ${(err as Error).message}`);
  }
}

function readText(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError(
      `--${flag} ${path}: cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** --trust-domain-bundle-path as a SPIFFE bundle document (PEM is converted). */
function bootstrapBundle(f: Flags, td: TrustDomain): Uint8Array | undefined {
  const path = f.string('trust-domain-bundle-path');
  const format = f.string('trust-domain-bundle-format') ?? (path?.endsWith('.pem') ? 'pem' : 'spiffe');
  if (path === undefined) {
    if (f.string('trust-domain-bundle-format') !== undefined)
      throw usageError('--trust-domain-bundle-format needs --trust-domain-bundle-path');
    return undefined;
  }
  if (format !== 'pem' && format !== 'spiffe')
    throw usageError(`--trust-domain-bundle-format must be pem or spiffe; got "${format}"`);
  const text = readText(path, 'trust-domain-bundle-path');
  let bundle: SpiffeBundle;
  try {
    bundle = bundleOfFormat(td, text, format);
  } catch (err) {
    throw new CliError(
      `--trust-domain-bundle-path ${path}: not a ${format === 'pem' ? 'PEM bundle' : 'SPIFFE bundle document'} of ${td.name}: ${(err as Error).message}` +
        (format === 'spiffe' ? ' (a PEM file? add --trust-domain-bundle-format pem)' : ''),
    );
  }
  return Buffer.from(bundle.marshal());
}

const date = (s: bigint) => (s === 0n ? 'never' : new Date(Number(s) * 1000).toISOString());

function ago(s: bigint, now: number): string {
  if (s === 0n) return '';
  const d = Math.max(0, Math.round(now / 1000 - Number(s)));
  return d < 120
    ? ` (${d}s ago)`
    : d < 7200
      ? ` (${Math.round(d / 60)}m ago)`
      : ` (${Math.round(d / 3600)}h ago)`;
}

function json(r: FederationRelationship): unknown {
  const s = r.status;
  return {
    trust_domain: r.trustDomain,
    bundle_endpoint_url: r.bundleEndpointUrl,
    bundle_endpoint_profile: r.bundleEndpointProfile,
    ...(r.endpointSpiffeId === '' ? {} : { endpoint_spiffe_id: r.endpointSpiffeId }),
    ...(r.caBundlePem === '' ? {} : { ca_bundle_pem: r.caBundlePem }),
    source: r.source,
    status: {
      last_attempt: s === undefined || s.lastAttempt === 0n ? null : date(s.lastAttempt),
      last_success: s === undefined || s.lastSuccess === 0n ? null : date(s.lastSuccess),
      bundle_age_seconds:
        s === undefined || s.lastSuccess === 0n
          ? null
          : Math.max(0, Math.round(Date.now() / 1000 - Number(s.lastSuccess))),
      last_error: s?.lastError === '' || s === undefined ? null : s.lastError,
      failures: s?.failures ?? 0,
      next_refresh: s === undefined || s.nextRefresh === 0n ? null : date(s.nextRefresh),
      bundle:
        s?.hasBundle === true
          ? {
              sequence: s.bundleSequence.toString(),
              refresh_hint_seconds: Number(s.refreshHint),
              x509_authorities: s.x509Authorities,
              jwt_authorities: s.jwtAuthorities,
            }
          : null,
    },
  };
}

function print(io: Io, r: FederationRelationship): void {
  const s = r.status;
  const now = Date.now();
  io.out(`Trust domain         : ${r.trustDomain}`);
  io.out(`Bundle endpoint URL  : ${r.bundleEndpointUrl}`);
  io.out(`Endpoint profile     : ${r.bundleEndpointProfile}`);
  if (r.endpointSpiffeId !== '') io.out(`Endpoint SPIFFE ID   : ${r.endpointSpiffeId}`);
  if (r.bundleEndpointProfile === 'https_web')
    io.out(`Endpoint roots       : ${r.caBundlePem === '' ? "the system's" : 'a private CA bundle'}`);
  io.out(`Defined in           : ${r.source === 'config' ? 'server.yaml' : 'the datastore'}`);
  if (s === undefined) return;
  io.out(
    `Last refresh         : ${date(s.lastAttempt)}${ago(s.lastAttempt, now)}${s.lastAttempt === 0n ? '' : s.lastError === '' ? ', ok' : ', failed'}`,
  );
  io.out(`Last success         : ${date(s.lastSuccess)}${ago(s.lastSuccess, now)}`);
  if (s.lastError !== '')
    io.out(
      `Last error           : ${s.lastError}${s.failures > 1 ? ` (${s.failures} failures in a row)` : ''}`,
    );
  if (s.nextRefresh !== 0n) io.out(`Next refresh         : ${date(s.nextRefresh)}`);
  io.out(
    `Bundle               : ${
      s.hasBundle
        ? `sequence ${s.bundleSequence}, ${s.x509Authorities} X.509 and ${s.jwtAuthorities} JWT authorities${s.refreshHint > 0n ? `, refresh hint ${s.refreshHint}s` : ''}`
        : 'none yet: workloads cannot trust this trust domain'
    }`,
  );
}

function printAll(io: Io, rs: readonly FederationRelationship[]): void {
  if (rs.length === 0) {
    io.out('No federation relationships');
    return;
  }
  io.out(`Found ${rs.length} federation relationship${rs.length === 1 ? '' : 's'}`);
  for (const r of rs) {
    io.out('');
    print(io, r);
  }
}

/** The relationship the flags describe, over `base` (update keeps what is not given). */
function relationshipFrom(f: Flags, td: TrustDomain, base?: FederationRelationship) {
  const profile = f.string('bundle-endpoint-profile') ?? base?.bundleEndpointProfile;
  if (profile === undefined)
    throw usageError('--bundle-endpoint-profile is required: https_spiffe or https_web');
  if (profile !== 'https_spiffe' && profile !== 'https_web')
    throw usageError(`--bundle-endpoint-profile must be https_spiffe or https_web; got "${profile}"`);
  const url = f.string('bundle-endpoint-url') ?? base?.bundleEndpointUrl;
  if (url === undefined) throw usageError('--bundle-endpoint-url is required');
  const changedProfile = base !== undefined && profile !== base.bundleEndpointProfile;
  const keep = (v: string | undefined) => (changedProfile ? '' : (v ?? ''));
  const caPath = f.string('ca-bundle-path');
  const bundle = bootstrapBundle(f, td);
  return {
    trustDomain: td.name,
    bundleEndpointUrl: url,
    bundleEndpointProfile: profile,
    endpointSpiffeId: f.string('endpoint-spiffe-id') ?? keep(base?.endpointSpiffeId),
    caBundlePem: caPath === undefined ? keep(base?.caBundlePem) : readText(caPath, 'ca-bundle-path'),
    ...(bundle === undefined ? {} : { trustDomainBundle: bundle }),
  };
}

/** `tessera federation …` */
export async function federationCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  const out = (f: Flags, r: FederationRelationship, headline: string) => {
    if (f.output === 'json') printJson(io, json(r));
    else {
      io.out(headline);
      io.out('');
      print(io, r);
    }
  };
  switch (sub) {
    case 'create': {
      const f = parseFlags(rest, RELATIONSHIP_FLAGS);
      const td = trustDomain(f);
      const req = relationshipFrom(f, td);
      const r = await withClient(f.socket, (c) => c.call(Admin.method.createFederationRelationship, req));
      out(f, r, `Federation relationship created with ${r.trustDomain}`);
      return 0;
    }
    case 'update': {
      const f = parseFlags(rest, RELATIONSHIP_FLAGS);
      const td = trustDomain(f);
      const r = await withClient(f.socket, async (c) => {
        const current = await c.call(Admin.method.getFederationRelationship, { trustDomain: td.name });
        return c.call(Admin.method.updateFederationRelationship, relationshipFrom(f, td, current));
      });
      out(f, r, `Federation relationship updated: ${r.trustDomain}`);
      return 0;
    }
    case 'list': {
      const f = parseFlags(rest, {});
      const { relationships } = await withClient(f.socket, (c) =>
        c.call(Admin.method.listFederationRelationships, {}),
      );
      if (f.output === 'json') printJson(io, { relationships: relationships.map(json) });
      else printAll(io, relationships);
      return 0;
    }
    case 'show': {
      const f = parseFlags(rest, { 'trust-domain': { type: 'string' } });
      const td = trustDomain(f);
      const r = await withClient(f.socket, (c) =>
        c.call(Admin.method.getFederationRelationship, { trustDomain: td.name }),
      );
      if (f.output === 'json') printJson(io, json(r));
      else print(io, r);
      return 0;
    }
    case 'delete': {
      const f = parseFlags(rest, { 'trust-domain': { type: 'string' } });
      const td = trustDomain(f);
      await withClient(f.socket, (c) =>
        c.call(Admin.method.deleteFederationRelationship, { trustDomain: td.name }),
      );
      if (f.output === 'json') printJson(io, { trust_domain: td.name, deleted: true });
      else
        io.out(
          `Federation relationship deleted: ${td.name} (its bundle is removed; workloads stop trusting it)`,
        );
      return 0;
    }
    case 'refresh': {
      const f = parseFlags(rest, { 'trust-domain': { type: 'string' } });
      const td = trustDomain(f);
      const r = await withClient(f.socket, (c) =>
        c.call(Admin.method.refreshBundle, { trustDomain: td.name }),
      );
      const failed = r.status !== undefined && r.status.lastError !== '';
      if (f.output === 'json') printJson(io, json(r));
      else if (failed)
        io.err(`Refresh of ${td.name} failed: ${r.status?.lastError} (the last good bundle stays in use)`);
      else
        io.out(
          `Bundle refreshed for ${td.name} (sequence ${r.status?.bundleSequence ?? 0n}, ${r.status?.x509Authorities ?? 0} X.509 and ${r.status?.jwtAuthorities ?? 0} JWT authorities)`,
        );
      return failed ? 1 : 0;
    }
    default:
      io.err(sub === undefined ? USAGE : `tessera federation: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}
