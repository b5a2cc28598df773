#!/usr/bin/env node
// Runs every compiled test file of every package and of test/ on node's built-in runner.
// Node 20's `--test` does not expand globs, so the files are found here.
// Usage: node scripts/run-tests.mjs [substring-filter ...]
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const roots = ['packages/testkit/dist', 'packages/spiffe/dist', 'packages/tessera/dist', 'test/dist'];

function walk(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
const files = roots
  .flatMap((r) => walk(join(root, r), []))
  .map((f) => relative(root, f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error('run-tests: no compiled test files found; run `npm run build` first');
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
// The runner's TAP goes through unchanged; skipped tests (`# SKIP <reason>`) are also collected, so
// the end of a long run says which were skipped and why instead of a bare "skipped 6".
const child = spawn(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...files], {
  cwd: root,
  stdio: ['inherit', 'pipe', 'inherit'],
});
const skipped = [];
createInterface({ input: child.stdout }).on('line', (line) => {
  process.stdout.write(`${line}\n`);
  const m = line.match(/^\s*ok \d+ - (.*?) # SKIP\s*(.*)$/);
  if (m !== null) skipped.push({ name: m[1], reason: m[2] });
});
child.on('close', (code, signal) => {
  if (skipped.length > 0) {
    const byReason = new Map();
    for (const s of skipped) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s.name]);
    console.log(`\n*** ${skipped.length} test${skipped.length === 1 ? '' : 's'} skipped:`);
    for (const [reason, names] of byReason)
      console.log(`***   ${reason || '(no reason given)'}\n***     ${names.join('\n***     ')}`);
  }
  process.exit(code ?? (signal === null ? 1 : 128));
});
