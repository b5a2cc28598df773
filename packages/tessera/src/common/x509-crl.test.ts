import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, type X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  checkX509Revocation,
  isSpiffeError,
  parseTrustDomain,
  parseX509Crl,
  verifyX509Svid,
  X509Bundle,
} from '@tessera/spiffe';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { X509Authority } from '../server/ca/x509-authority.js';
import type { KeyType } from '../server/keymanager/key-manager.js';
import { signX509Crl } from './x509.js';

const td = parseTrustDomain('example.org');
const HOUR = 3600_000;

function authority(keyType: KeyType = 'ec-p256'): X509Authority {
  return X509Authority.createSelfSigned({
    trustDomain: td,
    keyType,
    ttlMs: 24 * HOUR,
    subject: { country: 'US', organization: 'SPIFFE' },
    now: new Date(),
  });
}

function svid(ca: X509Authority, path: string): X509Certificate {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issued = ca.issueX509Svid({
    publicKey,
    spiffeId: `spiffe://example.org/${path}`,
    ttlMs: HOUR,
    now: new Date(),
  });
  return issued.chain[0] as X509Certificate;
}

const pem = (der: Buffer) =>
  `-----BEGIN X509 CRL-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)
    ?.join('\n')}\n-----END X509 CRL-----\n`;

describe('signX509Crl: CRLs an authority signs, judged by OpenSSL and read back by the library', () => {
  let dir: TempDir;
  before(async () => {
    dir = await makeTempDir('tessera-crl-');
  });
  after(() => dir.cleanup());

  for (const keyType of ['ec-p256', 'rsa-2048'] as const) {
    it(`${keyType}: openssl verify -crl_check refuses the revoked SVID only; the CRL verifies with the CA key`, () => {
      const ca = authority(keyType);
      const revoked = svid(ca, 'revoked');
      const good = svid(ca, 'good');
      const at = new Date(Date.now() - 5000);
      const der = signX509Crl(ca, {
        number: 7n,
        thisUpdate: new Date(),
        nextUpdate: ca.notAfter,
        revoked: [{ serial: revoked.serialNumber, revokedAt: at, reason: 1 }],
      });
      const files = {
        ca: join(dir.path, `${keyType}-ca.pem`),
        crl: join(dir.path, `${keyType}-crl.pem`),
        revoked: join(dir.path, `${keyType}-revoked.pem`),
        good: join(dir.path, `${keyType}-good.pem`),
      };
      writeFileSync(files.ca, ca.certificate.toString());
      writeFileSync(files.crl, pem(der));
      writeFileSync(files.revoked, revoked.toString());
      writeFileSync(files.good, good.toString());

      const text = execFileSync(
        'openssl',
        ['crl', '-in', files.crl, '-CAfile', files.ca, '-noout', '-text'],
        {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      assert.match(text, /Version 2/);
      assert.match(text, /X509v3 CRL Number:\s*\n\s*7/);
      assert.match(text, /X509v3 Authority Key Identifier/);
      assert.match(text, new RegExp(`Serial Number: ${revoked.serialNumber}`, 'i'));
      assert.match(text, /Key Compromise/);
      const crlVerify = spawnSync('openssl', ['crl', '-in', files.crl, '-CAfile', files.ca, '-noout'], {
        encoding: 'utf8',
      });
      assert.match(crlVerify.stderr + crlVerify.stdout, /verify OK/);

      const check = (cert: string) =>
        spawnSync('openssl', ['verify', '-crl_check', '-CAfile', files.ca, '-CRLfile', files.crl, cert], {
          encoding: 'utf8',
        });
      const bad = check(files.revoked);
      assert.notEqual(bad.status, 0);
      assert.match(bad.stdout + bad.stderr, /certificate revoked/);
      const ok = check(files.good);
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);

      const crl = parseX509Crl(der);
      assert.equal(crl.crlNumber, 7n);
      assert.ok(crl.signedBy(ca.certificate));
      assert.equal(crl.signedBy(authority(keyType).certificate), false, 'another CA did not sign it');
      assert.equal(crl.entryFor(revoked.serialNumber)?.reason, 1);
      assert.equal(
        crl.entryFor(revoked.serialNumber)?.revokedAt.getTime(),
        Math.floor(at.getTime() / 1000) * 1000,
      );
      assert.equal(crl.entryFor(good.serialNumber), undefined);

      const bundle = new X509Bundle(td, [ca.certificate]);
      const path = verifyX509Svid([revoked], bundle).verifiedChain;
      assert.throws(
        () => checkX509Revocation(path, [crl]),
        (e: unknown) => {
          assert.ok(isSpiffeError(e, 'ERR_X509SVID_REVOKED'), String(e));
          assert.match(e.message, new RegExp(`serial ${crl.entryFor(revoked.serialNumber)?.serial}`));
          assert.match(e.message, /reason keyCompromise, CRL number 7/);
          return true;
        },
      );
      assert.throws(() => verifyX509Svid([revoked], bundle, { revocation: { getX509Crls: () => [crl] } }), {
        code: 'ERR_X509SVID_REVOKED',
      });
      verifyX509Svid([good], bundle, { revocation: { getX509Crls: () => [crl] } });
      // A CRL with the same serial signed by another authority does not revoke this one.
      const other = authority(keyType);
      const forged = parseX509Crl(
        signX509Crl(other, {
          number: 1n,
          thisUpdate: new Date(),
          nextUpdate: other.notAfter,
          revoked: [{ serial: revoked.serialNumber, revokedAt: at }],
        }),
      );
      checkX509Revocation(path, [forged]);
    });
  }

  it('an empty CRL (no revokedCertificates) is valid for OpenSSL and the library', () => {
    const ca = authority();
    const der = signX509Crl(ca, { number: 1n, thisUpdate: new Date(), nextUpdate: ca.notAfter, revoked: [] });
    const files = {
      ca: join(dir.path, 'e-ca.pem'),
      crl: join(dir.path, 'e-crl.pem'),
      good: join(dir.path, 'e-good.pem'),
    };
    writeFileSync(files.ca, ca.certificate.toString());
    writeFileSync(files.crl, pem(der));
    writeFileSync(files.good, svid(ca, 'good').toString());
    const ok = spawnSync(
      'openssl',
      ['verify', '-crl_check', '-CAfile', files.ca, '-CRLfile', files.crl, files.good],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.equal(parseX509Crl(der).entries.size, 0);
  });
});
