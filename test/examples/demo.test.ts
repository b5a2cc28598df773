// The README's first command, `npm run demo`, must keep working: run the demo (already built) and
// check that it tells the whole story and exits 0 by itself.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const demo = fileURLToPath(new URL('../../../scripts/demo.mjs', import.meta.url));

it('npm run demo: a first mTLS call, a renewed certificate, the deleted workload refused, exit 0', async () => {
  const started = Date.now();
  const { stdout } = await promisify(execFile)(process.execPath, [demo], { timeout: 90_000 });
  assert.ok(Date.now() - started < 90_000);
  assert.match(stdout, /First successful mTLS call/);
  assert.match(
    stdout,
    /frontend \| call \d+: the backend replied "hello spiffe:\/\/demo\.example\/frontend"/,
  );
  assert.match(stdout, /The frontend's certificate was renewed: serial [0-9A-F]{8}… → [0-9A-F]{8}…/);
  assert.match(stdout, /Deleting the frontend's entry/);
  assert.match(stdout, /backend {2}\| refused a caller: .*has expired .*spiffe:\/\/demo\.example\/frontend/);
  assert.match(stdout, /frontend \| call \d+: FAILED/);
  assert.match(stdout, /The frontend's calls are now refused: its last certificate .* expired/);
  assert.match(stdout, /Done in \d+ s\./);
});
