// Calls the server over mTLS, accepting only a server whose SPIFFE ID is spiffe://example.org/server.
import * as https from 'node:https';
import { authorizeId, spiffeHttpsAgent, X509Source } from '@tessera/spiffe';

const port = Number(process.argv[2]);
const source = await X509Source.create();
const agent = spiffeHttpsAgent({
  svid: source,
  bundles: source,
  authorizer: authorizeId('spiffe://example.org/server'),
});
try {
  const body = await new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve(b));
      })
      .on('error', reject);
  });
  process.stdout.write(`client ${source.getX509Svid().id}: ${body}`);
} catch (err) {
  console.log(`client ${source.getX509Svid().id}: refused: ${err.message}`);
  process.exitCode = 1;
} finally {
  agent.destroy();
  await source.close();
}
