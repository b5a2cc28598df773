import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import * as http2 from 'node:http2';
import * as https from 'node:https';

import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { type IssueOptions, TestCa } from '@tessera/testkit';
import { X509BundleSet } from '../bundle/set.js';
import { X509Bundle } from '../bundle/x509-bundle.js';
import type { Logger } from '../logger.js';
import { parseTrustDomain, type TrustDomain } from '../spiffeid/trust-domain.js';
import { parseX509SvidRaw, type X509Svid } from '../svid/x509-svid.js';
import { authorizeAny, authorizeId, authorizeIf, authorizeMemberOf, authorizeOneOf } from './authorizer.js';
import { grpcChannelCredentials, grpcServerCredentials } from './grpc.js';
import {
  createSpiffeHttp2Server,
  createSpiffeHttpsServer,
  createSpiffeTlsServer,
  type SpiffeTlsConfig,
  spiffeHttpsAgent,
  spiffeTlsConnect,
} from './node-tls.js';
import { peerSpiffeId } from './peer.js';

const tdA = parseTrustDomain('a.org');
const tdB = parseTrustDomain('b.org');
const caA = TestCa.create({ trustDomain: 'a.org' });
const caB = TestCa.create({ trustDomain: 'b.org' });

function issue(ca: TestCa, id: string, opts: IssueOptions = {}): X509Svid {
  const s = ca.issueX509Svid(id, opts);
  return parseX509SvidRaw(s.certificatesDer, s.privateKeyDer);
}

/** A source whose SVID can be rotated, emitting 'update' like X509Source. */
class TestSource extends EventEmitter {
  constructor(
    public svid: X509Svid,
    public bundles: X509BundleSet = new X509BundleSet([
      new X509Bundle(tdA, [caA.root]),
      new X509Bundle(tdB, [caB.root]),
    ]),
  ) {
    super();
  }
  getX509Svid(): X509Svid {
    return this.svid;
  }
  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
    return this.bundles.getX509BundleForTrustDomain(td);
  }
  getX509Bundles(): X509BundleSet {
    return this.bundles;
  }
  rotate(svid: X509Svid): void {
    this.svid = svid;
    this.emit('update');
  }
}

class MemoryLogger implements Logger {
  readonly lines: string[] = [];
  warn(message: string): void {
    this.lines.push(message);
  }
  error(message: string): void {
    this.lines.push(message);
  }
}

interface Running {
  port: number;
  server: tls.Server;
  logger: MemoryLogger;
  seen: string[];
  close(): Promise<void>;
}

async function startEchoServer(config: Omit<SpiffeTlsConfig, 'logger'>): Promise<Running> {
  const logger = new MemoryLogger();
  const seen: string[] = [];
  const server = createSpiffeTlsServer({ ...config, logger }, (socket) => {
    seen.push(String(peerSpiffeId(socket)));
    socket.on('data', (d) => socket.end(`${peerSpiffeId(socket)}:${d}`));
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    server,
    logger,
    seen,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Connects, sends "hi", returns the reply or throws the connection error. */
async function talk(
  config: SpiffeTlsConfig,
  port: number,
): Promise<{ reply: string; serverId: string; serial: string }> {
  const socket = spiffeTlsConnect(config, { host: '127.0.0.1', port });
  try {
    await once(socket, 'secureConnect');
    const serial = socket.getPeerX509Certificate()?.serialNumber ?? '';
    socket.write('hi');
    let reply = '';
    socket.on('data', (d) => {
      reply += d;
    });
    await once(socket, 'end');
    if (reply === '') throw new Error('connection closed without a reply');
    return { reply, serverId: String(peerSpiffeId(socket)), serial };
  } finally {
    socket.destroy();
  }
}

describe('node:tls mTLS with SPIFFE verification', () => {
  const serverSource = new TestSource(issue(caA, 'spiffe://a.org/server'));
  let srv: Running;
  before(async () => {
    srv = await startEchoServer({
      svid: serverSource,
      bundles: serverSource,
      authorizer: authorizeMemberOf('a.org'),
    });
  });
  after(() => srv.close());

  it('an authorized client and server exchange data and each sees the other’s SPIFFE ID', async () => {
    const client = new TestSource(issue(caA, 'spiffe://a.org/client'));
    const r = await talk(
      { svid: client, bundles: client, authorizer: authorizeId('spiffe://a.org/server') },
      srv.port,
    );
    assert.equal(r.reply, 'spiffe://a.org/client:hi');
    assert.equal(r.serverId, 'spiffe://a.org/server');
  });

  it('the server refuses a client the authorizer rejects, logs why, and no data flows', async () => {
    const strict = await startEchoServer({
      svid: serverSource,
      bundles: serverSource,
      authorizer: authorizeId('spiffe://a.org/allowed'),
    });
    try {
      const client = new TestSource(issue(caA, 'spiffe://a.org/intruder'));
      await assert.rejects(talk({ svid: client, bundles: client, authorizer: authorizeAny() }, strict.port));
      assert.deepEqual(strict.seen, []);
      assert.match(
        strict.logger.lines.join('\n'),
        /peer "spiffe:\/\/a.org\/intruder" refused by the authorizer \(ID "spiffe:\/\/a.org\/allowed"\): .*unexpected ID/,
      );
    } finally {
      await strict.close();
    }
  });

  it('the server refuses a client from a trust domain it does not authorize (OpenSSL chain check) and logs why', async () => {
    const client = new TestSource(issue(caB, 'spiffe://b.org/client'));
    const lines = srv.logger.lines.length;
    await assert.rejects(talk({ svid: client, bundles: client, authorizer: authorizeAny() }, srv.port));
    assert.match(
      srv.logger.lines.slice(lines).join('\n'),
      /peer refused: x509svid: certificate of "spiffe:\/\/b.org\/client" does not chain|refused by the authorizer/,
    );
  });

  it('the client refuses a server whose ID is in another trust domain than the CA that signed it (per-trust-domain roots)', async () => {
    // a.org's CA signs an SVID claiming b.org: OpenSSL accepts the chain (a.org's root is trusted),
    // the SPIFFE rule does not: b.org IDs must chain to b.org's roots.
    const rogue = new TestSource(issue(caA, 'spiffe://b.org/server'));
    const rogueSrv = await startEchoServer({ svid: rogue, bundles: rogue, authorizer: authorizeAny() });
    const logger = new MemoryLogger();
    try {
      const client = new TestSource(issue(caA, 'spiffe://a.org/client'));
      await assert.rejects(
        talk({ svid: client, bundles: client, authorizer: authorizeAny(), logger }, rogueSrv.port),
        (e: unknown) => {
          assert.match((e as Error).message, /does not chain to an authority of trust domain "b.org"/);
          return true;
        },
      );
      assert.match(logger.lines.join('\n'), /peer refused/);
    } finally {
      await rogueSrv.close();
    }
  });

  it('an expired client certificate is refused by the OpenSSL chain check and the log says so', async () => {
    const now = Date.now();
    const client = new TestSource(
      issue(caA, 'spiffe://a.org/old', {
        notBefore: new Date(now - 7200_000),
        notAfter: new Date(now - 3600_000),
      }),
    );
    const lines = srv.logger.lines.length;
    await assert.rejects(talk({ svid: client, bundles: client, authorizer: authorizeAny() }, srv.port));
    assert.match(
      srv.logger.lines.slice(lines).join('\n'),
      /peer refused: x509svid: leaf certificate has expired/,
    );
  });

  it('the server switches to a rotated SVID without a restart', async () => {
    const client = new TestSource(issue(caA, 'spiffe://a.org/client'));
    const config = { svid: client, bundles: client, authorizer: authorizeMemberOf(tdA) };
    const before = await talk(config, srv.port);
    const rotated = issue(caA, 'spiffe://a.org/server');
    serverSource.rotate(rotated);
    const afterRotation = await talk(config, srv.port);
    assert.notEqual(afterRotation.serial, before.serial);
    assert.equal(afterRotation.serial, rotated.certificates[0]?.serialNumber);
  });

  it('authorizers: one-of and a custom predicate', async () => {
    const client = new TestSource(issue(caA, 'spiffe://a.org/client'));
    const ok = await talk(
      {
        svid: client,
        bundles: client,
        authorizer: authorizeOneOf('spiffe://a.org/x', 'spiffe://a.org/server'),
      },
      srv.port,
    );
    assert.equal(ok.serverId, 'spiffe://a.org/server');
    await assert.rejects(
      talk(
        {
          svid: client,
          bundles: client,
          authorizer: authorizeIf((id) => id.path.startsWith('/db'), 'database servers'),
        },
        srv.port,
      ),
      /does not satisfy database servers/,
    );
  });
});

describe('https and http2 with SPIFFE mTLS', () => {
  const serverSource = new TestSource(issue(caA, 'spiffe://a.org/web'));
  const clientSource = new TestSource(issue(caA, 'spiffe://a.org/browser'));
  const config: SpiffeTlsConfig = {
    svid: serverSource,
    bundles: serverSource,
    authorizer: authorizeMemberOf(tdA),
  };

  it('https: the handler reads the client’s SPIFFE ID', async () => {
    const server = createSpiffeHttpsServer(config, (req, res) => res.end(String(peerSpiffeId(req.socket))));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const agent = spiffeHttpsAgent({
        svid: clientSource,
        bundles: clientSource,
        authorizer: authorizeId('spiffe://a.org/web'),
      });
      const body = await new Promise<string>((resolve, reject) => {
        https
          .get(
            { host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: '/', agent },
            (res) => {
              let b = '';
              res.on('data', (d) => {
                b += d;
              });
              res.on('end', () => resolve(b));
            },
          )
          .on('error', reject);
      });
      assert.equal(body, 'spiffe://a.org/browser');
      agent.destroy();
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('http2: the stream handler reads the client’s SPIFFE ID', async () => {
    const server = createSpiffeHttp2Server(config);
    server.on('stream', (stream) => {
      stream.respond({ ':status': 200 });
      stream.end(String(peerSpiffeId(stream.session?.socket as tls.TLSSocket)));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      createConnection: () =>
        spiffeTlsConnect(
          { svid: clientSource, bundles: clientSource, authorizer: authorizeId('spiffe://a.org/web') },
          { host: '127.0.0.1', port, ALPNProtocols: ['h2'] },
        ),
    });
    try {
      const req = session.request({ ':path': '/' });
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      await once(req, 'end');
      assert.equal(body, 'spiffe://a.org/browser');
    } finally {
      session.close();
      server.close();
    }
  });
});

describe('grpc-js with SPIFFE mTLS', () => {
  const echo: grpc.ServiceDefinition = {
    Echo: {
      path: '/test.Echo/Echo',
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  };
  let server: grpc.Server;
  let port: number;
  const logger = new MemoryLogger();
  const serverSource = new TestSource(issue(caA, 'spiffe://a.org/grpc'));
  before(async () => {
    server = new grpc.Server();
    server.addService(echo, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        cb(null, Buffer.from(`echo:${call.request}`)),
    });
    const creds = grpcServerCredentials({
      svid: serverSource,
      bundles: serverSource,
      authorizer: authorizeId('spiffe://a.org/good'),
      logger,
    });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', creds, (err, p) => (err === null ? resolve(p) : reject(err))),
    );
  });
  after(() => server.forceShutdown());

  async function call(
    clientId: string,
    authorizer = authorizeId('spiffe://a.org/grpc'),
    ca: TestCa = caA,
  ): Promise<string> {
    const source = new TestSource(issue(ca, clientId));
    const Client = grpc.makeGenericClientConstructor(echo, 'Echo');
    const client = new Client(
      `127.0.0.1:${port}`,
      grpcChannelCredentials({ svid: source, bundles: source, authorizer }),
    );
    try {
      return await new Promise<string>((resolve, reject) =>
        (
          client as unknown as {
            Echo: (b: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void;
          }
        ).Echo(Buffer.from('x'), (e, r) => (e === null ? resolve(String(r)) : reject(e))),
      );
    } finally {
      client.close();
    }
  }

  it('an authorized client calls the server', async () => {
    assert.equal(await call('spiffe://a.org/good'), 'echo:x');
  });

  it('a client whose SVID is signed by an intermediate (the bundle has only the root) is verified with the chain it presented', async () => {
    // As under an upstream authority: [leaf, intermediate], the intermediate not in the bundle.
    const intermediate = caA.createIntermediate();
    assert.equal(
      await call('spiffe://a.org/good', authorizeId('spiffe://a.org/grpc'), intermediate),
      'echo:x',
    );
    await assert.rejects(
      call('spiffe://a.org/bad', authorizeId('spiffe://a.org/grpc'), intermediate),
      (e: unknown) => {
        assert.equal((e as grpc.ServiceError).code, grpc.status.PERMISSION_DENIED);
        assert.match((e as grpc.ServiceError).details, /unexpected ID "spiffe:\/\/a.org\/bad"/);
        return true;
      },
    );
  });

  it('the server refuses an unauthorized client with PERMISSION_DENIED and logs why', async () => {
    await assert.rejects(call('spiffe://a.org/bad'), (e: unknown) => {
      assert.equal((e as grpc.ServiceError).code, grpc.status.PERMISSION_DENIED);
      assert.match((e as grpc.ServiceError).details, /unexpected ID "spiffe:\/\/a.org\/bad"/);
      return true;
    });
    assert.match(logger.lines.join('\n'), /peer "spiffe:\/\/a.org\/bad" refused/);
  });

  it('the client refuses a server with another ID', async () => {
    await assert.rejects(call('spiffe://a.org/good', authorizeId('spiffe://a.org/other')), (e: unknown) => {
      assert.equal((e as grpc.ServiceError).code, grpc.status.UNAVAILABLE);
      return true;
    });
  });

  it('the server presents a rotated SVID to new connections without a restart', async () => {
    const serials: string[] = [];
    const recordServer = authorizeIf((id, chain) => {
      serials.push(chain[0]?.serialNumber ?? '');
      return id.toString() === 'spiffe://a.org/grpc';
    }, 'the gRPC server');
    assert.equal(await call('spiffe://a.org/good', recordServer), 'echo:x');
    const rotated = issue(caA, 'spiffe://a.org/grpc');
    serverSource.rotate(rotated);
    assert.equal(await call('spiffe://a.org/good', recordServer), 'echo:x');
    assert.equal(serials.length, 2);
    assert.notEqual(serials[0], serials[1]);
    assert.equal(serials[1], rotated.certificates[0]?.serialNumber);
  });
});
