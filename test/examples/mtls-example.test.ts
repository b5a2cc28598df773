// The package README's runnable example must keep working: run it and check what it prints.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = fileURLToPath(new URL('../../../packages/spiffe/examples/mtls/run.mjs', import.meta.url));

it('the two-service mTLS example: the allowed client is served, the intruder refused', async () => {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [run], { timeout: 30_000 });
  const out = stdout + stderr;
  assert.match(out, /client spiffe:\/\/example.org\/client: hello spiffe:\/\/example.org\/client/);
  assert.match(out, /client spiffe:\/\/example.org\/intruder: refused/);
  assert.match(out, /peer "spiffe:\/\/example.org\/intruder" refused by the authorizer/);
});
