// Workload attestation from the kernel: a real Unix socket served by serveOnUnixSocket, real client
// processes (one as uid 65534 when the test runs as root), selectors read from /proc and /etc.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { createLogger } from '../../common/log.js';
import type { PeerCredentials } from '../../common/peercred.js';
import { serveOnUnixSocket, type UnixGrpcServer, unixPeerOf } from '../../common/unix-grpc.js';
import type { Selector } from '../../server/datastore/types.js';
import { attestWorkload, parseStartTime, processStartTime } from './attest.js';
import type { WorkloadAttestor } from './types.js';
import { UnixWorkloadAttestor } from './unix.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const text = (selectors: readonly Selector[]) => selectors.map((s) => `${s.type}:${s.value}`);
const identity = (b: Buffer) => b;

describe('unix workload attestation', () => {
  let tmp: TempDir;
  let server: UnixGrpcServer;
  let path: string;
  /** The credentials unixPeerOf reported for each Hello call, by the caller's pid. */
  const peers = new Map<number, PeerCredentials>();
  const waiting = new Map<number, () => void>();

  before(async () => {
    tmp = await makeTempDir('wl-');
    chmodSync(tmp.path, 0o755);
    path = join(tmp.path, 'agent.sock');
    server = await serveOnUnixSocket({
      path,
      mode: 0o777,
      dirMode: 0o755,
      what: 'agent socket',
      configKey: 'socket_path',
      services: [
        {
          definition: {
            Hello: {
              path: '/test.Workload/Hello',
              requestStream: false,
              responseStream: false,
              requestSerialize: identity,
              requestDeserialize: identity,
              responseSerialize: identity,
              responseDeserialize: identity,
            },
          },
          implementation: {
            Hello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
              const peer = unixPeerOf(call);
              if (peer?.ok === true) {
                peers.set(peer.credentials.pid, peer.credentials);
                waiting.get(peer.credentials.pid)?.();
              }
              cb(null, Buffer.alloc(0));
            },
          },
        },
      ],
      logger: createLogger({ write: () => undefined }),
    });
  });
  after(async () => {
    await server.close();
    await tmp.cleanup();
  });

  /**
   * Spawns a node process (as `uid` and gid `uid`, with supplementary `groups`, if given) that calls Hello on the socket and then
   * waits until its stdin closes; resolves with the credentials the server saw for it.
   */
  async function workload(
    opts: { uid?: number; groups?: number[] } = {},
  ): Promise<{ child: ChildProcess; creds: PeerCredentials; stop(): Promise<void> }> {
    const grpcPath = createRequire(import.meta.url).resolve('@grpc/grpc-js');
    const script = `
      const groups = JSON.parse(process.argv[3]);
      if (groups !== null) process.setgroups(groups);
      const grpc = require(process.argv[1]);
      const c = new grpc.Client('unix:' + process.argv[2], grpc.credentials.createInsecure());
      c.makeUnaryRequest('/test.Workload/Hello', (x) => x, (x) => x, Buffer.alloc(0), (err) => {
        if (err) { console.error(err.message); process.exit(1); }
        process.stdin.on('end', () => { c.close(); process.exit(0); });
        process.stdin.resume();
      });`;
    const child = spawn(
      process.execPath,
      ['-e', script, grpcPath, path, JSON.stringify(opts.groups ?? null)],
      {
        stdio: ['pipe', 'ignore', 'inherit'],
        cwd: '/',
        ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid }),
      },
    );
    const exited = once(child, 'exit');
    const pid = child.pid;
    assert.ok(pid !== undefined);
    const seen = new Promise<void>((resolve) => waiting.set(pid, resolve));
    await Promise.race([
      seen,
      exited.then(([code]) => assert.fail(`the workload exited (${code}) before it called Hello`)),
    ]);
    const creds = peers.get(pid);
    assert.ok(creds !== undefined);
    return {
      child,
      creds,
      async stop() {
        child.stdin?.end();
        await exited;
      },
    };
  }

  it('a uid-65534 process: uid, user, gid, group, path from the kernel; sha256 only when asked', async (t) => {
    if (!isRoot) {
      t.skip(`needs root to run a workload as uid ${NOBODY}; this test runs as uid ${process.getuid?.()}`);
      return;
    }
    const w = await workload({ uid: NOBODY });
    try {
      assert.deepEqual(w.creds, { pid: w.child.pid, uid: NOBODY, gid: NOBODY });
      const plain = text(await attestWorkload(w.creds, [new UnixWorkloadAttestor({ sha256: false })]));
      assert.ok(plain.includes(`unix:uid:${NOBODY}`), plain.join(' '));
      assert.ok(plain.includes(`unix:gid:${NOBODY}`), plain.join(' '));
      const passwd = readFileSync('/etc/passwd', 'utf8');
      if (/^nobody:[^:]*:65534:/m.test(passwd))
        assert.ok(plain.includes('unix:user:nobody'), plain.join(' '));
      const group = /^([^:]+):[^:]*:65534:/m.exec(readFileSync('/etc/group', 'utf8'))?.[1];
      if (group !== undefined) assert.ok(plain.includes(`unix:group:${group}`), plain.join(' '));
      assert.ok(plain.includes(`unix:path:${realpathSync(process.execPath)}`), plain.join(' '));
      // spawn({ uid, gid }) drops the supplementary groups (setgroups(0)).
      assert.ok(!plain.some((s) => s.startsWith('unix:supplementary_gid:')), plain.join(' '));
      assert.ok(!plain.some((s) => s.startsWith('unix:sha256:')), plain.join(' '));
      assert.equal(new Set(plain).size, plain.length, 'no duplicates');

      const expected = createHash('sha256')
        .update(readFileSync(realpathSync(process.execPath)))
        .digest('hex');
      const attestor = new UnixWorkloadAttestor({ sha256: true });
      const [first, second] = await Promise.all([
        attestWorkload(w.creds, [attestor]),
        attestWorkload(w.creds, [attestor]),
      ]);
      assert.ok(text(first).includes(`unix:sha256:${expected}`), text(first).join(' '));
      assert.deepEqual(first, second);
      assert.deepEqual(await attestWorkload(w.creds, [attestor]), first, 'from the cache, the same');
    } finally {
      await w.stop();
    }
  });

  it('supplementary groups from /proc, with the names the group file has; names missing from the passwd and group files are not emitted', async (t) => {
    // Setting a process's groups needs root; otherwise the child has this process's own.
    const groups = isRoot ? [4242, 4343] : undefined;
    if (groups === undefined) t.diagnostic('not root: checking the inherited supplementary groups only');
    const w = await workload(groups === undefined ? {} : { groups });
    try {
      const passwdFile = join(tmp.path, 'passwd');
      const groupFile = join(tmp.path, 'group');
      writeFileSync(passwdFile, 'someone:x:4242:4242::/:/bin/false\n');
      writeFileSync(groupFile, '# comment\n\ngrp:x:4242:\ngrp-again:x:4242:\nbroken:x:notanumber:\n');
      const selectors = text(
        await attestWorkload(w.creds, [new UnixWorkloadAttestor({ passwdFile, groupFile })]),
      );
      const uid = process.getuid?.() ?? -1;
      const gid = process.getgid?.() ?? -1;
      // Without setgroups the child has this process's groups, as /proc lists them (not
      // process.getgroups(), which adds the egid).
      const inherited = (
        readFileSync('/proc/self/status', 'utf8')
          .split('\n')
          .find((l) => l.startsWith('Groups:'))
          ?.slice('Groups:'.length)
          .trim()
          .split(/\s+/) ?? []
      )
        .filter((g) => g !== '')
        .map(Number);
      const supplementary = (groups ?? inherited).flatMap((g) => [
        `unix:supplementary_gid:${g}`,
        ...(g === 4242 ? ['unix:supplementary_group:grp'] : []),
      ]);
      assert.deepEqual(selectors, [
        `unix:uid:${uid}`,
        `unix:gid:${gid}`,
        ...supplementary,
        `unix:path:${realpathSync(process.execPath)}`,
      ]);
    } finally {
      await w.stop();
    }
  });

  it('refuses a caller that exited before attestation (its pid may be reused)', async () => {
    const w = await workload();
    await w.stop(); // 'exit' has fired and node has reaped it: /proc/<pid> is gone
    await assert.rejects(attestWorkload(w.creds, [new UnixWorkloadAttestor()]), {
      message: `workload attestation: process ${w.creds.pid} exited or was replaced during attestation`,
    });
  });

  it('refuses a caller that exits while the attestors run, and one whose attestor failed because it went', async () => {
    const exitsMidway = await workload();
    const killer: WorkloadAttestor = {
      type: 'test',
      async attest() {
        await exitsMidway.stop();
        return [{ type: 'test', value: 'x' }];
      },
    };
    await assert.rejects(attestWorkload(exitsMidway.creds, [new UnixWorkloadAttestor(), killer]), {
      message: `workload attestation: process ${exitsMidway.creds.pid} exited or was replaced during attestation`,
    });

    const failsAfterExit = await workload();
    const stumbles: WorkloadAttestor = {
      type: 'test',
      async attest(caller) {
        await failsAfterExit.stop();
        readFileSync(`/proc/${caller.pid}/status`);
        return [];
      },
    };
    const err = await attestWorkload(failsAfterExit.creds, [stumbles]).then(
      () => assert.fail('attested a process that is gone'),
      (e: Error) => e,
    );
    assert.equal(
      err.message,
      `workload attestation: process ${failsAfterExit.creds.pid} exited or was replaced during attestation`,
    );
    assert.match(String((err.cause as Error).message), /ENOENT/);
  });

  it("an attestor's own failure is passed on; selectors of several attestors are merged without duplicates", async () => {
    const w = await workload();
    try {
      const broken: WorkloadAttestor = {
        type: 'broken',
        attest: () => Promise.reject(new Error('broken: no answer')),
      };
      await assert.rejects(attestWorkload(w.creds, [new UnixWorkloadAttestor(), broken]), {
        message: 'broken: no answer',
      });
      const echo: WorkloadAttestor = {
        type: 'echo',
        attest: async (c) => [
          { type: 'unix', value: `uid:${c.uid}` },
          { type: 'echo', value: 'a' },
          { type: 'echo', value: 'a' },
        ],
      };
      const selectors = text(await attestWorkload(w.creds, [new UnixWorkloadAttestor(), echo]));
      assert.equal(new Set(selectors).size, selectors.length, selectors.join(' '));
      assert.equal(selectors.filter((s) => s === `unix:uid:${w.creds.uid}`).length, 1);
      assert.equal(selectors.at(-1), 'echo:a');
    } finally {
      await w.stop();
    }
  });

  it('refuses a caller whose process is not the one that connected (start time recorded at accept)', async () => {
    const w = await workload();
    try {
      const now = await processStartTime(w.creds.pid);
      assert.ok(now !== undefined);
      assert.ok(
        (await attestWorkload(w.creds, [new UnixWorkloadAttestor()], { acceptedStartTime: now })).length > 0,
      );
      await assert.rejects(
        attestWorkload(w.creds, [new UnixWorkloadAttestor()], { acceptedStartTime: `${now}0` }),
        new RegExp(`process ${w.creds.pid} exited or was replaced`),
      );
    } finally {
      await w.stop();
    }
  });

  it('reads the start time after the last parenthesis of /proc/<pid>/stat', async () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3)).join(' ');
    assert.equal(parseStartTime(`42 (a) (b c) ${fields}\n`), '22');
    assert.equal(parseStartTime(`42 (x) (y) ${fields}`), '22');
    assert.equal(parseStartTime(`7 (node) ${fields}`), '22');
    assert.equal(parseStartTime(`7 ()) ${fields}`), '22');
    for (const bad of [
      '',
      '7 node 3 4 5',
      `7 (node) ${fields.split(' ').slice(0, 10).join(' ')}`,
      '7 (x) ) 1 2',
    ])
      assert.throws(
        () => parseStartTime(bad),
        /^Error: workload attestation: cannot read a start time \(field 22\)/,
      );
    // The live one: a process named ") (" by itself, through /proc.
    const named = spawn(
      process.execPath,
      ['-e', 'process.title = ") (x"; process.stdout.write("ok"); setTimeout(() => {}, 60000)'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await once(named.stdout, 'data');
      const stat = readFileSync(`/proc/${named.pid}/stat`, 'utf8');
      assert.ok(stat.includes('() (x)'), stat);
      const start = await processStartTime(named.pid ?? -1);
      assert.match(start ?? '', /^\d+$/);
      assert.equal(start, stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    } finally {
      named.kill();
      await once(named, 'exit');
    }
    assert.match((await processStartTime(process.pid)) ?? '', /^\d+$/);
    assert.equal(await processStartTime(2 ** 22 + 12345), undefined);
  });
});
