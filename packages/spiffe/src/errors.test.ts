import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ErrorCode, isSpiffeError, SpiffeError } from './errors.js';

test('docs/errors.md lists exactly the error codes the package defines', () => {
  const doc = readFileSync(fileURLToPath(new URL('../docs/errors.md', import.meta.url)), 'utf8');
  const documented = [...doc.matchAll(/^\| `(ERR_[A-Z0-9_]+)` *\|/gm)].map((m) => m[1]).sort();
  const defined = Object.values(ErrorCode).sort();
  assert.deepEqual(documented, defined);
});

test('codes are unique and well-formed', () => {
  const codes = Object.values(ErrorCode);
  assert.equal(new Set(codes).size, codes.length);
  for (const c of codes) assert.match(c, /^ERR_[A-Z0-9]+_?[A-Z0-9_]*$/);
});

test('SpiffeError carries code and cause; isSpiffeError matches on code', () => {
  const cause = new Error('inner');
  const err = new SpiffeError(ErrorCode.BUNDLE_INVALID, 'bundle: bad', { cause });
  assert.equal(err.code, 'ERR_BUNDLE_INVALID');
  assert.equal(err.cause, cause);
  assert.equal(err.name, 'SpiffeError');
  assert.ok(isSpiffeError(err));
  assert.ok(isSpiffeError(err, ErrorCode.BUNDLE_INVALID));
  assert.ok(!isSpiffeError(err, ErrorCode.ABORTED));
  assert.ok(!isSpiffeError(new Error('x')));
});
