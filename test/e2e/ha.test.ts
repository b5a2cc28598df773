// HA as operators run it: three `tessera server run` processes on one throwaway PostgreSQL, an
// agent process on each, and workloads (this test process, over the Workload API) watching their
// X.509 contexts. What is written through one server reaches workloads on the others; a ban cuts
// an agent wherever it is connected; the change-feed connections killed in PostgreSQL lose nothing;
// a server killed with SIGKILL loses its agents to the others.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createWorkloadApiClient, type WorkloadApiClient } from '@tessera/spiffe';
import { authorityKeyId } from '@tessera/tessera/dist/server/ca/manager.js';
import { openPostgresDatastore } from '@tessera/tessera/dist/server/datastore/postgres.js';
import {
  freePort,
  makeTempDir,
  type PostgresCluster,
  postgresAvailable,
  startPostgres,
  type TempDir,
} from '@tessera/testkit';
import pg from 'pg';
import { runCommand, spawnTessera, TESSERA_BIN, type TesseraProcess, waitForLog } from './tessera-process.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TD = 'example.org';
const UID = process.getuid?.() ?? 0;

interface Server {
  name: string;
  proc: TesseraProcess;
  socket: string;
  port: number;
}

interface Agent {
  name: string;
  id: string;
  proc: TesseraProcess;
  watcher: Watcher;
}

/** A workload watching its X.509 context on an agent socket; `until` waits for a state (no polling). */
class Watcher {
  ids: string[] = [];
  /** SPIFFE ID → the leaf certificate of its SVID now. */
  leaves = new Map<string, X509Certificate>();
  readonly #client: WorkloadApiClient;
  readonly #abort = new AbortController();
  readonly #waiters = new Set<() => void>();
  readonly done: Promise<void>;

  constructor(socket: string) {
    this.#client = createWorkloadApiClient({
      address: `unix://${socket}`,
      backoff: { initialMs: 50, maxMs: 200 },
    });
    this.done = this.#client
      .watchX509Context(
        {
          onUpdate: (ctx) => {
            this.leaves = new Map(
              ctx.svids.map((s) => [s.id.toString(), s.certificates[0] as X509Certificate]),
            );
            this.#set(ctx.svids.map((s) => s.id.toString()).sort());
          },
          onError: () => {
            this.leaves = new Map();
            this.#set([]);
          },
        },
        this.#abort.signal,
      )
      .catch(() => undefined);
  }

  #set(ids: string[]): void {
    this.ids = ids;
    for (const w of [...this.#waiters]) w();
  }

  /** Resolves once `pred(ids)` holds; fails after `ms` naming what it saw. */
  until(what: string, pred: (ids: string[]) => boolean, ms = 15_000): Promise<number> {
    const start = Date.now();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred(this.ids)) return;
        this.#waiters.delete(check);
        clearTimeout(t);
        resolve(Date.now() - start);
      };
      const t = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`${what}: not seen in ${ms} ms; the workload holds ${JSON.stringify(this.ids)}`));
      }, ms);
      this.#waiters.add(check);
      check();
    });
  }

  close(): Promise<void> {
    this.#abort.abort();
    this.#client.close();
    return this.done;
  }
}

const has = (id: string) => (ids: string[]) => ids.includes(`spiffe://${TD}${id}`);
const lacks = (id: string) => (ids: string[]) => !ids.includes(`spiffe://${TD}${id}`);

if (postgresAvailable('HA end-to-end test')) {
  describe('three servers on one PostgreSQL, agents on each', () => {
    let tmp: TempDir;
    let cluster: PostgresCluster;
    const servers: Server[] = [];
    const agents: Agent[] = [];

    const cli = async (s: Server, ...args: string[]) => {
      const r = await runCommand(
        process.execPath,
        [TESSERA_BIN, ...args, '--socket', s.socket, '--output', 'json'],
        {
          cwd: ROOT,
        },
      );
      assert.equal(r.code, 0, `tessera ${args.join(' ')} via ${s.name}: ${r.stderr}`);
      return JSON.parse(r.stdout);
    };
    const createEntry = async (s: Server, path: string, parent: Agent): Promise<string> => {
      const out = await cli(
        s,
        'entry',
        'create',
        '--spiffe-id',
        `spiffe://${TD}${path}`,
        '--parent-id',
        parent.id,
        '--selector',
        `unix:uid:${UID}`,
      );
      return out.results[0].entry.id as string;
    };
    /** Which servers list the agent as connected (an open push stream to that server). */
    const connectedTo = async (a: Agent, among: Server[]) => {
      const out: string[] = [];
      for (const s of among) {
        const { agents: list } = (await cli(s, 'agent', 'list')) as {
          agents: { spiffe_id: string; connected: boolean }[];
        };
        if (list.some((x) => x.spiffe_id === a.id && x.connected)) out.push(s.name);
      }
      return out;
    };

    /** A `tessera server run` process on the shared database; resolves once it serves. */
    const startServer = async (name: string): Promise<Server> => {
      const dir = join(tmp.path, `server-${name}`);
      mkdirSync(dir, { recursive: true });
      const socket = join(dir, 'admin.sock');
      const config = join(dir, 'server.yaml');
      writeFileSync(
        config,
        [
          `trust_domain: ${TD}`,
          `data_dir: ${dir}/data`,
          `admin_socket: ${socket}`,
          `agent_api: { address: 127.0.0.1, port: ${await freePort()} }`,
          'health: { port: 0 }',
          // A minute between safety checks: what arrives within seconds came by the feed's wake-ups.
          `datastore: { postgres: { connection_string: "${cluster.connectionString}", poll_interval: 1m } }`,
          '',
        ].join('\n'),
      );
      const proc = spawnTessera('server', 'run', '--config', config);
      const [, port] = await waitForLog(proc, /server started .*agent_api=127\.0\.0\.1:(\d+)/);
      const server = { name, proc, socket, port: Number(port) };
      servers.push(server);
      return server;
    };
    /** A `tessera agent run` process with these servers, attested by a join token, and a workload watching. */
    const startAgent = async (name: string, via: readonly Server[]): Promise<Agent> => {
      const token = (await cli(via[0] as Server, 'token', 'generate', '--agent-name', name)).token as string;
      const dir = join(tmp.path, name);
      mkdirSync(dir, { recursive: true });
      // The bootstrap bundle as it is now (every server's CA, a server started later included).
      const bundle = await runCommand(
        process.execPath,
        [TESSERA_BIN, 'bundle', 'show', '--socket', (via[0] as Server).socket],
        {
          cwd: ROOT,
        },
      );
      writeFileSync(join(dir, 'bundle.pem'), bundle.stdout);
      const socket = join(dir, 'agent.sock');
      const config = join(dir, 'agent.yaml');
      writeFileSync(
        config,
        [
          `trust_domain: ${TD}`,
          'server_address:',
          ...via.map((s) => `  - 127.0.0.1:${s.port}`),
          `trust_bundle_path: ${dir}/bundle.pem`,
          `socket_path: ${socket}`,
          `data_dir: ${dir}/data`,
          'health: { port: 0 }',
          '',
        ].join('\n'),
      );
      const proc = spawnTessera('agent', 'run', '--config', config, '--join-token', token);
      await waitForLog(proc, /agent started/);
      const agent = {
        name,
        id: `spiffe://${TD}/tessera/agent/join_token/${name}`,
        proc,
        watcher: new Watcher(socket),
      };
      agents.push(agent);
      return agent;
    };

    before(async () => {
      tmp = await makeTempDir('ha-e2e-');
      cluster = await startPostgres();
      const [a, b, c] = [await startServer('a'), await startServer('b'), await startServer('c')];
      // The bundle is the union of the three servers' CAs, read through any of them.
      const bundle = await runCommand(
        process.execPath,
        [TESSERA_BIN, 'bundle', 'show', '--socket', a.socket],
        {
          cwd: ROOT,
        },
      );
      assert.equal(
        (bundle.stdout.match(/BEGIN CERTIFICATE/g) ?? []).length,
        3,
        'one CA per server in the bundle',
      );
      await startAgent('node-a', [a]);
      await startAgent('node-b', [b]);
      // The agent that moves: every server, in an order of its own choosing.
      await startAgent('node-c', [c, a, b]);
    });

    after(async () => {
      for (const a of agents) await a.watcher.close();
      for (const p of [...agents.map((a) => a.proc), ...servers.map((s) => s.proc)]) p.child.kill('SIGTERM');
      await Promise.all([...agents, ...servers].map((x) => x.proc.exit));
      await cluster?.stop();
      await tmp?.cleanup();
    });

    it('an entry created through one server reaches workloads on agents of the others; deleted through a third, it is gone', async () => {
      const [a, b, c] = servers as [Server, Server, Server];
      const [onA, onB] = agents as [Agent, Agent];
      await createEntry(a, '/b/keep', onB);
      const web = await createEntry(a, '/b/web', onB);
      await onB.watcher.until('entry created on A, on B’s agent', has('/b/web'));
      await createEntry(b, '/a/api', onA);
      await onA.watcher.until('entry created on B, on A’s agent', has('/a/api'));
      await cli(c, 'entry', 'delete', '--entry-id', web);
      await onB.watcher.until(
        'entry deleted on C, gone from B’s agent',
        (ids) => lacks('/b/web')(ids) && has('/b/keep')(ids),
      );
    });

    it('taints through one server reach agents of the others: an old CA of B (B re-issues), and A’s active CA (A rotates at once)', async () => {
      const [a, b, c] = servers as [Server, Server, Server];
      const [onA, onB] = agents as [Agent, Agent];
      const bundleCas = async () => {
        const r = await runCommand(process.execPath, [TESSERA_BIN, 'bundle', 'show', '--socket', c.socket], {
          cwd: ROOT,
        });
        return (r.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(
          (pem) => new X509Certificate(pem),
        );
      };
      /** The subject key ID of the CA in the bundle that signed the workload's SVID for `id`. */
      const signer = async (agent: Agent, id: string) => {
        const leaf = agent.watcher.leaves.get(`spiffe://${TD}${id}`) as X509Certificate;
        const ca = (await bundleCas()).find((x) => leaf.checkIssued(x) && leaf.verify(x.publicKey));
        assert.ok(ca !== undefined, `the CA that signed ${id} is in the bundle`);
        return authorityKeyId(ca);
      };
      const reissuedByAnother = async (agent: Agent, id: string, old: string) => {
        await agent.watcher.until(`${id} re-issued by another CA`, () => {
          const leaf = agent.watcher.leaves.get(`spiffe://${TD}${id}`);
          return leaf !== undefined && leaf.serialNumber !== serialsBefore.get(id);
        });
        assert.notEqual(await signer(agent, id), old);
      };
      const serialsBefore = new Map([
        ['/b/keep', onB.watcher.leaves.get(`spiffe://${TD}/b/keep`)?.serialNumber],
        ['/a/api', onA.watcher.leaves.get(`spiffe://${TD}/a/api`)?.serialNumber],
      ]);
      // B rotates by operator command; its old CA is then tainted through C.
      const bOld = await signer(onB, '/b/keep');
      await cli(b, 'authority', 'prepare', '--kind', 'x509');
      await cli(b, 'authority', 'activate', '--kind', 'x509');
      await cli(c, 'authority', 'taint', '--kind', 'x509', '--id', bOld);
      await reissuedByAnother(onB, '/b/keep', bOld);
      // A's active CA tainted through C: A replaces it and its agent's SVIDs move to the new one.
      const aActive = await signer(onA, '/a/api');
      await cli(c, 'authority', 'taint', '--kind', 'x509', '--id', aActive);
      await reissuedByAnother(onA, '/a/api', aActive);
      await waitForLog(a.proc, /active authority was tainted by an operator on another server/);
    });

    it('a ban through one server cuts the agent connected to another, and its workloads lose their identities', async () => {
      const [onA] = agents as [Agent];
      const via = servers[2] as Server;
      const before = onA.proc.stderr().length;
      await cli(via, 'agent', 'ban', '--spiffe-id', onA.id);
      await waitForLog({ ...onA.proc, stderr: () => onA.proc.stderr().slice(before) }, /banned/);
      await onA.watcher.until('no identity left on the banned agent', (ids) => ids.length === 0);
    });

    it('with every change-feed connection killed in PostgreSQL, changes still arrive', async () => {
      const [a] = servers as [Server];
      const [, onB] = agents as [Agent, Agent];
      const admin = new pg.Client({ connectionString: cluster.connectionString });
      await admin.connect();
      try {
        const killed = await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tessera-change-feed'",
        );
        assert.equal(killed.rows.length, 3, 'one listening connection per server');
      } finally {
        await admin.end();
      }
      await createEntry(a, '/b/after-kill', onB);
      await onB.watcher.until('entry created after the listeners were killed', has('/b/after-kill'));
      for (const s of servers) await waitForLog(s.proc, /lost the change-feed connection; reconnecting/);
    });

    it('a server killed with SIGKILL: its agents move to another server and keep getting changes', async () => {
      const [, , onC] = agents as [Agent, Agent, Agent];
      await onC.watcher.until('first identity on the moving agent', () => true);
      await createEntry(servers[0] as Server, '/c/first', onC);
      await onC.watcher.until('entry for the moving agent', has('/c/first'));
      const [was] = await connectedTo(onC, servers);
      assert.ok(was !== undefined, 'the agent is connected to one server');
      const victim = servers.find((s) => s.name === was) as Server;
      const alive = servers.filter((s) => s !== victim);
      victim.proc.child.kill('SIGKILL');
      await victim.proc.exit;
      // Meanwhile the workload keeps its cached SVIDs.
      assert.ok(has('/c/first')(onC.watcher.ids));
      const logged = onC.proc.stderr().length;
      await waitForLog(
        { ...onC.proc, stderr: () => onC.proc.stderr().slice(logged) },
        /agent: connected to the server/,
      );
      const now = await connectedTo(onC, alive);
      assert.equal(now.length, 1, `connected to one surviving server (${now.join(',')})`);
      await createEntry(alive[1] as Server, '/c/after-failover', onC);
      await onC.watcher.until('entry created after the failover', has('/c/after-failover'));
      assert.ok(has('/c/first')(onC.watcher.ids));
      servers.splice(servers.indexOf(victim), 1);
    });

    it('a server started while another writes catches up: its agent serves exactly what the database holds', async () => {
      const writer = await openPostgresDatastore(cluster.connectionString);
      const parent = `spiffe://${TD}/tessera/agent/join_token/node-late`;
      const kept = new Set<string>();
      let late: Promise<Server> | undefined;
      try {
        for (let i = 0; i < 150; i++) {
          const e = await writer.createEntry({
            spiffeId: `spiffe://${TD}/late/${i}`,
            parentId: parent,
            selectors: [{ type: 'unix', value: `uid:${UID}` }],
          });
          kept.add(`spiffe://${TD}/late/${i}`);
          if (i % 3 === 1) {
            await writer.deleteEntry(e.id);
            kept.delete(`spiffe://${TD}/late/${i}`);
          }
          if (i === 20) late = startServer('late'); // starts (migrates, loads, follows) while this goes on
        }
      } finally {
        await writer.close();
      }
      const server = await (late as Promise<Server>);
      const agent = await startAgent('node-late', [server]);
      const want = [...kept].sort();
      await agent.watcher.until(
        `the ${want.length} entries left after the writes`,
        (ids) => ids.length === want.length && ids.every((id, i) => id === want[i]),
        30_000,
      );
    });
  });
}
