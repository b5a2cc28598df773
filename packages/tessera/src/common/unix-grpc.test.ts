// gRPC on a Unix socket as both daemons use it: a real grpc-js server on a real socket, called by
// this process and by a client process running as uid 65534; handlers learn who called from the
// kernel (unixPeerOf), whatever the client says.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { createLogger } from './log.js';
import { serveOnUnixSocket, type UnixPeer, unixPeerOf } from './unix-grpc.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const identity = (b: Buffer) => b;

/** A one-method service that answers with what unixPeerOf says about the call, as JSON. */
const whoAmI = {
  definition: {
    Who: {
      path: '/test.Peer/Who',
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  } satisfies grpc.ServiceDefinition,
  implementation: {
    Who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb(null, Buffer.from(JSON.stringify(unixPeerOf(call) ?? null)));
    },
  },
};

const logger = createLogger({ write: () => undefined });

/** Calls Who on `path` from this process. */
async function who(path: string): Promise<UnixPeer | null> {
  const client = new grpc.Client(`unix:${path}`, grpc.credentials.createInsecure());
  try {
    const reply = await new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest('/test.Peer/Who', identity, identity, Buffer.alloc(0), (err, r) =>
        err || r === undefined ? reject(err) : resolve(r),
      ),
    );
    return JSON.parse(reply.toString()) as UnixPeer | null;
  } finally {
    client.close();
  }
}

/** Calls Who on `path` from a child process running as uid and gid 65534. */
async function whoAsNobody(path: string): Promise<{ pid: number; reply: UnixPeer | null }> {
  const grpcPath = createRequire(import.meta.url).resolve('@grpc/grpc-js');
  const script = `
    const grpc = require(process.argv[1]);
    const c = new grpc.Client('unix:' + process.argv[2], grpc.credentials.createInsecure());
    c.makeUnaryRequest('/test.Peer/Who', (x) => x, (x) => x, Buffer.alloc(0), (err, r) => {
      if (err) { console.error(err.message); process.exit(1); }
      process.stdout.write(r); c.close();
    });`;
  const child = spawn(process.execPath, ['-e', script, grpcPath, path], {
    uid: NOBODY,
    gid: NOBODY,
    cwd: '/',
    env: {},
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, `the uid-${NOBODY} client failed: ${err}`);
  return { pid: child.pid ?? -1, reply: JSON.parse(out) as UnixPeer | null };
}

describe('serveOnUnixSocket', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('ugrpc-');
    chmodSync(tmp.path, 0o755); // so that a uid-65534 client can reach the socket's directory
  });
  after(() => tmp.cleanup());

  it('tells a handler the pid, uid and gid of the calling process, from the kernel', async () => {
    const path = join(tmp.path, 'self.sock');
    const server = await serveOnUnixSocket({
      path,
      mode: 0o700,
      dirMode: 0o700,
      what: 'test socket',
      configKey: 'test_socket',
      services: [whoAmI],
      logger,
    });
    try {
      const stat = readFileSync(`/proc/${process.pid}/stat`, 'utf8');
      assert.deepEqual(await who(path), {
        ok: true,
        credentials: { pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() },
        // The start time when it connected: what attestation later checks against (pid reuse).
        startTime: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19],
      });
    } finally {
      await server.close();
    }
  });

  it('a 0777 socket in a directory it creates 0755 (whatever the umask) serves a uid-65534 process, which is told apart', async (t) => {
    if (!isRoot) {
      t.skip(`needs root to spawn a uid-${NOBODY} client`);
      return;
    }
    const path = join(tmp.path, 'run', 'tessera', 'agent.sock');
    const umask = process.umask(0o077);
    let server: Awaited<ReturnType<typeof serveOnUnixSocket>>;
    try {
      server = await serveOnUnixSocket({
        path,
        mode: 0o777,
        dirMode: 0o755,
        what: 'agent socket',
        configKey: 'socket_path',
        services: [whoAmI],
        logger,
      });
    } finally {
      process.umask(umask);
    }
    try {
      assert.equal(server.path, path);
      assert.equal(statSync(path).mode & 0o777, 0o777);
      assert.equal(statSync(join(tmp.path, 'run', 'tessera')).mode & 0o777, 0o755);
      assert.equal(statSync(join(tmp.path, 'run')).mode & 0o777, 0o755);
      const { pid, reply } = await whoAsNobody(path);
      assert.deepEqual(
        { ...reply, startTime: undefined },
        {
          ok: true,
          credentials: { pid, uid: NOBODY, gid: NOBODY },
          startTime: undefined,
        },
      );
      assert.match(String((reply as { startTime?: string }).startTime), /^\d+$/);
      const self = await who(path);
      assert.equal(
        self?.ok === true && self.credentials.pid,
        process.pid,
        'each connection has its own peer',
      );
    } finally {
      await server.close();
    }
  });

  it('knows nothing of calls on other transports, nor of a tag a caller makes up', () => {
    assert.equal(unixPeerOf({ getPeer: () => '127.0.0.1:50051' }), undefined);
    assert.equal(
      unixPeerOf({ getPeer: () => 'tessera-unix#00000000-0000-0000-0000-000000000000' }),
      undefined,
    );
  });

  it('a socket path over 107 bytes is one ERR_STARTUP naming the path; close is idempotent and frees the path', async () => {
    const long = join(tmp.path, `${'x'.repeat(120)}.sock`);
    await assert.rejects(
      serveOnUnixSocket({
        path: long,
        mode: 0o777,
        dirMode: 0o755,
        what: 'agent socket',
        configKey: 'socket_path',
        services: [whoAmI],
        logger,
      }),
      {
        code: 'ERR_STARTUP',
        message: `agent socket ${long}: the path is ${Buffer.byteLength(long)} bytes long; Unix socket paths are limited to 107 bytes`,
      },
    );
    const path = join(tmp.path, 'again.sock');
    const opts = {
      path,
      mode: 0o777,
      dirMode: 0o755,
      what: 'agent socket',
      configKey: 'socket_path',
      services: [whoAmI],
      logger,
    };
    const first = await serveOnUnixSocket(opts);
    await Promise.all([first.close(), first.close()]);
    await first.close();
    assert.throws(() => statSync(path), /ENOENT/);
    const second = await serveOnUnixSocket(opts);
    try {
      assert.equal((await who(path))?.ok, true);
    } finally {
      await second.close();
    }
  });
});
