// README.md shows the example files verbatim: every ```js block starts with `// examples/<file>`
// and the rest is that file, which test/e2e/spiffe-examples.test.ts runs against a real agent. So
// what a reader copies is what is tested. To change an example, edit the file and paste it here.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const pkg = fileURLToPath(new URL('..', import.meta.url));
/** Example files that are not for the README: the harness that runs the mTLS pair without an agent. */
const NOT_SHOWN = new Set(['examples/mtls/run.mjs']);

function exampleFiles(dir = join(pkg, 'examples')): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? exampleFiles(join(dir, e.name))
      : e.name.endsWith('.mjs')
        ? [relative(pkg, join(dir, e.name))]
        : [],
  );
}

const blocks = [...readFileSync(join(pkg, 'README.md'), 'utf8').matchAll(/^```js\n([\s\S]*?)^```$/gm)].map(
  (m) => m[1] as string,
);

test('every js block of README.md names an example file and is that file, verbatim', () => {
  assert.ok(blocks.length > 0);
  for (const block of blocks) {
    const m = /^\/\/ (examples\/\S+\.mjs)\n/.exec(block);
    assert.ok(m !== null, `a README js block does not start with "// examples/<file>.mjs":\n${block}`);
    const file = m[1] as string;
    assert.equal(
      block.slice(m[0].length),
      readFileSync(join(pkg, file), 'utf8'),
      `README.md's block for ${file} differs from the file; paste the file into the README`,
    );
  }
});

test('README.md shows every example file (but the mtls harness) exactly once', () => {
  const shown = blocks.map((b) => /^\/\/ (examples\/\S+\.mjs)\n/.exec(b)?.[1]).sort();
  const files = exampleFiles()
    .filter((f) => !NOT_SHOWN.has(f))
    .sort();
  assert.deepEqual(shown, files);
  assert.ok(files.includes('examples/x509-svid.mjs') && files.includes('examples/jwt-svid.mjs'));
});
