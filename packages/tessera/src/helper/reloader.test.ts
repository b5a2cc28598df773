import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTempDir } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../common/errors.js';
import { exitStatus, runReloadCommand, signalPidFile } from './reloader.js';

const reloadError = (re: RegExp) => (err: unknown) =>
  isTesseraError(err, TesseraErrorCode.HELPER_RELOAD) && re.test(err.message);

test('a pid file: signalled when its process runs; missing, garbage or stale each said plainly', async () => {
  const tmp = await makeTempDir('rl-');
  // A process that reports the SIGHUP it receives.
  const child = spawn(process.execPath, [
    '-e',
    "process.on('SIGHUP', () => { console.log('hup'); process.exit(0); }); console.log('up'); setInterval(() => {}, 1000);",
  ]);
  try {
    child.stdout.setEncoding('utf8');
    await once(child.stdout, 'data');
    const pidFile = join(tmp.path, 'app.pid');
    assert.throws(
      () => signalPidFile(pidFile, 'SIGHUP'),
      reloadError(/app\.pid does not exist: start the program first/),
    );
    writeFileSync(pidFile, 'not a pid\n');
    assert.throws(() => signalPidFile(pidFile, 'SIGHUP'), reloadError(/does not hold a process id/));
    writeFileSync(pidFile, `${child.pid}\n`);
    const exited = once(child, 'exit');
    const heard = once(child.stdout, 'data');
    assert.equal(signalPidFile(pidFile, 'SIGHUP'), child.pid);
    assert.equal(String((await heard)[0]).trim(), 'hup');
    await exited;
    assert.throws(
      () => signalPidFile(pidFile, 'SIGHUP'),
      reloadError(/no process has pid \d+ .*a stale pid file/),
    );
  } finally {
    child.kill('SIGKILL');
    await tmp.cleanup();
  }
});

test('a reload command: exit 0 is success; a failure carries its status and output', async () => {
  await runReloadCommand(process.execPath, ['-e', 'process.exit(0)'], 10_000);
  await assert.rejects(
    runReloadCommand(
      process.execPath,
      ['-e', 'console.error("pg_ctl: no server running"); process.exit(3)'],
      10_000,
    ),
    reloadError(/exited with status 3: pg_ctl: no server running/),
  );
  await assert.rejects(runReloadCommand('/nonexistent/reload', [], 10_000), reloadError(/was not found/));
  await assert.rejects(
    runReloadCommand(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], 200),
    reloadError(/did not finish within reload_timeout \(200 ms\)/),
  );
});

test('exit status as a shell reports it', () => {
  assert.equal(exitStatus({ code: 7, signal: null }), 7);
  assert.equal(exitStatus({ code: null, signal: 'SIGTERM' }), 143);
  assert.equal(exitStatus({ code: null, signal: 'SIGKILL' }), 137);
});
