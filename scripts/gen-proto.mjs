#!/usr/bin/env node
// Regenerates the TypeScript for proto/ with buf + protoc-gen-es. The output under
// packages/*/src/gen is committed; run `npm run proto` after editing a .proto.
//
// The generators are not workspace dependencies: protoc-gen-es 2.14+ declares Node >= 22, so as a
// dev dependency it made every `npm ci` on Node 20 print EBADENGINE, for a tool only this script
// uses. They are pinned in scripts/proto/package-lock.json and installed there on first use (and
// again when that lock changes). protoc-gen-es 2.17.0 runs on Node 20: it generated the committed
// code; 2.13.0, the last to declare Node 20, generates the same code but for trailing blanks in
// comments and its version in the header.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const tools = join(root, 'scripts', 'proto');

function run(command, args, cwd) {
  const r = spawnSync(command, args, { cwd, stdio: 'inherit' });
  return r.status ?? 1;
}

// The tools' lock, as npm records what it installed (node_modules/.package-lock.json): installed
// again whenever their versions differ.
function toolsCurrent() {
  const installed = join(tools, 'node_modules', '.package-lock.json');
  if (!existsSync(installed)) return false;
  const want = JSON.parse(readFileSync(join(tools, 'package-lock.json'), 'utf8')).packages;
  const have = JSON.parse(readFileSync(installed, 'utf8')).packages;
  return Object.entries(want).every(
    ([path, p]) => path === '' || p.optional || have[path]?.version === p.version,
  );
}

if (!toolsCurrent()) {
  console.error('gen-proto: installing buf and protoc-gen-es into scripts/proto (npm ci)');
  if (run('npm', ['ci', '--no-audit', '--no-fund'], tools) !== 0) {
    console.error('gen-proto: npm ci in scripts/proto failed');
    process.exit(1);
  }
}

// The spiffe package gets the Workload API only (it depends on nothing else in the repo); the
// tessera package gets its own agent and admin APIs.
// Envoy's SDS and the secrets it carries come from the official Envoy API protos that
// @grpc/grpc-js-xds ships (a dev dependency of the workspace), with everything they import.
const envoy = 'node_modules/@grpc/grpc-js-xds/deps/envoy-api/envoy';
const runs = [
  ['buf.gen.yaml', ['proto/workload']],
  ['buf.gen.tessera.yaml', ['proto/tessera']],
  [
    'buf.gen.envoy.yaml',
    [
      `${envoy}/service/secret/v3/sds.proto`,
      `${envoy}/extensions/transport_sockets/tls/v3/secret.proto`,
      `${envoy}/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto`,
    ],
  ],
];
const buf = join(tools, 'node_modules', '.bin', 'buf');
for (const [template, paths] of runs) {
  const status = run(buf, ['generate', '--template', template, ...paths.flatMap((p) => ['--path', p])], root);
  if (status !== 0) {
    console.error(`gen-proto: buf generate (${template}, ${paths.join(' ')}) failed`);
    process.exit(status);
  }
}
