import { isAbsolute } from 'node:path';
import { parseTrustDomain } from 'spiffe';
import { type Field, loadConfigFile, validateConfig } from '../common/config-schema.js';

const absolutePath = (v: string) =>
  isAbsolute(v) ? undefined : `must be an absolute path; got ${JSON.stringify(v)}`;

/** The agent configuration file (`tessera agent run --config agent.yaml`); names follow SPIRE's. */
export const AGENT_CONFIG_SCHEMA = {
  kind: 'object',
  fields: {
    trust_domain: {
      kind: 'string',
      required: true,
      check: (v) => {
        try {
          parseTrustDomain(v);
          return v.includes(':') ? 'must be a trust domain name (example.org), not a SPIFFE ID' : undefined;
        } catch (err) {
          return (err as Error).message;
        }
      },
    },
    server_address: { kind: 'string', required: true },
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
      },
    },
    socket_path: { kind: 'string', default: '/run/tessera/agent.sock', check: absolutePath },
    data_dir: { kind: 'string', default: '/var/lib/tessera/agent', check: absolutePath },
    workload_key_type: { kind: 'enum', values: ['ec-p256', 'ec-p384', 'rsa-2048'], default: 'ec-p256' },
    workload_attestors: {
      kind: 'object',
      fields: {
        unix: { kind: 'object', fields: { sha256: { kind: 'bool', default: false } } },
      },
    },
    log: {
      kind: 'object',
      fields: {
        level: { kind: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info' },
        format: { kind: 'enum', values: ['json', 'text'], default: 'text' },
      },
    },
    health: {
      kind: 'object',
      fields: {
        address: { kind: 'string', default: '127.0.0.1' },
        port: { kind: 'int', default: 8088, min: 0, max: 65535 },
      },
    },
  },
} as const satisfies Field;

export interface AgentConfig {
  readonly trust_domain: string;
  readonly server_address: string;
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
  readonly workload_attestors: { readonly unix: { readonly sha256: boolean } };
  readonly log: { readonly level: 'debug' | 'info' | 'warn' | 'error'; readonly format: 'json' | 'text' };
  readonly health: { readonly address: string; readonly port: number };
}

export function parseAgentConfig(text: string, file = 'agent.yaml'): AgentConfig {
  return validateConfig(text, file, AGENT_CONFIG_SCHEMA) as unknown as AgentConfig;
}

export function loadAgentConfig(file: string): AgentConfig {
  return loadConfigFile(file, AGENT_CONFIG_SCHEMA) as unknown as AgentConfig;
}
