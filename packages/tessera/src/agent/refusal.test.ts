// A banned or evicted agent, as its workloads and its operator see it (issue 16): a real server and
// agents started as `tessera agent run` starts them, workloads speaking the Workload API through
// the spiffe library's client. Banned: every workload is told the agent was banned and what the
// operator does (not to register an entry), at once, also after a restart, and the agent neither
// reconnects nor says it lost the push stream. Evicted: an agent that can attest again (x509pop)
// does and serves again; one that cannot (a used join token) stops, saying why and what to do.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, isSpiffeError, type X509Context } from '@tessera/spiffe';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { createLogger } from '../common/log.js';
import { startTestServer } from '../server/api/test-server.test.util.js';
import type { RunningServer } from '../server/run.js';
import { parseAgentConfig } from './config.js';
import { agentRefusalOf } from './manager.js';
import { type RunningAgent, startAgent } from './run.js';

const uid = process.getuid?.() ?? 0;

/** Log lines as they come, with a wait for the first one (from `from` on) matching `re`. */
function lineLog() {
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  return {
    lines,
    logger: createLogger({
      level: 'info',
      write: (l) => {
        lines.push(l);
        for (const w of waiters.splice(0)) w();
      },
    }),
    async next(re: RegExp, from = 0): Promise<string> {
      for (;;) {
        const hit = lines.slice(from).find((l) => re.test(l));
        if (hit !== undefined) return hit;
        await new Promise<void>((r) => waiters.push(r));
      }
    },
  };
}

/** The X.509 context a workload of this process gets now, or the library's error. */
async function fetchNow(socket: string): Promise<X509Context | Error> {
  const client = createWorkloadApiClient({ address: `unix://${socket}` });
  try {
    return await client.fetchX509Context({ signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    return err as Error;
  } finally {
    client.close();
  }
}

describe('a banned or evicted agent', { timeout: 60_000 }, () => {
  let tmp: TempDir;
  let server: RunningServer;
  const agents: RunningAgent[] = [];
  let nodeCa: TestCa;
  let tokens = 0;

  before(async () => {
    tmp = await makeTempDir('agent-ban-');
    nodeCa = TestCa.create({ trustDomain: 'nodes.example' });
    writeFileSync(join(tmp.path, 'node-ca.pem'), nodeCa.rootPem());
    server = await startTestServer(tmp.path, [
      `node_attestors: { x509pop: { ca_bundle_path: ${tmp.path}/node-ca.pem } }`,
    ]);
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  const yaml = (name: string, extra: string[] = []) =>
    parseAgentConfig(
      [
        'trust_domain: example.org',
        'server_address: 127.0.0.1',
        `server_port: ${server.agentApiPort}`,
        'insecure_bootstrap: true',
        `socket_path: ${tmp.path}/${name}.sock`,
        `data_dir: ${tmp.path}/${name}`,
        'health: { port: 0 }',
        ...extra,
      ].join('\n'),
    );
  /** The configuration of agent `name` attesting with x509pop as node `host` (its certificate and key written now). */
  const x509popAgent = (name: string, host: string) => {
    const node = nodeCa.issueCertificate({
      uris: [],
      dnsNames: [`${host}.nodes.example`],
      subject: `CN=${host}`,
    });
    const [cert, key] = [join(tmp.path, `${host}.pem`), join(tmp.path, `${host}.key`)];
    writeFileSync(cert, node.certificatesPem);
    writeFileSync(key, node.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    return yaml(name, [
      `node_attestor: { x509pop: { certificate_path: ${cert}, private_key_path: ${key} } }`,
    ]);
  };
  /** A join-token agent `name` with an entry for this process's uid; resolves once a workload has its SVID. */
  const joinTokenAgent = async (name: string, logger = lineLog().logger) => {
    const token = `refusal-token-${name}-${tokens++}-0123456789`;
    await server.datastore.createJoinToken({
      token,
      expiresAt: new Date(Date.now() + 60_000),
      agentName: name,
    });
    const agent = await startAgent(yaml(name), { joinToken: token, logger });
    agents.push(agent);
    await server.datastore.createEntry({
      spiffeId: `spiffe://example.org/workload-${name}`,
      parentId: agent.manager.id,
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    const ctx = await fetchNow(agent.socketPath);
    assert.ok(!(ctx instanceof Error), String(ctx));
    return agent;
  };
  const stop = async (agent: RunningAgent) => {
    await agent.stop();
    agents.splice(agents.indexOf(agent), 1);
  };

  it('banned: workloads are told at once that the server banned the agent and what the operator does; no reconnecting, no "lost the push stream"', async () => {
    const log = lineLog();
    const agent = await joinTokenAgent('banned', log.logger);
    const id = agent.manager.id;
    // A workload watching when the ban comes.
    const watcher = createWorkloadApiClient({
      address: `unix://${agent.socketPath}`,
      backoff: { initialMs: 50, maxMs: 100 },
    });
    const ac = new AbortController();
    const errors: Error[] = [];
    let firstError: () => void = () => undefined;
    const gotError = new Promise<void>((r) => {
      firstError = r;
    });
    let updates = 0;
    const watching = watcher
      .watchX509Context(
        {
          onUpdate: () => {
            updates++;
          },
          onError: (err) => {
            errors.push(err);
            firstError();
          },
        },
        ac.signal,
      )
      .catch(() => undefined);
    try {
      while (updates === 0) await new Promise((r) => setTimeout(r, 20));
      const mark = log.lines.length;
      await server.datastore.banAgent(id);
      await gotError;
      const told =
        `workloadapi: watch X.509 context: no identity: the Workload API at unix://${agent.socketPath} refused this process (uid ${uid}, gid ${process.getgid?.()}): ` +
        `the server banned this agent (${id}): it serves no identity to any workload until an operator evicts it (tessera agent evict --spiffe-id ${id}) and it attests again`;
      assert.equal(errors[0]?.message, told);
      assert.ok(isSpiffeError(errors[0], 'ERR_WORKLOADAPI_PERMISSION_DENIED'));
      assert.doesNotMatch(errors[0]?.message ?? '', /register an entry/);
      const fetched = await fetchNow(agent.socketPath);
      assert.ok(fetched instanceof Error);
      assert.equal(fetched.message, told.replace('watch X.509 context', 'fetch X.509 context'));
      // The agent says so, once, with what to do; it does not take the ban for an outage.
      const banned = await log.next(/the server banned this agent/, mark);
      assert.ok(
        banned.includes(
          `ERROR agent: the server banned this agent (${id}); no identity is served any more. To let this host back, evict it on the server (tessera agent evict --spiffe-id ${id}), then restart the agent so that it attests again (a join_token agent with a new token: tessera token generate)`,
        ),
        banned,
      );
      await new Promise((r) => setTimeout(r, 1500));
      const after = log.lines.slice(mark);
      assert.deepEqual(
        after.filter((l) => /lost the push stream|unreachable; trying|connected to the server/.test(l)),
        [],
        after.join('\n'),
      );
      assert.equal(server.agentApi.connectedAgents().includes(id), false);
    } finally {
      ac.abort();
      await watching;
      watcher.close();
    }

    // Restarted while banned: its workloads are told at once (they waited for a first sync that
    // never comes), and the agent says so again.
    await stop(agent);
    const log2 = lineLog();
    const again = await startAgent(yaml('banned'), { logger: log2.logger });
    agents.push(again);
    const started = Date.now();
    const fetched = await fetchNow(again.socketPath);
    assert.ok(fetched instanceof Error, String(fetched));
    assert.match(
      fetched.message,
      /refused this process .*: the server banned this agent \(spiffe:\/\/example\.org\/tessera\/agent\/join_token\/banned\)/,
    );
    assert.ok(Date.now() - started < 5000, `told within ${Date.now() - started} ms`);
    await log2.next(/ERROR agent: the server banned this agent/);
  });

  it('evicted, with an attestor that can attest again (x509pop): it attests again and its workloads get their SVIDs back', async () => {
    const log = lineLog();
    const agent = await startAgent(x509popAgent('pop', 'web-9'), { logger: log.logger });
    agents.push(agent);
    const id = agent.manager.id;
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web-9',
      parentId: id,
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    const before = await fetchNow(agent.socketPath);
    assert.ok(!(before instanceof Error), String(before));
    const mark = log.lines.length;
    await server.datastore.deleteAgent(id);
    await log.next(/WARN {2}agent: the server evicted this agent/, mark);
    await log.next(/INFO {2}agent: attested .*attestor=x509pop/, mark);
    await log.next(/agent: serving again with a new agent SVID/, mark);
    assert.ok(await server.datastore.getAgent(id), 'attested again under the same ID');
    const back = await fetchNow(agent.socketPath);
    assert.ok(!(back instanceof Error), String(back));
    assert.deepEqual(
      back.svids.map((s) => s.id.toString()),
      ['spiffe://example.org/web-9'],
    );
    assert.notEqual(
      back.svids[0]?.certificates[0]?.serialNumber,
      before.svids[0]?.certificates[0]?.serialNumber,
    );
    assert.equal(agent.manager.refusal, undefined);
  });

  it('evicted, with a join token already used: it stops, saying it cannot attest again and how to give it a new token', async () => {
    const log = lineLog();
    const agent = await joinTokenAgent('used', log.logger);
    const id = agent.manager.id;
    await server.datastore.deleteAgent(id);
    const fatal = await agent.fatal;
    assert.equal(fatal.code, 'ERR_ATTESTATION_FAILED');
    assert.match(
      fatal.message,
      new RegExp(
        `^agent: the server evicted this agent \\(${id}\\) and it cannot attest again: node attestation \\(join_token\\) with the server at 127\\.0\\.0\\.1:${server.agentApiPort} failed: .*join token.*\\. ` +
          'A join token is used once: generate a new one on the server \\(tessera token generate\\) and start the agent with it \\(tessera agent run --join-token <token>\\)$',
      ),
    );
    assert.ok(log.lines.some((l) => l.includes(`ERROR ${fatal.message}`)));
  });

  it('its CA revoked while it was stopped: an x509pop agent attests again; a join-token agent stops, saying how to give it a new token', {
    timeout: 60_000,
  }, async () => {
    const popYaml = x509popAgent('pop8', 'web-8');
    let pop = await startAgent(popYaml, { logger: lineLog().logger });
    agents.push(pop);
    const used = await joinTokenAgent('revoked-away');
    const id = pop.manager.id;
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web-8',
      parentId: id,
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    assert.ok(!((await fetchNow(pop.socketPath)) instanceof Error));
    // Both agents hear of the next CA (the server rotates the moment it is activated), then stop;
    // while they are away the old CA, which signed their SVIDs, is tainted and revoked.
    await server.authority.prepare('x509');
    const next = server.authority.nextX509?.certificate;
    assert.ok(next !== undefined);
    const knows = (a: RunningAgent) =>
      a.manager.bundle.x509Authorities.some((c) => c.fingerprint256 === next.fingerprint256);
    for (const a of [pop, used])
      for (let i = 0; !knows(a); i++) {
        assert.ok(i < 100, 'the agent got the prepared CA');
        await new Promise((r) => setTimeout(r, 50));
      }
    const old = (await server.authority.list()).find((a) => a.kind === 'x509' && a.status === 'active')
      ?.id as string;
    await stop(pop);
    await stop(used);
    await server.authority.activate('x509');
    await server.authority.taint('x509', old);
    await server.authority.revoke('x509', old);

    // Restarted on its saved state (no join token): its SVID is refused; it attests again and serves.
    const log = lineLog();
    pop = await startAgent(popYaml, { logger: log.logger });
    agents.push(pop);
    await log.next(/WARN {2}agent: the server no longer trusts this agent's SVID/);
    await log.next(/INFO {2}agent: attested .*attestor=x509pop/);
    await log.next(/agent: serving again with a new agent SVID/);
    const back = await fetchNow(pop.socketPath);
    assert.ok(!(back instanceof Error), String(back));
    assert.deepEqual(
      back.svids.map((s) => s.id.toString()),
      ['spiffe://example.org/web-8'],
    );

    const again = await startAgent(yaml('revoked-away'), { logger: lineLog().logger });
    agents.push(again);
    const fatal = await again.fatal;
    assert.equal(fatal.code, 'ERR_ATTESTATION_FAILED');
    assert.match(
      fatal.message,
      /^agent: the server no longer trusts this agent's SVID \(its CA was revoked while the agent was away, or it expired\) \(spiffe:\/\/example\.org\/tessera\/agent\/join_token\/revoked-away\) and it cannot attest again: .*A join token is used once: generate a new one/,
    );
  });

  it("classifies the agent API's PERMISSION_DENIED about the agent itself; anything else is not a refusal", () => {
    const denied = (details: string) => ({ code: 7, details, metadata: undefined });
    assert.deepEqual(agentRefusalOf(denied('agent API: agent "spiffe://example.org/a" is banned')), {
      kind: 'banned',
      reason: 'agent API: agent "spiffe://example.org/a" is banned',
    });
    assert.equal(
      agentRefusalOf(denied('agent API: agent "spiffe://example.org/a" was evicted'))?.kind,
      'evicted',
    );
    assert.equal(
      agentRefusalOf(
        denied('agent API: agent "spiffe://example.org/a" is not attested (evicted?); attest again'),
      )?.kind,
      'evicted',
    );
    assert.equal(
      agentRefusalOf(
        denied(
          'agent API: agent "spiffe://example.org/a" presented SVID serial 01, which is not its current one',
        ),
      )?.kind,
      'refused',
    );
    assert.equal(
      agentRefusalOf(
        denied(
          'tlsconfig: peer refused: x509svid: certificate of "spiffe://example.org/a" does not chain to an authority of trust domain "example.org": its issuer "C=US" is neither a presented intermediate nor a bundle authority',
        ),
      )?.kind,
      'untrusted',
    );
    assert.equal(agentRefusalOf({ code: 14, details: 'No connection established' }), undefined);
    assert.equal(agentRefusalOf(new Error('x')), undefined);
  });
});
