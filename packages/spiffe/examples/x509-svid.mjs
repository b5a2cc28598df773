// Prints this process's X509-SVID, as the Workload API hands it out, then exits. The Workload API
// is the one at SPIFFE_ENDPOINT_SOCKET, else the Tessera agent's default, /run/tessera/agent.sock.
import { X509Source } from '@tessera/spiffe';

// While it waits, the source says why in a process warning (e.g. no registration entry matches
// this process, or no socket at the path); after 10 s it gives up with ERR_SOURCE_TIMEOUT.
const source = await X509Source.create({ readyTimeoutMs: 10_000 });
try {
  const svid = source.getX509Svid();
  const bundle = source.getX509BundleForTrustDomain(svid.id.trustDomain);
  console.log(`SPIFFE ID: ${svid.id}`);
  console.log(`expires:   ${svid.expiresAt.toISOString()}`);
  console.log(`bundle:    ${bundle.authorities.length} root(s) for ${svid.id.trustDomain}`);
} finally {
  await source.close(); // stops the watch; an open source keeps the process running
}
