import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import { COMMON_USAGE, parseFlags, printJson, withClient } from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera healthcheck [--socket path]

  exits 0 when the server answers on its admin socket and is ready, 1 otherwise

${COMMON_USAGE}`;

/** `tessera healthcheck` */
export async function healthcheckCommand(args: string[], io: Io): Promise<number> {
  if (args[0] === 'help' || args[0] === '--help' || args[0] === '-h') {
    io.out(USAGE);
    return 0;
  }
  const f = parseFlags(args, {});
  const r = await withClient(f.socket, (c) => c.call(Admin.method.health, {}));
  if (f.output === 'json') printJson(io, { ready: r.ready, trust_domain: r.trustDomain, version: r.version });
  else if (r.ready) io.out(`Server is healthy (trust domain ${r.trustDomain}, version ${r.version})`);
  else io.err(`tessera healthcheck: the server at ${f.socket} is not ready (see its log)`);
  return r.ready ? 0 : 1;
}
