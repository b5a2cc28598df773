#!/usr/bin/env node
// Regenerates the TypeScript for proto/ with buf + protoc-gen-es (both npm dev dependencies).
// The output under packages/*/src/gen is committed; run `npm run proto` after editing a .proto.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// The spiffe package gets the Workload API only (it depends on nothing else in the repo); the
// tessera package gets its own agent and admin APIs.
const runs = [
  ['buf.gen.yaml', 'proto/workload'],
  ['buf.gen.tessera.yaml', 'proto/tessera'],
];
for (const [template, path] of runs) {
  const r = spawnSync('npx', ['buf', 'generate', '--template', template, '--path', path], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    console.error(`gen-proto: buf generate (${template}, ${path}) failed`);
    process.exit(r.status ?? 1);
  }
}
