/**
 * `tessera envoy bootstrap` against the official Envoy v3 API protos (envoy.test.ts runs real Envoys
 * on two of them). Each bootstrap the CLI prints is loaded by `interop envoy-validate` (go/envoy_validate.go:
 * go-control-plane's types, protojson refusing unknown fields, protoc-gen-validate's rules on the
 * bootstrap and on every typed_config, and cluster references). The validator is shown to refuse
 * each kind of mistake, so an OK means something.
 * Same rules as interop.test.ts: without the peers (test/interop/setup.sh) the suite is skipped
 * loudly, unless TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { parse, stringify } from 'yaml';
import { TESSERA_BIN } from '../e2e/tessera-process.js';
import { GO_BINARY, interopUnavailable } from './verdicts.js';

const skip = interopUnavailable('interop envoy bootstrap');

const CLIENT = 'spiffe://example.org/vm/catalog-client';
const CATALOGUE = 'spiffe://example.org/ns/sock-shop/sa/catalogue';
const ISSUE_EXAMPLE = `127.0.0.1:15001=catalogue.sock-shop.svc:8080@${CATALOGUE}`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr });
    });
  });
}

async function bootstrap(...args: string[]): Promise<string> {
  const r = await run(process.execPath, [TESSERA_BIN, 'envoy', 'bootstrap', ...args]);
  assert.equal(r.code, 0, `tessera envoy bootstrap ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

// biome-ignore lint/suspicious/noExplicitAny: a bootstrap is edited freely, as YAML is, to break it on purpose.
type Yaml = any;

/** The bootstrap's YAML edited by `edit` on its parsed form. */
function edited(text: string, edit: (b: Yaml) => void): string {
  const b = parse(text) as Yaml;
  edit(b);
  return stringify(b);
}

describe('tessera envoy bootstrap against the Envoy v3 API protos', { skip, timeout: 120_000 }, () => {
  let tmp: TempDir;
  let n = 0;

  before(async () => {
    tmp = await makeTempDir('envoy-bootstrap-');
  });
  after(() => tmp?.cleanup());

  async function validate(text: string): Promise<Run> {
    const file = join(tmp.path, `bootstrap-${++n}.yaml`);
    await writeFile(file, text);
    return run(GO_BINARY, ['envoy-validate', file]);
  }

  async function assertValid(text: string): Promise<string> {
    const r = await validate(text);
    assert.equal(r.code, 0, `refused:\n${r.stdout}${r.stderr}\n---\n${text}`);
    assert.match(r.stdout, /^OK /);
    return r.stdout;
  }

  async function assertRefused(text: string, reason: RegExp): Promise<void> {
    const r = await validate(text);
    assert.equal(r.code, 1, `accepted (${r.stdout.trim()}) but should be refused for ${reason}`);
    assert.match(r.stdout, reason);
  }

  /** Every SDS config in the bootstrap, as Envoy would reach the agent. */
  function sdsSecretConfigs(b: Yaml): { name: string; cluster: string }[] {
    const out: { name: string; cluster: string }[] = [];
    const visit = (x: unknown) => {
      if (Array.isArray(x)) x.forEach(visit);
      else if (typeof x === 'object' && x !== null) {
        const o = x as Record<string, Yaml>;
        if (typeof o.name === 'string' && o.sds_config !== undefined)
          out.push({
            name: o.name,
            cluster: o.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name,
          });
        Object.values(o).forEach(visit);
      }
    };
    visit(b);
    return out;
  }

  test("outbound only: the issue's example", async () => {
    const text = await bootstrap('--spiffe-id', CLIENT, '--outbound', ISSUE_EXAMPLE);
    const ok = await assertValid(text);
    assert.match(ok, /1 listener\(s\), 2 cluster\(s\)/);
    assert.match(ok, /UpstreamTlsContext x1/);
    const b = parse(text) as Yaml;
    const agent = b.static_resources.clusters[0];
    assert.equal(agent.name, 'tessera_agent');
    assert.deepEqual(agent.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, {
      pipe: { path: '/run/tessera/agent.sock' },
    });
    const up = b.static_resources.clusters[1];
    assert.equal(up.type, 'STRICT_DNS');
    const ctx = up.transport_socket.typed_config.common_tls_context;
    assert.deepEqual(
      ctx.combined_validation_context.default_validation_context.match_typed_subject_alt_names,
      [{ san_type: 'URI', matcher: { exact: CATALOGUE } }],
    );
    assert.deepEqual(
      sdsSecretConfigs(b).map((s) => `${s.name}@${s.cluster}`),
      ['default@tessera_agent', 'ROOTCA@tessera_agent'],
    );
    assert.deepEqual(b.node, { id: CLIENT, cluster: 'catalog-client' });
    assert.deepEqual(b.admin.address.socket_address, { address: '127.0.0.1', port_value: 9901 });
  });

  test('inbound only: mTLS terminated, client certificate required, the allowed IDs matched', async () => {
    const text = await bootstrap(
      '--spiffe-id',
      CATALOGUE,
      '--inbound',
      '0.0.0.0:8443=127.0.0.1:8080',
      '--allow',
      CLIENT,
      '--allow',
      'spiffe://example.org/ns/sock-shop/sa/front-end',
    );
    const ok = await assertValid(text);
    assert.match(ok, /DownstreamTlsContext x1/);
    const b = parse(text) as Yaml;
    const chain = b.static_resources.listeners[0].filter_chains[0];
    const tls = chain.transport_socket.typed_config;
    assert.equal(
      tls['@type'],
      'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
    );
    assert.equal(tls.require_client_certificate, true);
    assert.deepEqual(
      tls.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names.map(
        (m: Yaml) => m.matcher.exact,
      ),
      [CLIENT, 'spiffe://example.org/ns/sock-shop/sa/front-end'],
    );
    assert.equal(b.static_resources.clusters[1].type, 'STATIC');
  });

  test('both ways, several listeners, IPv6 and a Unix-socket app', async () => {
    const text = await bootstrap(
      '--spiffe-id',
      CLIENT,
      '--outbound',
      ISSUE_EXAMPLE,
      '--outbound',
      '[::1]:15002=10.0.0.7:5432@spiffe://example.org/db',
      '--inbound',
      '0.0.0.0:8443=127.0.0.1:8080',
      '--inbound',
      '[::]:9443=/run/catalog-client/app.sock',
      '--allow',
      'spiffe://example.org/ns/sock-shop/sa/front-end',
    );
    const ok = await assertValid(text);
    assert.match(ok, /4 listener\(s\), 5 cluster\(s\)/);
    const b = parse(text) as Yaml;
    assert.deepEqual(
      b.static_resources.clusters.map((c: Yaml) => `${c.name} ${c.type}`),
      [
        'tessera_agent STATIC',
        'outbound_catalogue.sock-shop.svc_8080 STRICT_DNS',
        'outbound_10.0.0.7_5432 STATIC',
        'inbound_app_127.0.0.1_8080 STATIC',
        'inbound_app_run_catalog-client_app.sock STATIC',
      ],
    );
  });

  test('federated: every bundle, over the SDS name ALL', async () => {
    const text = await bootstrap(
      '--spiffe-id',
      CLIENT,
      '--federated',
      '--outbound',
      '127.0.0.1:15001=api.partner.example:443@spiffe://partner.example/api',
      '--inbound',
      '0.0.0.0:8443=127.0.0.1:8080',
      '--allow',
      'spiffe://partner.example/batch',
    );
    await assertValid(text);
    const names = sdsSecretConfigs(parse(text)).map((s) => s.name);
    assert.deepEqual(names, ['default', 'ALL', 'default', 'ALL']);
  });

  test('a custom agent socket, SVID, bundle name, admin and node', async () => {
    const svid = 'spiffe://example.org/vm/catalog-client/v2';
    const text = await bootstrap(
      '--spiffe-id',
      CLIENT,
      '--agent-socket',
      '/var/run/secrets/workload-spiffe-uds/socket',
      '--svid-name',
      svid,
      '--bundle-name',
      'spiffe://example.org',
      '--admin',
      '127.0.0.1:19000',
      '--node-id',
      'vm-42',
      '--node-cluster',
      'catalog',
      '--outbound',
      ISSUE_EXAMPLE,
    );
    await assertValid(text);
    const b = parse(text) as Yaml;
    assert.equal(
      b.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path,
      '/var/run/secrets/workload-spiffe-uds/socket',
    );
    assert.deepEqual(
      sdsSecretConfigs(b).map((s) => s.name),
      [svid, 'spiffe://example.org'],
    );
    assert.deepEqual(b.node, { id: 'vm-42', cluster: 'catalog' });
    assert.equal(b.admin.address.socket_address.port_value, 19000);
  });

  describe('the validator refuses what Envoy would', () => {
    let good: string;
    before(async () => {
      good = await bootstrap(
        '--spiffe-id',
        CLIENT,
        '--outbound',
        ISSUE_EXAMPLE,
        '--inbound',
        '0.0.0.0:8443=127.0.0.1:8080',
        '--allow',
        'spiffe://example.org/ns/sock-shop/sa/front-end',
      );
    });
    const inbound = (b: Yaml) => b.static_resources.listeners[1].filter_chains[0];
    const upstreamTls = (b: Yaml) => b.static_resources.clusters[1].transport_socket.typed_config;

    test('the unedited bootstrap is accepted (the baseline of every refusal below)', async () => {
      await assertValid(good);
      // Parsed and printed again by the yaml package: the edits below change only what they say.
      await assertValid(edited(good, () => {}));
    });

    test('a misspelled field, at the top and inside a typed_config', async () => {
      await assertRefused(
        edited(good, (b) => {
          b.static_resource = b.static_resources;
          delete b.static_resources;
        }),
        /unknown field "static_resource"/,
      );
      await assertRefused(
        edited(good, (b) => {
          const tls = inbound(b).transport_socket.typed_config;
          tls.require_client_certifcate = true;
          delete tls.require_client_certificate;
        }),
        /unknown field "require_client_certifcate"/,
      );
      await assertRefused(
        edited(good, (b) => {
          const ctx = upstreamTls(b).common_tls_context;
          ctx.tls_certificate_sds_secret_config = ctx.tls_certificate_sds_secret_configs;
          delete ctx.tls_certificate_sds_secret_configs;
        }),
        /unknown field "tls_certificate_sds_secret_config"/,
      );
    });

    test('an unknown field', async () => {
      await assertRefused(
        edited(good, (b) => {
          b.static_resources.clusters[0].spiffe_socket = '/run/tessera/agent.sock';
        }),
        /unknown field "spiffe_socket"/,
      );
    });

    test('a wrong enum value', async () => {
      await assertRefused(
        edited(good, (b) => {
          upstreamTls(
            b,
          ).common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].san_type =
            'SPIFFE';
        }),
        /invalid value for enum field sanType: "SPIFFE"/,
      );
      await assertRefused(
        edited(good, (b) => {
          b.static_resources.clusters[1].type = 'STRICTDNS';
        }),
        /invalid value for enum field type: "STRICTDNS"/,
      );
    });

    test('a missing required field, and a value out of range', async () => {
      await assertRefused(
        edited(good, (b) => {
          delete upstreamTls(b).common_tls_context.combined_validation_context.default_validation_context
            .match_typed_subject_alt_names[0].matcher;
        }),
        /SubjectAltNameMatcher\.Matcher: value is required/,
      );
      await assertRefused(
        edited(good, (b) => {
          delete inbound(b).filters[0].typed_config.stat_prefix;
        }),
        /TcpProxy\.StatPrefix: value length must be at least 1/,
      );
      await assertRefused(
        edited(good, (b) => {
          b.static_resources.listeners[0].address.socket_address.port_value = 70000;
        }),
        /PortValue: value must be less than or equal to 65535/,
      );
    });

    test('a typed_config of an unknown type', async () => {
      await assertRefused(
        edited(good, (b) => {
          b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config['@type'] =
            'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxi';
        }),
        /unable to resolve "type\.googleapis\.com\/envoy\.extensions\.filters\.network\.tcp_proxy\.v3\.TcpProxi"/,
      );
    });

    test('a listener pointing at a cluster that does not exist, and SDS over a cluster without HTTP/2', async () => {
      await assertRefused(
        edited(good, (b) => {
          b.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.cluster = 'catalogue';
        }),
        /tcp_proxy cluster "catalogue" is not defined/,
      );
      await assertRefused(
        edited(good, (b) => {
          delete b.static_resources.clusters[0].typed_extension_protocol_options;
        }),
        /envoy_grpc cluster "tessera_agent" does not speak HTTP\/2/,
      );
    });

    test('a key given twice', async () => {
      await assertRefused(
        good.replace(/^node:\n/m, 'node:\n  id: twice\n'),
        /yaml: .*key "id" already set in map/,
      );
    });
  });
});
