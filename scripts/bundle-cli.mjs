#!/usr/bin/env node
// Bundles the tessera command line (packages/tessera/dist/cli/main.js, as tsc built it) into
// dist/cli/tessera.bundle.js and its chunks (dist/cli/tessera.chunk-*.js, one per command group and
// what groups share, minified), which bin/tessera.js runs: a few files, compiled only when their group
// runs, instead of some five hundred modules (gRPC, protobuf, the generated APIs) — most of what an
// admin command cost (bench/cli.bench.ts). Chunks sit beside the entry so that the relative imports
// left to the daemons' modules resolve in dist/cli. The daemons — `tessera server run`, `agent run`, `proxy run` — stay the
// modules tsc built, loaded beside the bundle when one starts: they use paths relative to their
// own files (the CA's signing worker) and gain nothing from a faster start.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const out = 'packages/tessera/dist/cli';
// Chunks are named by their hash: the last build's would stay beside the new ones.
for (const f of readdirSync(out)) if (/^tessera\.(bundle|chunk-.*)\.js$/.test(f)) rmSync(join(out, f));

await build({
  entryPoints: { 'tessera.bundle': 'packages/tessera/dist/cli/main.js' },
  outdir: out,
  chunkNames: 'tessera.chunk-[hash]',
  splitting: true,
  minify: true,
  keepNames: true,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Native addons and optional drivers are loaded from node_modules; the daemons' modules from dist/cli.
  external: ['better-sqlite3', 'koffi', 'pg', 'pg-native', './server.js', './agent-run.js', './proxy.js'],
  // CommonJS dependencies (grpc-js) call require(); an ES module bundle has to provide it.
  banner: {
    js: "import { createRequire as __tesseraRequire } from 'node:module'; const require = __tesseraRequire(import.meta.url);",
  },
  logLevel: 'warning',
  legalComments: 'none',
});
