import { Admin, type Authority } from '../gen/tessera/admin/v1/admin_pb.js';
import {
  COMMON_USAGE,
  type Flags,
  parseFlags,
  printFields,
  printJson,
  printTable,
  required,
  time,
  usageError,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera authority show|prepare|activate|taint|revoke [--kind x509|jwt] [--id id]

  show       the X.509 CAs and JWT keys: status (prepared, active, old), tainted, expiry
  prepare    --kind: create the next key and publish it in the bundle
  activate   --kind: sign with the prepared key from now on
  taint      --kind --id: an old key is compromised; agents re-issue everything it signed at once
  revoke     --kind --id: remove a tainted key from the bundle

${COMMON_USAGE}`;

function kind(f: Flags, needed: boolean): string {
  const k = f.string('kind');
  if (k === undefined) {
    if (needed) throw usageError('--kind x509|jwt is required');
    return '';
  }
  if (k !== 'x509' && k !== 'jwt') throw usageError(`--kind must be x509 or jwt; got "${k}"`);
  return k;
}

const authorityJson = (a: Authority) => ({
  kind: a.kind,
  id: a.id,
  status: a.status,
  tainted: a.tainted,
  not_after: Number(a.notAfter),
  ...(a.upstreamId === '' ? {} : { upstream_id: a.upstreamId }),
});

/** `tessera authority …` */
export async function authorityCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'show': {
      const f = parseFlags(rest, { kind: { type: 'string' } });
      const k = kind(f, false);
      const all = (await withClient(f.socket, (c) => c.call(Admin.method.getAuthorities, {}))).authorities;
      const list = all.filter((a) => k === '' || a.kind === k);
      if (f.output === 'json') printJson(io, { authorities: list.map(authorityJson) });
      else
        printTable(
          io,
          ['KIND', 'ID', 'STATUS', 'TAINTED', 'NOT AFTER'],
          list.map((a) => [a.kind, a.id, a.status, a.tainted ? 'yes' : 'no', time(a.notAfter)]),
        );
      return 0;
    }
    case 'prepare':
    case 'activate':
    case 'taint':
    case 'revoke': {
      const f = parseFlags(rest, { kind: { type: 'string' }, id: { type: 'string' } });
      const k = kind(f, true);
      const id = sub === 'taint' || sub === 'revoke' ? required(f.string('id'), 'id') : '';
      const method = {
        prepare: Admin.method.prepareAuthority,
        activate: Admin.method.activateAuthority,
        taint: Admin.method.taintAuthority,
        revoke: Admin.method.revokeAuthority,
      }[sub];
      const a = await withClient(f.socket, (c) => c.call(method, { kind: k, id }));
      // The answer describes the key as it was acted on; a revoked key is gone, not "tainted".
      if (f.output === 'json')
        printJson(io, { ...authorityJson(a), ...(sub === 'revoke' ? { revoked: true } : {}) });
      else {
        const done = { prepare: 'Prepared', activate: 'Activated', taint: 'Tainted', revoke: 'Revoked' }[sub];
        io.out(`${done} ${a.kind} authority ${a.id}`);
        printFields(io, [
          ['Status', a.status],
          sub === 'revoke' ? ['Revoked', 'yes'] : ['Tainted', a.tainted ? 'yes' : 'no'],
          ['Not after', time(a.notAfter)],
        ]);
      }
      return 0;
    }
    default:
      io.err(sub === undefined ? USAGE : `tessera authority: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}
