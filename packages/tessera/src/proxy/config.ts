// The proxy configuration file (`tessera proxy run --config proxy.yaml`): where its identity comes
// from (the Workload API, never files), who it is for policy selection (namespace, labels), the
// policy files, and its inbound and outbound listeners.
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';
import { parseSpiffeId, parseTrustDomain } from '@tessera/spiffe';
import {
  absolutePath,
  type HealthConfig,
  healthField,
  LOG_FIELD,
  type LogConfig,
} from '../common/config-fields.js';
import { ConfigError, type Field, loadConfigFile, validateConfig } from '../common/config-schema.js';
import { isDnsName } from '../common/dns-name.js';

/** `host:port` with an IP or DNS host (IPv6 in brackets); undefined when it is one, else why not. */
export function checkHostPort(v: string): string | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  const host = m?.[1] ?? m?.[2] ?? '';
  if (m === null || port < 1 || port > 65535)
    return `must be host:port with a port from 1 to 65535 (IPv6 in brackets: [::1]:8443); got ${JSON.stringify(v)}`;
  if (m[1] !== undefined ? isIP(host) !== 6 : isIP(host) === 0 && !isDnsName(host))
    return `has a host that is neither an IP address nor a DNS name: ${JSON.stringify(host)}`;
  return undefined;
}

/** Splits a checked `host:port`. */
export function splitHostPort(v: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  return { host: v.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(v.slice(i + 1)) };
}

const listenField = { kind: 'string', required: true, check: checkHostPort } as const satisfies Field;

/** An inbound upstream: the local app, `host:port` or `unix:/absolute/path`. */
const checkUpstream = (v: string): string | undefined => {
  if (v.startsWith('unix:')) {
    const path = v.slice('unix:'.length).replace(/^\/\//, '');
    return isAbsolute(path) ? undefined : `must be unix:/absolute/path.sock; got ${JSON.stringify(v)}`;
  }
  return checkHostPort(v);
};

const checkSpiffeId = (v: string): string | undefined => {
  try {
    parseSpiffeId(v);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
};

const checkTrustDomain = (v: string): string | undefined => {
  try {
    parseTrustDomain(v);
    return v.includes('/') ? 'must be a trust domain name (example.org), not a SPIFFE ID' : undefined;
  } catch (err) {
    return (err as Error).message;
  }
};

// Kubernetes label rules, since the same AuthorizationPolicy selectors are matched against them.
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export const PROXY_CONFIG_SCHEMA = {
  kind: 'object',
  fields: {
    // The agent's Workload API socket; default SPIFFE_ENDPOINT_SOCKET, else /run/tessera/agent.sock.
    workload_api_socket: { kind: 'string' },
    // Who this proxy fronts, as Istio selects policies: the namespace and the pod-like labels.
    namespace: { kind: 'string', default: 'default' },
    labels: {
      kind: 'string_map',
      check: (k, v) =>
        !LABEL_KEY.test(k)
          ? `is not a valid label key (Kubernetes rules: [prefix/]name, 63 characters of [A-Za-z0-9-_.])`
          : !LABEL_VALUE.test(v)
            ? `has an invalid label value ${JSON.stringify(v)} (63 characters of [A-Za-z0-9-_.])`
            : undefined,
    },
    root_namespace: { kind: 'string', default: 'istio-system' },
    // AuthorizationPolicy files or directories; reloaded when they change.
    policies: { kind: 'list', of: { kind: 'string', check: absolutePath } },
    // Decisions to the audit log (JSON lines, 0600): every one, only denials, or none.
    audit: {
      kind: 'object',
      fields: {
        path: { kind: 'string', check: absolutePath },
        decisions: { kind: 'enum', values: ['all', 'denied', 'none'], default: 'denied' },
      },
    },
    // request.auth.* and requestPrincipals: a JWT-SVID in `Authorization: Bearer`, validated for
    // one of these audiences against the JWT bundles from the Workload API.
    jwt: {
      kind: 'object',
      fields: {
        audiences: { kind: 'list', of: { kind: 'string' } },
        forward_original_token: { kind: 'bool', default: false },
      },
    },
    inbound: {
      kind: 'list',
      of: {
        kind: 'object',
        fields: {
          name: { kind: 'string' },
          listen: listenField,
          upstream: { kind: 'string', required: true, check: checkUpstream },
          protocol: { kind: 'enum', values: ['http', 'tcp'], default: 'http' },
          // What the app speaks (protocol: http): HTTP/1.1, or HTTP/2 in cleartext with prior
          // knowledge (h2c), which gRPC servers need: trailers and streams go through.
          upstream_protocol: { kind: 'enum', values: ['http1', 'http2'], default: 'http1' },
          // The port policies see as destination.port / `ports`: the app's port, as in Istio.
          // Default: the upstream's port, or the listening port for a Unix-socket upstream.
          policy_port: { kind: 'int', min: 1, max: 65535 },
          forward_client_cert: {
            kind: 'enum',
            values: ['sanitize_set', 'append_forward'],
            default: 'sanitize_set',
          },
          // Trust domains whose clients may connect (verified against their bundle); default: every
          // bundle the agent provides, own and federated. Policies then decide.
          trust_domains: { kind: 'list', of: { kind: 'string', check: checkTrustDomain } },
          // A client that has not finished its TLS handshake by then is disconnected.
          handshake_timeout: { kind: 'duration', default: '10s', min: '100ms' },
          // A connection with no bytes either way for this long is closed (Envoy's idle_timeout).
          idle_timeout: { kind: 'duration', default: '1h', min: '100ms' },
        },
      },
    },
    outbound: {
      kind: 'list',
      of: {
        kind: 'object',
        fields: {
          name: { kind: 'string' },
          listen: listenField,
          upstream: { kind: 'string', required: true, check: checkHostPort },
          // Who the server must be: one SPIFFE ID, any of several, or any member of a trust domain.
          server_spiffe_ids: { kind: 'list', of: { kind: 'string', check: checkSpiffeId } },
          server_trust_domain: { kind: 'string', check: checkTrustDomain },
          // What the local client speaks, offered to the server by ALPN: http1, http2 (h2), or tcp.
          protocol: { kind: 'enum', values: ['http1', 'http2', 'tcp'], default: 'tcp' },
          // The TLS server name sent; default: the upstream host when it is a DNS name.
          sni: { kind: 'string' },
          connect_timeout: { kind: 'duration', default: '5s' },
          // A connection with no bytes either way for this long is closed (Envoy's idle_timeout).
          idle_timeout: { kind: 'duration', default: '1h', min: '100ms' },
        },
      },
    },
    // Processes serving the listeners (node:cluster shares each listening socket among them): one
    // proxy process uses one core, so set this to the cores the proxy may use.
    workers: { kind: 'int', default: 1, min: 1, max: 64 },
    // On SIGTERM: stop accepting, let requests and connections in flight finish for this long, then
    // close what is left (as istio-agent's terminationDrainDuration).
    drain_timeout: { kind: 'duration', default: '5s' },
    log: LOG_FIELD,
    health: healthField(8089),
  },
} as const satisfies Field;

export interface InboundConfig {
  readonly name?: string;
  readonly listen: string;
  readonly upstream: string;
  readonly protocol: 'http' | 'tcp';
  readonly upstream_protocol: 'http1' | 'http2';
  readonly policy_port?: number;
  readonly forward_client_cert: 'sanitize_set' | 'append_forward';
  readonly trust_domains: readonly string[];
  /** Milliseconds. */
  readonly handshake_timeout: number;
  /** Milliseconds. */
  readonly idle_timeout: number;
}

export interface OutboundConfig {
  readonly name?: string;
  readonly listen: string;
  readonly upstream: string;
  readonly server_spiffe_ids: readonly string[];
  readonly server_trust_domain?: string;
  readonly protocol: 'http1' | 'http2' | 'tcp';
  readonly sni?: string;
  /** Milliseconds. */
  readonly connect_timeout: number;
  /** Milliseconds. */
  readonly idle_timeout: number;
}

export interface ProxyConfig {
  readonly workload_api_socket?: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly root_namespace: string;
  readonly policies: readonly string[];
  readonly audit: { readonly path?: string; readonly decisions: 'all' | 'denied' | 'none' };
  readonly jwt: { readonly audiences: readonly string[]; readonly forward_original_token: boolean };
  readonly inbound: readonly InboundConfig[];
  readonly outbound: readonly OutboundConfig[];
  readonly workers: number;
  /** Milliseconds. */
  readonly drain_timeout: number;
  readonly log: LogConfig;
  readonly health: HealthConfig;
}

/** What the schema cannot say: listeners exist, an outbound names who the server must be. */
function checkProxyConfig(config: ProxyConfig, file: string): ProxyConfig {
  const problems: { path: string; line: undefined; message: string }[] = [];
  if (config.inbound.length === 0 && config.outbound.length === 0)
    problems.push({
      path: '',
      line: undefined,
      message: 'has no listener: add inbound and/or outbound entries',
    });
  config.outbound.forEach((o, i) => {
    const n = (o.server_spiffe_ids.length > 0 ? 1 : 0) + (o.server_trust_domain === undefined ? 0 : 1);
    if (n !== 1)
      problems.push({
        path: `outbound[${i}]`,
        line: undefined,
        message:
          'must say who the server is with exactly one of server_spiffe_ids (one or more SPIFFE IDs) or server_trust_domain',
      });
  });
  config.inbound.forEach((l, i) => {
    if (l.protocol === 'tcp' && l.upstream_protocol !== 'http1')
      problems.push({
        path: `inbound[${i}].upstream_protocol`,
        line: undefined,
        message: 'applies to protocol: http listeners; a tcp listener passes bytes as they are',
      });
  });
  if (config.inbound.length > 0 && config.policies.length === 0)
    problems.push({
      path: 'policies',
      line: undefined,
      message:
        'is required with inbound listeners (an inbound proxy without policies would let every authenticated peer in; to do that on purpose, write an ALLOW policy with rules: [{}])',
    });
  const listens = [...config.inbound, ...config.outbound].map((l) => l.listen);
  for (const l of new Set(listens))
    if (listens.filter((x) => x === l).length > 1)
      problems.push({ path: '', line: undefined, message: `two listeners on ${l}` });
  if (config.jwt.forward_original_token && config.jwt.audiences.length === 0)
    problems.push({
      path: 'jwt.audiences',
      line: undefined,
      message: 'is empty: name the audiences JWT-SVIDs must carry',
    });
  if (problems.length > 0) throw new ConfigError(file, problems);
  return config;
}

export function parseProxyConfig(text: string, file = 'proxy.yaml'): ProxyConfig {
  return checkProxyConfig(validateConfig(text, file, PROXY_CONFIG_SCHEMA) as unknown as ProxyConfig, file);
}

export function loadProxyConfig(file: string): ProxyConfig {
  return checkProxyConfig(loadConfigFile(file, PROXY_CONFIG_SCHEMA) as unknown as ProxyConfig, file);
}
