#!/usr/bin/env node
// Regenerates the TypeScript for proto/ with buf + protoc-gen-es (both npm dev dependencies).
// The output under packages/*/src/gen is committed; run `npm run proto` after editing a .proto.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const r = spawnSync('npx', ['buf', 'generate'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('gen-proto: buf generate failed');
  process.exit(r.status ?? 1);
}
