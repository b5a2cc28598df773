// The agent manager against a real server (in-process, real TLS, real SQLite): what it holds after
// the server comes back from an outage during which entries were removed.
import assert from 'node:assert/strict';
import type { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SpiffeBundle } from '@tessera/spiffe';
import { parseTrustDomain } from '@tessera/spiffe';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { createLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { startTestServer } from '../server/api/test-server.test.util.js';
import { authorityKeyId } from '../server/ca/manager.js';
import { openSqliteDatastore } from '../server/datastore/sqlite.js';
import type { RunningServer } from '../server/run.js';
import { attestTestAgent } from './attest.test.util.js';
import { AgentManager } from './manager.js';

const td = parseTrustDomain('example.org');
const sel = [{ type: 'unix', value: 'uid:1000' }];

/** An agent attested on `server` with a join token for `name`, and its manager (not started). */
async function attestedManager(
  server: RunningServer,
  port: number,
  dir: string,
  name: string,
): Promise<{ manager: AgentManager; agentId: string }> {
  const { id, ...state } = await attestTestAgent(server, `127.0.0.1:${port}`, td, name);
  const manager = new AgentManager({
    trustDomain: td,
    servers: [`127.0.0.1:${port}`],
    dataDir: join(dir, 'agent'),
    state,
    workloadKeyType: 'ec-p256',
    logger: createLogger({ level: 'error', write: () => undefined }),
    metrics: new Metrics(),
  });
  return { manager, agentId: id };
}

/** Resolves once `pred()` holds, checked at each 'update' of the manager. */
function untilUpdate(manager: AgentManager, pred: () => boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    if (pred()) return resolve();
    const check = () => {
      if (pred()) {
        manager.off('update', check);
        resolve();
      }
    };
    manager.on('update', check);
  });
}

describe('AgentManager', () => {
  let tmp: TempDir;
  let server: RunningServer;
  let port: number;
  let manager: AgentManager;
  let agentId: string;

  before(async () => {
    tmp = await makeTempDir('manager-');
    port = await freePort();
    server = await startTestServer(tmp.path, [], port);
    ({ manager, agentId } = await attestedManager(server, port, tmp.path, 'm'));
  });

  after(async () => {
    await manager?.close();
    await server?.stop();
    await tmp?.cleanup();
  });

  const until = (pred: () => boolean) => untilUpdate(manager, pred);

  it('drops an entry removed while it was disconnected, once the new snapshot is complete', {
    timeout: 30_000,
  }, async () => {
    const keep = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/keep',
      parentId: agentId,
      selectors: sel,
    });
    const gone = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/gone',
      parentId: agentId,
      selectors: sel,
    });
    manager.start();
    await until(() => manager.svidsFor(sel).length === 2);

    await server.stop();
    const ds = await openSqliteDatastore(join(tmp.path, 'data', 'datastore.sqlite3'));
    await ds.deleteEntry(gone.id);
    await ds.close();
    assert.deepEqual(
      manager
        .svidsFor(sel)
        .map((s) => s.entry.spiffeId)
        .sort(),
      ['spiffe://example.org/gone', 'spiffe://example.org/keep'],
      'while the server is away, the agent keeps what it has',
    );

    server = await startTestServer(tmp.path, [], port);
    await until(() => manager.entriesFor(sel).length === 1);
    assert.deepEqual(
      manager.svidsFor(sel).map((s) => s.entry.id),
      [keep.id],
    );
  });
});

describe('AgentManager under an upstream authority', () => {
  it('re-issues the SVIDs chained through an intermediate tainted by the operator (not in the bundle: the upstream root is)', {
    timeout: 30_000,
  }, async () => {
    const tmp = await makeTempDir('manager-upstream-');
    const org = TestCa.create({ trustDomain: 'example.org' });
    writeFileSync(join(tmp.path, 'up.crt'), org.certificate.toString());
    writeFileSync(
      join(tmp.path, 'up.key'),
      org.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      {
        mode: 0o600,
      },
    );
    const port = await freePort();
    const server = await startTestServer(
      tmp.path,
      [`upstream_authority: { disk: { cert_file: ${tmp.path}/up.crt, key_file: ${tmp.path}/up.key } }`],
      port,
    );
    let manager: AgentManager | undefined;
    try {
      const bundle = (await server.datastore.getBundle(td)) as SpiffeBundle;
      assert.deepEqual(
        bundle.x509Authorities.map((c) => c.fingerprint256),
        [org.certificate.fingerprint256],
      );
      const attested = await attestedManager(server, port, tmp.path, 'u');
      const m = attested.manager;
      manager = m;
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/up',
        parentId: attested.agentId,
        selectors: sel,
      });
      const until = (pred: () => boolean) => untilUpdate(m, pred);
      const intermediate = () => m.svidsFor(sel)[0]?.svid.certificates[1];
      m.start();
      await until(() => intermediate() !== undefined);
      const first = intermediate() as X509Certificate;
      const firstId = authorityKeyId(first);
      assert.equal(firstId, authorityKeyId(server.authority.x509.certificate));
      await server.authority.prepare('x509');
      await server.authority.activate('x509');
      await server.authority.taint('x509', firstId);
      await until(
        () => intermediate() !== undefined && authorityKeyId(intermediate() as X509Certificate) !== firstId,
      );
      assert.equal(
        authorityKeyId(intermediate() as X509Certificate),
        authorityKeyId(server.authority.x509.certificate),
      );
    } finally {
      await manager?.close();
      await server.stop();
      await tmp.cleanup();
    }
  });
});
