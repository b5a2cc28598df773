import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import {
  COMMON_USAGE,
  parseFlags,
  parseSeconds,
  printFields,
  printJson,
  time,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera token generate [--spiffe-id id] [--ttl 600] [--agent-name name]

  generate   a one-time join token for node attestation, valid --ttl seconds (default 600);
             printed once and stored hashed. --agent-name fixes the agent's ID
             (spiffe://<td>/tessera/agent/join_token/<name>); --spiffe-id also registers that ID
             as an alias of the agent's node.

${COMMON_USAGE}`;

/** `tessera token …` */
export async function tokenCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'generate') {
    io.err(sub === undefined ? USAGE : `tessera token: unknown command "${sub}"\n\n${USAGE}`);
    return 2;
  }
  const f = parseFlags(rest, {
    'spiffe-id': { type: 'string' },
    ttl: { type: 'string' },
    'agent-name': { type: 'string' },
  });
  const r = await withClient(f.socket, (c) =>
    c.call(Admin.method.createJoinToken, {
      ttl: parseSeconds(f.string('ttl'), 'ttl') ?? 0,
      agentName: f.string('agent-name') ?? '',
      spiffeId: f.string('spiffe-id') ?? '',
    }),
  );
  if (f.output === 'json')
    printJson(io, { token: r.token, agent_id: r.agentId, expires_at: Number(r.expiresAt) });
  else
    printFields(io, [
      ['Token', r.token],
      ['Agent ID', r.agentId],
      ['Expires at', time(r.expiresAt)],
    ]);
  return 0;
}
