// The one rule for a suite whose external programs are missing: it is skipped and says so loudly,
// or, with TESSERA_REQUIRE_INTEROP=1 (as CI sets), it is a failing test. Used by every suite that
// runs a program nobody here wrote (the interop suites, the D-Bus client's test).
import assert from 'node:assert/strict';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { test } from 'node:test';

/** True when `program` is an executable file in a directory of PATH. */
export function onPath(program: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Skips `suite` loudly because of `hint` (what is missing and how to get it), or, with
 * TESSERA_REQUIRE_INTEROP=1, registers a failing test named `requirement`. Returns true.
 */
export function suiteUnavailable(suite: string, hint: string, requirement: string): true {
  if (process.env.TESSERA_REQUIRE_INTEROP === '1') {
    test(`${requirement} (${suite})`, () => {
      assert.fail(`${hint} (TESSERA_REQUIRE_INTEROP=1 makes this a failure)`);
    });
  } else {
    console.warn(
      `*** INTEROP SUITE SKIPPED (${suite}): ${hint}; set TESSERA_REQUIRE_INTEROP=1 to make this a failure. ***`,
    );
    test(`${suite}`, { skip: hint }, () => {});
  }
  return true;
}
