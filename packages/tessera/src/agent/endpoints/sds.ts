// Envoy SDS v3 (envoy.service.secret.v3.SecretDiscoveryService) on the agent's socket, beside the
// Workload API, as Envoy and istio-agent expect it from SPIRE. The caller is attested from the
// socket exactly as a Workload API caller is. State of the world: each response holds every
// resource the stream asked for; a new version (and nonce) is sent only when that content changes.
import { randomBytes } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { parseSpiffeId, type SpiffeBundle } from '@tessera/spiffe';
import { grpcServiceDefinition } from '../../common/grpc.js';
import type { DaemonLogger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { DataSource } from '../../gen/envoy/config/core/v3/base_pb.js';
import { type Secret, SecretSchema } from '../../gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { SPIFFECertValidatorConfigSchema } from '../../gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config_pb.js';
import {
  type DiscoveryRequest,
  type DiscoveryResponse,
  DiscoveryResponseSchema,
} from '../../gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../gen/envoy/service/secret/v3/sds_pb.js';
import type { Entry } from '../../gen/tessera/common/v1/types_pb.js';
import type { Selector } from '../../server/datastore/types.js';
import type { AgentManager, CachedSvid } from '../manager.js';
import { refusalStatus } from './agent-refusal.js';

export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
/** Envoy's SPIFFE certificate validator (one trust domain entry per bundle). */
export const SPIFFE_VALIDATOR = 'envoy.tls.cert_validator.spiffe';

export interface SdsNames {
  /** The caller's first SVID. SPIRE's default_svid_name. */
  defaultSvid: string;
  /** The caller's own trust domain bundle. SPIRE's default_bundle_name. */
  defaultBundle: string;
  /** Every bundle the caller may use, federated ones included. SPIRE's default_all_bundles_name. */
  allBundles: string;
}

export const DEFAULT_SDS_NAMES: SdsNames = {
  defaultSvid: 'default',
  defaultBundle: 'ROOTCA',
  allBundles: 'ALL',
};

export interface SdsOptions {
  manager: AgentManager;
  attest: (call: { getPeer(): string }) => Promise<Selector[]>;
  names?: SdsNames;
  /**
   * For old Envoys without the SPIFFE validator: the all-bundles resource becomes one validation
   * context trusting every bundle's CAs (cross-domain checks then fall to the SAN matchers).
   */
  disableSpiffeCertValidation?: boolean;
  logger: DaemonLogger;
  metrics: Metrics;
}

interface Status {
  code: grpc.status;
  details: string;
}

const pem = new WeakMap<CachedSvid, { chain: Uint8Array; key: Uint8Array }>();
/** The SVID as Envoy wants it (inline PEM, PKCS#8 key), encoded once for every stream. */
function pemOf(c: CachedSvid): { chain: Uint8Array; key: Uint8Array } {
  let p = pem.get(c);
  if (p === undefined) {
    const m = c.svid.marshal();
    p = { chain: Buffer.from(m.certificates), key: Buffer.from(m.privateKey) };
    pem.set(c, p);
  }
  return p;
}

const inline = (bytes: Uint8Array): DataSource =>
  ({ specifier: { case: 'inlineBytes', value: bytes } }) as unknown as DataSource;

function bundlePem(b: SpiffeBundle): Uint8Array {
  return Buffer.from(b.x509Authorities.map((c) => c.toString()).join(''));
}

/** What one call may see: its SVIDs and the bundles of its trust domain and its entries' federations. */
interface View {
  svids: CachedSvid[];
  bundles: SpiffeBundle[];
  /** The own trust domain's CRLs (PEM), and a digest of them for change keys. */
  crls: { pem: Uint8Array; key: string };
}

function viewOf(manager: AgentManager, entries: readonly Entry[], selectors: readonly Selector[]): View {
  const federated = new Set(entries.flatMap((e) => e.federatesWith));
  return {
    svids: manager.svidsFor(selectors),
    crls: { pem: manager.crlsPem, key: manager.crlsKey },
    bundles: [
      manager.bundle,
      ...[...federated].flatMap((td) => {
        const b = manager.federatedBundles.get(td);
        return b === undefined ? [] : [b];
      }),
    ],
  };
}

/** Builds the secrets for `names` (or everything for an empty list); unknown names are left out. */
function secretsFor(
  o: SdsOptions,
  names: readonly string[],
  view: View,
): { secrets: Secret[]; key: string; unknown: string[] } {
  const n = o.names ?? DEFAULT_SDS_NAMES;
  const wanted =
    names.length > 0
      ? names
      : [
          n.defaultSvid,
          ...view.svids.map((s) => s.svid.id.toString()),
          n.defaultBundle,
          ...view.bundles.map((b) => b.trustDomain.idString()),
          n.allBundles,
        ];
  const secrets: Secret[] = [];
  const keys: string[] = [];
  const unknown: string[] = [];
  const tls = (name: string, c: CachedSvid) => {
    const p = pemOf(c);
    keys.push(`${name}=${c.svid.certificates[0]?.serialNumber}`);
    secrets.push(
      create(SecretSchema, {
        name,
        type: {
          case: 'tlsCertificate',
          value: { certificateChain: inline(p.chain), privateKey: inline(p.key) },
        },
      }),
    );
  };
  const trusted = (name: string, bundles: readonly SpiffeBundle[]) => {
    // The CRLs go with the own trust domain's roots alone: Envoy refuses a certificate whose issuer
    // has no CRL once a context has any, so none go with federated roots (their CRLs are not ours),
    // and only the leaf is checked (an upstream authority's CRLs are not ours either).
    const own = bundles.length === 1 && bundles[0] === view.bundles[0] && view.crls.pem.length > 0;
    keys.push(
      `${name}=${bundles.map((b) => `${b.trustDomain}:${b.x509Authorities.map((c) => c.fingerprint256)}`)}${own ? `+crl:${view.crls.key}` : ''}`,
    );
    secrets.push(
      create(SecretSchema, {
        name,
        type: {
          case: 'validationContext',
          value: {
            trustedCa: inline(Buffer.concat(bundles.map(bundlePem))),
            ...(own ? { crl: inline(view.crls.pem), onlyVerifyLeafCertCrl: true } : {}),
          },
        },
      }),
    );
  };
  for (const name of [...new Set(wanted)]) {
    if (name === n.defaultSvid) {
      const first = view.svids[0];
      if (first !== undefined) tls(name, first);
      continue;
    }
    if (name === n.defaultBundle) {
      trusted(name, [view.bundles[0] as SpiffeBundle]);
      continue;
    }
    if (name === n.allBundles) {
      if (o.disableSpiffeCertValidation === true) {
        trusted(name, view.bundles);
        continue;
      }
      keys.push(
        `${name}=${view.bundles.map((b) => `${b.trustDomain}:${b.x509Authorities.map((c) => c.fingerprint256)}`)}`,
      );
      secrets.push(
        create(SecretSchema, {
          name,
          type: {
            case: 'validationContext',
            value: {
              customValidatorConfig: {
                name: SPIFFE_VALIDATOR,
                typedConfig: anyPack(
                  SPIFFECertValidatorConfigSchema,
                  create(SPIFFECertValidatorConfigSchema, {
                    trustDomains: view.bundles.map((b) => ({
                      name: b.trustDomain.name,
                      trustBundle: inline(bundlePem(b)),
                    })),
                  }),
                ),
              },
            },
          },
        }),
      );
      continue;
    }
    let id: ReturnType<typeof parseSpiffeId> | undefined;
    try {
      id = parseSpiffeId(name);
    } catch {
      id = undefined;
    }
    if (id !== undefined && id.path === '') {
      const b = view.bundles.find((x) => x.trustDomain.equals(id.trustDomain));
      if (b !== undefined) trusted(name, [b]);
      else unknown.push(name);
      continue;
    }
    const svid = id === undefined ? undefined : view.svids.find((s) => s.svid.id.equals(id));
    if (svid !== undefined) tls(name, svid);
    else unknown.push(name);
  }
  return { secrets, key: keys.join('|'), unknown };
}

function response(version: string, nonce: string, secrets: readonly Secret[]): DiscoveryResponse {
  return create(DiscoveryResponseSchema, {
    versionInfo: version,
    nonce,
    typeUrl: SECRET_TYPE_URL,
    resources: secrets.map((s) => anyPack(SecretSchema, s)),
  });
}

/** The SDS service (definition + implementation) for the agent's socket. */
export function createSds(o: SdsOptions): {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
} {
  const { manager } = o;

  const streamSecrets = (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => {
    const peer = call.getPeer();
    let selectors: Selector[] | undefined;
    let names: string[] | undefined;
    let version = 0;
    let nonce = '';
    let lastKey: string | undefined;
    let lastUnknown = '';
    let ended = false;
    const queued: DiscoveryRequest[] = [];
    const end = (s: Status) => {
      if (ended) return;
      ended = true;
      manager.off('update', send);
      call.emit('error', s);
    };
    function send(): void {
      if (ended || selectors === undefined || names === undefined) return;
      const refused = refusalStatus(manager);
      if (refused !== undefined) {
        end(refused);
        return;
      }
      if (!manager.synced) return;
      const entries = manager.entriesFor(selectors);
      if (entries.length === 0) {
        end({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
        return;
      }
      const built = secretsFor(o, names, viewOf(manager, entries, selectors));
      const unknown = built.unknown.join(',');
      if (unknown !== '' && unknown !== lastUnknown)
        o.logger.warn('sds: names this workload has no secret for are left out', { peer, names: unknown });
      lastUnknown = unknown;
      if (built.key === lastKey) return;
      lastKey = built.key;
      version++;
      nonce = randomBytes(8).toString('hex');
      call.write(response(String(version), nonce, built.secrets));
      o.metrics.inc('tessera_agent_sds_responses_total', 'SDS responses sent.');
    }
    const handle = (req: DiscoveryRequest) => {
      if (req.typeUrl !== '' && req.typeUrl !== SECRET_TYPE_URL) {
        end({
          code: grpc.status.INVALID_ARGUMENT,
          details: `sds: type_url must be ${SECRET_TYPE_URL}; got ${req.typeUrl}`,
        });
        return;
      }
      if (req.errorDetail !== undefined) {
        // A NACK: Envoy refused that version. Say so; the same content is not pushed again.
        o.logger.warn('sds: Envoy rejected a response (NACK)', {
          peer,
          version: req.versionInfo,
          nonce: req.responseNonce,
          error: req.errorDetail.message,
        });
        o.metrics.inc('tessera_agent_sds_nacks_total', 'SDS responses rejected by the client (NACK).');
        return;
      }
      // A stale request (answering an older nonce) may still change the names; an ACK of the current
      // nonce with the same names changes nothing.
      const next = [...req.resourceNames];
      if (names !== undefined && sameNames(names, next)) return;
      names = next;
      lastKey = undefined; // the subscription changed: answer it, even if nothing else did
      send();
    };
    call.on('data', (req: DiscoveryRequest) => {
      if (selectors === undefined) queued.push(req);
      else handle(req);
    });
    call.on('cancelled', () => {
      ended = true;
      manager.off('update', send);
    });
    call.on('end', () => {
      ended = true;
      manager.off('update', send);
      call.end();
    });
    call.on('error', () => undefined);
    o.attest(call)
      .then((s) => {
        selectors = s;
        manager.on('update', send);
        for (const r of queued.splice(0)) handle(r);
      })
      .catch((err: unknown) => {
        o.logger.warn('sds: workload attestation failed', { peer, error: (err as Error).message });
        end({
          code: grpc.status.UNAVAILABLE,
          details: `workload attestation failed: ${(err as Error).message.replace(/^workload attestation: /, '')}`,
        });
      });
  };

  const fetchSecrets = (
    call: grpc.ServerUnaryCall<DiscoveryRequest, DiscoveryResponse>,
    cb: grpc.sendUnaryData<DiscoveryResponse>,
  ) => {
    o.attest(call)
      .then(async (selectors) => {
        const synced = await manager.whenSynced(5000);
        const refused = refusalStatus(manager);
        if (refused !== undefined) return cb(refused);
        if (!synced)
          return cb({
            code: grpc.status.UNAVAILABLE,
            details: 'the agent has not synced with the server yet; retry',
          });
        const entries = manager.entriesFor(selectors);
        if (entries.length === 0)
          return cb({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
        const built = secretsFor(o, call.request.resourceNames, viewOf(manager, entries, selectors));
        cb(null, response(built.key, randomBytes(8).toString('hex'), built.secrets));
      })
      .catch((err: unknown) => {
        o.logger.warn('sds: workload attestation failed', {
          peer: call.getPeer(),
          error: (err as Error).message,
        });
        cb({
          code: grpc.status.UNAVAILABLE,
          details: `workload attestation failed: ${(err as Error).message.replace(/^workload attestation: /, '')}`,
        });
      });
  };

  const deltaSecrets = (call: grpc.ServerDuplexStream<unknown, unknown>) => {
    call.on('error', () => undefined);
    call.emit('error', {
      code: grpc.status.UNIMPLEMENTED,
      details:
        'sds: DeltaSecrets (incremental xDS) is not served; use StreamSecrets (state of the world), which is what Envoy uses for SDS by default',
    });
  };

  return {
    definition: grpcServiceDefinition(SecretDiscoveryService),
    implementation: {
      streamSecrets: streamSecrets as grpc.UntypedHandleCall,
      fetchSecrets: fetchSecrets as grpc.UntypedHandleCall,
      deltaSecrets: deltaSecrets as grpc.UntypedHandleCall,
    },
  };
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}
