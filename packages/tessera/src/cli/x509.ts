import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

  mint   an X509-SVID for any SPIFFE ID of the trust domain. The key is generated here (EC P-256)
         and never leaves this machine; the server signs a CSR. With --write, writes svid.pem,
         key.pem (0600) and bundle.pem into dir; without, prints the PEMs.

${COMMON_USAGE}`;

const pem = (ders: readonly Uint8Array[]) =>
  ders.map((d) => new X509Certificate(d).toString().trimEnd()).join('\n');

/** `tessera x509 …` */
export async function x509Command(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
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
