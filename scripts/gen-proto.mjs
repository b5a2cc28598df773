#!/usr/bin/env node
// Regenerates the TypeScript for proto/ with buf + protoc-gen-es (both npm dev dependencies).
// The output under packages/*/src/gen is committed; run `npm run proto` after editing a .proto.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// The spiffe package gets the Workload API only (it depends on nothing else in the repo); the
// tessera package gets its own agent and admin APIs.
// Envoy's SDS and the secrets it carries come from the official Envoy API protos that
// @grpc/grpc-js-xds ships (a dev dependency), with everything they import.
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
for (const [template, paths] of runs) {
  const r = spawnSync(
    'npx',
    ['buf', 'generate', '--template', template, ...paths.flatMap((p) => ['--path', p])],
    {
      cwd: root,
      stdio: 'inherit',
    },
  );
  if (r.status !== 0) {
    console.error(`gen-proto: buf generate (${template}, ${paths.join(' ')}) failed`);
    process.exit(r.status ?? 1);
  }
}
