import { bundleEndpointUrlProblem, parseSpiffeId } from '@tessera/spiffe';
import {
  absolutePath,
  type HealthConfig,
  healthField,
  LOG_FIELD,
  type LogConfig,
  TRUST_DOMAIN_FIELD,
} from '../common/config-fields.js';
import { type CrossCheck, type Field, loadConfigFile, validateConfig } from '../common/config-schema.js';
import { DEFAULT_ADMIN_SOCKET } from '../common/default-paths.js';
import { pluginConfigFields } from './attestation/registry.js';
import { oidcUrlProblem } from './oidc/discovery.js';

const problemOf = (f: () => unknown) => {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
};

/** A certificate and key from files, re-read every file_sync_interval (SPIRE's serving_cert_file). */
const SERVING_CERT_FILE_FIELDS = {
  cert_file_path: { kind: 'string', required: true, check: absolutePath },
  key_file_path: { kind: 'string', required: true, check: absolutePath },
  file_sync_interval: { kind: 'duration', default: '1h', min: '1s' },
} as const satisfies Record<string, Field>;

/** The server configuration file (`tessera server run --config server.yaml`). */
export const SERVER_CONFIG_SCHEMA = {
  kind: 'object',
  // SPIRE server keys an operator brings along, answered with ours.
  aliases: {
    default_x509_svid_ttl: 'x509_svid_ttl',
    default_jwt_svid_ttl: 'jwt_svid_ttl',
    agent_ttl: 'agent_svid_ttl',
    ca_ttl: 'ca.ttl',
    ca_key_type: 'ca.key_type',
    ca_subject: 'ca.subject',
    bind_address: 'agent_api.address',
    bind_port: 'agent_api.port',
    socket_path: 'admin_socket',
    log_level: 'log.level',
    log_format: 'log.format',
  },
  fields: {
    trust_domain: TRUST_DOMAIN_FIELD,
    data_dir: { kind: 'string', default: '/var/lib/tessera/server', check: absolutePath },
    agent_api: {
      kind: 'object',
      fields: {
        address: { kind: 'string', default: '0.0.0.0' },
        port: { kind: 'int', default: 8081, min: 0, max: 65535 },
      },
    },
    admin_socket: { kind: 'string', default: DEFAULT_ADMIN_SOCKET, check: absolutePath },
    datastore: {
      kind: 'choice',
      default: 'sqlite',
      options: {
        sqlite: { kind: 'object', fields: { path: { kind: 'string', check: absolutePath } } },
        postgres: {
          kind: 'object',
          fields: {
            connection_string: { kind: 'string', required: true },
            // The change feed's safety check (LISTEN/NOTIFY wakes it at once): one small query.
            poll_interval: { kind: 'duration', default: '5s', min: '100ms' },
            // How long change events are kept for a server that was away; after that it reloads.
            event_retention: { kind: 'duration', default: '1h', min: '1m' },
          },
        },
      },
    },
    ca: {
      kind: 'object',
      fields: {
        key_type: { kind: 'enum', values: ['ec-p256', 'ec-p384', 'rsa-2048'], default: 'ec-p256' },
        ttl: { kind: 'duration', default: '24h', min: '10s' },
        // Threads that sign batches of X509-SVIDs; default: one per core (none on one core).
        signing_threads: { kind: 'int', min: 0, max: 64 },
        subject: {
          kind: 'object',
          fields: {
            country: { kind: 'string', default: 'US' },
            organization: { kind: 'string', default: 'SPIFFE' },
            common_name: { kind: 'string', default: '' },
          },
        },
      },
    },
    x509_svid_ttl: { kind: 'duration', default: '1h', min: '1s' },
    jwt_svid_ttl: { kind: 'duration', default: '5m', min: '1s' },
    jwt_issuer: { kind: 'string', default: '' },
    // SPIRE's name and place; RS256 (rsa-2048) for relying parties that want RSA (AWS and others).
    jwt_key_type: { kind: 'enum', values: ['ec-p256', 'rsa-2048'], default: 'ec-p256' },
    // OIDC discovery of the JWT-SVID keys (docs/oidc.md); its issuer is jwt_issuer. Off when absent.
    oidc_discovery: {
      kind: 'object',
      optional: true,
      fields: {
        address: { kind: 'string', default: '0.0.0.0' },
        port: { kind: 'int', default: 8444, min: 0, max: 65535 },
        // HTTPS on address:port with this certificate, or plain HTTP on listen_socket_path.
        serving_cert_file: { kind: 'object', optional: true, fields: SERVING_CERT_FILE_FIELDS },
        listen_socket_path: { kind: 'string', check: absolutePath },
        jwks_uri: { kind: 'string' },
        allow_insecure_scheme: { kind: 'bool', default: false },
      },
    },
    agent_svid_ttl: { kind: 'duration', default: '1h', min: '1s' },
    // JSON-lines audit log (0600); default <data_dir>/audit.log.
    audit_log: { kind: 'string', check: absolutePath },
    node_attestors: {
      kind: 'object',
      fields: {
        join_token: { kind: 'object', fields: { enabled: { kind: 'bool', default: true } } },
        // Enabled when ca_bundle_path names the PEM file of the CAs that issue node certificates.
        x509pop: { kind: 'object', fields: { ca_bundle_path: { kind: 'string', check: absolutePath } } },
        // The others (attestation/registry.ts), each enabled when its section is present.
        ...pluginConfigFields(),
      },
    },
    key_manager: { kind: 'enum', values: ['disk', 'memory'], default: 'disk' },
    upstream_authority: {
      kind: 'choice',
      options: {
        disk: {
          kind: 'object',
          fields: {
            cert_file: { kind: 'string', required: true, check: absolutePath },
            key_file: { kind: 'string', required: true, check: absolutePath },
            bundle_file: { kind: 'string', check: absolutePath },
          },
        },
      },
    },
    // SPIFFE federation, with SPIRE's names: this server's bundle endpoint, and the foreign trust
    // domains whose bundles it fetches (more can be added at run time: tessera federation create).
    federation: {
      kind: 'object',
      fields: {
        bundle_endpoint: {
          kind: 'object',
          optional: true,
          fields: {
            address: { kind: 'string', default: '0.0.0.0' },
            port: { kind: 'int', default: 8443, min: 0, max: 65535 },
            refresh_hint: { kind: 'duration', default: '5m', min: '1s' },
            profile: {
              kind: 'choice',
              default: 'https_spiffe',
              options: {
                https_spiffe: { kind: 'object', fields: {} },
                https_web: {
                  kind: 'object',
                  fields: {
                    serving_cert_file: { kind: 'object', required: true, fields: SERVING_CERT_FILE_FIELDS },
                  },
                },
              },
            },
          },
        },
        federates_with: {
          kind: 'map',
          checkKey: (k) => {
            const why = TRUST_DOMAIN_FIELD.check(k);
            return why === undefined ? undefined : `is not a trust domain name: ${why}`;
          },
          of: {
            kind: 'object',
            fields: {
              bundle_endpoint_url: { kind: 'string', required: true, check: bundleEndpointUrlProblem },
              bundle_endpoint_profile: {
                kind: 'choice',
                required: true,
                options: {
                  https_spiffe: {
                    kind: 'object',
                    fields: {
                      endpoint_spiffe_id: {
                        kind: 'string',
                        required: true,
                        check: (v) => problemOf(() => parseSpiffeId(v)),
                      },
                    },
                  },
                  https_web: {
                    kind: 'object',
                    // PEM roots of a private CA that issued the endpoint's certificate; default the system's.
                    fields: { ca_bundle_path: { kind: 'string', check: absolutePath } },
                  },
                },
              },
            },
          },
        },
      },
    },
    log: LOG_FIELD,
    health: healthField(8080),
  },
} as const satisfies Field;

export interface FederatesWithConfig {
  readonly bundle_endpoint_url: string;
  readonly bundle_endpoint_profile: {
    readonly https_spiffe?: { readonly endpoint_spiffe_id: string };
    readonly https_web?: { readonly ca_bundle_path?: string };
  };
}

export interface ServingCertFileConfig {
  readonly cert_file_path: string;
  readonly key_file_path: string;
  /** Milliseconds. */
  readonly file_sync_interval: number;
}

export interface OidcDiscoveryConfig {
  readonly address: string;
  readonly port: number;
  readonly serving_cert_file?: ServingCertFileConfig;
  readonly listen_socket_path?: string;
  readonly jwks_uri?: string;
  readonly allow_insecure_scheme: boolean;
}

export interface BundleEndpointConfig {
  readonly address: string;
  readonly port: number;
  /** Milliseconds. */
  readonly refresh_hint: number;
  readonly profile: {
    readonly https_spiffe?: Record<string, never>;
    readonly https_web?: {
      readonly serving_cert_file: ServingCertFileConfig;
    };
  };
}

export interface ServerConfig {
  readonly trust_domain: string;
  readonly data_dir: string;
  readonly agent_api: { readonly address: string; readonly port: number };
  readonly admin_socket: string;
  readonly datastore: {
    readonly sqlite?: { readonly path?: string };
    readonly postgres?: {
      readonly connection_string: string;
      readonly poll_interval: number;
      readonly event_retention: number;
    };
  };
  readonly ca: {
    readonly key_type: 'ec-p256' | 'ec-p384' | 'rsa-2048';
    /** Milliseconds. */
    readonly ttl: number;
    readonly signing_threads?: number;
    readonly subject: {
      readonly country: string;
      readonly organization: string;
      readonly common_name: string;
    };
  };
  /** Milliseconds. */
  readonly x509_svid_ttl: number;
  /** Milliseconds. */
  readonly jwt_svid_ttl: number;
  readonly jwt_issuer: string;
  readonly jwt_key_type: 'ec-p256' | 'rsa-2048';
  readonly oidc_discovery?: OidcDiscoveryConfig;
  /** Milliseconds. */
  readonly agent_svid_ttl: number;
  readonly audit_log?: string;
  readonly node_attestors: {
    readonly join_token: { readonly enabled: boolean };
    readonly x509pop: { readonly ca_bundle_path?: string };
  };
  readonly key_manager: 'disk' | 'memory';
  readonly upstream_authority?: {
    readonly disk: { readonly cert_file: string; readonly key_file: string; readonly bundle_file?: string };
  };
  readonly federation: {
    readonly bundle_endpoint?: BundleEndpointConfig;
    /** By trust domain name. */
    readonly federates_with: Readonly<Record<string, FederatesWithConfig>>;
  };
  readonly log: LogConfig;
  readonly health: HealthConfig;
}

/**
 * What oidc_discovery needs of the rest: jwt_issuer set to an https URL (the document's issuer is
 * the iss of the JWT-SVIDs, so that the two always agree), jwks_uri an https URL, and exactly one
 * listener.
 */
const crossCheck: CrossCheck = (values) => {
  const c = values as unknown as ServerConfig;
  const o = c.oidc_discovery;
  if (o === undefined) return [];
  const out: { path: string; message: string }[] = [];
  if (c.jwt_issuer === '')
    out.push({
      path: 'oidc_discovery',
      message:
        'needs jwt_issuer: the discovery document names the issuer of the JWT-SVIDs; set jwt_issuer to the URL relying parties discover, e.g. https://oidc.example.org or https://example.org/tessera',
    });
  else {
    const why = oidcUrlProblem(c.jwt_issuer, o.allow_insecure_scheme);
    if (why !== undefined) out.push({ path: 'jwt_issuer', message: `${why} (oidc_discovery serves it)` });
  }
  if (o.jwks_uri !== undefined) {
    const why = oidcUrlProblem(o.jwks_uri, o.allow_insecure_scheme);
    if (why !== undefined) out.push({ path: 'oidc_discovery.jwks_uri', message: why });
  }
  if (o.serving_cert_file === undefined && o.listen_socket_path === undefined)
    out.push({
      path: 'oidc_discovery',
      message:
        'needs serving_cert_file (HTTPS on address:port) or listen_socket_path (plain HTTP on a Unix socket, behind a TLS-terminating proxy)',
    });
  if (o.serving_cert_file !== undefined && o.listen_socket_path !== undefined)
    out.push({
      path: 'oidc_discovery.listen_socket_path',
      message:
        'cannot be set with serving_cert_file: serve HTTPS on address:port (serving_cert_file) or plain HTTP on a Unix socket (listen_socket_path), not both',
    });
  return out;
};

/** Validates server configuration text; every problem is reported at once (ConfigError). */
export function parseServerConfig(text: string, file = 'server.yaml'): ServerConfig {
  return validateConfig(text, file, SERVER_CONFIG_SCHEMA, crossCheck) as unknown as ServerConfig;
}

export function loadServerConfig(file: string): ServerConfig {
  return loadConfigFile(file, SERVER_CONFIG_SCHEMA, crossCheck) as unknown as ServerConfig;
}
