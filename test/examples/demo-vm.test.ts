// `npm run demo:vm` must keep working: run the VM demo (already built) and check that it tells the
// whole story — allowed, denied, no certificate, offboarded — and exits 0 by itself.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const demo = fileURLToPath(new URL('../../../scripts/demo-vm.mjs', import.meta.url));

it('npm run demo:vm: allowed GETs with XFCC, 403s for other methods, paths and VMs, no answer without a certificate, offboarding in seconds, exit 0', async () => {
  const started = Date.now();
  const { stdout } = await promisify(execFile)(process.execPath, [demo], { timeout: 60_000 });
  assert.ok(Date.now() - started < 60_000);
  for (const [n, id] of [
    ['catalogue', 'spiffe://example.org/ns/sock-shop/sa/catalogue'],
    ['catalog-client', 'spiffe://example.org/vm/catalog-client'],
    ['other-client', 'spiffe://example.org/vm/other-client'],
  ])
    assert.match(stdout, new RegExp(`${n} proxy +ready: ${id} \\(by `));
  for (const path of ['/catalogue', '/catalogue/42', '/tags'])
    assert.match(
      stdout,
      new RegExp(
        `GET  ${path} +→ 200; the app saw x-forwarded-client-cert:\\n +By=spiffe://example\\.org/ns/sock-shop/sa/catalogue;Hash=[0-9a-f]{64};Subject="[^"]*";URI=spiffe://example\\.org/vm/catalog-client\\n`,
      ),
    );
  assert.match(stdout, /POST \/catalogue +from catalog-client +→ 403 "RBAC: access denied"/);
  assert.match(stdout, /GET \/orders +from catalog-client +→ 403 "RBAC: access denied"/);
  assert.match(stdout, /GET \/catalogue +from other-client +→ 403 "RBAC: access denied"/);
  assert.match(stdout, /A TLS client with no certificate \(GET \/tags\) → no answer/);
  const offboarded = /(\d+) ms after running `tessera entry delete`/.exec(stdout);
  assert.ok(offboarded, stdout);
  assert.ok(Number(offboarded[1]) <= 5_000);
  assert.match(stdout, /no longer gives this workload an identity/);
  assert.match(stdout, /The other VM is unaffected: GET \/tags from other-client → 403/);
  assert.match(stdout, /Done in \d+ s\./);
});
