// An agent attested on a real test server, for tests: a join token for `name` is created in the
// server's datastore and presented over the agent API; the state is what the agent keeps.
import { X509Certificate } from 'node:crypto';
import type { SpiffeBundle, TrustDomain } from '@tessera/spiffe';
import { createCsr } from '../common/csr.js';
import { generateKeyPairOfType } from '../server/keymanager/generate.js';
import type { RunningServer } from '../server/run.js';
import { ServerClient } from './server-client.js';
import type { AgentState } from './state.js';

export async function attestTestAgent(
  server: RunningServer,
  address: string,
  trustDomain: TrustDomain,
  name: string,
): Promise<AgentState & { id: string }> {
  const token = `${name}-test-agent-token-0123456`;
  await server.datastore.createJoinToken({
    token,
    expiresAt: new Date(Date.now() + 60_000),
    agentName: name,
  });
  const bundle = (await server.datastore.getBundle(trustDomain)) as SpiffeBundle;
  const key = generateKeyPairOfType('ec-p256').privateKey;
  const c = new ServerClient({ address, trustDomain, bundle: bundle.x509Bundle() });
  try {
    const r = await c.attest({ type: 'join_token', payload: Buffer.from(token), csr: createCsr(key) });
    return { id: r.spiffeId, chain: r.svidChain.map((d) => new X509Certificate(d)), key, bundle };
  } finally {
    c.close();
  }
}
