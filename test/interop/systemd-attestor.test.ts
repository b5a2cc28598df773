/**
 * The `systemd` workload attestor against a real systemd: `systemd --user` in a cgroup and
 * namespaces of its own (systemd-user.ts), asked over its user bus and over its private socket, with
 * a real server and agent in this process. Workloads are the go-spiffe peer run as transient units
 * (systemd-run --user): the unit an entry names by systemd:id gets that SVID, another unit is
 * refused, a process in none of the manager's units gets no systemd selectors, and an unreachable or
 * silent bus refuses the caller. Without systemd, root or the peer (test/interop/setup.sh) the suite
 * is skipped loudly, or fails with TESSERA_REQUIRE_INTEROP=1.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { attestWorkload } from '@tessera/tessera/dist/agent/workload/attest.js';
import { SystemdWorkloadAttestor } from '@tessera/tessera/dist/agent/workload/systemd.js';
import { isTesseraError } from '@tessera/tessera/dist/common/errors.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { GO_STATIC_BINARY } from './dockerd.js';
import { type SystemdUser, startSystemdUser, systemdUnavailable } from './systemd-user.js';
import type { ErrorLine, GoWorkloadLine, X509UpdateLine } from './workload-peers.js';

const skip = systemdUnavailable('systemd workload attestor', [GO_STATIC_BINARY]);
const AGENT_ID = 'spiffe://example.org/tessera/agent/join_token/systemd-host';
const quiet = createLogger({ level: 'error', write: () => undefined });
const text = (s: readonly { type: string; value: string }[]) => s.map((x) => `${x.type}:${x.value}`);

describe('the systemd workload attestor against systemd --user', { skip, timeout: 180_000 }, () => {
  let tmp: TempDir;
  let systemd: SystemdUser;
  let server: RunningServer;
  let agent: RunningAgent;
  let socket: string;

  before(async () => {
    tmp = await makeTempDir('systemd-attestor-');
    systemd = await startSystemdUser(join(tmp.path, 'systemd'));
    server = await startTestServer(join(tmp.path, 'server'), []);
    await server.datastore.createJoinToken({
      token: 'systemd-host-token-012345',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'systemd-host',
    });
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/billing',
      parentId: AGENT_ID,
      selectors: [{ type: 'systemd', value: 'id:tessera-billing.service' }],
    });
    socket = join(tmp.path, 'agent.sock');
    agent = await startTestAgent(server, join(tmp.path, 'agent'), 'systemd-host-token-012345', quiet, {
      socketPath: socket,
      config: [
        'workload_attestors:',
        '  systemd:',
        `    bus_address: ${systemd.busAddress}`,
        '    timeout: 3s',
      ],
    });
  });

  after(async () => {
    await agent?.stop();
    await server?.stop();
    await systemd?.stop();
    await tmp?.cleanup();
  });

  /** The go-spiffe peer as transient unit `unit`; resolves with its lines once the unit has exited. */
  const runUnit = async (unit: string, timeoutS: number): Promise<GoWorkloadLine[]> => {
    const out = join(tmp.path, `${unit}.out`);
    await systemd.run(unit, [GO_STATIC_BINARY, 'workload', '--updates', '1', '--timeout', `${timeoutS}s`], {
      env: { SPIFFE_ENDPOINT_SOCKET: `unix://${socket}` },
      stdout: out,
    });
    return (await readFile(out, 'utf8'))
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as GoWorkloadLine);
  };

  test('a process of a unit: systemd:id and systemd:fragment_path, over the user bus and the private socket', async () => {
    const unit = 'tessera-sleeper.service';
    const sleeper = spawn('systemd-run', ['--user', '--quiet', `--unit=${unit}`, '/bin/sleep', '60'], {
      env: { ...process.env, XDG_RUNTIME_DIR: systemd.runtimeDir },
      stdio: 'ignore',
    });
    await once(sleeper, 'exit');
    try {
      const pid = Number((await systemd.systemctl(['show', '-p', 'MainPID', '--value', unit])).trim());
      assert.ok(pid > 0);
      const want = [
        `systemd:id:${unit}`,
        `systemd:fragment_path:${systemd.runtimeDir}/systemd/transient/${unit}`,
      ];
      // A new connection each time: systemd's private socket once stalled every connection after
      // the first (dbus.ts, the nudge).
      for (const busAddress of [
        systemd.busAddress,
        systemd.privateAddress,
        systemd.privateAddress,
        systemd.privateAddress,
      ]) {
        const attestor = new SystemdWorkloadAttestor({ busAddress });
        try {
          assert.deepEqual(text(await attestWorkload({ pid, uid: 0, gid: 0 }, [attestor])), want, busAddress);
        } finally {
          attestor.close();
        }
      }
    } finally {
      await systemd.systemctl(['stop', unit]);
    }
  });

  test('a process in none of the manager units gets no systemd selectors', async () => {
    const attestor = new SystemdWorkloadAttestor({ busAddress: systemd.busAddress });
    try {
      assert.deepEqual(await attestor.attest({ pid: process.pid, uid: 0, gid: 0 }), []);
    } finally {
      attestor.close();
    }
  });

  test('the unit an entry names by systemd:id gets its SVID', async () => {
    const lines = await runUnit('tessera-billing.service', 30); // it exits once it has the SVID
    const x509 = lines.find((l): l is X509UpdateLine => l.kind === 'x509');
    assert.ok(x509, JSON.stringify(lines));
    assert.deepEqual(
      x509.svids.map((s) => s.spiffe_id),
      ['spiffe://example.org/billing'],
    );
  });

  test('another unit is refused: no identity', async () => {
    const lines = await runUnit('tessera-other.service', 4); // refused: it retries until then
    assert.equal(
      lines.find((l) => l.kind === 'x509'),
      undefined,
    );
    assert.equal(
      lines.find((l): l is ErrorLine => l.kind === 'error')?.code,
      'PermissionDenied',
      JSON.stringify(lines),
    );
  });

  test('a bus that is not there, or does not answer: the caller is refused with the address', async () => {
    const gone = new SystemdWorkloadAttestor({ busAddress: `unix:path=${tmp.path}/no-bus` });
    await assert.rejects(gone.attest({ pid: process.pid, uid: 0, gid: 0 }), (err: unknown) => {
      assert.ok(isTesseraError(err, 'ERR_WORKLOAD_ATTESTATION'));
      assert.match(err.message, /cannot connect to D-Bus at unix:path=.*no-bus .*ENOENT/);
      assert.match(err.message, /workload_attestors\.systemd\.bus_address/);
      return true;
    });
    const silent = createServer(() => undefined);
    const path = join(tmp.path, 'silent.sock');
    silent.listen(path);
    await once(silent, 'listening');
    const slow = new SystemdWorkloadAttestor({ busAddress: `unix:path=${path}`, timeoutMs: 300 });
    try {
      await assert.rejects(slow.attest({ pid: process.pid, uid: 0, gid: 0 }), (err: unknown) => {
        assert.ok(isTesseraError(err, 'ERR_WORKLOAD_ATTESTATION'));
        assert.match(
          err.message,
          /no answer from D-Bus at unix:path=.*silent\.sock about process \d+ within 300ms/,
        );
        return true;
      });
    } finally {
      slow.close();
      silent.close();
    }
  });
});
