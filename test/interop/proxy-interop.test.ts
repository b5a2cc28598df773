// tessera proxy against go-spiffe's tlsconfig (test/interop/go, tls-server / tls-client / grpc-client): a
// go-spiffe mTLS client reaches an app behind our inbound proxy (and is refused by its policy when it
// is not the allowed identity), and our outbound proxy reaches a go-spiffe mTLS server, which sees
// the workload's SPIFFE ID as the client. Identities reach the proxies over a Workload API socket.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { parseTrustDomain, parseX509SvidRaw, X509Bundle } from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { parseProxyConfig } from '@tessera/tessera/dist/proxy/config.js';
import { catalogueMethod } from '@tessera/tessera/dist/proxy/grpc-bytes.test.util.js';
import { type RunningProxy, startProxy } from '@tessera/tessera/dist/proxy/run.js';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import {
  type GoPeerFiles,
  type GoServer,
  runGoClient,
  runGoGrpcClient,
  startGoServer,
  writePeerFiles,
} from './go-peer.js';
import { interopUnavailable } from './verdicts.js';

const skip = interopUnavailable('tessera proxy against go-spiffe');

const TD = 'example.org';
const CATALOGUE = 'spiffe://example.org/ns/sock-shop/sa/catalogue';
const GO_CLIENT = 'spiffe://example.org/vm/catalog-client';
const GO_OTHER = 'spiffe://example.org/vm/other-client';
const GO_SERVER = 'spiffe://example.org/ns/payments/sa/ledger';
const quiet = createLogger({ level: 'error', write: () => undefined });

describe('tessera proxy against go-spiffe mTLS peers', { skip, timeout: 60_000 }, () => {
  let tmp: TempDir;
  let api: FakeWorkloadApi;
  let echo: Server;
  let grpcApp: grpc.Server;
  let proxy: RunningProxy;
  let goServer: GoServer;
  let goClient: GoPeerFiles;
  let goOther: GoPeerFiles;
  const port: Record<string, number> = {};

  before(async () => {
    tmp = await makeTempDir('proxy-interop-');
    const ca = TestCa.create({ trustDomain: TD });
    const bundles = { [TD]: [ca.root] };
    goClient = await writePeerFiles(tmp.path, 'client', ca.issueX509Svid(GO_CLIENT), bundles);
    goOther = await writePeerFiles(tmp.path, 'other', ca.issueX509Svid(GO_OTHER), bundles);
    const goServerFiles = await writePeerFiles(tmp.path, 'server', ca.issueX509Svid(GO_SERVER), bundles);
    // The go-spiffe server accepts only the catalogue's identity: the one our outbound presents.
    goServer = await startGoServer(goServerFiles, { id: CATALOGUE });

    api = await FakeWorkloadApi.start(join(tmp.path, 'wl.sock'));
    const issued = ca.issueX509Svid(CATALOGUE);
    api.setX509Svids([
      {
        svid: parseX509SvidRaw(issued.certificatesDer, issued.privateKeyDer, ''),
        bundle: new X509Bundle(parseTrustDomain(TD), [ca.root]),
      },
    ]);
    echo = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    port.echo = (echo.address() as { port: number }).port;
    // A gRPC app in cleartext HTTP/2, behind an inbound proxy with upstream_protocol: http2.
    grpcApp = new grpc.Server();
    grpcApp.addService(
      // Raw bytes (the Go client sends bytes too): Get, Missing, Delete.
      { Get: catalogueMethod('Get'), Missing: catalogueMethod('Missing'), Delete: catalogueMethod('Delete') },
      {
        Get: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
          cb(null, Buffer.concat([Buffer.from('item:'), call.request])),
        Missing: (_: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
          cb({ code: grpc.status.NOT_FOUND, details: 'no such item' }),
        Delete: (_: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
          cb(null, Buffer.from('deleted')),
      },
    );
    port.grpcApp = await new Promise<number>((resolve, reject) =>
      grpcApp.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    for (const k of ['inbound', 'outbound', 'outboundWrong', 'grpc']) port[k] = await freePort();
    mkdirSync(join(tmp.path, 'policies'));
    writeFileSync(
      join(tmp.path, 'policies', 'allow.yaml'),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-catalog-client, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  rules:
  - from: [{source: {principals: ["${GO_CLIENT}"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-deletes, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  action: DENY
  rules:
  # Scoped by port: on the TCP listener Istio drops the HTTP fields of a DENY rule, which would
  # then deny every connection.
  - to: [{operation: {ports: ["${port.grpcApp}"], methods: ["POST"], paths: ["/catalogue.Catalogue/Delete"]}}]
`,
    );
    proxy = await startProxy(
      parseProxyConfig(`workload_api_socket: unix://${api.socketPath}
namespace: sock-shop
labels: {app: catalogue}
policies: [${join(tmp.path, 'policies')}]
inbound:
  - {listen: "127.0.0.1:${port.inbound}", upstream: "127.0.0.1:${port.echo}", protocol: tcp}
  - {listen: "127.0.0.1:${port.grpc}", upstream: "127.0.0.1:${port.grpcApp}", upstream_protocol: http2}
outbound:
  - {listen: "127.0.0.1:${port.outbound}", upstream: "${goServer.address}", server_spiffe_ids: ["${GO_SERVER}"]}
  - {listen: "127.0.0.1:${port.outboundWrong}", upstream: "${goServer.address}", server_spiffe_ids: ["${CATALOGUE}"]}
health: {port: 0}
`),
      { logger: quiet },
    );
  });

  after(async () => {
    await proxy?.stop();
    await goServer?.close();
    echo?.close();
    grpcApp?.forceShutdown();
    await api?.close();
    await tmp?.cleanup();
  });

  it("a go-spiffe client authorizing the proxy's SPIFFE ID reaches the app through the inbound proxy", async () => {
    const r = await runGoClient(goClient, { id: CATALOGUE }, `127.0.0.1:${port.inbound}`, 'hello from go');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, 'hello from go\n');
  });

  it('the inbound policy refuses another go-spiffe identity; go-spiffe refuses a proxy that is not who it expects', async () => {
    const other = await runGoClient(goOther, { id: CATALOGUE }, `127.0.0.1:${port.inbound}`, 'x');
    assert.notEqual(other.code, 0);
    assert.match(other.stdout, /^ERROR /);
    const wrongServer = await runGoClient(goClient, { id: GO_SERVER }, `127.0.0.1:${port.inbound}`, 'x');
    assert.notEqual(wrongServer.code, 0);
    assert.match(wrongServer.stdout, /^ERROR .*unexpected ID/);
  });

  it('the outbound proxy presents the workload SVID to a go-spiffe server, which names it', async () => {
    const s = tcpConnect(port.outbound as number, '127.0.0.1');
    s.write('ping\n');
    const [data] = (await once(s, 'data')) as [Buffer];
    s.destroy();
    assert.equal(data.toString(), `${CATALOGUE} ping\n`);
    assert.match(await goServer.nextLog(/^ACCEPTED /), new RegExp(CATALOGUE));
  });

  it('the outbound proxy refuses a go-spiffe server whose SPIFFE ID is not the expected one', async () => {
    const s = tcpConnect(port.outboundWrong as number, '127.0.0.1');
    s.on('error', () => {});
    s.write('ping\n');
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString();
    });
    await once(s, 'close');
    assert.equal(got, '');
  });

  it('a grpc-go client with go-spiffe credentials calls a gRPC app through the inbound proxy: answers, statuses from trailers, PERMISSION_DENIED from a DENY policy', async () => {
    const call = (name: string, body: string) =>
      runGoGrpcClient(
        goClient,
        { id: CATALOGUE },
        `127.0.0.1:${port.grpc}`,
        `/catalogue.Catalogue/${name}`,
        body,
      );
    const ok = await call('Get', '42');
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal(ok.stdout, 'OK item:42\n');
    const missing = await call('Missing', 'x');
    assert.equal(missing.stdout, 'STATUS NotFound no such item\n', missing.stderr);
    const denied = await call('Delete', '42');
    assert.match(denied.stdout, /^STATUS PermissionDenied /, denied.stderr);
    const other = await runGoGrpcClient(
      goOther,
      { id: CATALOGUE },
      `127.0.0.1:${port.grpc}`,
      '/catalogue.Catalogue/Get',
      '1',
    );
    assert.match(other.stdout, /^STATUS PermissionDenied /, other.stderr);
  });
});
