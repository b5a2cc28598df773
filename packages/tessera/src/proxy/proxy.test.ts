// The proxy in one process, over real sockets: an outbound proxy (the VM client's identity) and an
// inbound proxy (the catalogue's identity), each taking its SVID from a Workload API on a real Unix
// socket (the spiffe package's fake server, fed SVIDs from the test kit's CA), real mTLS between
// them, a real HTTP app behind. The same scenario against the real agent is in test/e2e/proxy.test.ts.
import assert from 'node:assert/strict';
import { createHash, type X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import {
  Agent,
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
} from 'node:http';
import * as http2 from 'node:http2';
import { createServer as createNetServer, type Server as NetServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  authorizeAny,
  authorizeId,
  grpcChannelCredentials,
  parseJwtBundle,
  parseTrustDomain,
  parseX509SvidRaw,
  tlsClientOptions,
  X509Bundle,
  X509BundleSet,
  type X509Svid,
} from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { freePort, makeTempDir, type TempDir, TestCa, TestJwtAuthority } from '@tessera/testkit';
import { createLogger } from '../common/log.js';
import { parseProxyConfig } from './config.js';
import { catalogueMethod } from './grpc-bytes.test.util.js';
import { type RunningProxy, startProxy } from './run.js';

const td = parseTrustDomain('example.org');
const ca = TestCa.create({ trustDomain: 'example.org' });
const rogue = TestCa.create({ trustDomain: 'example.org' });
const bundle = new X509Bundle(td, [ca.root]);
const jwtAuthority = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'k1' });

const CATALOGUE = 'spiffe://example.org/ns/sock-shop/sa/catalogue';
const CLIENT = 'spiffe://example.org/vm/catalog-client';
const OTHER = 'spiffe://example.org/vm/other';

function svid(id: string, issuer: TestCa = ca): X509Svid {
  const s = issuer.issueX509Svid(id);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, '');
}

const SEED_POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: catalogue-allow-vm-auth, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["${CLIENT}"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/catalogue", "/catalogue/*", "/tags"]}}]
`;

interface Seen {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
}

/**
 * A gRPC service of raw bytes (no protobuf needed to carry them): Get, Missing (NOT_FOUND), Delete,
 * and List, which streams its answer in 64 KiB messages.
 */
const CATALOGUE_SERVICE = {
  Get: catalogueMethod('Get'),
  Missing: catalogueMethod('Missing'),
  Delete: catalogueMethod('Delete'),
  List: catalogueMethod('List', true),
};
const LIST_MESSAGES = 40;

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const wsAccept = (key: string) =>
  createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');

function startApp(): Promise<{ server: Server; port: number; seen: Seen[]; upgrades: Seen[] }> {
  const seen: Seen[] = [];
  const upgrades: Seen[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    const body = JSON.stringify({
      method: req.method,
      url: req.url,
      xfcc: req.headers['x-forwarded-client-cert'],
    });
    res.writeHead(200, { 'content-type': 'application/json', 'x-app': 'catalogue' }).end(body);
  });
  // A WebSocket endpoint: the handshake answered as RFC 6455 says, then every byte echoed.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrades.push({ method: req.method, url: req.url, headers: req.headers });
    if (req.url === '/catalogue/refuse') {
      socket.end(
        'HTTP/1.1 426 Upgrade Required\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nno thanks',
      );
      return;
    }
    const key = String(req.headers['sec-websocket-key']);
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${wsAccept(key)}\r\n\r\n`,
    );
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as { port: number }).port, seen, upgrades }),
    ),
  );
}

interface Reply {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

function get(
  port: number,
  path: string,
  o: { method?: string; agent?: Agent; headers?: Record<string, string> } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: o.method ?? 'GET',
        agent: o.agent ?? false,
        headers: o.headers ?? {},
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const hashOf = (cert: X509Certificate) => createHash('sha256').update(cert.raw).digest('hex');

describe('tessera proxy: outbound → mTLS → inbound → app', () => {
  let tmp: TempDir;
  let apiCatalogue: FakeWorkloadApi;
  let apiClient: FakeWorkloadApi;
  let app: Awaited<ReturnType<typeof startApp>>;
  let echo: NetServer;
  let echoPort: number;
  let unixApp: Server;
  let grpcApp: grpc.Server;
  const grpcSeen: { method: string; xfcc: string }[] = [];
  let inbound: RunningProxy;
  let outbound: RunningProxy;
  let clientSvid: X509Svid;
  let catalogueSvid: X509Svid;
  const inboundLogs: string[] = [];
  const port: Record<string, number> = {};
  let policyDir: string;

  before(async () => {
    tmp = await makeTempDir('proxy-');
    policyDir = join(tmp.path, 'policies');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(policyDir);
    apiCatalogue = await FakeWorkloadApi.start();
    apiClient = await FakeWorkloadApi.start();
    catalogueSvid = svid(CATALOGUE);
    clientSvid = svid(CLIENT);
    apiCatalogue.setX509Svids([{ svid: catalogueSvid, bundle }]);
    apiCatalogue.setJwtBundles([parseJwtBundle(td, jwtAuthority.jwks())]);
    apiClient.setX509Svids([{ svid: clientSvid, bundle }]);
    app = await startApp();
    echo = createNetServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    echoPort = (echo.address() as { port: number }).port;
    unixApp = createServer((req, res) => res.writeHead(200).end(`unix ${req.url}`));
    await new Promise<void>((r) => unixApp.listen(join(tmp.path, 'app.sock'), () => r()));
    grpcApp = new grpc.Server();
    const unary =
      (reply: (req: Buffer) => Buffer | grpc.StatusObject) =>
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        grpcSeen.push({
          method: call.getPath(),
          xfcc: String(call.metadata.get('x-forwarded-client-cert')[0]),
        });
        const r = reply(call.request);
        if (Buffer.isBuffer(r)) cb(null, r);
        else cb(r);
      };
    grpcApp.addService(CATALOGUE_SERVICE, {
      Get: unary((req) => Buffer.concat([Buffer.from('item:'), req])),
      Missing: unary(() => ({
        code: grpc.status.NOT_FOUND,
        details: 'no such item',
        metadata: new grpc.Metadata(),
      })),
      Delete: unary(() => Buffer.from('deleted')),
      // 40 messages of 64 KiB (more than HTTP/2's initial windows), then OK in the trailers.
      List: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 0; i < LIST_MESSAGES; i++) call.write(Buffer.alloc(64 * 1024, i));
        call.end();
      },
    });
    port.grpcApp = await new Promise<number>((resolve, reject) =>
      grpcApp.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    for (const k of [
      'grpc',
      'grpcOut',
      'http',
      'tcp',
      'unix',
      'down',
      'nowhere',
      'out',
      'outWrong',
      'outTcp',
      'idle',
      'idleTcp',
      'idleOut',
    ])
      port[k] = await freePort();
    writeFileSync(join(policyDir, 'catalogue.yaml'), SEED_POLICY);
    writeFileSync(
      join(policyDir, 'more.yaml'),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-echo, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  rules:
  - from: [{source: {principals: ["${CLIENT}"]}}]
    to: [{operation: {ports: ["${echoPort}"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: private-needs-jwt, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  rules:
  - from: [{source: {requestPrincipals: ["spiffe://example.org/vm/*"]}}]
    to: [{operation: {paths: ["/private"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: unix-app, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  rules:
  - to: [{operation: {ports: ["${port.unix}"], paths: ["/u/*"]}}]
  - to: [{operation: {ports: ["${port.nowhere}"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: catalogue-grpc, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  rules:
  - from: [{source: {principals: ["${CLIENT}"]}}]
    to: [{operation: {ports: ["${port.grpcApp}"], methods: ["POST"], paths: ["/catalogue.Catalogue/Get", "/catalogue.Catalogue/Missing", "/catalogue.Catalogue/List"]}}]
`,
    );
    inbound = await startProxy(
      parseProxyConfig(`
workload_api_socket: unix://${apiCatalogue.socketPath}
namespace: sock-shop
labels: {app: catalogue}
policies: [${policyDir}]
audit: {path: ${join(tmp.path, 'audit.log')}, decisions: all}
jwt: {audiences: [catalogue]}
inbound:
  - {name: catalogue, listen: "127.0.0.1:${port.http}", upstream: "127.0.0.1:${app.port}"}
  - {name: echo, listen: "127.0.0.1:${port.tcp}", upstream: "127.0.0.1:${echoPort}", protocol: tcp}
  - {name: unix, listen: "127.0.0.1:${port.unix}", upstream: "unix:${join(tmp.path, 'app.sock')}"}
  - {name: down, listen: "127.0.0.1:${port.down}", upstream: "127.0.0.1:${port.nowhere}"}
  - {name: idle, listen: "127.0.0.1:${port.idle}", upstream: "127.0.0.1:${app.port}", handshake_timeout: 300ms, idle_timeout: 400ms}
  - {name: grpc, listen: "127.0.0.1:${port.grpc}", upstream: "127.0.0.1:${port.grpcApp}", upstream_protocol: http2}
  - {name: idle-tcp, listen: "127.0.0.1:${port.idleTcp}", upstream: "127.0.0.1:${echoPort}", protocol: tcp, idle_timeout: 400ms}
health: {port: 0}
`),
      { logger: createLogger({ level: 'debug', format: 'json', write: (l) => inboundLogs.push(l) }) },
    );
    outbound = await startProxy(
      parseProxyConfig(`
workload_api_socket: unix://${apiClient.socketPath}
outbound:
  - name: catalogue
    listen: "127.0.0.1:${port.out}"
    upstream: "127.0.0.1:${port.http}"
    server_spiffe_ids: ["${CATALOGUE}"]
    protocol: http1
  - name: wrong-server
    listen: "127.0.0.1:${port.outWrong}"
    upstream: "127.0.0.1:${port.http}"
    server_spiffe_ids: ["spiffe://example.org/ns/sock-shop/sa/payment"]
  - name: tcp
    listen: "127.0.0.1:${port.outTcp}"
    upstream: "127.0.0.1:${port.tcp}"
    server_trust_domain: example.org
  - name: grpc
    listen: "127.0.0.1:${port.grpcOut}"
    upstream: "127.0.0.1:${port.grpc}"
    server_spiffe_ids: ["${CATALOGUE}"]
    protocol: http2
  - name: idle-out
    listen: "127.0.0.1:${port.idleOut}"
    upstream: "127.0.0.1:${port.tcp}"
    server_trust_domain: example.org
    idle_timeout: 400ms
health: {port: 0}
`),
      { logger: createLogger({ level: 'error', write: () => {} }) },
    );
  });

  after(async () => {
    await outbound?.stop();
    await inbound?.stop();
    app?.server.close();
    echo?.close();
    unixApp?.close();
    grpcApp?.forceShutdown();
    await apiCatalogue?.close();
    await apiClient?.close();
    await tmp?.cleanup();
  });

  it('the seed policy: GET /catalogue, /catalogue/42 and /tags reach the app with the caller in x-forwarded-client-cert', async () => {
    for (const path of ['/catalogue', '/catalogue/42', '/tags', '/catalogue/42?color=blue']) {
      const r = await get(port.out as number, path);
      assert.equal(r.status, 200, `${path}: ${r.body}`);
      assert.equal(r.headers['x-app'], 'catalogue');
      assert.equal(JSON.parse(r.body).url, path);
    }
    const last = app.seen.at(-1) as Seen;
    const leaf = clientSvid.certificates[0] as X509Certificate;
    assert.equal(
      last.headers['x-forwarded-client-cert'],
      `By=${CATALOGUE};Hash=${hashOf(leaf)};Subject="${leaf.subject.split('\n').reverse().join(',')}";URI=${CLIENT}`,
    );
    assert.equal(last.headers['x-forwarded-proto'], 'https');
  });

  it('POST /catalogue and GET /orders get 403 "RBAC: access denied" and never reach the app', async () => {
    const before = app.seen.length;
    const post = await get(port.out as number, '/catalogue', { method: 'POST' });
    assert.equal(post.status, 403);
    assert.equal(post.body, 'RBAC: access denied');
    const orders = await get(port.out as number, '/orders');
    assert.equal(orders.status, 403);
    assert.equal(orders.body, 'RBAC: access denied');
    assert.equal(app.seen.length, before);
    const audit = readFileSync(join(tmp.path, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const denied = audit.filter(
      (e) => e.event === 'policy.decision' && e.decision === 'deny' && e.path === '/orders',
    );
    assert.equal(denied.length, 1);
    assert.equal(denied[0].principal, CLIENT);
    assert.equal(denied[0].method, 'GET');
    const allowed = audit.find(
      (e) => e.event === 'policy.decision' && e.decision === 'allow' && e.path === '/tags',
    );
    assert.equal(allowed?.policy, 'sock-shop/catalogue-allow-vm-auth');
    assert.equal(allowed?.rule, 0);
  });

  it('paths are normalized before the policy and forwarded as matched: no /catalogue/../orders bypass', async () => {
    const before = app.seen.length;
    const dotdot = await get(port.out as number, '/catalogue/../orders');
    assert.equal(dotdot.status, 403);
    const encoded = await get(port.out as number, '/%74ags');
    assert.equal(encoded.status, 200);
    assert.equal(app.seen.at(-1)?.url, '/tags', 'the app gets the path the policy matched');
    const dotted = await get(port.out as number, '/catalogue/./42');
    assert.equal(dotted.status, 200);
    assert.equal(app.seen.at(-1)?.url, '/catalogue/42');
    const nul = await get(port.out as number, '/tags%00');
    assert.equal(nul.status, 400);
    assert.equal(app.seen.length, before + 2);
  });

  it('a client header cannot forge x-forwarded-client-cert: sanitize_set replaces it', async () => {
    await get(port.out as number, '/tags', { headers: { 'x-forwarded-client-cert': `URI=${OTHER}` } });
    const xfcc = String(app.seen.at(-1)?.headers['x-forwarded-client-cert']);
    assert.doesNotMatch(xfcc, /vm\/other/);
    assert.match(xfcc, /URI=spiffe:\/\/example\.org\/vm\/catalog-client$/);
  });

  it('HTTP/2 clients are served too (ALPN h2), with the same policies', async () => {
    const session = http2.connect(`https://127.0.0.1:${port.http}`, {
      ...tlsClientOptions({
        svid: { getX509Svid: () => clientSvid },
        bundles: new X509BundleSet([bundle]),
        authorizer: authorizeAny(),
      }),
    });
    const call = (path: string, method = 'GET') =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const s = session.request({ ':path': path, ':method': method });
        let body = '';
        let status = 0;
        s.on('response', (h) => {
          status = Number(h[':status']);
        });
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          body += d;
        });
        s.on('end', () => resolve({ status, body }));
        s.on('error', reject);
        s.end();
      });
    try {
      const ok = await call('/catalogue/7');
      assert.equal(ok.status, 200);
      assert.equal(JSON.parse(ok.body).url, '/catalogue/7');
      assert.match(JSON.parse(ok.body).xfcc, /URI=spiffe:\/\/example\.org\/vm\/catalog-client/);
      const denied = await call('/catalogue', 'DELETE');
      assert.equal(denied.status, 403);
      assert.equal(denied.body, 'RBAC: access denied');
      assert.equal(session.alpnProtocol, 'h2');
    } finally {
      session.close();
    }
  });

  it('a client without a certificate, or with one from an untrusted CA, gets no HTTP answer', async () => {
    const attempt = (opts: tls.ConnectionOptions) =>
      new Promise<string>((resolve) => {
        let data = '';
        const s = tls.connect(
          {
            host: '127.0.0.1',
            port: port.http,
            ca: [ca.root.toString()],
            checkServerIdentity: () => undefined,
            ...opts,
          },
          () => {
            s.write('GET /tags HTTP/1.1\r\nhost: catalogue\r\n\r\n');
          },
        );
        s.on('data', (d) => {
          data += d.toString();
        });
        s.on('error', () => resolve(data));
        s.on('close', () => resolve(data));
      });
    const before = app.seen.length;
    assert.doesNotMatch(await attempt({}), /HTTP\/1\.1/);
    const foreign = rogue.issueX509Svid(CLIENT);
    assert.doesNotMatch(
      await attempt({ cert: foreign.certificatesPem, key: foreign.privateKeyPem }),
      /HTTP\/1\.1/,
    );
    assert.equal(app.seen.length, before);
  });

  it('an outbound listener refuses a server whose SPIFFE ID is not the expected one', async () => {
    const before = app.seen.length;
    await assert.rejects(get(port.outWrong as number, '/tags'), /socket hang up|ECONNRESET/);
    assert.equal(app.seen.length, before);
  });

  it('TCP: an L4 policy on the port lets the client through to the echo server', async () => {
    const s = netConnect(port.outTcp as number, '127.0.0.1');
    s.write('ping over mTLS');
    const [data] = (await once(s, 'data')) as [Buffer];
    assert.equal(data.toString(), 'ping over mTLS');
    s.destroy();
  });

  it('a Unix-socket upstream; ports in policies are the upstream port, or the listener port for a socket', async () => {
    const r = await get(port.out as number, '/ignored');
    assert.equal(r.status, 403);
    const direct = http2.connect(`https://127.0.0.1:${port.unix}`, {
      ...tlsClientOptions({
        svid: { getX509Svid: () => clientSvid },
        bundles: new X509BundleSet([bundle]),
        authorizer: authorizeAny(),
      }),
    });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const s = direct.request({ ':path': '/u/1' });
        let b = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          b += d;
        });
        s.on('end', () => resolve(b));
        s.on('error', reject);
        s.end();
      });
      assert.equal(body, 'unix /u/1');
    } finally {
      direct.close();
    }
  });

  it('request.auth: a JWT-SVID for the audience satisfies requestPrincipals; a bad one is 401; none is 403', async () => {
    const good = jwtAuthority.sign({
      sub: CLIENT,
      aud: ['catalogue'],
      exp: Math.floor(Date.now() / 1000) + 300,
    });
    const ok = await get(port.out as number, '/private', { headers: { authorization: `Bearer ${good}` } });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(app.seen.at(-1)?.headers.authorization, undefined, 'the token is not forwarded by default');
    const wrongAud = jwtAuthority.sign({
      sub: CLIENT,
      aud: ['other'],
      exp: Math.floor(Date.now() / 1000) + 300,
    });
    const bad = await get(port.out as number, '/private', {
      headers: { authorization: `Bearer ${wrongAud}` },
    });
    assert.equal(bad.status, 401);
    assert.equal(bad.body, 'Jwt verification fails');
    const none = await get(port.out as number, '/private');
    assert.equal(none.status, 403);
  });

  it('bad input on the inbound port — plain bytes, garbage HTTP over mTLS, an app that is down — gets a clear answer and the proxy goes on', async () => {
    const plain = netConnect(port.http as number, '127.0.0.1');
    plain.on('error', () => {});
    plain.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await once(plain, 'close');
    const tlsOptions = tlsClientOptions({
      svid: { getX509Svid: () => clientSvid },
      bundles: new X509BundleSet([bundle]),
      authorizer: authorizeAny(),
    });
    const garbage = await new Promise<string>((resolve) => {
      let got = '';
      const s = tls.connect({ ...tlsOptions, host: '127.0.0.1', port: port.http as number }, () =>
        s.write('\u0000\u0001 not http at all\r\n\r\n'),
      );
      s.on('data', (d) => {
        got += d.toString();
      });
      s.on('error', () => resolve(got));
      s.on('close', () => resolve(got));
    });
    assert.match(garbage, /^HTTP\/1\.1 400 /);
    const down = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const session = http2.connect(`https://127.0.0.1:${port.down}`, tlsOptions);
      const s = session.request({ ':path': '/anything' });
      let body = '';
      let status = 0;
      s.on('response', (h) => {
        status = Number(h[':status']);
      });
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        body += d;
      });
      s.on('end', () => {
        session.close();
        resolve({ status, body });
      });
      s.on('error', reject);
      s.end();
    });
    assert.equal(down.status, 503);
    assert.match(down.body, /^upstream connect error/);
    assert.ok(
      inboundLogs.some((l) => l.includes('upstream request failed') && l.includes(String(port.nowhere))),
    );
    assert.equal((await get(port.out as number, '/tags')).status, 200, 'the proxy still serves');
  });

  it('a client that does not finish its TLS handshake is disconnected at handshake_timeout, and the log says so', {
    timeout: 20_000,
  }, async () => {
    const s = netConnect(port.idle as number, '127.0.0.1');
    s.on('error', () => {});
    await once(s, 'connect');
    await once(s, 'close');
    assert.ok(
      inboundLogs.some((l) => l.includes('TLS handshake') && /timeout/i.test(l)),
      'a log line names the handshake timeout',
    );
  });

  it('connections idle for idle_timeout are closed: HTTP/1.1 keep-alive, HTTP/2, TCP, and the outbound', {
    timeout: 20_000,
  }, async () => {
    const tlsOptions = tlsClientOptions({
      svid: { getX509Svid: () => clientSvid },
      bundles: new X509BundleSet([bundle]),
      authorizer: authorizeAny(),
    });
    // HTTP/1.1 with keep-alive: one answered request, then nothing until the proxy closes.
    const h1 = tls.connect({ ...tlsOptions, host: '127.0.0.1', port: port.idle as number });
    h1.on('error', () => {});
    await once(h1, 'secureConnect');
    h1.write('GET /catalogue HTTP/1.1\r\nhost: catalogue\r\nconnection: keep-alive\r\n\r\n');
    const [first] = (await once(h1, 'data')) as [Buffer];
    assert.match(first.toString(), /^HTTP\/1\.1 200 /);
    await once(h1, 'close');
    // HTTP/2: the session is closed.
    const session = http2.connect(`https://127.0.0.1:${port.idle}`, tlsOptions);
    session.on('error', () => {});
    const stream = session.request({ ':path': '/catalogue' });
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 200);
    stream.resume();
    await once(session, 'close');
    // TCP through the inbound: an echo, then the connection is closed.
    const raw = tls.connect({ ...tlsOptions, host: '127.0.0.1', port: port.idleTcp as number });
    raw.on('error', () => {});
    await once(raw, 'secureConnect');
    raw.write('ping');
    assert.equal(((await once(raw, 'data')) as [Buffer])[0].toString(), 'ping');
    await once(raw, 'close');
    // The outbound's local side (to an inbound that would keep the connection an hour).
    const local = netConnect(port.idleOut as number, '127.0.0.1');
    local.on('error', () => {});
    local.write('pong');
    assert.equal(((await once(local, 'data')) as [Buffer])[0].toString(), 'pong');
    await once(local, 'close');
  });

  it('gRPC to an h2c app (upstream_protocol: http2), with SPIFFE credentials or in plain text through the outbound proxy: answers with their trailers, a method the policy does not allow is PERMISSION_DENIED', async () => {
    const Client = grpc.makeGenericClientConstructor(CATALOGUE_SERVICE, 'Catalogue');
    const clients = {
      'grpc-js with SPIFFE credentials': new Client(
        `127.0.0.1:${port.grpc}`,
        grpcChannelCredentials({
          svid: { getX509Svid: () => clientSvid },
          bundles: new X509BundleSet([bundle]),
          authorizer: authorizeId(CATALOGUE),
        }),
      ),
      'grpc-js in plain text through the outbound proxy': new Client(
        `127.0.0.1:${port.grpcOut}`,
        grpc.credentials.createInsecure(),
      ),
    };
    type Unary = (req: Buffer, cb: (err: grpc.ServiceError | null, value?: Buffer) => void) => void;
    try {
      for (const [name, client] of Object.entries(clients)) {
        const call = (method: string, body: string) =>
          new Promise<{ value?: string; code?: number; details?: string }>((resolve) => {
            const fn = (client as unknown as Record<string, Unary>)[method] as Unary;
            fn.call(client, Buffer.from(body), (err, value) =>
              resolve(err ? { code: err.code, details: err.details } : { value: value?.toString() }),
            );
          });
        const before = grpcSeen.length;
        assert.deepEqual(await call('Get', '42'), { value: 'item:42' }, name);
        assert.equal(grpcSeen[before]?.method, '/catalogue.Catalogue/Get', name);
        assert.match(
          grpcSeen[before]?.xfcc ?? '',
          new RegExp(`URI=${CLIENT}$`),
          `${name}: the app sees the caller`,
        );
        // The status travels in the app's trailers: relayed, not lost.
        assert.deepEqual(
          await call('Missing', 'x'),
          { code: grpc.status.NOT_FOUND, details: 'no such item' },
          name,
        );
        const denied = await call('Delete', '42');
        assert.equal(denied.code, grpc.status.PERMISSION_DENIED, `${name}: ${JSON.stringify(denied)}`);
        assert.equal(grpcSeen.length, before + 2, `${name}: the denied call never reached the app`);
        // A server stream of 2.5 MiB: every message, in order, then the status.
        const list = (client as unknown as Record<string, (req: Buffer) => grpc.ClientReadableStream<Buffer>>)
          .List as (req: Buffer) => grpc.ClientReadableStream<Buffer>;
        const stream = list.call(client, Buffer.from('all'));
        const got: number[] = [];
        stream.on('data', (m: Buffer) => {
          if (m.length === 64 * 1024 && m.every((b) => b === m[0])) got.push(m[0] as number);
        });
        const [st] = (await once(stream, 'status')) as [grpc.StatusObject];
        assert.equal(st.code, grpc.status.OK, `${name}: ${st.details}`);
        assert.deepEqual(
          got,
          Array.from({ length: LIST_MESSAGES }, (_, i) => i),
          name,
        );
      }
    } finally {
      for (const c of Object.values(clients)) c.close();
    }
  });

  /** Sends a WebSocket upgrade request over mTLS (with `head` right after it) and reads the answer's head. */
  async function upgrade(
    path: string,
    o: { protocol?: string; head?: string; svid?: X509Svid } = {},
  ): Promise<{ socket: tls.TLSSocket; head: string; rest: Buffer }> {
    const socket = tls.connect({
      ...tlsClientOptions({
        svid: { getX509Svid: () => o.svid ?? clientSvid },
        bundles: new X509BundleSet([bundle]),
        authorizer: authorizeAny(),
      }),
      host: '127.0.0.1',
      port: port.http as number,
    });
    socket.on('error', () => {});
    await once(socket, 'secureConnect');
    socket.write(
      `GET ${path} HTTP/1.1\r\nhost: catalogue\r\nconnection: Upgrade\r\nupgrade: ${o.protocol ?? 'websocket'}\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n${o.head ?? ''}`,
    );
    let got = Buffer.alloc(0);
    for (;;) {
      const end = got.indexOf('\r\n\r\n');
      if (end >= 0) return { socket, head: got.subarray(0, end).toString(), rest: got.subarray(end + 4) };
      const [chunk] = (await once(socket, 'data')) as [Buffer];
      got = Buffer.concat([got, chunk]);
    }
  }

  it('WebSocket: an allowed upgrade reaches the app with the caller in XFCC, and bytes flow both ways', async () => {
    const before = app.upgrades.length;
    const { socket, head, rest } = await upgrade('/catalogue/live', { head: 'early' });
    assert.match(head, /^HTTP\/1\.1 101 /);
    assert.match(
      head,
      new RegExp(
        `sec-websocket-accept: ${wsAccept('dGhlIHNhbXBsZSBub25jZQ==').replace(/[+/=]/g, '\\$&')}`,
        'i',
      ),
    );
    const seen = app.upgrades[before];
    assert.equal(seen?.url, '/catalogue/live');
    assert.match(String(seen?.headers['x-forwarded-client-cert']), new RegExp(`URI=${CLIENT}$`));
    assert.equal(seen?.headers.upgrade, 'websocket');
    // The bytes sent with the request come back (the app echoes), then a later message does.
    let echoed = rest.toString();
    while (echoed.length < 'early'.length) echoed += ((await once(socket, 'data')) as [Buffer])[0].toString();
    assert.equal(echoed, 'early');
    socket.write('later');
    assert.equal(((await once(socket, 'data')) as [Buffer])[0].toString(), 'later');
    socket.end();
    await once(socket, 'close');
  });

  it('WebSocket: a denied upgrade gets 403 RBAC: access denied; other protocols 403; an app that declines answers itself', async () => {
    const before = app.upgrades.length;
    const denied = await upgrade('/orders/live');
    assert.match(denied.head, /^HTTP\/1\.1 403 /);
    assert.equal(denied.rest.toString(), 'RBAC: access denied');
    await once(denied.socket, 'close');
    const other = await upgrade('/catalogue/live', { svid: svid(OTHER) });
    assert.match(other.head, /^HTTP\/1\.1 403 /);
    const h2c = await upgrade('/catalogue/live', { protocol: 'h2c' });
    assert.match(h2c.head, /^HTTP\/1\.1 403 /);
    assert.match(h2c.rest.toString(), /upgrade to "h2c" is not proxied: only websocket is/);
    assert.equal(app.upgrades.length, before, 'the app saw none of them');
    const declined = await upgrade('/catalogue/refuse');
    assert.match(declined.head, /^HTTP\/1\.1 426 /);
    let body = declined.rest.toString();
    declined.socket.on('data', (d: Buffer) => {
      body += d.toString();
    });
    await once(declined.socket, 'close');
    assert.equal(body, 'no thanks');
  });

  it('rotating both SVIDs while requests flow drops none; new connections present the new certificate', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    let ok = 0;
    let failed = 0;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const r = await get(port.out as number, '/tags', { agent }).catch(() => ({ status: 0 }));
        if (r.status === 200) ok++;
        else failed++;
      }
    })();
    for (let i = 0; i < 3; i++) {
      const rotatedClient = svid(CLIENT);
      const rotatedCatalogue = svid(CATALOGUE);
      const updated = Promise.all([once(outbound.identity, 'update'), once(inbound.identity, 'update')]);
      apiClient.setX509Svids([{ svid: rotatedClient, bundle }]);
      apiCatalogue.setX509Svids([{ svid: rotatedCatalogue, bundle }]);
      await updated;
      clientSvid = rotatedClient;
      catalogueSvid = rotatedCatalogue;
      const before = ok;
      while (ok < before + 20) await new Promise((r) => setImmediate(r));
    }
    stop = true;
    await loop;
    agent.destroy();
    assert.equal(failed, 0);
    assert.ok(ok >= 60);
    await get(port.out as number, '/tags');
    const leaf = clientSvid.certificates[0] as X509Certificate;
    assert.match(
      String(app.seen.at(-1)?.headers['x-forwarded-client-cert']),
      new RegExp(`Hash=${hashOf(leaf)}`),
    );
  });

  it('another identity is refused by the policy', async () => {
    const updated = once(outbound.identity, 'update');
    apiClient.setX509Svids([{ svid: svid(OTHER), bundle }]);
    await updated;
    const r = await get(port.out as number, '/tags');
    assert.equal(r.status, 403);
    const back = once(outbound.identity, 'update');
    apiClient.setX509Svids([{ svid: clientSvid, bundle }]);
    await back;
    assert.equal((await get(port.out as number, '/tags')).status, 200);
  });

  it('policy files hot-reload; a bad file keeps the last good policies and says why', async () => {
    assert.equal((await get(port.out as number, '/orders')).status, 403);
    const reloaded = once(inbound.policies as NonNullable<RunningProxy['policies']>, 'reloaded');
    writeFileSync(join(policyDir, 'catalogue.yaml'), SEED_POLICY.replace('"/tags"]', '"/tags", "/orders"]'));
    await reloaded;
    assert.equal((await get(port.out as number, '/orders')).status, 200);
    const failed = once(inbound.policies as NonNullable<RunningProxy['policies']>, 'reloadFailed');
    writeFileSync(
      join(policyDir, 'broken.yaml'),
      SEED_POLICY.replace('action: ALLOW', 'action: ALLOW\n  colour: red'),
    );
    const [err] = (await failed) as [Error];
    assert.match(err.message, /colour/);
    assert.equal((await get(port.out as number, '/orders')).status, 200, 'the last good policies stay');
    assert.ok(inboundLogs.some((l) => l.includes('policy reload failed') && l.includes('colour')));
    const fixed = once(inbound.policies as NonNullable<RunningProxy['policies']>, 'reloaded');
    rmSync(join(policyDir, 'broken.yaml'));
    writeFileSync(join(policyDir, 'catalogue.yaml'), SEED_POLICY);
    await fixed;
    assert.equal((await get(port.out as number, '/orders')).status, 403);
  });

  it('when the Workload API stops giving the client an identity, its open connections close and new ones are refused', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await get(port.out as number, '/tags', { agent })).status, 200);
    const socketClosed = new Promise<void>((resolve) => {
      const sockets = Object.values(agent.freeSockets).flat();
      assert.equal(sockets.length, 1);
      sockets[0]?.once('close', () => resolve());
    });
    const lost = once(outbound.identity, 'watchError');
    apiClient.setError('FetchX509SVID', { code: 7, details: 'no identity issued' });
    await lost;
    await socketClosed;
    assert.equal(outbound.hasIdentity(), false);
    await assert.rejects(get(port.out as number, '/tags'), /socket hang up|ECONNRESET/);
    agent.destroy();
    const back = once(outbound.identity, 'update');
    apiClient.setError('FetchX509SVID', undefined);
    await back;
    assert.equal(outbound.hasIdentity(), true);
    assert.equal((await get(port.out as number, '/tags')).status, 200);
  });
});
