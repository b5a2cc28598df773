// An agent with two servers (in-process, real TLS over TCP) sharing one throwaway PostgreSQL, as an
// HA deployment runs them: it talks to one, moves to the other when that one stops, goes on
// getting and renewing SVIDs there, keeps serving what it holds while neither answers, and looks
// the servers up again once every one has failed.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTrustDomain } from '@tessera/spiffe';
import {
  freePort,
  makeTempDir,
  type PostgresCluster,
  postgresAvailable,
  startPostgres,
  type TempDir,
} from '@tessera/testkit';
import { createLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { startTestServer } from '../server/api/test-server.test.util.js';
import type { RunningServer } from '../server/run.js';
import { attestTestAgent } from './attest.test.util.js';
import { AgentManager, type CachedSvid } from './manager.js';

const td = parseTrustDomain('example.org');
const sel = [{ type: 'unix', value: 'uid:1000' }];

type LogLine = { msg: string } & Record<string, unknown>;

/** A JSON logger whose lines a test can wait for. */
function watchedLogger() {
  const lines: LogLine[] = [];
  const waiting = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  const logger = createLogger({
    level: 'info',
    format: 'json',
    write: (text) => {
      const line = JSON.parse(text) as LogLine;
      lines.push(line);
      for (const w of waiting)
        if (w.match(line)) {
          waiting.delete(w);
          w.resolve(line);
        }
    },
  });
  /**
   * The first line matching, from line number `from` on (default: from now). Fails after `ms`
   * with the lines seen (the deadline's timer also keeps the event loop alive: the manager's are
   * unref'd, as a daemon's sockets keep it running).
   */
  const next = (match: (l: LogLine) => boolean, from = lines.length, ms = 20_000): Promise<LogLine> => {
    const seen = lines.slice(from).find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = {
        match,
        resolve: (l: LogLine) => {
          clearTimeout(t);
          resolve(l);
        },
      };
      const t = setTimeout(() => {
        waiting.delete(w);
        reject(
          new Error(
            `no such log line in ${ms} ms; the log:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`,
          ),
        );
      }, ms);
      waiting.add(w);
    });
  };
  return { logger, lines, next };
}

/** Resolves when `pred` holds, checked at each 'update' of the manager; fails after `ms`. */
function until(manager: AgentManager, pred: () => boolean, ms = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      manager.off('update', check);
      reject(new Error(`not so after ${ms} ms: ${pred.toString()}`));
    }, ms);
    const check = () => {
      if (pred()) {
        clearTimeout(t);
        manager.off('update', check);
        resolve();
      }
    };
    manager.on('update', check);
    check();
  });
}

const issuedBy = (svid: CachedSvid | undefined, server: RunningServer) => {
  const ca = server.authority.x509.certificate;
  const leaf = svid?.svid.certificates[0];
  return ca !== undefined && leaf?.checkIssued(ca) === true && leaf.verify(ca.publicKey);
};
const serialOf = (svid: CachedSvid | undefined) => svid?.svid.certificates[0]?.serialNumber;
const addressOf = (s: RunningServer) => `127.0.0.1:${s.agentApiPort}`;

if (postgresAvailable('agent failover')) {
  describe('an agent with two servers on one datastore', () => {
    let tmp: TempDir;
    let cluster: PostgresCluster;
    let a: RunningServer;
    let b: RunningServer;
    const managers: AgentManager[] = [];
    // stop() is not idempotent (the PostgreSQL pool refuses a second end): the test stops each once.
    const running = new Set<RunningServer>();
    const stop = async (s: RunningServer) => {
      running.delete(s);
      await s.stop();
    };

    const startServer = (name: string) => {
      mkdirSync(join(tmp.path, name));
      return startTestServer(join(tmp.path, name), [
        `datastore: { postgres: { connection_string: ${JSON.stringify(cluster.connectionString)}, poll_interval: 200ms } }`,
      ]);
    };

    /** Attests a new agent (join token `name`) with `via` and returns its state. */
    const attestAgent = (name: string, via: RunningServer) => attestTestAgent(via, addressOf(via), td, name);

    before(async () => {
      tmp = await makeTempDir('failover-');
      cluster = await startPostgres();
      a = await startServer('a');
      running.add(a);
      b = await startServer('b');
      running.add(b);
    });

    after(async () => {
      try {
        for (const m of managers) await m.close();
        for (const s of running) await stop(s);
      } finally {
        // The cluster goes whatever happened above: a leftover postgres outlives the test run.
        await cluster?.stop();
        await tmp?.cleanup();
      }
    });

    it('looks the servers up again once every one has failed, and picks up a change', {
      timeout: 30_000,
    }, async () => {
      const state = await attestAgent('dns', b);
      const dead = `127.0.0.1:${await freePort()}`;
      const log = watchedLogger();
      let lookups = 0;
      const manager = new AgentManager({
        trustDomain: td,
        servers: [dead],
        // "DNS" now says the server is somewhere else.
        resolveServers: async () => {
          lookups++;
          return [addressOf(b)];
        },
        random: () => 0.1,
        dataDir: join(tmp.path, 'agent-dns'),
        state,
        workloadKeyType: 'ec-p256',
        logger: log.logger,
        metrics: new Metrics(),
      });
      managers.push(manager);
      manager.start();
      const failover = await log.next((l) => /unreachable; trying/.test(l.msg), 0);
      assert.equal(failover.msg, `agent: server ${dead} unreachable; trying ${addressOf(b)}`);
      assert.equal(failover.every_server_failed, true, 'one server: every failure ends a round');
      assert.equal(failover.retry_in_ms, 100, 'full jitter: random() 0.1 of the first 1 s ceiling');
      assert.match(String(failover.error), /ECONNREFUSED|No connection established/);
      const connected = await log.next((l) => l.msg === 'agent: connected to the server', 0);
      assert.equal(connected.server, addressOf(b));
      assert.equal(lookups, 1);
      assert.equal(manager.server, addressOf(b));
      await manager.close();
    });

    it('moves to the other server when its own stops, and gets and renews SVIDs there; serves the cached ones while neither answers', {
      timeout: 60_000,
    }, async () => {
      const state = await attestAgent('ha', a);
      const first = await a.datastore.createEntry({
        spiffeId: 'spiffe://example.org/web',
        parentId: state.id,
        selectors: sel,
      });
      const log = watchedLogger();
      const metrics = new Metrics();
      let skew = 0;
      const manager = new AgentManager({
        trustDomain: td,
        servers: [addressOf(a), addressOf(b)],
        random: () => 0.1, // starts at the first (a); every wait is a tenth of its ceiling
        now: () => Date.now() + skew,
        dataDir: join(tmp.path, 'agent-ha'),
        state,
        workloadKeyType: 'ec-p256',
        logger: log.logger,
        metrics,
      });
      managers.push(manager);
      manager.start();
      assert.equal(
        (await log.next((l) => l.msg === 'agent: connected to the server', 0)).server,
        addressOf(a),
      );
      // Both servers' CAs reach the agent in the bundle, so it can authenticate either.
      await until(
        manager,
        () => manager.bundle.x509Authorities.length === 2 && manager.svidsFor(sel).length === 1,
      );
      const cached = manager.svidsFor(sel)[0];
      assert.ok(issuedBy(cached, a), 'the SVID comes from the server the agent is connected to');

      // a stops: the agent moves to b at once (within a round: under 1 s).
      let mark = log.lines.length;
      await stop(a);
      const moved = await log.next((l) => /unreachable; trying/.test(l.msg), mark);
      assert.equal(moved.msg, `agent: server ${addressOf(a)} unreachable; trying ${addressOf(b)}`);
      assert.equal(moved.error, 'server shutting down');
      assert.equal(moved.retry_in_ms, 100);
      assert.equal(moved.every_server_failed, undefined, 'the next server is tried without backing off');
      assert.equal(
        (await log.next((l) => l.msg === 'agent: connected to the server', mark)).server,
        addressOf(b),
      );
      assert.equal(manager.server, addressOf(b));
      assert.equal(serialOf(manager.svidsFor(sel)[0]), serialOf(cached), 'what the agent held is kept');
      const afterMove = await metrics.render();
      assert.match(afterMove, /^tessera_agent_server_failovers_total 1$/m);
      assert.match(afterMove, /^tessera_agent_server_connected 1$/m);

      // b serves: a new entry's SVID comes from b …
      const second = await b.datastore.createEntry({
        spiffeId: 'spiffe://example.org/api',
        parentId: state.id,
        selectors: sel,
      });
      await until(manager, () => manager.svidsFor(sel).length === 2);
      const bySpiffeId = () => new Map(manager.svidsFor(sel).map((s) => [s.entry.id, s]));
      assert.ok(issuedBy(bySpiffeId().get(second.id), b));
      // … and renews: half an hour on, every SVID (the agent's own too) is renewed, by b.
      mark = log.lines.length;
      skew = 40 * 60_000;
      await until(manager, () => serialOf(bySpiffeId().get(first.id)) !== serialOf(cached));
      assert.ok(issuedBy(bySpiffeId().get(first.id), b), 'renewed by the server the agent moved to');
      await log.next((l) => l.msg === 'agent: renewed the agent SVID', mark);
      skew = 0; // what was renewed is due in half an hour of the clock now
      const apiEntry = manager.entriesFor(sel).find((e) => e.id === second.id);
      assert.ok(apiEntry);
      const audience = ['spiffe://example.org/db'];
      const jwt = await manager.jwtSvid(apiEntry, audience);

      // b stops too: nothing answers; the agent goes round both, backing off, and serves what it holds.
      const held = manager.svidsFor(sel).map(serialOf).sort();
      mark = log.lines.length;
      await stop(b);
      await log.next((l) => l.msg.startsWith('agent: lost the push stream'), mark);
      const round = await log.next((l) => l.every_server_failed === true, mark);
      assert.equal(round.msg, `agent: server ${addressOf(a)} unreachable; trying ${addressOf(b)}`);
      await log.next((l) => l.every_server_failed === true && l.retry_in_ms === 200, mark);
      const during = await metrics.render();
      assert.match(during, /^tessera_agent_server_connected 0$/m);
      const failovers = Number(/^tessera_agent_server_failovers_total (\d+)$/m.exec(during)?.[1]);
      assert.ok(failovers >= 5, `b → a → b → a: ${failovers} failovers`);
      assert.deepEqual(manager.svidsFor(sel).map(serialOf).sort(), held, 'the cached SVIDs are still served');
      // Past half its life (5 min JWT-SVIDs) the JWT-SVID would be minted again; with no server, the
      // cached one is served until it expires.
      skew = 3 * 60_000;
      assert.equal((await manager.jwtSvid(apiEntry, audience)).token, jwt.token);
      skew = 6 * 60_000;
      await assert.rejects(manager.jwtSvid(apiEntry, audience), /No connection established|ECONNREFUSED/);
      assert.equal(manager.banned, undefined);
    });
  });
}
