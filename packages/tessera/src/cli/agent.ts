import type { Agent } from '../gen/tessera/admin/v1/admin_pb.js';
import { Admin } from '../gen/tessera/admin/v1/admin_pb.js';
import {
  COMMON_USAGE,
  type Flags,
  parseFlags,
  parseSelector,
  printFields,
  printJson,
  printTable,
  required,
  time,
  usageError,
  withClient,
} from './admin-client.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera agent run|tpm|list|show|ban|evict|count [flags]

  run     start the agent on this machine: --config agent.yaml [--join-token token]
  tpm     ek-hash [--tcti tcti]: this machine's TPM EK hash, for node_attestors.tpm.ek_hashes
  list    attested agents: [--selector type:value] [--banned true|false]
  show    --spiffe-id id
  ban     --spiffe-id id: cut the agent off now; it cannot attest again until evicted
  evict   --spiffe-id id: forget the agent; it must attest again
  count   how many agents have attested

${COMMON_USAGE}`;

const agentJson = (a: Agent) => ({
  spiffe_id: a.spiffeId,
  attestor: a.attestor,
  selectors: a.selectors.map((s) => `${s.type}:${s.value}`),
  serial: a.serial,
  expires_at: Number(a.expiresAt),
  banned: a.banned,
  connected: a.connected,
  created_at: Number(a.createdAt),
  updated_at: Number(a.updatedAt),
});

async function list(f: Flags, io: Io): Promise<number> {
  const banned = f.string('banned') ?? '';
  if (banned !== '' && banned !== 'true' && banned !== 'false')
    throw usageError('--banned must be true or false');
  const selector = f.string('selector');
  const agents = await withClient(f.socket, async (c) => {
    const all: Agent[] = [];
    let pageToken = '';
    do {
      const page = await c.call(Admin.method.listAgents, {
        ...(selector === undefined ? {} : { bySelector: parseSelector(selector) }),
        banned,
        pageSize: 1000,
        pageToken,
      });
      all.push(...page.agents);
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    return all;
  });
  if (f.output === 'json') {
    printJson(io, { agents: agents.map(agentJson) });
    return 0;
  }
  if (agents.length === 0) {
    io.out('No attested agents found');
    return 0;
  }
  printTable(
    io,
    ['SPIFFE ID', 'ATTESTOR', 'SVID EXPIRES', 'BANNED', 'CONNECTED'],
    agents.map((a) => [a.spiffeId, a.attestor, time(a.expiresAt), String(a.banned), String(a.connected)]),
  );
  return 0;
}

/** `tessera agent …` */
export async function agentCommand(args: string[], io: Io): Promise<number> {
  // The agent daemon's code is loaded only to run it.
  if (args[0] === 'run') return (await import('./agent-run.js')).agentRunCommand(args.slice(1), io);
  if (args[0] === 'tpm') return (await import('./agent-tpm.js')).agentTpmCommand(args.slice(1), io);
  const [sub, ...rest] = args;
  switch (sub) {
    case 'list':
      return list(parseFlags(rest, { selector: { type: 'string' }, banned: { type: 'string' } }), io);
    case 'show': {
      const f = parseFlags(rest, { 'spiffe-id': { type: 'string' } });
      const spiffeId = required(f.string('spiffe-id'), 'spiffe-id');
      const a = await withClient(f.socket, (c) => c.call(Admin.method.getAgent, { spiffeId }));
      if (f.output === 'json') printJson(io, agentJson(a));
      else
        printFields(io, [
          ['SPIFFE ID', a.spiffeId],
          ['Attestor', a.attestor],
          ['Selector', a.selectors.map((s) => `${s.type}:${s.value}`)],
          ['SVID serial', a.serial === '' ? '(none)' : a.serial],
          ['SVID expires', time(a.expiresAt)],
          ['Banned', String(a.banned)],
          ['Connected', String(a.connected)],
          ['Attested at', time(a.createdAt)],
          ['Updated at', time(a.updatedAt)],
        ]);
      return 0;
    }
    case 'ban':
    case 'evict': {
      const f = parseFlags(rest, { 'spiffe-id': { type: 'string' } });
      const spiffeId = required(f.string('spiffe-id'), 'spiffe-id');
      await withClient(f.socket, (c) =>
        c.call(sub === 'ban' ? Admin.method.banAgent : Admin.method.evictAgent, { spiffeId }),
      );
      if (f.output === 'json')
        printJson(io, { spiffe_id: spiffeId, [sub === 'ban' ? 'banned' : 'evicted']: true });
      else io.out(`Agent ${sub === 'ban' ? 'banned' : 'evicted'}: ${spiffeId}`);
      return 0;
    }
    case 'count': {
      const f = parseFlags(rest, {});
      const r = await withClient(f.socket, (c) => c.call(Admin.method.countAgents, {}));
      if (f.output === 'json') printJson(io, { count: Number(r.count) });
      else io.out(`${r.count} attested ${r.count === 1n ? 'agent' : 'agents'}`);
      return 0;
    }
    default:
      io.err(sub === undefined ? USAGE : `tessera agent: unknown command "${sub}"\n\n${USAGE}`);
      return 2;
  }
}
