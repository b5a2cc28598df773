import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TesseraErrorCode } from './errors.js';

test('docs/errors.md lists exactly the daemon error codes', () => {
  const doc = readFileSync(fileURLToPath(new URL('../../docs/errors.md', import.meta.url)), 'utf8');
  const documented = [...doc.matchAll(/^\| `(ERR_[A-Z0-9_]+)` *\|/gm)].map((m) => m[1]).sort();
  assert.deepEqual(documented, Object.values(TesseraErrorCode).sort());
});
