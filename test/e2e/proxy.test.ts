// The VM-to-mesh scenario of issue 7, end to end with real processes: a server and an agent; a
// "catalogue" HTTP app behind an inbound `tessera proxy` running as uid 65534 (the catalogue's
// identity); VM workloads calling it through outbound proxies running as uid 65533 (the
// catalog-client identity) and 65532 (another VM identity). Identities come from the agent over
// the Workload API, attested by uid; the policy is the Istio AuthorizationPolicy of the issue.
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, createServer, type IncomingHttpHeaders, request, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { freePort, makeTempDir, type TempDir } from '@tessera/testkit';
import {
  runCommand,
  spawnTessera,
  spawnTesseraAs,
  TESSERA_BIN,
  type TesseraProcess,
  waitForLog,
} from './tessera-process.js';

const CATALOGUE_UID = 65534;
const CLIENT_UID = 65533;
const OTHER_UID = 65532;
const CATALOGUE = 'spiffe://example.org/ns/sock-shop/sa/catalogue';
const CLIENT = 'spiffe://example.org/vm/catalog-client';
const OTHER = 'spiffe://example.org/vm/other-client';
const AGENT_ID = 'spiffe://example.org/tessera/agent/join_token/vm-1';
const isRoot = process.getuid?.() === 0;
/** The policy, as it is applied in the cluster. */
const SCENARIO_POLICY = fileURLToPath(
  new URL('../../../examples/vm/catalogue-allow-vm-auth.yaml', import.meta.url),
);

interface Reply {
  status: number;
  body: string;
}

function call(port: number, path: string, method = 'GET', agent: Agent | false = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('tessera proxy: the VM-to-mesh scenario', {
  skip: isRoot ? false : 'needs root: the proxies run as other uids',
}, () => {
  let tmp: TempDir;
  let server: TesseraProcess;
  let agent: TesseraProcess;
  const proxies: TesseraProcess[] = [];
  let app: Server;
  const seen: { url: string | undefined; method: string | undefined; headers: IncomingHttpHeaders }[] = [];
  let serverSocket: string;
  const ports: Record<string, number> = {};
  const entries: Record<string, string> = {};
  const cli = async (...args: string[]) => {
    const r = await runCommand(process.execPath, [
      TESSERA_BIN,
      ...args,
      '--socket',
      serverSocket,
      '--output',
      'json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };

  before(async () => {
    tmp = await makeTempDir('proxy-e2e-');
    chmodSync(tmp.path, 0o755);
    const srvDir = join(tmp.path, 'server');
    mkdirSync(srvDir);
    serverSocket = join(srvDir, 'admin.sock');
    writeFileSync(
      join(srvDir, 'server.yaml'),
      `trust_domain: example.org\ndata_dir: ${srvDir}/data\nadmin_socket: ${serverSocket}\nagent_api: { address: 127.0.0.1, port: ${await freePort()} }\nhealth: { port: 0 }\n`,
    );
    server = spawnTessera('server', 'run', '--config', join(srvDir, 'server.yaml'));
    const [, agentPort] = await waitForLog(server, /server started .*agent_api=127\.0\.0\.1:(\d+)/);
    const token = (await cli('token', 'generate', '--agent-name', 'vm-1')).token as string;
    const agentDir = join(tmp.path, 'agent');
    mkdirSync(agentDir);
    const bundle = await runCommand(process.execPath, [
      TESSERA_BIN,
      'bundle',
      'show',
      '--socket',
      serverSocket,
    ]);
    writeFileSync(join(agentDir, 'bundle.pem'), bundle.stdout);
    const socket = join(tmp.path, 'run', 'agent.sock');
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      `trust_domain: example.org\nserver_address: 127.0.0.1\nserver_port: ${agentPort}\ntrust_bundle_path: ${agentDir}/bundle.pem\nsocket_path: ${socket}\ndata_dir: ${agentDir}/data\nhealth: { port: 0 }\n`,
    );
    for (const [name, id, uid] of [
      ['catalogue', CATALOGUE, CATALOGUE_UID],
      ['client', CLIENT, CLIENT_UID],
      ['other', OTHER, OTHER_UID],
    ] as const) {
      const r = await cli(
        'entry',
        'create',
        '--spiffe-id',
        id,
        '--parent-id',
        AGENT_ID,
        '--selector',
        `unix:uid:${uid}`,
      );
      entries[name] = r.results[0].entry.id;
    }
    agent = spawnTessera('agent', 'run', '--config', join(agentDir, 'agent.yaml'), '--join-token', token);
    await waitForLog(agent, /agent started/);

    // The legacy app: plain HTTP on loopback, no certificates.
    app = createServer((req, res) => {
      seen.push({ url: req.url, method: req.method, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path: req.url }));
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    ports.app = (app.address() as { port: number }).port;
    for (const k of ['inbound', 'client', 'other']) ports[k] = await freePort();

    const policyDir = join(tmp.path, 'policies');
    mkdirSync(policyDir);
    copyFileSync(SCENARIO_POLICY, join(policyDir, 'catalogue.yaml'));
    const auditDir = join(tmp.path, 'audit');
    mkdirSync(auditDir, { mode: 0o777 });
    chmodSync(auditDir, 0o777);
    const write = (name: string, text: string) => {
      writeFileSync(join(tmp.path, name), text);
      return join(tmp.path, name);
    };
    const inboundConfig = write(
      'inbound.yaml',
      `workload_api_socket: unix://${socket}
namespace: sock-shop
labels: {app: catalogue}
policies: [${policyDir}]
audit: {path: ${auditDir}/decisions.log, decisions: all}
inbound:
  - {name: catalogue, listen: "127.0.0.1:${ports.inbound}", upstream: "127.0.0.1:${ports.app}"}
health: {port: 0}
`,
    );
    const outbound = (port: number) => `workload_api_socket: unix://${socket}
outbound:
  - name: catalogue
    listen: "127.0.0.1:${port}"
    upstream: "127.0.0.1:${ports.inbound}"
    server_spiffe_ids: ["${CATALOGUE}"]
    protocol: http1
health: {port: 0}
`;
    const clientConfig = write('client.yaml', outbound(ports.client as number));
    const otherConfig = write('other.yaml', outbound(ports.other as number));
    for (const [config, uid] of [
      [inboundConfig, CATALOGUE_UID],
      [clientConfig, CLIENT_UID],
      [otherConfig, OTHER_UID],
    ] as const) {
      proxies.push(spawnTesseraAs(uid, 'proxy', 'run', '--config', config));
    }
    await Promise.all(proxies.map((p) => waitForLog(p, /proxy ready/)));
  });

  after(async () => {
    for (const p of [...proxies, agent, server]) p?.child.kill('SIGTERM');
    await Promise.all([...proxies, agent, server].map((p) => p?.exit));
    app?.close();
    await tmp?.cleanup();
  });

  it('each proxy runs with the identity the agent attested for its uid', () => {
    assert.match(proxies[0]?.stderr() ?? '', new RegExp(`identity received spiffe_id=${CATALOGUE}`));
    assert.match(proxies[1]?.stderr() ?? '', new RegExp(`identity received spiffe_id=${CLIENT}`));
    assert.match(proxies[2]?.stderr() ?? '', new RegExp(`identity received spiffe_id=${OTHER}`));
  });

  it('GET /catalogue, /catalogue/42 and /tags succeed for the catalog-client VM; the app sees who called', async () => {
    for (const path of ['/catalogue', '/catalogue/42', '/tags']) {
      const r = await call(ports.client as number, path);
      assert.equal(r.status, 200, `${path}: ${r.body}`);
      assert.equal(JSON.parse(r.body).path, path);
    }
    assert.match(
      String(seen.at(-1)?.headers['x-forwarded-client-cert']),
      new RegExp(`^By=${CATALOGUE};Hash=[0-9a-f]{64};Subject="[^"]*";URI=${CLIENT}$`),
    );
  });

  it('POST /catalogue and GET /orders get 403; so does a second VM identity; the app never sees them', async () => {
    const before = seen.length;
    for (const [port, path, method] of [
      [ports.client, '/catalogue', 'POST'],
      [ports.client, '/orders', 'GET'],
      [ports.other, '/catalogue', 'GET'],
      [ports.other, '/tags', 'GET'],
    ] as const) {
      const r = await call(port as number, path, method);
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.equal(r.body, 'RBAC: access denied');
    }
    assert.equal(seen.length, before);
  });

  it('a client without a certificate fails the handshake and gets nothing', async () => {
    const data = await new Promise<string>((resolve) => {
      let got = '';
      const s = tls.connect({ host: '127.0.0.1', port: ports.inbound, rejectUnauthorized: false }, () =>
        s.write('GET /tags HTTP/1.1\r\nhost: catalogue\r\n\r\n'),
      );
      s.on('data', (d) => {
        got += d.toString();
      });
      s.on('error', () => resolve(got));
      s.on('close', () => resolve(got));
    });
    assert.doesNotMatch(data, /HTTP\/1\.1/);
    assert.match(proxies[0]?.stderr() ?? '', /presented no certificate/);
  });

  it('rotating every SVID (the CA is replaced and the old one tainted) while requests flow drops none', async (t) => {
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 4 });
    const hashes = new Set<string>();
    let ok = 0;
    const failures: string[] = [];
    let stop = false;
    const flow = (async () => {
      while (!stop) {
        const r = await call(ports.client as number, '/tags', 'GET', keepAlive).catch((e: Error) => ({
          status: 0,
          body: e.message,
        }));
        if (r.status === 200) ok++;
        else failures.push(`${r.status} ${r.body}`);
        const xfcc = String(seen.at(-1)?.headers['x-forwarded-client-cert']);
        hashes.add(/Hash=([0-9a-f]+)/.exec(xfcc)?.[1] ?? '');
      }
    })();
    const old = (await cli('authority', 'show')).authorities.find(
      (a: { kind: string; status: string }) => a.kind === 'x509' && a.status === 'active',
    );
    await cli('authority', 'prepare', '--kind', 'x509');
    await cli('authority', 'activate', '--kind', 'x509');
    await cli('authority', 'taint', '--kind', 'x509', '--id', old.id);
    // The agent re-issues every SVID signed by the tainted key at once; the client proxy's next new
    // connection presents the new certificate: wait until the app has seen a second client hash.
    const fresh = new Agent({ keepAlive: false });
    const deadline = Date.now() + 20_000;
    while (hashes.size < 2 && Date.now() < deadline) {
      const r = await call(ports.client as number, '/tags', 'GET', fresh);
      assert.equal(r.status, 200);
      hashes.add(/Hash=([0-9a-f]+)/.exec(String(seen.at(-1)?.headers['x-forwarded-client-cert']))?.[1] ?? '');
    }
    const target = ok + 50;
    while (ok < target) await new Promise((r) => setTimeout(r, 10));
    stop = true;
    await flow;
    keepAlive.destroy();
    assert.deepEqual(failures, []);
    t.diagnostic(
      `${ok} requests during the rotation, ${failures.length} failed, ${hashes.size} client certificates seen`,
    );
    assert.ok(hashes.size >= 2, 'the client presented a re-issued certificate');
    assert.match(proxies[1]?.stderr() ?? '', /identity received/);
  });

  it('offboarding: deleting the VM entry makes its next calls fail within seconds', async (t) => {
    assert.equal((await call(ports.client as number, '/tags')).status, 200);
    const deleted = Date.now();
    await cli('entry', 'delete', '--entry-id', entries.client as string);
    let failedAt: number | undefined;
    while (failedAt === undefined && Date.now() - deleted < 10_000) {
      const r = await call(ports.client as number, '/tags').catch(() => undefined);
      if (r === undefined || r.status !== 200) failedAt = Date.now();
      else await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(failedAt !== undefined, 'calls still succeed 10 s after the entry was deleted');
    assert.ok(failedAt - deleted < 5_000, `calls failed only after ${failedAt - deleted} ms`);
    t.diagnostic(`entry deleted → first failed call: ${failedAt - deleted} ms`);
    await waitForLog(proxies[1] as TesseraProcess, /no longer gives this workload an identity/);
    await assert.rejects(call(ports.client as number, '/tags'));
  });

  it('every decision is in the audit log with principal, operation, decision, policy and rule', async () => {
    const lines = readFileSync(join(tmp.path, 'audit', 'decisions.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const allow = lines.find(
      (l) => l.event === 'policy.decision' && l.decision === 'allow' && l.path === '/catalogue/42',
    );
    assert.equal(allow?.principal, CLIENT);
    assert.equal(allow?.policy, 'sock-shop/catalogue-allow-vm-auth');
    assert.equal(allow?.rule, 0);
    const deny = lines.find(
      (l) => l.event === 'policy.decision' && l.decision === 'deny' && l.principal === OTHER,
    );
    assert.equal(deny?.method, 'GET');
    assert.ok(typeof deny?.reason === 'string' && deny.reason.length > 0);
  });
});
