/**
 * Vectors made by the Tessera server's own authority code (not the test kit): X509-SVIDs from its
 * CA (self-signed, and as an intermediate under an upstream root), JWT-SVIDs from its JWT key, and
 * the trust bundle document as the datastore stores and the agent API serves it. go-spiffe and
 * py-spiffe must accept them exactly as we do.
 */
import { generateKeyPairSync } from 'node:crypto';
import { parseTrustDomain, SpiffeBundle } from '@tessera/spiffe';
import { JwtAuthority } from '@tessera/tessera/dist/server/ca/jwt-authority.js';
import { X509Authority } from '@tessera/tessera/dist/server/ca/x509-authority.js';
import { createCsr, TestCa } from '@tessera/testkit';
import type { Vector } from './vectors.js';

const TD = 'example.org';
const HOUR = 3600_000;

export async function tesseraVectors(): Promise<Vector[]> {
  const td = parseTrustDomain(TD);
  const now = new Date();
  const subject = { country: 'US', organization: 'SPIFFE' };
  const selfSigned = X509Authority.createSelfSigned({
    trustDomain: td,
    keyType: 'ec-p256',
    ttlMs: 24 * HOUR,
    subject,
    now,
  });
  const rsa = X509Authority.createSelfSigned({
    trustDomain: td,
    keyType: 'rsa-2048',
    ttlMs: 24 * HOUR,
    subject,
    now,
  });
  const org = TestCa.create({ trustDomain: TD });
  const underUpstream = X509Authority.createSigned({
    trustDomain: td,
    keyType: 'ec-p384',
    ttlMs: 24 * HOUR,
    subject,
    now,
    upstream: { certificate: org.certificate, privateKey: org.privateKey },
  });
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyPem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const csr = createCsr(key.publicKey, key.privateKey);
  const issue = (ca: X509Authority, dnsNames: string[] = []) =>
    ca
      .issueX509Svid({ csr, spiffeId: `spiffe://${TD}/tessera/web`, dnsNames, ttlMs: HOUR, now })
      .chain.map((c) => c.toString())
      .join('');
  const x509 = (name: string, chainPem: string, roots: string): Vector[] => [
    {
      id: `x509svid-verify/valid-tessera-${name}`,
      kind: 'x509svid-verify',
      chainPem,
      bundles: { [TD]: roots },
    },
    { id: `x509svid-parse/valid-tessera-${name}`, kind: 'x509svid-parse', chainPem, keyPem },
  ];
  const jwtKey = JwtAuthority.generate({
    trustDomain: td,
    keyType: 'ec-p256',
    notAfter: new Date(now.getTime() + HOUR),
  });
  const jwtRsa = JwtAuthority.generate({
    trustDomain: td,
    keyType: 'rsa-2048',
    notAfter: new Date(now.getTime() + HOUR),
  });
  const bundle = new SpiffeBundle({
    trustDomain: td,
    x509Authorities: [selfSigned.certificate, rsa.certificate],
    jwtAuthorities: [
      [jwtKey.kid, jwtKey.publicKey],
      [jwtRsa.kid, jwtRsa.publicKey],
    ],
    sequenceNumber: 7n,
    refreshHint: 300,
  });
  const jwks = bundle.jwtBundle().marshal().toString();
  const jwt = async (name: string, ca: JwtAuthority, audience: string[]): Promise<Vector> => ({
    id: `jwtsvid-validate/valid-tessera-${name}`,
    kind: 'jwtsvid-validate',
    token: (await ca.mint({ spiffeId: `spiffe://${TD}/tessera/web`, audience, ttlMs: 5 * 60_000, now }))
      .token,
    bundles: { [TD]: jwks },
    audience: [audience[0] as string],
  });
  return [
    ...x509('self-signed-p256', issue(selfSigned, ['web.example.org']), selfSigned.certificate.toString()),
    ...x509('self-signed-rsa', issue(rsa), rsa.certificate.toString()),
    ...x509('upstream-intermediate', issue(underUpstream), org.certificate.toString()),
    await jwt('es256', jwtKey, ['payments']),
    await jwt('rs256-two-audiences', jwtRsa, ['payments', 'ledger']),
    {
      id: 'spiffebundle/valid-tessera-served',
      kind: 'spiffebundle',
      trustDomain: TD,
      data: bundle.marshal(),
    },
    { id: 'jwtbundle/valid-tessera-served', kind: 'jwtbundle', trustDomain: TD, data: jwks },
  ];
}
