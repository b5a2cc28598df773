// `tessera envoy bootstrap`: an Envoy v3 bootstrap (YAML) for a service on a VM whose Envoy takes
// every certificate from the Tessera agent over SDS, on the agent's socket, and reads none from disk.
// Field names are Envoy's v3 API; test/interop/envoy-bootstrap.test.ts loads the output against the
// official protos (go-control-plane) and their validation rules.
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_WORKLOAD_API_SOCKET, isSpiffeError, parseSpiffeId, type SpiffeId } from '@tessera/spiffe';
import { Document } from 'yaml';
import { isDnsName } from '../common/dns-name.js';
import { usageError } from './admin-client.js';
import type { Io } from './main.js';

/** The SDS resource names the agent serves by default (agent settings can rename them). */
const DEFAULT_SVID_NAME = 'default';
const DEFAULT_BUNDLE_NAME = 'ROOTCA';
const ALL_BUNDLES_NAME = 'ALL';
const DEFAULT_ADMIN = '127.0.0.1:9901';
/** The name of the cluster that reaches the agent; every SDS config points at it. */
const AGENT_CLUSTER = 'tessera_agent';
const AGENT_CONNECT_TIMEOUT = '1s';
const UPSTREAM_CONNECT_TIMEOUT = '5s';

const OUTBOUND_EXAMPLE =
  '127.0.0.1:15001=catalogue.sock-shop.svc:8080@spiffe://example.org/ns/sock-shop/sa/catalogue';
const INBOUND_EXAMPLE = '0.0.0.0:8443=127.0.0.1:8080';

const USAGE = `usage: tessera envoy bootstrap --spiffe-id <id> (--outbound <spec>... | --inbound <spec>... --allow <id>...) [flags]

Prints an Envoy v3 bootstrap (YAML) for a service on this machine: Envoy takes its SVID and trust
bundle from the Tessera agent over SDS on the agent's socket, reads no certificate from disk and picks
up every rotation by itself. Run it as the user the service's registration entry selects.

  --spiffe-id <id>            the service's own SPIFFE ID (node id, comments)
  --outbound LISTEN=UPSTREAM@SPIFFE_ID
                              plain TCP accepted on LISTEN (ip:port) is sent over mTLS to UPSTREAM
                              (host:port), whose certificate must carry SPIFFE_ID; repeatable, e.g.
                              ${OUTBOUND_EXAMPLE}
  --inbound LISTEN=APP        mTLS terminated on LISTEN (ip:port), sent in plain TCP to the local
                              app (host:port or a Unix socket path); repeatable, e.g. ${INBOUND_EXAMPLE}
  --allow <id>                a SPIFFE ID allowed to connect to the --inbound listeners; repeatable,
                              at least one with --inbound
  --agent-socket <path>       the agent's socket (default ${DEFAULT_WORKLOAD_API_SOCKET})
  --svid-name <name>          the SDS name of the SVID to present (default "${DEFAULT_SVID_NAME}": the
                              workload's first SVID; a SPIFFE ID picks that SVID when it has several)
  --federated                 trust every bundle the agent holds, federated ones included (SDS name
                              "${ALL_BUNDLES_NAME}"), not only this trust domain's ("${DEFAULT_BUNDLE_NAME}")
  --bundle-name <name>        the SDS name of the trust bundle, when the agent renames the defaults
                              or for one trust domain's bundle (spiffe://<trust domain>)
  --admin <ip:port>           Envoy's admin interface (default ${DEFAULT_ADMIN})
  --node-id <id>              Envoy's node id (default the --spiffe-id)
  --node-cluster <name>       Envoy's node cluster (default the last segment of the --spiffe-id path)`;

interface SocketAddress {
  readonly host: string;
  readonly port: number;
}

/** Where a cluster's endpoint is: an IP or DNS name and port, or a Unix socket path. */
type Endpoint =
  | { readonly kind: 'socket'; readonly address: SocketAddress }
  | { readonly kind: 'pipe'; readonly path: string };

interface Outbound {
  readonly listen: SocketAddress;
  readonly upstream: SocketAddress;
  readonly peer: SpiffeId;
}

interface Inbound {
  readonly listen: SocketAddress;
  readonly app: Endpoint;
}

/** Everything the bootstrap is made from, checked. */
export interface EnvoyBootstrapOptions {
  readonly spiffeId: SpiffeId;
  readonly agentSocket: string;
  readonly svidName: string;
  readonly bundleName: string;
  readonly admin: SocketAddress;
  readonly nodeId: string;
  readonly nodeCluster: string;
  readonly outbound: readonly Outbound[];
  readonly inbound: readonly Inbound[];
  readonly allow: readonly SpiffeId[];
}

/** `tessera envoy …` */
export async function envoyCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(USAGE);
    return 0;
  }
  if (sub !== 'bootstrap') {
    io.err(sub === undefined ? USAGE : `tessera envoy: unknown command "${sub}"\n\n${USAGE}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(USAGE);
    return 0;
  }
  io.out(envoyBootstrapYaml(parseEnvoyBootstrapFlags(rest)));
  return 0;
}

/** The flags of `tessera envoy bootstrap`, checked; the first problem is a usage error (exit 2). */
export function parseEnvoyBootstrapFlags(args: string[]): EnvoyBootstrapOptions {
  const { values: v } = parseArgs({
    args,
    options: {
      'spiffe-id': { type: 'string' },
      outbound: { type: 'string', multiple: true },
      inbound: { type: 'string', multiple: true },
      allow: { type: 'string', multiple: true },
      'agent-socket': { type: 'string', default: DEFAULT_WORKLOAD_API_SOCKET },
      'svid-name': { type: 'string', default: DEFAULT_SVID_NAME },
      federated: { type: 'boolean', default: false },
      'bundle-name': { type: 'string' },
      admin: { type: 'string', default: DEFAULT_ADMIN },
      'node-id': { type: 'string' },
      'node-cluster': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (v['spiffe-id'] === undefined || v['spiffe-id'] === '')
    throw usageError('--spiffe-id is required: the SPIFFE ID of the service this Envoy fronts');
  const spiffeId = spiffeIdFlag('--spiffe-id', v['spiffe-id']);

  const outbound = (v.outbound ?? []).map(parseOutbound);
  const inbound = (v.inbound ?? []).map(parseInbound);
  const allow = (v.allow ?? []).map((id) => spiffeIdFlag('--allow', id));
  if (outbound.length === 0 && inbound.length === 0)
    throw usageError(
      `give at least one --outbound (e.g. ${OUTBOUND_EXAMPLE}) or --inbound (e.g. ${INBOUND_EXAMPLE})`,
    );
  if (inbound.length > 0 && allow.length === 0)
    throw usageError('--inbound needs at least one --allow <SPIFFE ID>: the callers let through');
  if (inbound.length === 0 && allow.length > 0)
    throw usageError('--allow applies to --inbound listeners, and none is given');

  const agentSocket = v['agent-socket'];
  if (!isAbsolute(agentSocket))
    throw usageError(
      `--agent-socket "${agentSocket}" must be an absolute path, e.g. ${DEFAULT_WORKLOAD_API_SOCKET}`,
    );

  const svidName = v['svid-name'];
  if (svidName === '') throw usageError('--svid-name must not be empty');
  if (svidName.startsWith('spiffe://')) spiffeIdFlag('--svid-name', svidName);

  const bundleFlag = v['bundle-name'];
  if (bundleFlag !== undefined && v.federated)
    throw usageError(`give --federated (bundle "${ALL_BUNDLES_NAME}") or --bundle-name, not both`);
  if (bundleFlag === '') throw usageError('--bundle-name must not be empty');
  const bundleName = bundleFlag ?? (v.federated ? ALL_BUNDLES_NAME : DEFAULT_BUNDLE_NAME);

  const admin = parseListen('--admin', v.admin, v.admin);

  const listens = [...outbound.map((o) => o.listen), ...inbound.map((i) => i.listen), admin];
  for (let i = 0; i < listens.length; i++)
    for (let j = i + 1; j < listens.length; j++)
      if (overlaps(listens[i]!, listens[j]!))
        throw usageError(
          `${hostPort(listens[i]!)} and ${hostPort(listens[j]!)} are both listened on (--outbound, --inbound, --admin); give each listener its own port`,
        );

  const nodeId = v['node-id'] ?? spiffeId.toString();
  if (nodeId === '') throw usageError('--node-id must not be empty');
  const nodeCluster = v['node-cluster'] ?? defaultNodeCluster(spiffeId);
  if (nodeCluster === '') throw usageError('--node-cluster must not be empty');

  return {
    spiffeId,
    agentSocket,
    svidName,
    bundleName,
    admin,
    nodeId,
    nodeCluster,
    outbound,
    inbound,
    allow,
  };
}

function spiffeIdFlag(flag: string, value: string): SpiffeId {
  try {
    return parseSpiffeId(value);
  } catch (err) {
    if (isSpiffeError(err)) throw usageError(`${flag}: ${err.message}`);
    throw err;
  }
}

function parseOutbound(spec: string): Outbound {
  const fail = (what: string) =>
    usageError(
      `--outbound "${spec}": ${what}; the form is LISTEN=UPSTREAM@SPIFFE_ID, e.g. ${OUTBOUND_EXAMPLE}`,
    );
  const eq = spec.indexOf('=');
  if (eq < 0) throw fail('no "=" between the listen address and the upstream');
  const at = spec.indexOf('@', eq);
  if (at < 0) throw fail('no "@SPIFFE_ID": the upstream\'s expected SPIFFE ID is required');
  const listen = parseListen('--outbound', spec, spec.slice(0, eq));
  const upstream = parseHostPort(spec.slice(eq + 1, at));
  if (typeof upstream === 'string') throw fail(`upstream ${upstream}`);
  const id = spec.slice(at + 1);
  let peer: SpiffeId;
  try {
    peer = parseSpiffeId(id);
  } catch (err) {
    if (isSpiffeError(err)) throw fail(err.message);
    throw err;
  }
  return { listen, upstream, peer };
}

function parseInbound(spec: string): Inbound {
  const fail = (what: string) =>
    usageError(
      `--inbound "${spec}": ${what}; the form is LISTEN=APP, e.g. ${INBOUND_EXAMPLE} or 0.0.0.0:8443=/run/app.sock`,
    );
  const eq = spec.indexOf('=');
  if (eq < 0) throw fail('no "=" between the listen address and the local app');
  const listen = parseListen('--inbound', spec, spec.slice(0, eq));
  const appText = spec.slice(eq + 1);
  if (appText.startsWith('/')) return { listen, app: { kind: 'pipe', path: appText } };
  const app = parseHostPort(appText);
  if (typeof app === 'string') throw fail(`app ${app}`);
  return { listen, app: { kind: 'socket', address: app } };
}

/** A listen address: an IP literal and a port (Envoy binds IPs, not names). */
function parseListen(flag: string, spec: string, text: string): SocketAddress {
  const fail = (what: string) =>
    usageError(
      `${flag} "${spec}": listen address ${what}; give ip:port, e.g. 127.0.0.1:15001 or [::1]:15001`,
    );
  const a = parseHostPort(text);
  if (typeof a === 'string') throw fail(a);
  if (isIP(a.host) === 0) throw fail(`"${text}" is not an IP address and port`);
  return a;
}

/** host:port or [v6]:port, with an IP or a DNS name; a string says what is wrong. */
function parseHostPort(text: string): SocketAddress | string {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(text);
  if (m === null) return `"${text}" is not host:port`;
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined && isIP(host) !== 6)
    return `"${text}": "${host}" in brackets is not an IPv6 address`;
  if (host === '') return `"${text}" has no host`;
  if (isIP(host) === 0 && (!isDnsName(host) || host.startsWith('*')))
    return `"${text}": "${host}" is neither an IP address nor a DNS name`;
  const port = Number(m[3]);
  if (!/^[0-9]+$/.test(m[3]!) || port < 1 || port > 65535)
    return `"${text}": port "${m[3]}" is not a number from 1 to 65535`;
  return { host, port };
}

function hostPort(a: SocketAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Two listen addresses collide on the same port when the IPs are equal or either is a wildcard. */
function overlaps(a: SocketAddress, b: SocketAddress): boolean {
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::';
  return a.port === b.port && (a.host === b.host || wildcard(a.host) || wildcard(b.host));
}

function defaultNodeCluster(id: SpiffeId): string {
  const segments = id.path.split('/').filter((s) => s !== '');
  return segments.at(-1) ?? id.trustDomain.name;
}

/** A listener or cluster name from its parts, kept to characters every stats sink takes. */
function resourceName(...parts: (string | number)[]): string {
  return parts
    .map(String)
    .join('_')
    .replace(/[^A-Za-z0-9._-]+/g, '_');
}

function endpointName(e: Endpoint): string {
  return e.kind === 'pipe' ? e.path.slice(1) : resourceName(e.address.host, e.address.port);
}

/** The SDS source every secret comes from: the agent, over gRPC, v3. */
function agentSdsConfig(): Record<string, unknown> {
  return {
    resource_api_version: 'V3',
    api_config_source: {
      api_type: 'GRPC',
      transport_api_version: 'V3',
      grpc_services: [{ envoy_grpc: { cluster_name: AGENT_CLUSTER } }],
    },
  };
}

/** The SVID to present and the bundle to verify the peer with (both over SDS), and the peer IDs accepted. */
function commonTlsContext(o: EnvoyBootstrapOptions, peers: readonly SpiffeId[]): Record<string, unknown> {
  return {
    tls_certificate_sds_secret_configs: [{ name: o.svidName, sds_config: agentSdsConfig() }],
    combined_validation_context: {
      default_validation_context: {
        match_typed_subject_alt_names: peers.map((id) => ({
          san_type: 'URI',
          matcher: { exact: id.toString() },
        })),
      },
      validation_context_sds_secret_config: { name: o.bundleName, sds_config: agentSdsConfig() },
    },
  };
}

function address(e: Endpoint): Record<string, unknown> {
  return e.kind === 'pipe'
    ? { pipe: { path: e.path } }
    : { socket_address: { address: e.address.host, port_value: e.address.port } };
}

/** A cluster of one endpoint: STATIC for an IP or a socket path, STRICT_DNS for a name. */
function cluster(name: string, e: Endpoint, connectTimeout: string, extra: Record<string, unknown>) {
  const byName = e.kind === 'socket' && isIP(e.address.host) === 0;
  return {
    name,
    type: byName ? 'STRICT_DNS' : 'STATIC',
    connect_timeout: connectTimeout,
    ...extra,
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: address(e) } }] }],
    },
  };
}

function tlsTransportSocket(
  type: 'UpstreamTlsContext' | 'DownstreamTlsContext',
  context: Record<string, unknown>,
) {
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.${type}`,
      ...context,
    },
  };
}

/** A TCP proxy to `clusterName`, logging each connection with the peer's SPIFFE ID and any TLS failure. */
function tcpProxy(statPrefix: string, clusterName: string, logFormat: string) {
  return {
    name: 'envoy.filters.network.tcp_proxy',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
      stat_prefix: statPrefix,
      cluster: clusterName,
      access_log: [
        {
          name: 'envoy.access_loggers.stdout',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
            log_format: { text_format_source: { inline_string: `${logFormat}\n` } },
          },
        },
      ],
    },
  };
}

function listenerAddress(a: SocketAddress): Record<string, unknown> {
  return { socket_address: { address: a.host, port_value: a.port } };
}

/** The bootstrap as plain data, field names exactly as Envoy's v3 API spells them. */
export function createEnvoyBootstrap(o: EnvoyBootstrapOptions): Record<string, unknown> {
  const listeners: unknown[] = [];
  const clusters: unknown[] = [
    cluster(
      AGENT_CLUSTER,
      { kind: 'pipe', path: o.agentSocket },
      AGENT_CONNECT_TIMEOUT,
      // SDS is gRPC: the agent's cluster must speak HTTP/2.
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
  const clusterNames = new Set<string>([AGENT_CLUSTER]);
  const uniqueName = (base: string) => {
    let name = base;
    for (let n = 2; clusterNames.has(name); n++) name = `${base}_${n}`;
    clusterNames.add(name);
    return name;
  };

  for (const out of o.outbound) {
    const listenerName = resourceName('outbound', out.listen.host, out.listen.port);
    const clusterName = uniqueName(resourceName('outbound', out.upstream.host, out.upstream.port));
    listeners.push({
      name: listenerName,
      address: listenerAddress(out.listen),
      filter_chains: [
        {
          filters: [
            tcpProxy(
              listenerName,
              clusterName,
              `[%START_TIME%] ${listenerName} from=%DOWNSTREAM_REMOTE_ADDRESS% to=%UPSTREAM_HOST% expected=${out.peer} flags=%RESPONSE_FLAGS% tls_failure=%UPSTREAM_TRANSPORT_FAILURE_REASON% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% %DURATION%ms`,
            ),
          ],
        },
      ],
    });
    clusters.push(
      cluster(clusterName, { kind: 'socket', address: out.upstream }, UPSTREAM_CONNECT_TIMEOUT, {
        transport_socket: tlsTransportSocket('UpstreamTlsContext', {
          common_tls_context: commonTlsContext(o, [out.peer]),
        }),
      }),
    );
  }

  for (const inb of o.inbound) {
    const listenerName = resourceName('inbound', inb.listen.host, inb.listen.port);
    const clusterName = uniqueName(resourceName('inbound_app', endpointName(inb.app)));
    listeners.push({
      name: listenerName,
      address: listenerAddress(inb.listen),
      filter_chains: [
        {
          transport_socket: tlsTransportSocket('DownstreamTlsContext', {
            require_client_certificate: true,
            common_tls_context: commonTlsContext(o, o.allow),
          }),
          filters: [
            tcpProxy(
              listenerName,
              clusterName,
              `[%START_TIME%] ${listenerName} from=%DOWNSTREAM_REMOTE_ADDRESS% peer=%DOWNSTREAM_PEER_URI_SAN% to=%UPSTREAM_HOST% flags=%RESPONSE_FLAGS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% %DURATION%ms`,
            ),
          ],
        },
      ],
    });
    clusters.push(cluster(clusterName, inb.app, UPSTREAM_CONNECT_TIMEOUT, {}));
  }

  return {
    node: { id: o.nodeId, cluster: o.nodeCluster },
    admin: { address: listenerAddress(o.admin) },
    static_resources: { listeners, clusters },
  };
}

/** The bootstrap as YAML, with a header saying what it does and how to run it. */
export function envoyBootstrapYaml(o: EnvoyBootstrapOptions): string {
  const lines = [
    ` Envoy bootstrap for ${o.spiffeId}, printed by \`tessera envoy bootstrap\`.`,
    ` Every certificate comes from the Tessera agent over SDS on ${o.agentSocket}:`,
    ` the SVID "${o.svidName}" and the trust bundle "${o.bundleName}". Nothing is read from disk and`,
    ' rotations apply by themselves. Run Envoy as the user the registration entry for',
    ` ${o.spiffeId} selects: envoy -c envoy.yaml`,
    ...o.outbound.map(
      (x) =>
        ` outbound: ${hostPort(x.listen)} -> ${hostPort(x.upstream)} over mTLS, the upstream must be ${x.peer}`,
    ),
    ...o.inbound.map(
      (x) =>
        ` inbound: mTLS on ${hostPort(x.listen)} -> ${x.app.kind === 'pipe' ? x.app.path : hostPort(x.app.address)}, callers allowed: ${o.allow.join(', ')}`,
    ),
    ` admin: http://${hostPort(o.admin)}`,
  ];
  const doc = new Document(createEnvoyBootstrap(o), { aliasDuplicateObjects: false });
  doc.commentBefore = lines.join('\n');
  return doc.toString({ lineWidth: 0 }).trimEnd();
}
