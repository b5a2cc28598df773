// Shutting a proxy down: it stops accepting at once, answers what is in flight (the HTTP/1.1 answer
// saying `connection: close`), and closes what is still open when drain_timeout has passed.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tls from 'node:tls';
import {
  authorizeAny,
  parseTrustDomain,
  parseX509SvidRaw,
  tlsClientOptions,
  X509Bundle,
  X509BundleSet,
  type X509Svid,
} from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { createLogger } from '../common/log.js';
import { parseProxyConfig } from './config.js';
import { startProxy } from './run.js';

const ca = TestCa.create({ trustDomain: 'example.org' });
const bundle = new X509Bundle(parseTrustDomain('example.org'), [ca.root]);
const CLIENT = 'spiffe://example.org/vm/catalog-client';
const svid = (id: string): X509Svid => {
  const s = ca.issueX509Svid(id);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer, '');
};

describe('tessera proxy shutdown: drain_timeout', () => {
  let tmp: TempDir;
  let api: FakeWorkloadApi;
  let app: Server;
  let echo: NetServer;
  const held: ServerResponse[] = [];
  let arrived: (() => void) | undefined;

  before(async () => {
    tmp = await makeTempDir('proxy-drain-');
    api = await FakeWorkloadApi.start();
    api.setX509Svids([{ svid: svid('spiffe://example.org/ns/sock-shop/sa/catalogue'), bundle }]);
    // The app holds every answer until the test lets it go.
    app = createServer((_req: IncomingMessage, res: ServerResponse) => {
      held.push(res);
      arrived?.();
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    echo = createNetServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    mkdirSync(join(tmp.path, 'policies'));
    writeFileSync(
      join(tmp.path, 'policies', 'allow.yaml'),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: sock-shop}
spec:
  rules:
  - from: [{source: {principals: ["${CLIENT}"]}}]
`,
    );
  });

  after(async () => {
    app?.closeAllConnections();
    app?.close();
    echo?.close();
    await api?.close();
    await tmp?.cleanup();
  });

  const start = async (drain: string) => {
    const port = { http: await freePort(), tcp: await freePort() };
    let sawDrain: () => void = () => undefined;
    // Logged as the listeners stop accepting (server.close() stops listening at once).
    const draining = new Promise<void>((r) => {
      sawDrain = r;
    });
    const proxy = await startProxy(
      parseProxyConfig(`workload_api_socket: unix://${api.socketPath}
namespace: sock-shop
policies: [${join(tmp.path, 'policies')}]
drain_timeout: ${drain}
inbound:
  - {listen: "127.0.0.1:${port.http}", upstream: "127.0.0.1:${(app.address() as { port: number }).port}"}
  - {listen: "127.0.0.1:${port.tcp}", upstream: "127.0.0.1:${(echo.address() as { port: number }).port}", protocol: tcp}
health: {port: 0}
`),
      {
        logger: createLogger({
          level: 'info',
          write: (line) => {
            if (/ draining /.test(line)) sawDrain();
          },
        }),
      },
    );
    return { proxy, port, draining };
  };

  const connect = async (port: number) => {
    const s = tls.connect({
      ...tlsClientOptions({
        svid: { getX509Svid: () => svid(CLIENT) },
        bundles: new X509BundleSet([bundle]),
        authorizer: authorizeAny(),
      }),
      host: '127.0.0.1',
      port,
    });
    s.on('error', () => {});
    await once(s, 'secureConnect');
    return s;
  };

  it('a request in flight is answered, with connection: close, while new connections are refused', {
    timeout: 20_000,
  }, async () => {
    const { proxy, port, draining } = await start('30s');
    const client = await connect(port.http);
    const atApp = new Promise<void>((r) => {
      arrived = r;
    });
    client.write('GET /slow HTTP/1.1\r\nhost: catalogue\r\n\r\n');
    await atApp;
    let answer = '';
    client.on('data', (d: Buffer) => {
      answer += d.toString();
    });
    const stopped = proxy.stop();
    await draining;
    // No longer accepting.
    const late = netConnect(port.http, '127.0.0.1');
    const [err] = (await once(late, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
    // The app answers now; the client gets it whole, told that the connection ends.
    held.shift()?.end('done');
    await once(client, 'close');
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.match(answer, /\r\n\r\ndone$/);
    await stopped;
  });

  it('a connection still open when drain_timeout passes is closed, and the stop completes', {
    timeout: 20_000,
  }, async () => {
    const { proxy, port } = await start('300ms');
    const tunnel = await connect(port.tcp);
    tunnel.write('ping');
    assert.equal(((await once(tunnel, 'data')) as [Buffer])[0].toString(), 'ping');
    const closed = once(tunnel, 'close');
    await proxy.stop();
    await closed;
  });
});
