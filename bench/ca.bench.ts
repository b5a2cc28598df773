// npm run bench: the authority's signing rate beside openssl's P-256 sign+verify pair from the same run.
import { createPublicKey, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { parseTrustDomain } from '@tessera/spiffe';
import { X509Authority } from '@tessera/tessera/dist/server/ca/x509-authority.js';
import { createCsr, generateKey } from '@tessera/testkit';
import { bench, opensslSpeed, pairRate, printTable } from './harness.js';

const p256 = opensslSpeed('ecdsap256');
const now = new Date();
const ca = X509Authority.createSelfSigned({
  trustDomain: parseTrustDomain('example.org'),
  keyType: 'ec-p256',
  ttlMs: 24 * 3600_000,
  subject: { country: 'US', organization: 'SPIFFE' },
  now,
});
const key = generateKey();
const csr = createCsr(key.publicKey, key.privateKey);
const sign = await bench('CA: CSR verify + X509-SVID build + sign (P-256, one core)', () =>
  ca.issueX509Svid({
    csr,
    spiffeId: 'spiffe://example.org/workload',
    dnsNames: ['w.example.org'],
    ttlMs: 3600_000,
    now,
  }),
);
// What node:crypto alone needs per issuance, measured here: importing the CSR's P-256 key (JWK, the
// fastest import in Node 20: DER takes ~1.7x as long), verifying the CSR signature and signing the
// leaf. No ASN.1, no certificate: the ceiling any Node CA reaches on one core.
const tbs = Buffer.alloc(400, 7);
const jwk = key.publicKey.export({ format: 'jwk' });
const csrSig = nodeSign('sha256', tbs, key.privateKey);
const floor = await bench('node:crypto floor: P-256 key import (JWK) + verify + sign, no ASN.1', () => {
  const pub = createPublicKey({ key: jwk, format: 'jwk' });
  if (!nodeVerify('sha256', tbs, pub, csrSig)) throw new Error('bench: verify failed');
  nodeSign('sha256', tbs, ca.privateKey);
});
const ok = printTable(
  `Authority signing (openssl speed -seconds 2 -mr ecdsap256: sign ${p256.sign.toFixed(0)}/s, verify ${p256.verify.toFixed(0)}/s)`,
  [
    {
      result: sign,
      reference: { name: 'openssl P-256 sign+verify pair', opsPerSec: pairRate(p256) },
      goal: 0.5,
    },
    { result: floor, reference: { name: 'openssl P-256 sign+verify pair', opsPerSec: pairRate(p256) } },
    { result: sign, reference: { name: 'the node:crypto floor above', opsPerSec: floor.opsPerSec } },
  ],
);
if (!ok) process.exitCode = 1;
