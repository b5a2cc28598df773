import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type JwtKeyType, TestJwtAuthority, unsignedToken } from '@tessera/testkit';
import { JwtBundle, parseJwtBundle } from '../bundle/jwt-bundle.js';
import type { JwtBundleSource } from '../bundle/source.js';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { parseTrustDomain, type TrustDomain } from '../spiffeid/trust-domain.js';
import { parseAndValidateJwtSvid, parseInsecureJwtSvid } from './jwt-svid.js';

const td = parseTrustDomain('example.org');
const other = parseTrustDomain('other.org');
const es256 = TestJwtAuthority.create({ trustDomain: 'example.org', kid: 'es256' });
const es384 = TestJwtAuthority.create({ trustDomain: 'example.org', keyType: 'ec-p384', kid: 'es384' });
const rs256 = TestJwtAuthority.create({ trustDomain: 'example.org', keyType: 'rsa-2048', kid: 'rs256' });
const ps256 = TestJwtAuthority.create({
  trustDomain: 'example.org',
  keyType: 'rsa-2048',
  kid: 'ps256',
  alg: 'PS256',
});
const otherAuth = TestJwtAuthority.create({ trustDomain: 'other.org', kid: 'other' });
const authorities = [es256, es384, rs256, ps256];

const bundles: JwtBundleSource = {
  getJwtBundleForTrustDomain(t: TrustDomain): JwtBundle {
    if (t.equals(td))
      return new JwtBundle(
        td,
        authorities.map((a) => [a.kid, a.publicKey] as const),
      );
    if (t.equals(other)) return parseJwtBundle(other, otherAuth.jwks());
    throw new Error(`no bundle for ${t}`);
  },
};

const sub = 'spiffe://example.org/workload';
const now = Math.floor(Date.now() / 1000);

function fails(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('parseAndValidateJwtSvid accepts', () => {
  for (const a of authorities) {
    it(`a ${a.alg} token (${a.kid})`, () => {
      const token = a.sign({ sub, aud: ['svc'] });
      const svid = parseAndValidateJwtSvid(token, bundles, ['svc']);
      assert.equal(svid.id.toString(), sub);
      assert.deepEqual(svid.audience, ['svc']);
      assert.equal(svid.marshal(), token);
      assert.equal(svid.claims.sub, sub);
      assert.ok(!svid.toString().includes(token.slice(0, 20)), 'toString must not reveal the token');
    });
  }
  it('a string aud and any one of several expected audiences (go-spiffe semantics)', () => {
    const svid = parseAndValidateJwtSvid(es256.sign({ sub, aud: 'b' }), bundles, ['a', 'b']);
    assert.deepEqual(svid.audience, ['b']);
  });
  it('typ JOSE and no typ', () => {
    parseAndValidateJwtSvid(es256.sign({ sub, aud: ['a'] }, { typ: 'JOSE' }), bundles, ['a']);
    parseAndValidateJwtSvid(es256.sign({ sub, aud: ['a'] }, { typ: undefined }), bundles, ['a']);
  });
  it('exp within the 60 s leeway, and not with leeway 0', () => {
    const token = es256.sign({ sub, aud: ['a'], exp: now - 30 });
    parseAndValidateJwtSvid(token, bundles, ['a']);
    fails(
      () => parseAndValidateJwtSvid(token, bundles, ['a'], { leewaySeconds: 0 }),
      ErrorCode.JWTSVID_VERIFY,
      /expired/,
    );
  });
});

describe('parseAndValidateJwtSvid refuses', () => {
  const INVALID = ErrorCode.JWTSVID_INVALID;
  const VERIFY = ErrorCode.JWTSVID_VERIFY;
  const cases: [string, () => string, string, RegExp][] = [
    [
      'alg none',
      () => unsignedToken({ alg: 'none', kid: 'es256', typ: 'JWT' }, { sub, aud: ['a'], exp: now + 60 }),
      INVALID,
      /algorithm "none" is not allowed/,
    ],
    [
      'HS256 keyed with the public key (alg confusion)',
      () => es256.sign({ sub, aud: ['a'] }, { alg: 'HS256' }),
      INVALID,
      /algorithm "HS256" is not allowed/,
    ],
    [
      'EdDSA',
      () => unsignedToken({ alg: 'EdDSA', kid: 'es256' }, { sub, aud: ['a'], exp: now + 60 }),
      INVALID,
      /"EdDSA" is not allowed/,
    ],
    [
      'no alg',
      () => unsignedToken({ kid: 'es256' }, { sub, aud: ['a'], exp: now + 60 }),
      INVALID,
      /algorithm null/,
    ],
    [
      'a wrong typ',
      () => es256.sign({ sub, aud: ['a'] }, { typ: 'at+jwt' }),
      INVALID,
      /not equal to either JWT or JOSE/,
    ],
    ['a missing kid', () => es256.sign({ sub, aud: ['a'] }, { kid: undefined }), INVALID, /missing key id/],
    [
      'an unknown kid',
      () => es256.sign({ sub, aud: ['a'] }, { kid: 'nope' }),
      VERIFY,
      /no JWT authority "nope" found for trust domain "example.org"/,
    ],
    [
      'a kid that exists only in another trust domain',
      () => otherAuth.sign({ sub, aud: ['a'] }),
      VERIFY,
      /no JWT authority "other" found for trust domain "example.org"/,
    ],
    [
      'a subject from a trust domain without bundle',
      () => es256.sign({ sub: 'spiffe://unknown.org/w', aud: ['a'] }),
      VERIFY,
      /no bundle found for trust domain "unknown.org"/,
    ],
    ['a missing sub', () => es256.sign({ aud: ['a'] }), INVALID, /missing subject claim/],
    [
      'a sub that is not a SPIFFE ID',
      () => es256.sign({ sub: 'https://example.org/w', aud: ['a'] }),
      INVALID,
      /invalid subject claim/,
    ],
    ['a missing exp', () => es256.sign({ sub, aud: ['a'], exp: undefined }), INVALID, /missing exp claim/],
    ['an expired token', () => es256.sign({ sub, aud: ['a'], exp: now - 3600 }), VERIFY, /token has expired/],
    [
      'a token not valid yet',
      () => es256.sign({ sub, aud: ['a'], nbf: now + 3600 }),
      VERIFY,
      /not valid yet/,
    ],
    [
      'a token issued in the future',
      () => es256.sign({ sub, aud: ['a'], iat: now + 3600 }),
      VERIFY,
      /issued in the future/,
    ],
    ['a missing aud', () => es256.sign({ sub, aud: undefined }), INVALID, /missing audience/],
    ['an empty aud', () => es256.sign({ sub, aud: [] }), INVALID, /audience claim is empty/],
    [
      'a wrong aud',
      () => es256.sign({ sub, aud: ['b'] }),
      VERIFY,
      /expected audience in \["a"\] \(audience=\["b"\]\)/,
    ],
    [
      'a tampered payload',
      () => {
        const [h, , s] = es256.sign({ sub, aud: ['a'] }).split('.');
        const p = Buffer.from(
          JSON.stringify({ sub: 'spiffe://example.org/admin', aud: ['a'], exp: now + 60 }),
        ).toString('base64url');
        return `${h}.${p}.${s}`;
      },
      VERIFY,
      /signature does not verify/,
    ],
    [
      'an ES256 header over an RSA key',
      () => rs256.sign({ sub, aud: ['a'] }, { alg: 'ES256' }),
      VERIFY,
      /ES256 needs an EC key/,
    ],
    [
      'an ES384 header with a P-256 key',
      () => es256.sign({ sub, aud: ['a'] }, { alg: 'ES384' }),
      VERIFY,
      /needs curve secp384r1/,
    ],
    ['bad base64 in the header', () => '!!!.e30.', INVALID, /header is not base64url-encoded JSON/],
    ['two segments', () => 'a.b', INVALID, /3 dot-separated parts; got 2/],
    ['a JWE-like five segments', () => 'a.b.c.d.e', INVALID, /got 5/],
  ];
  for (const [name, make, code, pattern] of cases) {
    it(name, () => fails(() => parseAndValidateJwtSvid(make(), bundles, ['a']), code, pattern));
  }
  it('an empty expected audience list is a caller error', () => {
    assert.throws(() => parseAndValidateJwtSvid(es256.sign({ sub }), bundles, []), TypeError);
  });
  it('never puts the token in the error message', () => {
    const token = es256.sign({ sub, aud: ['b'] });
    try {
      parseAndValidateJwtSvid(token, bundles, ['a']);
      assert.fail('should have thrown');
    } catch (err) {
      assert.ok(!(err as Error).message.includes(token.split('.')[2] ?? 'x'));
    }
  });
});

describe('parseInsecureJwtSvid', () => {
  it('parses without a key but keeps the structure and audience rules', () => {
    const svid = parseInsecureJwtSvid(
      otherAuth.sign({ sub: 'spiffe://other.org/w', aud: ['a'] }),
      ['a'],
      'hint-1',
    );
    assert.equal(svid.id.toString(), 'spiffe://other.org/w');
    assert.equal(svid.hint, 'hint-1');
    fails(
      () => parseInsecureJwtSvid(es256.sign({ sub, aud: ['b'] }), ['a']),
      ErrorCode.JWTSVID_VERIFY,
      /expected audience/,
    );
    fails(
      () => parseInsecureJwtSvid(es256.sign({ sub }, { alg: 'HS256' }), ['a']),
      ErrorCode.JWTSVID_INVALID,
      /not allowed/,
    );
  });
  for (const kt of ['ec-p256', 'ec-p384', 'rsa-2048'] as JwtKeyType[]) {
    it(`reads exp from a ${kt} token`, () => {
      const a = TestJwtAuthority.create({ trustDomain: 'example.org', keyType: kt });
      const svid = parseInsecureJwtSvid(a.sign({ sub, aud: ['test'], exp: now + 123 }), ['test']);
      assert.equal(svid.expiresAt.getTime(), (now + 123) * 1000);
    });
  }
});
