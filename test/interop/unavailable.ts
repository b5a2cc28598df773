// The one rule for a suite whose external programs are missing: it is skipped and says so loudly,
// or, with TESSERA_REQUIRE_INTEROP=1 (as CI sets), it is a failing test. Used by every interop suite.
import assert from 'node:assert/strict';
import { test } from 'node:test';

/**
 * Registers, in the current suite, either a failing test named `required` (TESSERA_REQUIRE_INTEROP=1)
 * or a skipped test named `suite` plus a `*** INTEROP SUITE SKIPPED ***` warning; `hint` says what is
 * missing and how to install it. Returns true: the caller's suite must skip.
 */
export function suiteUnavailable(suite: string, required: string, hint: string): true {
  if (process.env.TESSERA_REQUIRE_INTEROP === '1') {
    test(required, () => {
      assert.fail(`${hint} (TESSERA_REQUIRE_INTEROP=1 makes this a failure)`);
    });
  } else {
    console.warn(
      `*** INTEROP SUITE SKIPPED (${suite}): ${hint}; set TESSERA_REQUIRE_INTEROP=1 to make this a failure. ***`,
    );
    test(suite, { skip: hint }, () => {});
  }
  return true;
}
