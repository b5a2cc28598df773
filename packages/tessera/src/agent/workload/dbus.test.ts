// The D-Bus client against a real bus: a dbus-daemon started by the test on a socket in a temp dir
// (Debian's dbus-daemon; without it the suite skips loudly, or fails with TESSERA_REQUIRE_INTEROP=1).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, suiteUnavailable, type TempDir } from '@tessera/testkit';
import { isTesseraError } from '../../common/errors.js';
import {
  connectDbus,
  type DbusConnection,
  DbusError,
  decodeMessage,
  encodeCall,
  parseDbusAddress,
  splitSignature,
} from './dbus.js';
import { SystemdWorkloadAttestor } from './systemd.js';

const DBUS_DAEMON = '/usr/bin/dbus-daemon';

function dbusUnavailable(): boolean {
  try {
    accessSync(DBUS_DAEMON, constants.X_OK);
    return false;
  } catch {
    return true;
  }
}

/** A dbus-daemon on `<dir>/bus`, started with a config of its own (no system or session files). */
async function startDbusDaemon(dir: string): Promise<{ address: string; stop(): Promise<void> }> {
  const config = join(dir, 'bus.conf');
  writeFileSync(
    config,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${dir}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`,
  );
  const child: ChildProcess = spawn(DBUS_DAEMON, ['--config-file', config, '--nofork', '--print-address'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  const printed = chunk.toString().trim();
  assert.match(printed, /^unix:path=/);
  return {
    address: `unix:path=${dir}/bus`,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

if (dbusUnavailable()) {
  suiteUnavailable(
    'the D-Bus client',
    `${DBUS_DAEMON} not found; apt-get install -y dbus-daemon, or run test/interop/setup.sh as root`,
    'dbus-daemon is available',
  );
} else {
  describe('the D-Bus client against a real dbus-daemon', () => {
    let tmp: TempDir;
    let bus: Awaited<ReturnType<typeof startDbusDaemon>>;
    let conn: DbusConnection;
    const DBUS = {
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
    };

    before(async () => {
      tmp = await makeTempDir('dbus-');
      bus = await startDbusDaemon(tmp.path);
      conn = await connectDbus(bus.address);
    });
    after(async () => {
      conn?.close();
      await bus?.stop();
      await tmp?.cleanup();
    });

    it('calls methods and reads their replies (s, as, b, u)', async () => {
      const id = await conn.call({ ...DBUS, member: 'GetId' });
      assert.equal(id.signature, 's');
      assert.match(id.body[0] as string, /^[0-9a-f]{32}$/);
      const names = await conn.call({ ...DBUS, member: 'ListNames' });
      assert.equal(names.signature, 'as');
      assert.ok((names.body[0] as string[]).includes('org.freedesktop.DBus'));
      const has = await conn.call({
        ...DBUS,
        member: 'NameHasOwner',
        signature: 's',
        body: ['org.freedesktop.DBus'],
      });
      assert.deepEqual(has.body, [true]);
      // The bus says which pid is behind a name: ours, for the unique name Hello gave us.
      const ours = names.body[0] as string[];
      const unique = ours.filter((n) => n.startsWith(':'));
      assert.ok(unique.length >= 1);
      const pids = await Promise.all(
        unique.map((n) =>
          conn.call({ ...DBUS, member: 'GetConnectionUnixProcessID', signature: 's', body: [n] }),
        ),
      );
      assert.ok(pids.some((p) => p.signature === 'u' && p.body[0] === process.pid));
    });

    it('rejects an ERROR reply with its D-Bus error name', async () => {
      await assert.rejects(conn.call({ ...DBUS, member: 'NoSuchMethod' }), (err: unknown) => {
        assert.ok(err instanceof DbusError);
        assert.equal(err.errorName, 'org.freedesktop.DBus.Error.UnknownMethod');
        return true;
      });
      await assert.rejects(
        conn.call({ destination: 'org.example.Nobody', path: '/', interface: 'org.example.X', member: 'Y' }),
        (err: unknown) =>
          err instanceof DbusError && err.errorName === 'org.freedesktop.DBus.Error.ServiceUnknown',
      );
      // The connection is still good.
      assert.equal((await conn.call({ ...DBUS, member: 'GetId' })).signature, 's');
    });

    it('an aborted call rejects with the signal reason, and the connection stays usable', async () => {
      const controller = new AbortController();
      controller.abort(new Error('too late'));
      await assert.rejects(conn.call({ ...DBUS, member: 'GetId' }, controller.signal), /too late/);
      assert.equal(conn.open, true);
    });

    it('refuses to connect to a missing socket, naming the address', async () => {
      await assert.rejects(connectDbus(`unix:path=${tmp.path}/nothing`), /nothing: ENOENT/);
    });

    it('times out on a peer that never answers the authentication', async () => {
      const silent = createServer(() => undefined);
      const path = join(tmp.path, 'silent.sock');
      silent.listen(path);
      await once(silent, 'listening');
      try {
        await assert.rejects(connectDbus(`unix:path=${path}`, AbortSignal.timeout(200)), /silent\.sock/);
      } finally {
        silent.close();
      }
    });

    it('the systemd attestor on a bus systemd is not on: refused, saying so, and again after the bus restarts', async () => {
      const attestor = new SystemdWorkloadAttestor({ busAddress: bus.address, timeoutMs: 5000 });
      const refusedForServiceUnknown = (err: unknown) => {
        assert.ok(isTesseraError(err, 'ERR_WORKLOAD_ATTESTATION'));
        assert.match(
          err.message,
          /GetUnitByPID\(\d+\) on unix:path=.* failed: org\.freedesktop\.DBus\.Error\.ServiceUnknown/,
        );
        assert.match(err.message, /systemd is not on this bus: set workload_attestors\.systemd\.bus_address/);
        return true;
      };
      try {
        await assert.rejects(attestor.attest({ pid: process.pid, uid: 0, gid: 0 }), refusedForServiceUnknown);
        await bus.stop();
        await assert.rejects(
          attestor.attest({ pid: process.pid, uid: 0, gid: 0 }),
          /ERR|systemd|closed|ECONNRESET/,
        );
        bus = await startDbusDaemon(tmp.path);
        conn = await connectDbus(bus.address);
        // A new connection is made for the next caller.
        await assert.rejects(attestor.attest({ pid: process.pid, uid: 0, gid: 0 }), refusedForServiceUnknown);
      } finally {
        attestor.close();
      }
    });

    it('rejects pending calls when the bus goes away', async () => {
      const other = await connectDbus(bus.address);
      await bus.stop();
      await assert.rejects(other.call({ ...DBUS, member: 'GetId' }), /closed|ECONNRESET|EPIPE/);
      assert.equal(other.open, false);
      await assert.rejects(conn.call({ ...DBUS, member: 'GetId' }), /closed|ECONNRESET|EPIPE/);
    });
  });
}

describe('D-Bus wire format', () => {
  it('splits signatures into complete types and refuses malformed ones', () => {
    assert.deepEqual(splitSignature('a{sv}s(uo)ay'), ['a{sv}', 's', '(uo)', 'ay']);
    assert.throws(() => splitSignature('a'), /ends early/);
    assert.throws(() => splitSignature('(ss'), /not closed/);
    assert.throws(() => splitSignature('z'), /type z/);
  });

  it('parses the addresses it supports and names what is wrong with others', () => {
    assert.deepEqual(parseDbusAddress('unix:path=/run/dbus/system_bus_socket'), {
      path: '/run/dbus/system_bus_socket',
    });
    assert.deepEqual(parseDbusAddress('unix:path=/tmp/a%20b'), { path: '/tmp/a b' });
    assert.deepEqual(parseDbusAddress('unix:abstract=x'), { path: '\0x' });
    assert.match((parseDbusAddress('tcp:host=h,port=1') as { why: string }).why, /not unix:path=/);
    assert.match((parseDbusAddress('unix:path=rel') as { why: string }).why, /must be absolute/);
  });

  it('reads back the call it writes (header fields, padding, body)', () => {
    const bytes = encodeCall(7, {
      destination: 'org.freedesktop.systemd1',
      path: '/org/freedesktop/systemd1',
      interface: 'org.freedesktop.systemd1.Manager',
      member: 'GetUnitByPID',
      signature: 'u',
      body: [1234],
    });
    assert.equal(bytes.length % 4, 0);
    const m = decodeMessage(bytes);
    assert.equal(m.type, 1);
    assert.equal(m.signature, 'u');
    assert.deepEqual(m.body, [1234]);
    assert.throws(() => decodeMessage(bytes.subarray(0, bytes.length - 2)), /truncated|length/);
  });
});
