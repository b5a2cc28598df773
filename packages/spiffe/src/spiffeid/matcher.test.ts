import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode } from '../errors.js';
import { matchAny, matchId, matchMemberOf, matchOneOf } from './matcher.js';
import { parseSpiffeId } from './spiffe-id.js';
import { parseTrustDomain } from './trust-domain.js';

const web = parseSpiffeId('spiffe://example.org/web');
const db = parseSpiffeId('spiffe://example.org/db');
const other = parseSpiffeId('spiffe://other.org/web');

test('matchAny accepts every ID', () => {
  matchAny()(other);
});

test('matchId accepts only the exact ID', () => {
  matchId(web)(parseSpiffeId('spiffe://example.org/web'));
  assert.throws(() => matchId(web)(db), {
    code: ErrorCode.ID_UNAUTHORIZED,
    message: 'spiffeid: unexpected ID "spiffe://example.org/db"; expected "spiffe://example.org/web"',
  });
  assert.throws(() => matchId(web)(parseSpiffeId('spiffe://example.org/Web')), {
    code: ErrorCode.ID_UNAUTHORIZED,
  });
});

test('matchOneOf accepts members of the set only', () => {
  const m = matchOneOf(web, db);
  m(web);
  m(db);
  assert.throws(() => m(other), {
    code: ErrorCode.ID_UNAUTHORIZED,
    message: /unexpected ID "spiffe:\/\/other.org\/web"/,
  });
});

test('matchMemberOf accepts IDs of the trust domain only', () => {
  const m = matchMemberOf(parseTrustDomain('example.org'));
  m(web);
  assert.throws(() => m(other), {
    code: ErrorCode.ID_UNAUTHORIZED,
    message: /unexpected trust domain "other.org"/,
  });
});
