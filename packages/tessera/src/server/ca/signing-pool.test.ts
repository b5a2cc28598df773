import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { parseTrustDomain, verifyX509Svid, X509Bundle } from '@tessera/spiffe';
import { createCsr, generateKey } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { SigningPool } from './signing-pool.js';
import { X509Authority } from './x509-authority.js';

const td = parseTrustDomain('example.org');
const HOUR = 3600_000;

function authority(now: Date): X509Authority {
  return X509Authority.createSelfSigned({
    trustDomain: td,
    keyType: 'ec-p256',
    ttlMs: 24 * HOUR,
    subject: { country: 'US', organization: 'SPIFFE' },
    now,
  });
}

describe('SigningPool', () => {
  const pool = new SigningPool(2);
  after(() => pool.close());

  it('signs a batch across threads, in order, each item with its own SVID or its own error', async () => {
    const now = new Date();
    const ca = authority(now);
    const keys = Array.from({ length: 40 }, () => generateKey());
    const items = keys.map((k, i) => ({
      csr: i === 17 ? Buffer.from('garbage') : createCsr(k.publicKey, k.privateKey),
      spiffeId: `spiffe://example.org/w/${i}`,
      dnsNames: i === 3 ? ['three.example.org'] : [],
      ttlMs: HOUR,
    }));
    const out = await pool.issue(ca, items, now);
    assert.equal(out.length, 40);
    const serials = new Set<string>();
    out.forEach((o, i) => {
      if (i === 17) {
        assert.ok(isTesseraError(o, TesseraErrorCode.CSR_INVALID), String(o));
        return;
      }
      assert.ok(!(o instanceof Error), String(o));
      const leaf = new X509Certificate(o.chainDer[0] as Buffer);
      assert.equal(o.serial, leaf.serialNumber);
      serials.add(o.serial);
      assert.ok(leaf.publicKey.equals(keys[i]?.publicKey as never), `item ${i} certifies its own key`);
      assert.equal(verifyX509Svid(o.chainDer, new X509Bundle(td, [ca.certificate])).id.path, `/w/${i}`);
    });
    assert.equal(serials.size, 39);
    assert.match(
      new X509Certificate((out[3] as unknown as { chainDer: Buffer[] }).chainDer[0] as Buffer)
        .subjectAltName ?? '',
      /DNS:three.example.org/,
    );
  });

  it('follows a new authority (rotation) and keeps signing with the one it is given', async () => {
    const now = new Date();
    const cas = [authority(now), authority(now), authority(now)];
    for (const ca of [...cas, cas[0] as X509Authority]) {
      const k = generateKey();
      const items = Array.from({ length: 16 }, () => ({
        csr: createCsr(k.publicKey, k.privateKey),
        spiffeId: 'spiffe://example.org/r',
        dnsNames: [],
        ttlMs: HOUR,
      }));
      for (const o of await pool.issue(ca, items, now)) {
        assert.ok(!(o instanceof Error), String(o));
        assert.ok(new X509Certificate(o.chainDer[0] as Buffer).checkIssued(ca.certificate));
      }
    }
  });

  it('small batches and a pool of size 0 sign on the calling thread', async () => {
    const now = new Date();
    const ca = authority(now);
    const k = generateKey();
    const none = new SigningPool(0);
    const item = {
      csr: createCsr(k.publicKey, k.privateKey),
      spiffeId: 'spiffe://example.org/s',
      dnsNames: [],
      ttlMs: HOUR,
    };
    const [a] = await none.issue(ca, [item, item], now);
    const [b] = await pool.issue(ca, [item], now);
    assert.ok(!(a instanceof Error) && !(b instanceof Error));
    await none.close();
  });
});
