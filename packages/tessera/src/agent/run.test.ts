// The agent started in-process as `tessera agent run` starts it, against a real server: x509pop
// node attestation from files, node aliases, insecure bootstrap, and what lands in data_dir.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, parseTrustDomain } from '@tessera/spiffe';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { startTestServer } from '../server/api/test-server.test.util.js';
import type { RunningServer } from '../server/run.js';
import { parseAgentConfig } from './config.js';
import { type RunningAgent, startAgent } from './run.js';

const quiet = createLogger({ level: 'error', write: () => undefined });
const uid = process.getuid?.() ?? 0;

describe('startAgent', () => {
  let tmp: TempDir;
  let server: RunningServer;
  const agents: RunningAgent[] = [];
  let nodeCa: TestCa;

  before(async () => {
    tmp = await makeTempDir('agent-run-');
    nodeCa = TestCa.create({ trustDomain: 'nodes.example' });
    writeFileSync(join(tmp.path, 'node-ca.pem'), nodeCa.rootPem());
    server = await startTestServer(tmp.path, [
      `node_attestors: { x509pop: { ca_bundle_path: ${tmp.path}/node-ca.pem } }`,
      'agent_svid_ttl: 6s',
    ]);
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  const agentYaml = (name: string, extra: string[]) =>
    [
      'trust_domain: example.org',
      'server_address: 127.0.0.1',
      `server_port: ${server.agentApiPort}`,
      `socket_path: ${tmp.path}/${name}.sock`,
      `data_dir: ${tmp.path}/${name}`,
      'health: { port: 0 }',
      ...extra,
    ].join('\n');

  it('attests with x509pop from its certificate and key files, and serves entries given to a node alias', async () => {
    const node = nodeCa.issueCertificate({
      uris: [],
      dnsNames: ['web-7.nodes.example'],
      subject: 'CN=web-7',
    });
    writeFileSync(join(tmp.path, 'node.pem'), node.certificatesPem);
    writeFileSync(join(tmp.path, 'node.key'), node.privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
    });
    writeFileSync(
      join(tmp.path, 'bundle.json'),
      (await server.datastore.getBundle(server.authority.x509.trustDomain))?.marshal() ?? '',
    );
    // Every node whose certificate says CN=web-7 is "web-nodes"; the workload entry hangs off that alias.
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web-nodes',
      parentId: 'spiffe://example.org/tessera/server',
      selectors: [{ type: 'x509pop', value: 'subject:cn:web-7' }],
    });
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: 'spiffe://example.org/web-nodes',
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    const agent = await startAgent(
      parseAgentConfig(
        agentYaml('pop', [
          `trust_bundle_path: ${tmp.path}/bundle.json`,
          `node_attestor: { x509pop: { certificate_path: ${tmp.path}/node.pem, private_key_path: ${tmp.path}/node.key } }`,
        ]),
      ),
      { logger: quiet },
    );
    agents.push(agent);
    assert.match(agent.manager.id, /^spiffe:\/\/example.org\/tessera\/agent\/x509pop\/[0-9a-f]{64}$/);
    assert.equal(statSync(join(tmp.path, 'pop', 'agent-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(agent.socketPath).mode & 0o777, 0o777);
    const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
    try {
      const ctx = await client.fetchX509Context();
      assert.deepEqual(
        ctx.svids.map((s) => s.id.toString()),
        ['spiffe://example.org/web'],
      );
    } finally {
      client.close();
    }
  });

  it('with insecure_bootstrap, attests without a bundle and keeps the one the server sends', async () => {
    await server.datastore.createJoinToken({
      token: 'insecure-bootstrap-token-1',
      expiresAt: new Date(Date.now() + 60_000),
    });
    const lines: string[] = [];
    const agent = await startAgent(parseAgentConfig(agentYaml('insecure', ['insecure_bootstrap: true'])), {
      joinToken: 'insecure-bootstrap-token-1',
      logger: createLogger({ level: 'warn', write: (l) => lines.push(l) }),
    });
    agents.push(agent);
    assert.ok(
      lines.some((l) => /INSECURE BOOTSTRAP/.test(l)),
      lines.join('\n'),
    );
    assert.equal(
      agent.manager.bundle.x509Authorities[0]?.fingerprint256,
      server.authority.x509.certificate.fingerprint256,
    );
  });

  it('attests with the first server that answers, trying the next (a DNS name here) when one cannot be reached', async () => {
    await server.datastore.createJoinToken({
      token: 'several-servers-token-012345',
      expiresAt: new Date(Date.now() + 60_000),
    });
    const dead = await freePort();
    const lines: string[] = [];
    const agent = await startAgent(
      parseAgentConfig(
        [
          'trust_domain: example.org',
          `server_address: ['127.0.0.1:${dead}', tessera.test]`,
          `server_port: ${server.agentApiPort}`,
          `socket_path: ${tmp.path}/several.sock`,
          `data_dir: ${tmp.path}/several`,
          'health: { port: 0 }',
          'insecure_bootstrap: true',
        ].join('\n'),
      ),
      {
        joinToken: 'several-servers-token-012345',
        logger: createLogger({ level: 'info', write: (l) => lines.push(l) }),
        lookup: async (host) => (host === 'tessera.test' ? [{ address: '127.0.0.1' }] : []),
        random: () => 0, // the dead one first
      },
    );
    agents.push(agent);
    const live = `127.0.0.1:${server.agentApiPort}`;
    const text = lines.join('\n');
    assert.match(
      text,
      new RegExp(`agent: server 127\\.0\\.0\\.1:${dead} unreachable; trying ${live}.*ECONNREFUSED`),
    );
    assert.match(text, new RegExp(`agent: attested .*server=${live}`));
    assert.match(text, new RegExp(`agent started .*servers=127\\.0\\.0\\.1:${dead},${live}`));
    assert.ok(
      await agent.manager.whenSynced(10_000),
      'the manager, starting at the dead one too, syncs with the live one',
    );
    assert.equal(agent.manager.server, live);
  });

  it('a server of another trust domain is named as such, with a trust bundle and with insecure_bootstrap', {
    timeout: 30_000,
  }, async () => {
    const bundle = await server.datastore.getBundle(parseTrustDomain('example.org'));
    writeFileSync(
      join(tmp.path, 'example-org.pem'),
      (bundle?.x509Authorities ?? []).map((c) => c.toString()).join(''),
    );
    for (const [name, extra] of [
      ['wrong-td-bundle', [`trust_bundle_path: ${tmp.path}/example-org.pem`]],
      ['wrong-td-insecure', ['insecure_bootstrap: true']],
    ] as const) {
      const token = `${name}-token-0123456789`;
      await server.datastore.createJoinToken({ token, expiresAt: new Date(Date.now() + 60_000) });
      const yaml = agentYaml(name, [...extra]).replace(
        'trust_domain: example.org',
        'trust_domain: other.org',
      );
      await assert.rejects(
        startAgent(parseAgentConfig(yaml), { joinToken: token, logger: quiet }),
        (err: unknown) => {
          assert.ok(isTesseraError(err, TesseraErrorCode.STARTUP), String(err));
          assert.match(
            err.message,
            /the server at 127\.0\.0\.1:\d+ is in trust domain "example\.org", but this agent's trust_domain is "other\.org"; set trust_domain: example\.org/,
            name,
          );
          assert.doesNotMatch(err.message, /federation/);
          return true;
        },
      );
    }
  });

  it('fails naming every server and its error when none answers', async () => {
    const [one, two] = [await freePort(), await freePort()];
    await assert.rejects(
      startAgent(
        parseAgentConfig(
          [
            'trust_domain: example.org',
            `server_address: ['127.0.0.1:${one}', '[::1]:${two}']`,
            `socket_path: ${tmp.path}/none.sock`,
            `data_dir: ${tmp.path}/none`,
            'health: { port: 0 }',
            'insecure_bootstrap: true',
          ].join('\n'),
        ),
        { joinToken: 'never-used-token-0123456789', logger: quiet, random: () => 0 },
      ),
      (err: unknown) => {
        assert.ok(isTesseraError(err, TesseraErrorCode.STARTUP), String(err));
        assert.match(
          err.message,
          new RegExp(
            `node attestation \\(join_token\\) failed: none of the 2 servers answered: 127\\.0\\.0\\.1:${one}: .*ECONNREFUSED.*; \\[::1\\]:${two}: .*(ECONNREFUSED|EADDRNOTAVAIL|ENETUNREACH)`,
          ),
        );
        return true;
      },
    );
  });

  it('renews its own SVID at about half its life (agent_svid_ttl 6 s) and keeps working with the new one', {
    timeout: 30_000,
  }, async () => {
    await server.datastore.createJoinToken({
      token: 'renewal-token-0123456789',
      expiresAt: new Date(Date.now() + 60_000),
    });
    let renewed: (() => void) | undefined;
    const renewal = new Promise<void>((r) => (renewed = r));
    const agent = await startAgent(parseAgentConfig(agentYaml('renew', ['insecure_bootstrap: true'])), {
      joinToken: 'renewal-token-0123456789',
      logger: createLogger({
        level: 'info',
        write: (l) => {
          if (/renewed the agent SVID/.test(l)) renewed?.();
        },
      }),
    });
    agents.push(agent);
    const before = readFileSync(join(tmp.path, 'renew', 'agent-svid.pem'), 'utf8');
    await renewal;
    const after = readFileSync(join(tmp.path, 'renew', 'agent-svid.pem'), 'utf8');
    assert.notEqual(after, before, 'the renewed SVID is saved for the next restart');
    const stored = await server.datastore.getAgent(agent.manager.id);
    assert.equal(stored?.serial, new X509Certificate(after).serialNumber.toUpperCase());
    // A call authenticated with the new SVID works.
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/after-renewal',
      parentId: agent.manager.id,
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    // The entry reaches the agent on its push stream (the new channel's): wait for it there.
    const mine = [{ type: 'unix', value: `uid:${uid}` }];
    await new Promise<void>((resolve) => {
      const check = () => {
        if (agent.manager.svidsFor(mine).length > 0) {
          agent.manager.off('update', check);
          resolve();
        }
      };
      agent.manager.on('update', check);
      check();
    });
    const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
    try {
      const ctx = await client.fetchX509Context();
      assert.deepEqual(
        ctx.svids.map((s) => s.id.toString()),
        ['spiffe://example.org/after-renewal'],
      );
    } finally {
      client.close();
    }
  });
});
