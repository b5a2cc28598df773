// `workers: 2`: the real binary as a child process — a primary and two worker processes sharing the
// listeners, health and metrics served by the primary for all of them, a killed worker replaced,
// SIGTERM stopping everything. Identities from a Workload API on a real Unix socket.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, get as httpGet, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseTrustDomain, parseX509SvidRaw, X509Bundle } from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { mergeMetrics } from './workers.js';

const bin = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));
const ID = 'spiffe://example.org/ns/sock-shop/sa/catalogue';

function fetchText(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('tessera proxy with workers: 2', () => {
  let tmp: TempDir;
  let api: FakeWorkloadApi;
  let app: Server;
  let child: ChildProcess;
  let stderr = '';
  const waiters = new Set<() => void>();
  const port: Record<string, number> = {};
  /** Resolves with the first match of `re` in stderr at or after `from`. */
  const logged = (re: RegExp, from = 0) =>
    new Promise<RegExpMatchArray>((resolve) => {
      const check = () => {
        const m = stderr.slice(from).match(re);
        if (m === null) return;
        waiters.delete(check);
        resolve(m);
      };
      waiters.add(check);
      check();
    });

  before(async () => {
    tmp = await makeTempDir('proxy-workers-');
    api = await FakeWorkloadApi.start(join(tmp.path, 'wl.sock'));
    const ca = TestCa.create({ trustDomain: 'example.org' });
    const issued = ca.issueX509Svid(ID);
    api.setX509Svids([
      {
        svid: parseX509SvidRaw(issued.certificatesDer, issued.privateKeyDer, ''),
        bundle: new X509Bundle(parseTrustDomain('example.org'), [ca.root]),
      },
    ]);
    app = createServer((_req, res) => res.end(`served by the app`));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    for (const k of ['inbound', 'outbound', 'health']) port[k] = await freePort();
    mkdirSync(join(tmp.path, 'policies'));
    writeFileSync(
      join(tmp.path, 'policies', 'self.yaml'),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: self, namespace: sock-shop}
spec:
  rules:
  - from: [{source: {principals: ["${ID}"]}}]
`,
    );
    writeFileSync(
      join(tmp.path, 'proxy.yaml'),
      `workload_api_socket: unix://${api.socketPath}
namespace: sock-shop
policies: [${join(tmp.path, 'policies')}]
workers: 2
inbound:
  - {name: app, listen: "127.0.0.1:${port.inbound}", upstream: "127.0.0.1:${(app.address() as { port: number }).port}"}
outbound:
  - {name: self, listen: "127.0.0.1:${port.outbound}", upstream: "127.0.0.1:${port.inbound}", server_spiffe_ids: ["${ID}"], protocol: http1}
health: {port: ${port.health}}
`,
    );
    child = spawn(process.execPath, [bin, 'proxy', 'run', '--config', join(tmp.path, 'proxy.yaml')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      for (const w of [...waiters]) w();
    });
    await logged(/proxy ready workers=2/);
  });

  after(async () => {
    if (child?.exitCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    app?.close();
    await api?.close();
    await tmp?.cleanup();
  });

  it("serves through both workers; the primary reports health and every worker's metrics", async () => {
    for (let i = 0; i < 20; i++) {
      const r = await fetchText(port.outbound as number, `/x/${i}`);
      assert.equal(r.status, 200);
      assert.equal(r.body, 'served by the app');
    }
    assert.equal((await fetchText(port.health as number, '/ready')).status, 200);
    const metrics = (await fetchText(port.health as number, '/metrics')).body;
    assert.match(metrics, /^tessera_proxy_workers 2$/m);
    const allowed = [
      ...metrics.matchAll(
        /^tessera_proxy_decisions_total\{worker="(\d+)",listener="app",decision="allow"\} (\d+)$/gm,
      ),
    ];
    assert.equal(allowed.length, 2, metrics);
    assert.equal(
      allowed.reduce((sum, m) => sum + Number(m[2]), 0),
      20,
    );
    assert.equal(metrics.match(/^# TYPE tessera_proxy_decisions_total counter$/gm)?.length, 1);
  });

  it('a worker that dies is replaced and requests go on', async () => {
    const [, pid] = await logged(/proxy worker ready worker=1 pid=(\d+)/);
    const from = stderr.length;
    process.kill(Number(pid), 'SIGKILL');
    await logged(/proxy worker died; starting another worker=1/, from);
    await logged(/proxy worker ready worker=3/, from);
    for (let i = 0; i < 10; i++)
      assert.equal((await fetchText(port.outbound as number, '/again')).status, 200);
    const metrics = (await fetchText(port.health as number, '/metrics')).body;
    assert.match(metrics, /^tessera_proxy_worker_restarts_total 1$/m);
    assert.match(metrics, /^tessera_proxy_workers 2$/m);
  });

  it('SIGTERM stops the primary and its workers', async () => {
    const pids = [...stderr.matchAll(/proxy worker ready worker=\d+ pid=(\d+)/g)].map((m) => Number(m[1]));
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/);
  });

  it('mergeMetrics: one HELP and TYPE per family, each sample labelled with its worker', () => {
    const text = (n: number) =>
      `# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} ${n}\n# HELP b B.\n# TYPE b gauge\nb ${n}\n`;
    assert.equal(
      mergeMetrics(
        new Map([
          [1, text(1)],
          [2, text(2)],
        ]),
      ),
      '# HELP a_total A.\n# TYPE a_total counter\na_total{worker="1",x="1"} 1\na_total{worker="2",x="1"} 2\n# HELP b B.\n# TYPE b gauge\nb{worker="1"} 1\nb{worker="2"} 2\n',
    );
  });
});
