import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JwtBundle, parseAndValidateJwtSvid, parseTrustDomain } from '@tessera/spiffe';
import { decodeProtectedHeader } from 'jose';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { JwtAuthority, type JwtKeyType } from './jwt-authority.js';

const td = parseTrustDomain('example.org');
const HOUR = 3600_000;

describe('JwtAuthority', () => {
  for (const keyType of ['ec-p256', 'ec-p384', 'rsa-2048'] as JwtKeyType[]) {
    it(`mints ${keyType} JWT-SVIDs that the spiffe library validates against the published key`, async () => {
      const now = new Date();
      const a = JwtAuthority.generate({
        trustDomain: td,
        keyType,
        notAfter: new Date(now.getTime() + HOUR),
        issuer: 'https://oidc.example.org',
      });
      const { token, expiresAt } = await a.mint({
        spiffeId: 'spiffe://example.org/w',
        audience: ['svc', 'other'],
        ttlMs: 300_000,
        now,
      });
      assert.deepEqual(decodeProtectedHeader(token), { alg: a.alg, kid: a.kid, typ: 'JWT' });
      const svid = parseAndValidateJwtSvid(token, new JwtBundle(td, [[a.kid, a.publicKey]]), ['other']);
      assert.equal(svid.id.toString(), 'spiffe://example.org/w');
      assert.deepEqual(svid.audience, ['svc', 'other']);
      assert.equal(svid.claims.iss, 'https://oidc.example.org');
      assert.equal(svid.claims.iat, Math.floor(now.getTime() / 1000));
      assert.equal(svid.expiresAt.getTime(), expiresAt.getTime());
    });
  }

  it('caps exp at the key’s expiry and refuses what it must not mint', async () => {
    const now = new Date();
    const a = JwtAuthority.generate({
      trustDomain: td,
      keyType: 'ec-p256',
      notAfter: new Date(now.getTime() + 60_000),
    });
    const { expiresAt } = await a.mint({
      spiffeId: 'spiffe://example.org/w',
      audience: ['x'],
      ttlMs: HOUR,
      now,
    });
    assert.equal(expiresAt.getTime(), Math.floor((now.getTime() + 60_000) / 1000) * 1000);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ spiffeId: 'spiffe://other.org/w' }, /not in trust domain/],
      [{ audience: [''] }, /audience must be specified/],
      [{ ttlMs: -1 }, /TTL/],
      [{ now: new Date(now.getTime() + HOUR) }, /expired/],
    ];
    for (const [extra, pattern] of cases) {
      await assert.rejects(
        a.mint({ spiffeId: 'spiffe://example.org/w', audience: ['x'], ttlMs: 1000, now, ...extra }),
        (e: unknown) => isTesseraError(e, TesseraErrorCode.CA_ISSUE) && pattern.test(e.message),
      );
    }
  });
});
