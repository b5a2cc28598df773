// Attesting again after the server's CA changed (issue 16): a real server whose X.509 CA is
// rotated and the old one revoked, and agents started as `tessera agent run --join-token` starts
// them, with the trust_bundle_path written before the rotation. The bundle saved in data_dir (which
// followed the rotation) is used; when it is missing or stale too, the error says trust_bundle_path
// is stale and how to refresh it.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { parseTrustDomain, SpiffeBundle } from '@tessera/spiffe';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { startTestServer } from '../server/api/test-server.test.util.js';
import type { RunningServer } from '../server/run.js';
import { parseAgentConfig } from './config.js';
import { type RunningAgent, startAgent } from './run.js';

/** The certificate the agent API presents now. */
async function servedCertificate(port: number): Promise<X509Certificate> {
  const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
  try {
    await once(s, 'secureConnect');
    return s.getPeerX509Certificate() as X509Certificate;
  } finally {
    s.destroy();
  }
}

/** Resolves once `check` holds, looking again every 100 ms; fails after `ms`. */
async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('agent run --join-token after a CA revoke', { timeout: 60_000 }, () => {
  let tmp: TempDir;
  let server: RunningServer;
  const agents: RunningAgent[] = [];
  /** trust_bundle_path as `tessera bundle show` wrote it before the rotation. */
  let stalePath: string;
  let oldCa: X509Certificate;
  let newCa: X509Certificate;
  let tokens = 0;

  const token = async () => {
    const t = `bootstrap-bundle-token-${tokens++}-0123456789`;
    await server.datastore.createJoinToken({ token: t, expiresAt: new Date(Date.now() + 60_000) });
    return t;
  };
  const config = (name: string, bundlePath: string) =>
    parseAgentConfig(
      [
        'trust_domain: example.org',
        'server_address: 127.0.0.1',
        `server_port: ${server.agentApiPort}`,
        `trust_bundle_path: ${bundlePath}`,
        `socket_path: ${tmp.path}/${name}.sock`,
        `data_dir: ${tmp.path}/${name}`,
        'health: { port: 0 }',
      ].join('\n'),
    );
  const start = async (name: string, bundlePath: string, lines: string[] = []) => {
    const a = await startAgent(config(name, bundlePath), {
      joinToken: await token(),
      logger: createLogger({ level: 'info', write: (l) => lines.push(l) }),
    });
    agents.push(a);
    return a;
  };

  before(async () => {
    tmp = await makeTempDir('agent-bb-');
    // A 2 min CA: the server's rotation loop (which re-issues its own SVID after an activation)
    // runs every 2 s, and the schedule rotates nothing during the test.
    server = await startTestServer(tmp.path, ['ca: { ttl: 2m }']);
    oldCa = server.authority.x509.certificate;
    stalePath = join(tmp.path, 'bundle.pem');
    writeFileSync(stalePath, oldCa.toString());

    // An agent attested before the rotation: its data_dir follows the bundle from then on.
    const agent = await start('node-1', stalePath);
    await server.authority.prepare('x509');
    await server.authority.activate('x509');
    newCa = server.authority.x509.certificate;
    // Taint, and revoke once the agent has moved away from the old CA (it re-issues its own SVID).
    const oldId = (await server.authority.list()).find(
      (a) => a.certificate?.fingerprint256 === oldCa.fingerprint256,
    )?.id;
    assert.ok(oldId);
    await server.authority.taint('x509', oldId);
    await until('the agent SVID signed by the new CA', () =>
      new X509Certificate(readFileSync(join(tmp.path, 'node-1', 'agent-svid.pem'))).checkIssued(newCa),
    );
    await server.authority.revoke('x509', oldId);
    await until('the old CA out of the saved bundle', () => {
      const keys = agent.manager.bundle.x509Authorities.map((c) => c.fingerprint256);
      return keys.includes(newCa.fingerprint256) && !keys.includes(oldCa.fingerprint256);
    });
    await until('the server presenting an SVID of the new CA', async () =>
      (await servedCertificate(server.agentApiPort)).checkIssued(newCa),
    );
    await agent.stop();
    agents.splice(agents.indexOf(agent), 1);
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  it('trusts the server with the bundle saved in data_dir, not the stale trust_bundle_path, and says so', async () => {
    const lines: string[] = [];
    const agent = await start('node-1', stalePath, lines);
    assert.match(agent.manager.id, /^spiffe:\/\/example\.org\/tessera\/agent\/join_token\//);
    assert.ok(
      lines.some((l) =>
        l.includes(
          `INFO  agent: trusted the server with the bundle saved in data_dir (${tmp.path}/node-1/bundle.json), which differs from trust_bundle_path ${stalePath}`,
        ),
      ),
      lines.join('\n'),
    );
    await agent.stop();
    agents.splice(agents.indexOf(agent), 1);
  });

  it('without a saved bundle, says trust_bundle_path is stale and how to refresh it', async () => {
    const err = await startAgent(config('fresh', stalePath), { joinToken: await token() }).then(
      () => assert.fail('attested with a stale bundle'),
      (e: unknown) => e,
    );
    assert.ok(isTesseraError(err) && err.code === TesseraErrorCode.STARTUP, String(err));
    assert.equal(
      err.message,
      `agent: node attestation (join_token) failed: trust_bundle_path ${stalePath} is stale: no authority in it signed the certificate of the server at 127.0.0.1:${server.agentApiPort} (self-signed certificate in certificate chain). ` +
        `The server's CA has changed since the bundle was written (rotated, or revoked with tessera authority revoke), or the bundle is another server's. ` +
        `Refresh it from the server: tessera bundle show > ${stalePath} (on the server's host; copy the file here if the agent runs elsewhere), then start the agent again`,
    );
  });

  it('with a stale saved bundle too, names both; with the file refreshed, attests and says the saved one was stale', async () => {
    // data_dir with a bundle of some other CA of example.org, which the server no longer uses.
    mkdirSync(join(tmp.path, 'away'));
    const awayBundle = join(tmp.path, 'away', 'bundle.json');
    const gone = new X509Certificate(TestCa.create({ trustDomain: 'example.org' }).rootPem());
    const awayText = new SpiffeBundle({
      trustDomain: parseTrustDomain('example.org'),
      x509Authorities: [gone],
    }).marshal();
    writeFileSync(awayBundle, awayText);
    const err = await startAgent(config('away', stalePath), { joinToken: await token() }).then(
      () => assert.fail('attested with stale bundles'),
      (e: unknown) => e,
    );
    assert.ok(isTesseraError(err), String(err));
    assert.match(
      err.message,
      new RegExp(
        `trust_bundle_path ${stalePath} is stale: no authority in it signed the certificate of the server at 127\\.0\\.0\\.1:\\d+ \\(self-signed certificate in certificate chain\\), nor one in the bundle saved in data_dir \\(${tmp.path}/away/bundle\\.json\\)\\.`,
      ),
    );
    // As the error says: the file refreshed from the server.
    const fresh = join(tmp.path, 'fresh.pem');
    writeFileSync(fresh, newCa.toString());
    const lines: string[] = [];
    const agent = await start('away', fresh, lines);
    assert.ok(agent.manager.bundle.x509Authorities.some((c) => c.fingerprint256 === newCa.fingerprint256));
    assert.ok(
      lines.some((l) =>
        l.includes(
          `WARN  agent: the bundle saved in data_dir (${tmp.path}/away/bundle.json) is stale (the server at 127.0.0.1:${server.agentApiPort} (self-signed certificate in certificate chain)); trying trust_bundle_path ${fresh}`,
        ),
      ),
      lines.join('\n'),
    );
    assert.notEqual(readFileSync(awayBundle, 'utf8'), awayText, 'the saved bundle is replaced');
  });
});
