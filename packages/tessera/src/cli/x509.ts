import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CRL_REASONS, parseX509Crl, reasonName } from '@tessera/spiffe';
import { createCsr } from '../common/csr.js';
import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import {
  CliError,
  COMMON_USAGE,
  parseFlags,
  parseSeconds,
  printJson,
  required,
  time,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera x509 mint --spiffe-id id [--ttl 1h] [--dns name]... [--write dir]
       tessera x509 revoke (--serial hex | --entry-id id) [--reason keyCompromise]
       tessera x509 revoked
       tessera x509 crl [--write dir]

  mint     an X509-SVID for any SPIFFE ID of the trust domain. The key is generated here (EC P-256)
           and never leaves this machine; the server signs a CSR. With --write, writes svid.pem,
           key.pem (0600) and bundle.pem into dir; without, prints the PEMs.
  revoke   revokes one X509-SVID by serial (as openssl x509 -noout -serial prints it), or every
           unexpired one of an entry: it goes on its authority's CRL, which agents get by push and
           give workloads (Workload API, SDS); agents re-issue the revoked SVIDs at once. --reason:
           ${Object.keys(CRL_REASONS).join(', ')} (default unspecified).
  revoked  lists the revoked X509-SVIDs not yet expired, and each authority's CRL number.
  crl      prints every X.509 authority's current CRL (PEM); with --write, writes crl.pem into dir
           (for openssl verify -crl_check, nginx ssl_crl and other CRL consumers).

${COMMON_USAGE}`;

const pem = (ders: readonly Uint8Array[]) =>
  ders.map((d) => new X509Certificate(d).toString().trimEnd()).join('\n');

/** `tessera x509 …` */
export async function x509Command(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'revoke') return revoke(rest, io);
  if (sub === 'revoked') return revoked(rest, io);
  if (sub === 'crl') return crl(rest, io);
  if (sub !== 'mint') {
    io.err(sub === undefined ? USAGE : `tessera x509: unknown command "${sub}"\n\n${USAGE}`);
    return 2;
  }
  const f = parseFlags(rest, {
    'spiffe-id': { type: 'string' },
    ttl: { type: 'string' },
    dns: { type: 'string', multiple: true },
    write: { type: 'string' },
  });
  const spiffeId = required(f.string('spiffe-id'), 'spiffe-id');
  const ttl = parseSeconds(f.string('ttl'), 'ttl') ?? 0;
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const r = await withClient(f.socket, (c) =>
    c.call(Admin.method.mintX509SVID, {
      spiffeId,
      csr: createCsr(privateKey),
      ttl,
      dnsNames: f.strings('dns'),
    }),
  );
  const svid = `${pem(r.svidChain)}\n`;
  const bundle = `${pem(r.bundle)}\n`;
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const dir = f.string('write');
  if (dir !== undefined) {
    const files = { svid: join(dir, 'svid.pem'), key: join(dir, 'key.pem'), bundle: join(dir, 'bundle.pem') };
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // The key file is created new with 0600, so it is never readable by others, not even briefly.
      rmSync(files.key, { force: true });
      writeFileSync(files.key, key, { mode: 0o600, flag: 'wx' });
      writeFileSync(files.svid, svid, { mode: 0o644 });
      writeFileSync(files.bundle, bundle, { mode: 0o644 });
    } catch (err) {
      throw new CliError(`cannot write to ${dir}: ${(err as Error).message}`);
    }
    if (f.output === 'json') printJson(io, { spiffe_id: spiffeId, expires_at: Number(r.expiresAt), files });
    else {
      io.out(`X509-SVID for ${spiffeId}, expires ${time(r.expiresAt)}`);
      io.out(`  certificate: ${files.svid}`);
      io.out(`  private key: ${files.key}`);
      io.out(`  bundle:      ${files.bundle}`);
    }
    return 0;
  }
  if (f.output === 'json')
    printJson(io, {
      spiffe_id: spiffeId,
      expires_at: Number(r.expiresAt),
      svid_pem: svid,
      key_pem: key,
      bundle_pem: bundle,
    });
  else {
    io.out('X509-SVID:');
    io.out(svid.trimEnd());
    io.out('\nPrivate key:');
    io.out(key.trimEnd());
    io.out('\nRoot CAs:');
    io.out(bundle.trimEnd());
  }
  return 0;
}

type Revocation = {
  serial: string;
  authorityId: string;
  spiffeId: string;
  entryId: string;
  reason: number;
  revokedAt: bigint;
  expiresAt: bigint;
};

const revocationJson = (r: Revocation) => ({
  serial: r.serial,
  spiffe_id: r.spiffeId,
  entry_id: r.entryId,
  authority: r.authorityId,
  reason: reasonName(r.reason),
  revoked_at: Number(r.revokedAt),
  expires_at: Number(r.expiresAt),
});

function printRevocation(io: Io, r: Revocation): void {
  io.out(`  ${r.serial}  ${r.spiffeId}${r.entryId === '' ? ' (minted)' : ` entry ${r.entryId}`}`);
  io.out(
    `      reason ${reasonName(r.reason)}, revoked ${time(r.revokedAt)}, expires ${time(r.expiresAt)}, authority ${r.authorityId}`,
  );
}

async function revoke(args: string[], io: Io): Promise<number> {
  const f = parseFlags(args, {
    serial: { type: 'string' },
    'entry-id': { type: 'string' },
    reason: { type: 'string' },
  });
  const serial = f.string('serial');
  const entryId = f.string('entry-id');
  if ((serial === undefined) === (entryId === undefined))
    throw new CliError(
      'give either --serial (one X509-SVID) or --entry-id (every unexpired SVID of the entry)',
      2,
    );
  const reasonText = f.string('reason') ?? 'unspecified';
  const reason = CRL_REASONS[reasonText];
  if (reason === undefined)
    throw new CliError(
      `--reason ${JSON.stringify(reasonText)} is not an RFC 5280 reason; use one of ${Object.keys(CRL_REASONS).join(', ')}`,
      2,
    );
  const r = await withClient(f.socket, (c) =>
    c.call(Admin.method.revokeX509SVID, {
      by:
        serial !== undefined
          ? { case: 'serial', value: serial }
          : { case: 'entryId', value: entryId as string },
      reason,
    }),
  );
  if (f.output === 'json') {
    printJson(io, {
      revoked: r.revoked.map(revocationJson),
      already_revoked: r.alreadyRevoked.map(revocationJson),
      crls: r.crls.map((c) => ({ authority: c.authorityId, number: Number(c.number) })),
      warnings: r.warnings,
    });
    return 0;
  }
  io.out(`Revoked ${r.revoked.length} X509-SVID${r.revoked.length === 1 ? '' : 's'}:`);
  for (const x of r.revoked) printRevocation(io, x);
  if (r.alreadyRevoked.length > 0) {
    io.out(`Already revoked (unchanged): ${r.alreadyRevoked.length}`);
    for (const x of r.alreadyRevoked) printRevocation(io, x);
  }
  for (const c of r.crls) io.out(`CRL of authority ${c.authorityId}: number ${c.number}, pushed to agents`);
  const signedHere = new Set(r.crls.map((c) => c.authorityId));
  for (const id of new Set(r.revoked.map((x) => x.authorityId)))
    if (!signedHere.has(id))
      io.out(
        `CRL of authority ${id}: signed by the server of the trust domain that holds its key, when it hears of this`,
      );
  for (const w of r.warnings) io.err(`warning: ${w}`);
  return 0;
}

async function revoked(args: string[], io: Io): Promise<number> {
  const f = parseFlags(args, {});
  const r = await withClient(f.socket, (c) => c.call(Admin.method.listX509Revocations, {}));
  if (f.output === 'json') {
    printJson(io, {
      revocations: r.revocations.map(revocationJson),
      crls: r.crls.map((c) => ({
        authority: c.authorityId,
        number: Number(c.number),
        updated_at: Number(c.updatedAt),
      })),
    });
    return 0;
  }
  io.out(`Revoked X509-SVIDs (unexpired): ${r.revocations.length}`);
  for (const x of r.revocations) printRevocation(io, x);
  io.out(`CRLs: ${r.crls.length}`);
  for (const c of r.crls)
    io.out(`  authority ${c.authorityId}: number ${c.number}, signed ${time(c.updatedAt)}`);
  return 0;
}

async function crl(args: string[], io: Io): Promise<number> {
  const f = parseFlags(args, { write: { type: 'string' } });
  const r = await withClient(f.socket, (c) => c.call(Admin.method.listX509Revocations, {}));
  const text = r.crls.map((c) => parseX509Crl(c.der).toPem()).join('');
  const dir = f.string('write');
  if (dir === undefined) {
    io.out(text.trimEnd());
    return 0;
  }
  const file = join(dir, 'crl.pem');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileSync(`${file}.tmp`, text, { mode: 0o644 });
    renameSync(`${file}.tmp`, file);
  } catch (err) {
    throw new CliError(`cannot write ${file}: ${(err as Error).message}`);
  }
  io.out(`${r.crls.length} CRL${r.crls.length === 1 ? '' : 's'} written to ${file}`);
  return 0;
}
