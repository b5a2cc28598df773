import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTempDir } from '@tessera/testkit';
import { isAdminPeer, peerCredentials } from './peercred.js';

const NOBODY = 65534;

/** A net.Server listening on `path` (a Unix socket) or, without one, on 127.0.0.1. */
async function listen(path?: string): Promise<net.Server> {
  const server = net.createServer();
  if (path === undefined) server.listen(0, '127.0.0.1');
  else server.listen(path);
  await once(server, 'listening');
  return server;
}

async function close(server: net.Server): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

test('importing the module does not load koffi', () => {
  const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('/koffi/'));
  assert.deepEqual(loaded, []);
});

test('a client in this process is seen with this process pid, uid and gid', async () => {
  const tmp = await makeTempDir('peercred-');
  const server = await listen(join(tmp.path, 's.sock'));
  try {
    const accepted = once(server, 'connection');
    const client = net.connect(join(tmp.path, 's.sock'));
    const [conn] = (await accepted) as [net.Socket];
    try {
      const creds = peerCredentials(conn);
      assert.deepEqual(creds, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
      assert.equal(isAdminPeer(creds), true);
    } finally {
      conn.destroy();
      client.destroy();
    }
  } finally {
    await close(server);
    await tmp.cleanup();
  }
});

test('a client running as uid 65534 is seen as uid 65534 with its own pid and is not admin', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to spawn a uid-65534 client');
    return;
  }
  const tmp = await makeTempDir('peercred-');
  await chmod(tmp.path, 0o777);
  const path = join(tmp.path, 's.sock');
  const server = await listen(path);
  await chmod(path, 0o777);
  try {
    const accepted = once(server, 'connection');
    // The child connects and stays connected until the server ends the connection.
    const child = spawn(
      process.execPath,
      [
        '-e',
        'const s = require("node:net").connect(process.argv[1]); s.on("end", () => s.end()); s.resume();',
        path,
      ],
      { uid: NOBODY, gid: NOBODY, cwd: tmp.path, env: {}, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const first = await Promise.race([
      accepted.then(([conn]) => conn as net.Socket),
      exited.then(([code, signal]) => {
        throw new Error(`client exited (code ${code}, signal ${signal}) before connecting: ${stderr}`);
      }),
    ]);
    try {
      const creds = peerCredentials(first);
      assert.deepEqual(creds, { pid: child.pid, uid: NOBODY, gid: NOBODY });
      assert.equal(isAdminPeer(creds), false);
      assert.equal(isAdminPeer(creds, NOBODY), true, 'a server running as 65534 admits its own uid');
    } finally {
      first.end();
    }
    const [code] = await exited;
    assert.equal(code, 0, stderr);
  } finally {
    await close(server);
    await tmp.cleanup();
  }
});

test('a TCP socket is refused with an error naming the address family', async () => {
  const server = await listen();
  try {
    const accepted = once(server, 'connection');
    const { port } = server.address() as net.AddressInfo;
    const client = net.connect(port, '127.0.0.1');
    const [conn] = (await accepted) as [net.Socket];
    try {
      assert.throws(() => peerCredentials(conn), {
        name: 'Error',
        message: /^peercred: fd \d+ is not a Unix-domain socket \(address family 2, AF_UNIX is 1\)/,
      });
    } finally {
      conn.destroy();
      client.destroy();
    }
  } finally {
    await close(server);
  }
});

test('a socket without a handle, and a value that is not a socket, are refused', () => {
  assert.throws(() => peerCredentials(new net.Socket()), {
    name: 'Error',
    message: /^peercred: the socket has no handle \(destroyed, closed, or not yet connected\)/,
  });
  assert.throws(() => peerCredentials({} as net.Socket), {
    name: 'TypeError',
    message: 'peercred: peerCredentials expects a net.Socket',
  });
});

test('isAdminPeer admits root and the given uid only', () => {
  assert.equal(isAdminPeer({ pid: 1, uid: 0, gid: 0 }, 1000), true);
  assert.equal(isAdminPeer({ pid: 1, uid: 1000, gid: 1000 }, 1000), true);
  assert.equal(isAdminPeer({ pid: 1, uid: 1001, gid: 1000 }, 1000), false);
});
