#!/usr/bin/env node
// Bundles the tessera command line (packages/tessera/dist/cli/main.js, as tsc built it) into one
// CommonJS file, dist/cli/tessera.bundle.cjs (minified, ASCII), and makes its V8 code cache,
// dist/cli/tessera.bundle.cache, both of which ship; bin/tessera.js runs the bundle through the cache
// (src/cli/code-cache.ts): one file deserialized as bytecode instead of some five hundred modules
// (gRPC, protobuf, the generated APIs) parsed and compiled — most of what an admin command cost
// (bench/cli.bench.ts). The bundle sits in dist/cli so that the imports left to the daemons' modules
// resolve there. The daemons — `tessera server run`, `agent run`, `proxy run` — stay the modules tsc
// built, imported beside the bundle when one starts: they use paths relative to their own files (the
// CA's signing worker) and gain nothing from a faster start.
//
// The cache is made by a child process (this script with --code-cache) that runs the admin commands
// against a socket that does not exist, so that what they compile (their groups, the client, the
// call, the error path) is in it; the child runs with no flags, as the command line will, since V8
// refuses a cache made under other flags.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = 'packages/tessera/dist/cli';
/**
 * What the cache is made from: a command of each admin group (those that fail for want of flags
 * still load their group). The other groups compile what they run, as without a cache: V8 reads a
 * cache whole, so each group in it costs every command a little; the admin ones share most of it.
 */
const ADMIN_COMMANDS = [
  'entry count',
  'agent list',
  'bundle show',
  'federation list',
  'authority show',
  'healthcheck',
  'token generate',
  'x509 mint',
  'jwt mint',
];
const bundle = join(out, 'tessera.bundle.cjs');

if (process.argv[2] === '--code-cache') {
  const { compileBundle, shippedCachePath, writeCache } = await import(`../${out}/code-cache.js`);
  const tmp = mkdtempSync(join(tmpdir(), 'tessera-code-cache-'));
  try {
    // A cache directory of its own: compiled from the source, not from a cache a user run left.
    const compiled = compileBundle(join(process.cwd(), bundle), join(tmp, 'cache'));
    const quiet = { out: () => {}, err: () => {} };
    for (const command of ADMIN_COMMANDS)
      await compiled.exports.main([...command.split(' '), '--socket', join(tmp, 'none.sock')], quiet);
    writeCache(shippedCachePath(join(process.cwd(), bundle)), compiled.cacheData(), 0o644);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0);
}

const { build } = await import('esbuild');
// The last build's files, including the ES module bundle and chunks that earlier builds made.
for (const f of readdirSync(out))
  if (/^tessera\.(bundle\.(js|cjs|cache)|chunk-.*\.js)$/.test(f)) rmSync(join(out, f));

await build({
  entryPoints: ['packages/tessera/dist/cli/main.js'],
  outfile: bundle,
  minify: true,
  keepNames: true,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  charset: 'ascii',
  // Native addons and optional drivers are loaded from node_modules; the daemons' modules from dist/cli.
  external: ['better-sqlite3', 'koffi', 'pg', 'pg-native', './server.js', './agent-run.js', './proxy.js'],
  // The modules find files relative to themselves (the package's version): the bundle's URL.
  define: { 'import.meta.url': '__tesseraImportMetaUrl' },
  banner: { js: 'var __tesseraImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
  legalComments: 'none',
});

// code-cache.ts decodes the bundle as latin1, which is its text only if it is ASCII.
const bytes = readFileSync(bundle);
const nonAscii = bytes.findIndex((b) => b > 0x7f);
if (nonAscii !== -1) throw new Error(`bundle-cli: ${bundle} has a non-ASCII byte at offset ${nonAscii}`);
// The daemons' modules, which the bundle imports (main.ts, agent.ts): a vm.Script cannot import() on
// Node 20 without --experimental-vm-modules, so they go through __tesseraImport, which code-cache.ts
// passes in. Any other import() left would fail when called: none may be.
const text = bytes.toString('latin1').replace(/\bimport\((?="\.\/)/g, '__tesseraImport(');
const left = text.match(/\bimport\(.{0,40}/);
if (left !== null)
  throw new Error(`bundle-cli: ${bundle} has an import() code-cache.ts cannot run: ${left[0]}`);
writeFileSync(bundle, text, 'latin1');

execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--code-cache'], { stdio: 'inherit' });
