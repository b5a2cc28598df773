import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ErrorCode, SpiffeError } from '../errors.js';
import { Reason } from './charset.js';
import {
  joinPathSegments,
  parseSpiffeId,
  spiffeIdFromPath,
  spiffeIdFromSegments,
  validatePath,
} from './spiffe-id.js';
import { parseTrustDomain } from './trust-domain.js';

// The examples of the spec digest §1.3, row by row.
const valid: Array<[row: string, input: string, td: string, path: string]> = [
  ['1', 'spiffe://trustdomain', 'trustdomain', ''],
  ['2', 'spiffe://trustdomain/path', 'trustdomain', '/path'],
  ['3', 'spiffe://trustdomain/.path', 'trustdomain', '/.path'],
  ['4', 'spiffe://trustdomain/..path', 'trustdomain', '/..path'],
  ['5', 'spiffe://trustdomain/...', 'trustdomain', '/...'],
  ['6a', 'spiffe://trustdomain./path', 'trustdomain.', '/path'],
  ['6b', 'spiffe://trustdomain-/path', 'trustdomain-', '/path'],
  ['6c', 'spiffe://trustdomain_/path', 'trustdomain_', '/path'],
  ['6d', 'spiffe://trustdomain9/path', 'trustdomain9', '/path'],
  ['7a', 'spiffe://trustdomain/pathZ', 'trustdomain', '/pathZ'],
  ['7b', 'spiffe://trustdomain/path_', 'trustdomain', '/path_'],
  ['7c', 'spiffe://trustdomain/path-', 'trustdomain', '/path-'],
  ['7d', 'spiffe://trustdomain/path.', 'trustdomain', '/path.'],
  ['8', 'spiffe://staging.example.com/payments/mysql', 'staging.example.com', '/payments/mysql'],
  [
    '9',
    'spiffe://k8s-west.example.com/ns/staging/sa/default',
    'k8s-west.example.com',
    '/ns/staging/sa/default',
  ],
  [
    '10',
    'spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453',
    'example.com',
    '/9eebccd2-12bf-40a6-b262-65fe0487d453',
  ],
  ['11', 'spiffe://192.168.1.1/x', '192.168.1.1', '/x'],
];

const invalid: Array<[row: string, input: string, reason: string]> = [
  ['12', '', Reason.empty],
  ['13', 's', Reason.scheme],
  ['14', 'spiffe:/', Reason.scheme],
  ['15', 'Spiffe://', Reason.scheme],
  ['16', 'SPIFFE://trustdomain', Reason.scheme],
  ['17', 'spiffe:/trustdomain/path', Reason.scheme],
  ['18', 'BAD', Reason.scheme],
  ['19', 'spiffe://', Reason.tdMissing],
  ['20', 'spiffe:///', Reason.tdMissing],
  ['21', 'spiffe:///path', Reason.tdMissing],
  ['22', 'spiffe://trustdomain/', Reason.trailingSlash],
  ['23', 'spiffe://trustdomain/path/', Reason.trailingSlash],
  ['24', 'spiffe://trustdomain//', Reason.emptySegment],
  ['25', 'spiffe://trustdomain//path', Reason.emptySegment],
  ['26', 'spiffe://trustdomain/.', Reason.dotSegment],
  ['27a', 'spiffe://trustdomain/./path', Reason.dotSegment],
  ['27b', 'spiffe://trustdomain/path/./other', Reason.dotSegment],
  ['27c', 'spiffe://trustdomain/path/..', Reason.dotSegment],
  ['27d', 'spiffe://trustdomain/..', Reason.dotSegment],
  ['27e', 'spiffe://trustdomain/../path', Reason.dotSegment],
  ['27f', 'spiffe://trustdomain/path/../other', Reason.dotSegment],
  ['28', 'spiffe://%F0%9F%A4%AF/path', Reason.tdChars],
  ['29', 'spiffe://trustdomain/%F0%9F%A4%AF', Reason.pathChars],
  ['30', 'spiffe://%62%61%64/path', Reason.tdChars],
  ['31', 'spiffe://trustdomain/%62%61%64', Reason.pathChars],
  ['32', 'spiffe://trust$domain', Reason.tdChars],
  ['33', 'spiffe://trustdomain/path$', Reason.pathChars],
  ['34', 'spiffe://trustdomainA/path', Reason.tdChars],
  ['35', 'spiffe://trustdomain:8080/path', Reason.tdChars],
  ['36', 'spiffe://user@trustdomain/path', Reason.tdChars],
  ['37a', 'spiffe://trustdomain/path?x=1', Reason.pathChars],
  ['37b', 'spiffe://trustdomain/path#frag', Reason.pathChars],
  ['38', 'spiffe://[::1]/path', Reason.tdChars],
  ['39a', 'spiffe://trustdomain/pa th', Reason.pathChars],
  ['39b', 'spiffe://trustdomain/p\u00e4th', Reason.pathChars],
  ['39c', 'spiffe://tr\u00fcstdomain/path', Reason.tdChars],
];

describe('parseSpiffeId', () => {
  for (const [row, input, td, path] of valid) {
    test(`row ${row}: ${input} is valid`, () => {
      const id = parseSpiffeId(input);
      assert.equal(id.trustDomain.name, td);
      assert.equal(id.path, path);
      assert.equal(id.toString(), input);
      assert.ok(id.equals(parseSpiffeId(input)));
      assert.ok(id.memberOf(parseTrustDomain(td)));
    });
  }

  for (const [row, input, reason] of invalid) {
    test(`row ${row}: ${JSON.stringify(input)} is refused: ${reason}`, () => {
      assert.throws(
        () => parseSpiffeId(input),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError);
          assert.equal(err.code, ErrorCode.SPIFFEID_INVALID);
          assert.ok(
            err.message.startsWith(`spiffeid: invalid SPIFFE ID ${JSON.stringify(input)}: ${reason}`),
            err.message,
          );
          return true;
        },
      );
    });
  }

  test('every byte outside the charsets is refused, in the trust domain and in the path', () => {
    for (let c = 0; c < 256; c++) {
      const ch = String.fromCharCode(c);
      const tdOk = /[a-z0-9._-]/.test(ch);
      const pathOk = /[a-zA-Z0-9._-]/.test(ch);
      if (ch === '/') continue;
      assert.equal(ok(`spiffe://a${ch}b/p`), tdOk, `td char ${c}`);
      assert.equal(ok(`spiffe://td/a${ch}b`), pathOk, `path char ${c}`);
    }
  });

  test('the message shows the offending character and its offset', () => {
    assert.throws(() => parseSpiffeId('spiffe://Example.org/x'), /\(found "E" at offset 9\)/);
    assert.throws(() => parseSpiffeId('spiffe://td/a\u0001'), /\(found "\\\\x01" at offset 13\)/);
  });

  test('IDs longer than 2048 bytes are parsed (the spec only limits issuing)', () => {
    const id = parseSpiffeId(`spiffe://td/${'a'.repeat(4000)}`);
    assert.equal(id.path.length, 4001);
  });

  test('a non-string is a TypeError', () => {
    assert.throws(() => parseSpiffeId(42 as unknown as string), TypeError);
  });
});

describe('trust domains', () => {
  test('row 41: a bare name and an ID both give the trust domain', () => {
    assert.equal(parseTrustDomain('trustdomain').name, 'trustdomain');
    assert.equal(parseTrustDomain('spiffe://trustdomain/path').name, 'trustdomain');
    assert.equal(parseTrustDomain('spiffe://trustdomain').idString(), 'spiffe://trustdomain');
  });

  test('row 42: empty is "trust domain is missing"', () => {
    assert.throws(() => parseTrustDomain(''), {
      code: ErrorCode.TRUST_DOMAIN_INVALID,
      message: 'spiffeid: invalid trust domain "": trust domain is missing',
    });
  });

  test('an upper-case name is refused with the rule and the character', () => {
    assert.throws(() => parseTrustDomain('Example.org'), {
      code: ErrorCode.TRUST_DOMAIN_INVALID,
      message: `spiffeid: invalid trust domain "Example.org": ${Reason.tdChars} (found "E" at offset 0)`,
    });
  });

  test('an ID-shaped input with a bad path is refused as a trust domain', () => {
    assert.throws(() => parseTrustDomain('spiffe://td/a/'), {
      code: ErrorCode.TRUST_DOMAIN_INVALID,
      message: /path cannot have a trailing slash/,
    });
  });

  test('the trust domain ID has no path and compares equal', () => {
    const td = parseTrustDomain('example.org');
    assert.equal(td.id().toString(), 'spiffe://example.org');
    assert.ok(td.id().isTrustDomainId());
    assert.ok(td.equals(parseTrustDomain('spiffe://example.org')));
    assert.equal(td.compare(parseTrustDomain('example.com')), 1);
  });
});

describe('building IDs from paths and segments', () => {
  const td = parseTrustDomain('example.org');

  test('row 40: spiffeIdFromPath needs a leading slash and no trailing slash', () => {
    assert.throws(() => spiffeIdFromPath(td, 'foo'), {
      code: ErrorCode.SPIFFEID_INVALID,
      message: /path must have a leading slash/,
    });
    assert.throws(() => spiffeIdFromPath(td, '/'), {
      code: ErrorCode.SPIFFEID_INVALID,
      message: /path cannot have a trailing slash/,
    });
    assert.equal(spiffeIdFromPath(td, '/ns/prod').toString(), 'spiffe://example.org/ns/prod');
    assert.equal(spiffeIdFromPath(td, '').toString(), 'spiffe://example.org');
  });

  test('segments are joined and each is checked', () => {
    assert.equal(
      spiffeIdFromSegments(td, 'ns', 'prod', 'sa', 'web').toString(),
      'spiffe://example.org/ns/prod/sa/web',
    );
    assert.equal(spiffeIdFromSegments(td).toString(), 'spiffe://example.org');
    assert.throws(() => joinPathSegments(''), { message: /path cannot contain empty segments/ });
    assert.throws(() => joinPathSegments('.'), { message: /path cannot contain dot segments/ });
    assert.throws(() => joinPathSegments('..'), { message: /path cannot contain dot segments/ });
    assert.throws(() => joinPathSegments('/'), { message: /path segment characters are limited/ });
    assert.throws(() => joinPathSegments('a/b'), { message: /path segment characters are limited/ });
  });

  test('segments(), appendSegments() and replacePath()', () => {
    const id = parseSpiffeId('spiffe://example.org/ns/prod');
    assert.deepEqual(id.segments(), ['ns', 'prod']);
    assert.equal(id.appendSegments('sa', 'web').toString(), 'spiffe://example.org/ns/prod/sa/web');
    assert.equal(id.replacePath('/x').toString(), 'spiffe://example.org/x');
    assert.deepEqual(td.id().segments(), []);
  });

  test('validatePath', () => {
    validatePath('');
    validatePath('/a/b');
    assert.throws(() => validatePath('/a//b'), /empty segments/);
  });
});

function ok(input: string): boolean {
  try {
    parseSpiffeId(input);
    return true;
  } catch {
    return false;
  }
}
