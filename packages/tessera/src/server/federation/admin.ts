// The admin API's federation methods: relationships stored in the datastore are created, changed
// and deleted here (audited, with the caller); those from server.yaml are listed and refreshed
// but changed only in the file. What a relationship's refreshes did is this server's view.

import type { MessageInitShape } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import { parseSpiffeBundle, type SpiffeBundle, type TrustDomain } from '@tessera/spiffe';
import type { AuditLog } from '../../common/audit.js';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { ServiceHandlers } from '../../common/grpc.js';
import type { DaemonLogger } from '../../common/log.js';
import type {
  Admin,
  FederationRelationshipSchema,
  FederationRelationship as RelationshipMessage,
} from '../../gen/tessera/admin/v1/admin_pb.js';
import { adminCallerOf, callerFields } from '../api/admin-caller.js';
import type { Datastore } from '../datastore/types.js';
import type { Federation, FederationView } from './federation.js';
import { checkRelationship, type FederationRelationship } from './relationship.js';

type MethodsOf<T> = T extends GenService<infer S> ? S : never;
type AdminHandlers = ServiceHandlers<MethodsOf<typeof Admin>>;
export type FederationHandlers = Pick<
  AdminHandlers,
  | 'createFederationRelationship'
  | 'updateFederationRelationship'
  | 'deleteFederationRelationship'
  | 'getFederationRelationship'
  | 'listFederationRelationships'
  | 'refreshBundle'
>;

export interface FederationAdminDeps {
  trustDomain: TrustDomain;
  datastore: Datastore;
  /** Undefined only in tests that run the admin API without a server. */
  federation?: Federation;
  audit: AuditLog;
  logger: DaemonLogger;
}

const seconds = (d: Date | undefined): bigint =>
  d === undefined ? 0n : BigInt(Math.floor(d.getTime() / 1000));

function invalid(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.INVALID_ARGUMENT, `admin: ${message}`);
}

function notFound(td: string): TesseraError {
  return new TesseraError(
    TesseraErrorCode.FEDERATION_NOT_FOUND,
    `federation: no relationship with "${td}" (tessera federation list shows them all)`,
  );
}

function inServerYaml(td: string, what: string): TesseraError {
  return new TesseraError(
    TesseraErrorCode.FEDERATION_NOT_FOUND,
    `federation: the relationship with "${td}" is defined in server.yaml (federation.federates_with); ${what} it there and restart the server`,
  );
}

export function federationHandlers(deps: FederationAdminDeps): FederationHandlers {
  const { datastore: ds, audit, trustDomain: own } = deps;
  const federation = () => {
    if (deps.federation === undefined) throw invalid('federation is not running on this server');
    return deps.federation;
  };

  const out = async (v: FederationView): Promise<MessageInitShape<typeof FederationRelationshipSchema>> => {
    const r = v.relationship;
    const bundle = await ds.getBundle(r.trustDomain);
    return {
      trustDomain: r.trustDomain.name,
      bundleEndpointUrl: r.bundleEndpointUrl,
      bundleEndpointProfile: r.profile,
      endpointSpiffeId: r.endpointSpiffeId?.toString() ?? '',
      caBundlePem: r.caBundlePem ?? '',
      source: v.source,
      status: {
        lastAttempt: seconds(v.status.lastAttempt),
        lastSuccess: seconds(v.status.lastSuccess),
        lastError: v.status.lastError ?? '',
        nextRefresh: seconds(v.status.nextRefresh),
        failures: v.status.failures,
        hasBundle: bundle !== undefined,
        bundleSequence: bundle?.sequenceNumber ?? 0n,
        refreshHint: BigInt(bundle?.refreshHint ?? 0),
        x509Authorities: bundle?.x509Authorities.length ?? 0,
        jwtAuthorities: bundle?.jwtAuthorities.size ?? 0,
      },
    };
  };

  const viewOf = async (td: string): Promise<FederationView> => {
    const f = federation();
    await f.settled();
    const v = f.get(td);
    if (v === undefined) throw notFound(td);
    return v;
  };

  /** The request as a relationship, and its bootstrap bundle when it carries one. */
  const parse = (req: RelationshipMessage): { rel: FederationRelationship; bundle?: SpiffeBundle } => {
    if (req.trustDomain === '') throw invalid('trust_domain is required');
    const rel = checkRelationship(
      {
        trustDomain: req.trustDomain,
        bundleEndpointUrl: req.bundleEndpointUrl,
        profile: req.bundleEndpointProfile,
        endpointSpiffeId: req.endpointSpiffeId,
        caBundlePem: req.caBundlePem,
      },
      own,
    );
    if (req.trustDomainBundle.length === 0) return { rel };
    let bundle: SpiffeBundle;
    try {
      bundle = parseSpiffeBundle(rel.trustDomain, req.trustDomainBundle);
    } catch (err) {
      throw invalid(
        `trust_domain_bundle of "${rel.trustDomain.name}" is not a SPIFFE bundle document: ${(err as Error).message}`,
      );
    }
    if (bundle.x509Authorities.length === 0)
      throw invalid(
        `trust_domain_bundle of "${rel.trustDomain.name}" has no X.509 authorities to authenticate the endpoint`,
      );
    return { rel, bundle };
  };

  const put = async (
    mode: 'create' | 'update',
    req: RelationshipMessage,
    call: Parameters<AdminHandlers['createFederationRelationship']>[1],
  ) => {
    const caller = adminCallerOf(call);
    const { rel, bundle } = parse(req);
    const td = rel.trustDomain.name;
    const f = federation();
    await f.settled();
    if (f.get(td)?.source === 'config')
      throw mode === 'create'
        ? new TesseraError(
            TesseraErrorCode.FEDERATION_EXISTS,
            `federation: a relationship with "${td}" is defined in server.yaml (federation.federates_with); change it there`,
          )
        : inServerYaml(td, 'change');
    await ds.putFederationRelationship(
      {
        trustDomain: td,
        bundleEndpointUrl: rel.bundleEndpointUrl,
        profile: rel.profile,
        endpointSpiffeId: rel.endpointSpiffeId?.toString() ?? '',
        caBundlePem: rel.caBundlePem ?? '',
      },
      mode,
      bundle,
    );
    audit.record(mode === 'create' ? 'federation.created' : 'federation.updated', {
      trust_domain: td,
      bundle_endpoint_url: rel.bundleEndpointUrl,
      profile: rel.profile,
      endpoint_spiffe_id: rel.endpointSpiffeId?.toString(),
      bundle_set: bundle !== undefined,
      ...callerFields(caller),
    });
    deps.logger.info(`admin: federation relationship ${mode === 'create' ? 'created' : 'updated'}`, {
      trust_domain: td,
      ...callerFields(caller),
    });
    return out(await viewOf(td));
  };

  return {
    createFederationRelationship: (req, call) => put('create', req, call),
    updateFederationRelationship: (req, call) => put('update', req, call),

    async deleteFederationRelationship(req, call) {
      const caller = adminCallerOf(call);
      if (req.trustDomain === '') throw invalid('trust_domain is required');
      const f = federation();
      await f.settled();
      if (f.get(req.trustDomain)?.source === 'config') throw inServerYaml(req.trustDomain, 'remove');
      await ds.deleteFederationRelationship(req.trustDomain);
      await f.settled();
      audit.record('federation.deleted', { trust_domain: req.trustDomain, ...callerFields(caller) });
      deps.logger.info('admin: federation relationship deleted', {
        trust_domain: req.trustDomain,
        ...callerFields(caller),
      });
      return {};
    },

    async getFederationRelationship(req) {
      if (req.trustDomain === '') throw invalid('trust_domain is required');
      return out(await viewOf(req.trustDomain));
    },

    async listFederationRelationships() {
      const f = federation();
      await f.settled();
      return { relationships: await Promise.all(f.list().map(out)) };
    },

    async refreshBundle(req, call) {
      const caller = adminCallerOf(call);
      if (req.trustDomain === '') throw invalid('trust_domain is required');
      const v = await federation().refresh(req.trustDomain);
      audit.record('federation.refreshed', {
        trust_domain: req.trustDomain,
        ok: v.status.lastError === undefined,
        error: v.status.lastError,
        ...callerFields(caller),
      });
      return out(v);
    },
  };
}
