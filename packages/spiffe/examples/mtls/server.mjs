// An HTTPS service that only answers spiffe://example.org/client, with the SVID the Workload API
// gives this process (SPIFFE_ENDPOINT_SOCKET). Rotation is followed without a restart.
import { authorizeId, createSpiffeHttpsServer, peerSpiffeId, X509Source } from '@tessera/spiffe';

const source = await X509Source.create();
console.log(`server: my SPIFFE ID is ${source.getX509Svid().id}`);

const server = createSpiffeHttpsServer(
  { svid: source, bundles: source, authorizer: authorizeId('spiffe://example.org/client'), logger: console },
  (req, res) => res.end(`hello ${peerSpiffeId(req.socket)}\n`),
);
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () =>
  console.log(`server: listening on ${server.address().port}`),
);

process.on('SIGTERM', () => server.close(() => source.close()));
