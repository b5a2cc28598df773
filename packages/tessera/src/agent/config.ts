import { DEFAULT_WORKLOAD_API_SOCKET } from '@tessera/spiffe';
import {
  absolutePath,
  type HealthConfig,
  healthField,
  LOG_FIELD,
  type LogConfig,
  TRUST_DOMAIN_FIELD,
} from '../common/config-fields.js';
import { type Field, loadConfigFile, validateConfig } from '../common/config-schema.js';
import { agentPluginConfigOptions } from './node-attestation/registry.js';
import { serverAddressProblem } from './server-address.js';
import { DEFAULT_DOCKER_SOCKET } from './workload/docker.js';
import { dbusAddressProblem, unixSocketProblem, type WorkloadAttestorsConfig } from './workload/registry.js';
import { DEFAULT_SYSTEM_BUS } from './workload/systemd.js';

/** The agent configuration file (`tessera agent run --config agent.yaml`); names follow SPIRE's. */
export const AGENT_CONFIG_SCHEMA = {
  kind: 'object',
  // SPIRE agent keys an operator brings along, answered with ours.
  aliases: {
    join_token: 'node_attestor.join_token.token (or --join-token)',
    log_level: 'log.level',
    log_format: 'log.format',
    workload_x509_svid_key_type: 'workload_key_type',
  },
  fields: {
    trust_domain: TRUST_DOMAIN_FIELD,
    // One server or several (a list), each `host`, `host:port` or `[IPv6]:port`; a host name stands
    // for every address it resolves to. The port defaults to server_port.
    server_address: {
      kind: 'list',
      single: true,
      required: true,
      minItems: 1,
      of: { kind: 'string', required: true, check: serverAddressProblem },
    },
    server_port: { kind: 'int', default: 8081, min: 1, max: 65535 },
    // How the agent first trusts the server: a PEM file, an https URL (web PKI), or, for labs only,
    // nothing at all (insecure_bootstrap: true — the first server to answer is believed).
    trust_bundle_path: { kind: 'string', check: absolutePath },
    trust_bundle_url: {
      kind: 'string',
      check: (v) =>
        v.startsWith('https://') ? undefined : `must be an https:// URL; got ${JSON.stringify(v)}`,
    },
    insecure_bootstrap: { kind: 'bool', default: false },
    node_attestor: {
      kind: 'choice',
      default: 'join_token',
      options: {
        // The token from `--join-token`, `token`, or the first line of `token_file`.
        join_token: {
          kind: 'object',
          fields: {
            token: { kind: 'string' },
            token_file: { kind: 'string', check: absolutePath },
          },
        },
        x509pop: {
          kind: 'object',
          fields: {
            certificate_path: { kind: 'string', required: true, check: absolutePath },
            private_key_path: { kind: 'string', required: true, check: absolutePath },
          },
        },
        // The others (node-attestation/registry.ts).
        ...agentPluginConfigOptions(),
      },
    },
    // The library's default: where workloads look when SPIFFE_ENDPOINT_SOCKET is not set.
    socket_path: { kind: 'string', default: DEFAULT_WORKLOAD_API_SOCKET, check: absolutePath },
    data_dir: { kind: 'string', default: '/var/lib/tessera/agent', check: absolutePath },
    workload_key_type: { kind: 'enum', values: ['ec-p256', 'ec-p384', 'rsa-2048'], default: 'ec-p256' },
    // Envoy SDS on the same socket(s); names and behaviour as SPIRE's agent.
    sds: {
      kind: 'object',
      fields: {
        default_svid_name: { kind: 'string', default: 'default' },
        default_bundle_name: { kind: 'string', default: 'ROOTCA' },
        default_all_bundles_name: { kind: 'string', default: 'ALL' },
        disable_spiffe_cert_validation: { kind: 'bool', default: false },
      },
    },
    // A second socket serving the same APIs, e.g. where istio-agent looks for an SDS server:
    // /var/run/secrets/workload-spiffe-uds/socket.
    additional_socket_path: { kind: 'string', check: absolutePath },
    // unix is always on; systemd and docker are on when their key is there (docs/attestation.md).
    workload_attestors: {
      kind: 'object',
      fields: {
        unix: { kind: 'object', fields: { sha256: { kind: 'bool', default: false } } },
        systemd: {
          kind: 'object',
          optional: true,
          fields: {
            bus_address: { kind: 'string', default: DEFAULT_SYSTEM_BUS, check: dbusAddressProblem },
            timeout: { kind: 'duration', default: '3s', min: '1ms' },
          },
        },
        docker: {
          kind: 'object',
          optional: true,
          fields: {
            docker_socket_path: {
              kind: 'string',
              default: `unix://${DEFAULT_DOCKER_SOCKET}`,
              check: unixSocketProblem,
            },
            // Asked about containers whose cgroup says libpod; unset, those get no docker selectors.
            podman_socket_path: { kind: 'string', check: unixSocketProblem },
            timeout: { kind: 'duration', default: '3s', min: '1ms' },
          },
        },
      },
    },
    log: LOG_FIELD,
    health: healthField(8088),
  },
} as const satisfies Field;

export interface AgentConfig {
  readonly trust_domain: string;
  /** Always a list: a single address in the file is a list of one. */
  readonly server_address: readonly string[];
  readonly server_port: number;
  readonly trust_bundle_path?: string;
  readonly trust_bundle_url?: string;
  readonly insecure_bootstrap: boolean;
  readonly node_attestor: {
    readonly join_token?: { readonly token?: string; readonly token_file?: string };
    readonly x509pop?: { readonly certificate_path: string; readonly private_key_path: string };
  };
  readonly socket_path: string;
  readonly data_dir: string;
  readonly workload_key_type: 'ec-p256' | 'ec-p384' | 'rsa-2048';
  readonly sds: {
    readonly default_svid_name: string;
    readonly default_bundle_name: string;
    readonly default_all_bundles_name: string;
    readonly disable_spiffe_cert_validation: boolean;
  };
  readonly additional_socket_path?: string;
  readonly workload_attestors: WorkloadAttestorsConfig;
  readonly log: LogConfig;
  readonly health: HealthConfig;
}

export function parseAgentConfig(text: string, file = 'agent.yaml'): AgentConfig {
  return validateConfig(text, file, AGENT_CONFIG_SCHEMA) as unknown as AgentConfig;
}

export function loadAgentConfig(file: string): AgentConfig {
  return loadConfigFile(file, AGENT_CONFIG_SCHEMA) as unknown as AgentConfig;
}
