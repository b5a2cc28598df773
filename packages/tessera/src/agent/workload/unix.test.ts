// Workload attestation from the kernel: a real Unix socket, real client processes (one as uid
// 65534 when the test runs as root), selectors read from /proc and /etc.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, readFileSync, realpathSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { type PeerCredentials, peerCredentials } from '../../common/peercred.js';
import { attestWorkload, processStartTime } from './attest.js';
import { UnixWorkloadAttestor } from './unix.js';

const isRoot = process.getuid?.() === 0;

describe('unix workload attestation', () => {
  let tmp: TempDir;
  let server: net.Server;
  let path: string;
  before(async () => {
    tmp = await makeTempDir('wl-');
    chmodSync(tmp.path, 0o755);
    path = join(tmp.path, 'wl.sock');
    server = net.createServer();
    await new Promise<void>((r) => server.listen(path, () => r()));
    chmodSync(path, 0o777);
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await tmp.cleanup();
  });

  /** Spawns a node client (as `uid`) that connects and then waits for its stdin to close. */
  async function client(
    uid?: number,
  ): Promise<{ creds: PeerCredentials; done: () => Promise<void>; exited: Promise<unknown> }> {
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const s = require('net').connect(${JSON.stringify(path)}); process.stdin.on('end', () => s.end()); process.stdin.resume();`,
      ],
      { stdio: ['pipe', 'ignore', 'inherit'], ...(uid === undefined ? {} : { uid, gid: uid }) },
    );
    const exited = once(child, 'exit');
    const [socket] = await accepted;
    const creds = peerCredentials(socket);
    return {
      creds,
      exited,
      done: async () => {
        child.stdin?.end();
        await exited;
        socket.destroy();
      },
    };
  }

  it('reads uid, user, gid, group, supplementary groups and the executable path; sha256 only when asked', async (t) => {
    if (!isRoot) {
      t.skip('needs root to run a client as uid 65534');
      return;
    }
    const c = await client(65534);
    try {
      const plain = await attestWorkload(c.creds, [new UnixWorkloadAttestor()]);
      const values = plain.map((s) => `${s.type}:${s.value}`);
      assert.ok(values.includes('unix:uid:65534'), values.join(' '));
      assert.ok(values.includes('unix:gid:65534'), values.join(' '));
      if (readFileSync('/etc/passwd', 'utf8').includes('nobody:x:65534:'))
        assert.ok(values.includes('unix:user:nobody'));
      assert.ok(values.includes(`unix:path:${realpathSync(process.execPath)}`), values.join(' '));
      assert.ok(!values.some((v) => v.startsWith('unix:sha256:')));
      assert.equal(new Set(values).size, values.length, 'no duplicates');
      const hashed = await attestWorkload(c.creds, [new UnixWorkloadAttestor({ sha256: true })]);
      const expected = createHash('sha256')
        .update(readFileSync(realpathSync(process.execPath)))
        .digest('hex');
      assert.ok(hashed.some((s) => s.value === `sha256:${expected}`));
    } finally {
      await c.done();
    }
  });

  it('refuses a caller that is gone (its pid may be reused)', async () => {
    const c = await client();
    await c.done();
    await assert.rejects(
      attestWorkload(c.creds, [new UnixWorkloadAttestor()]),
      new RegExp(`process ${c.creds.pid} exited`),
    );
  });

  it('reads the start time after the last parenthesis of /proc/<pid>/stat', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    assert.equal(processStartTime(1, `42 (a) (b c) ${fields.join(' ')}`), '22');
    assert.equal(processStartTime(1, `7 (node) ${fields.join(' ')}`), '22');
    assert.equal(typeof processStartTime(process.pid), 'string');
    assert.equal(processStartTime(2 ** 22 + 12345), undefined);
  });
});
