// Runs the example without SPIRE or Tessera: a test CA issues SVIDs, and one in-process Workload API
// per "host" serves them over a Unix socket. Then: the server, an allowed client, and an intruder.
//   npm run build && node packages/spiffe/examples/mtls/run.mjs
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { parseTrustDomain, parseX509SvidRaw, X509Bundle } from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import { TestCa } from '@tessera/testkit';

const here = fileURLToPath(new URL('.', import.meta.url));
const ca = TestCa.create({ trustDomain: 'example.org' });
const bundle = new X509Bundle(parseTrustDomain('example.org'), [ca.root]);

async function host(id) {
  const api = await FakeWorkloadApi.start();
  const s = ca.issueX509Svid(id);
  api.setX509Svids([{ svid: parseX509SvidRaw(s.certificatesDer, s.privateKeyDer), bundle }]);
  return api;
}

function run(script, api, args = []) {
  return spawn(process.execPath, [`${here}/${script}`, ...args], {
    env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: api.address },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

const serverHost = await host('spiffe://example.org/server');
const clientHost = await host('spiffe://example.org/client');
const intruderHost = await host('spiffe://example.org/intruder');
const server = run('server.mjs', serverHost);
let port;
server.stdout.setEncoding('utf8');
for await (const chunk of server.stdout) {
  process.stdout.write(chunk);
  const m = /listening on (\d+)/.exec(chunk);
  if (m) {
    port = m[1];
    break;
  }
}
server.stdout.on('data', (d) => process.stdout.write(d));
for (const h of [clientHost, intruderHost]) {
  const c = run('client.mjs', h, [port]);
  c.stdout.pipe(process.stdout);
  await once(c, 'exit');
}
server.kill('SIGTERM');
await once(server, 'exit');
await Promise.all([serverHost.close(), clientHost.close(), intruderHost.close()]);
