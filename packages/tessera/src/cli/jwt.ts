import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import {
  COMMON_USAGE,
  parseFlags,
  parseSeconds,
  printJson,
  required,
  usageError,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera jwt mint --spiffe-id id --audience aud [--audience aud]... [--ttl 5m]

  mint   a JWT-SVID for any SPIFFE ID of the trust domain; prints the token

${COMMON_USAGE}`;

/** `tessera jwt …` */
export async function jwtCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'mint') {
    io.err(sub === undefined ? USAGE : `tessera jwt: unknown command "${sub}"\n\n${USAGE}`);
    return 2;
  }
  const f = parseFlags(rest, {
    'spiffe-id': { type: 'string' },
    audience: { type: 'string', multiple: true },
    ttl: { type: 'string' },
  });
  const spiffeId = required(f.string('spiffe-id'), 'spiffe-id');
  const audience = f.strings('audience');
  if (audience.length === 0) throw usageError('--audience is required');
  const r = await withClient(f.socket, (c) =>
    c.call(Admin.method.mintJWTSVID, { spiffeId, audience, ttl: parseSeconds(f.string('ttl'), 'ttl') ?? 0 }),
  );
  if (f.output === 'json') printJson(io, { token: r.token, expires_at: Number(r.expiresAt) });
  else io.out(r.token);
  return 0;
}
