// The SPIFFE Workload API (spec §5) served by the agent: every caller is identified from the kernel
// (its selectors come from workload attestation, never from the request), and gets the SVIDs of the
// entries whose selectors it has. Streams send a complete snapshot first and again on any change.
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { JwtBundleSet, parseAndValidateJwtSvid, parseSpiffeId, type SpiffeBundle } from '@tessera/spiffe';
import {
  JWTBundlesResponseSchema,
  type JWTSVIDRequest,
  JWTSVIDResponseSchema,
  SECURITY_HEADER,
  type ValidateJWTSVIDRequest,
  ValidateJWTSVIDResponseSchema,
  workloadApiService,
  X509BundlesResponseSchema,
  type X509SVIDResponse,
  X509SVIDResponseSchema,
} from '@tessera/spiffe/wire';
import type { DaemonLogger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { Entry } from '../../gen/tessera/common/v1/types_pb.js';
import type { Selector } from '../../server/datastore/types.js';
import type { AgentManager, CachedSvid } from '../manager.js';
import { refusalStatus } from './agent-refusal.js';

type Call = { metadata: grpc.Metadata; getPeer(): string };
type Stream = grpc.ServerWritableStream<unknown, unknown>;

export interface WorkloadApiOptions {
  manager: AgentManager;
  /** The caller's selectors, from workload attestation of the connection's peer. */
  attest: (call: Call) => Promise<Selector[]>;
  logger: DaemonLogger;
  metrics: Metrics;
}

interface Status {
  code: grpc.status;
  details: string;
}

/** How long a unary call waits for the agent's first sync before UNAVAILABLE. */
const SYNC_WAIT_MS = 5000;

const NO_IDENTITY: Status = { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' };

function headerProblem(call: Call): Status | undefined {
  const v = call.metadata.get(SECURITY_HEADER);
  return v.length === 1 && v[0] === 'true'
    ? undefined
    : { code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' };
}

function der(bundle: SpiffeBundle): Uint8Array {
  return Buffer.concat(bundle.x509Authorities.map((c) => c.raw));
}

/** Trust domains the caller's entries federate with, whose bundles the agent has. */
function federatedFor(manager: AgentManager, entries: readonly Entry[]): SpiffeBundle[] {
  const want = new Set(entries.flatMap((e) => e.federatesWith));
  return [...want].flatMap((td) => {
    const b = manager.federatedBundles.get(td);
    return b === undefined ? [] : [b];
  });
}

/** A complete FetchX509SVID snapshot; non-empty hints kept unique (the oldest entry wins). */
function x509Response(
  manager: AgentManager,
  svids: readonly CachedSvid[],
  entries: readonly Entry[],
): X509SVIDResponse {
  const bundle = der(manager.bundle);
  const hints = new Set<string>();
  const unique = svids.filter(({ entry }) => {
    if (entry.hint === '') return true;
    if (hints.has(entry.hint)) return false;
    hints.add(entry.hint);
    return true;
  });
  return create(X509SVIDResponseSchema, {
    svids: unique.map(({ svid, entry, raw }) => {
      return {
        spiffeId: svid.id.toString(),
        x509Svid: raw.certificates,
        x509SvidKey: raw.privateKey,
        bundle,
        hint: entry.hint,
      };
    }),
    federatedBundles: Object.fromEntries(
      federatedFor(manager, entries).map((b) => [b.trustDomain.idString(), der(b)]),
    ),
    crl: manager.crls.map((c) => c.raw),
  });
}

/** The Workload API service (definition + implementation) for a grpc-js server. */
export function createWorkloadApi(o: WorkloadApiOptions): {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
} {
  const { manager } = o;

  /** Runs a stream: attests the caller, then sends `snapshot` now and after each change that alters it. */
  const stream = (
    method: string,
    call: Stream,
    snapshot: (
      entries: Entry[],
      selectors: Selector[],
    ) => { message: unknown; key: string } | 'wait' | Status,
  ) => {
    const refused = headerProblem(call);
    if (refused !== undefined) {
      call.emit('error', refused);
      return;
    }
    let last: string | undefined;
    let ended = false;
    let selectors: Selector[] | undefined;
    const end = (s: Status) => {
      if (ended) return;
      ended = true;
      manager.off('update', send);
      call.emit('error', s);
    };
    const send = () => {
      if (ended || selectors === undefined) return;
      // Banned or evicted: say so (whether or not the first snapshot ever came).
      const refused = refusalStatus(manager);
      if (refused !== undefined) {
        end(refused);
        return;
      }
      // Until the first snapshot from the server is in, "no entry" would be a lie: wait for it.
      if (!manager.synced) return;
      const entries = manager.entriesFor(selectors);
      const r = snapshot(entries, selectors);
      if (r === 'wait') return;
      if ('code' in r) {
        end(r);
        return;
      }
      if (r.key === last) return;
      last = r.key;
      call.write(r.message);
    };
    call.on('cancelled', () => {
      ended = true;
      manager.off('update', send);
    });
    call.on('error', () => undefined);
    o.attest(call)
      .then((s) => {
        selectors = s;
        o.metrics.inc('tessera_agent_workload_calls_total', 'Workload API calls.', { method });
        manager.on('update', send);
        send();
      })
      .catch((err: unknown) => {
        o.logger.warn('workload API: workload attestation failed', {
          peer: call.getPeer(),
          error: (err as Error).message,
        });
        end({
          code: grpc.status.UNAVAILABLE,
          details: `workload attestation failed: ${(err as Error).message.replace(/^workload attestation: /, '')}`,
        });
      });
  };

  const unary = <T>(
    call: Call,
    cb: grpc.sendUnaryData<unknown>,
    answer: (selectors: Selector[]) => Promise<T | Status>,
  ) => {
    const refused = headerProblem(call);
    if (refused !== undefined) {
      cb(refused);
      return;
    }
    o.attest(call)
      .catch((err: unknown) => {
        o.logger.warn('workload API: workload attestation failed', {
          peer: call.getPeer(),
          error: (err as Error).message,
        });
        throw {
          code: grpc.status.UNAVAILABLE,
          details: `workload attestation failed: ${(err as Error).message.replace(/^workload attestation: /, '')}`,
        };
      })
      .then(async (selectors) => {
        const synced = await manager.whenSynced(SYNC_WAIT_MS);
        const refused = refusalStatus(manager);
        if (refused !== undefined) return refused;
        if (!synced)
          return {
            code: grpc.status.UNAVAILABLE,
            details: 'the agent has not synced with the server yet; retry',
          };
        return answer(selectors);
      })
      .then(
        (r) => {
          if (typeof r === 'object' && r !== null && 'code' in r && 'details' in r) cb(r as Status);
          else cb(null, r);
        },
        (err: unknown) => {
          const e = err as grpc.ServiceError;
          if (typeof e.code === 'number' && e.details !== undefined) cb({ code: e.code, details: e.details });
          else {
            o.logger.error('workload API: call failed', { error: (err as Error).message });
            cb({ code: grpc.status.UNAVAILABLE, details: (err as Error).message });
          }
        },
      );
  };

  const implementation: grpc.UntypedServiceImplementation = {
    FetchX509SVID: ((call: Stream) =>
      stream('FetchX509SVID', call, (entries, selectors) => {
        if (entries.length === 0) return NO_IDENTITY;
        const mine = manager.svidsFor(selectors);
        // Entitled, but the first SVID is still being signed: the snapshot comes with the update.
        if (mine.length === 0) return 'wait';
        const message = x509Response(manager, mine, entries);
        const key = [
          ...mine.map((s) => s.svid.certificates[0]?.serialNumber),
          ...message.svids.map((s) => s.hint),
          manager.bundle.sequenceNumber?.toString(),
          manager.bundle.x509Authorities.map((c) => c.fingerprint256).join(','),
          manager.crlsKey,
          // A federated bundle's roots, not only its name: a peer's rotation must reach watchers.
          ...federatedFor(manager, entries).map(
            (b) => `${b.trustDomain.name}:${b.x509Authorities.map((c) => c.fingerprint256).join(',')}`,
          ),
        ].join('|');
        return { message, key };
      })) as grpc.UntypedHandleCall,
    FetchX509Bundles: ((call: Stream) =>
      stream('FetchX509Bundles', call, (entries) => {
        if (entries.length === 0) return NO_IDENTITY;
        const bundles = [manager.bundle, ...federatedFor(manager, entries)];
        const message = create(X509BundlesResponseSchema, {
          bundles: Object.fromEntries(bundles.map((b) => [b.trustDomain.idString(), der(b)])),
          crl: manager.crls.map((c) => c.raw),
        });
        return {
          message,
          key: [
            ...bundles.map((b) => `${b.trustDomain}:${b.x509Authorities.map((c) => c.fingerprint256)}`),
            manager.crlsKey,
          ].join('|'),
        };
      })) as grpc.UntypedHandleCall,
    FetchJWTBundles: ((call: Stream) =>
      stream('FetchJWTBundles', call, (entries) => {
        if (entries.length === 0) return NO_IDENTITY;
        const bundles = [manager.bundle, ...federatedFor(manager, entries)].map((b) => b.jwtBundle());
        const docs = bundles.map((b) => [b.trustDomain.idString(), new Uint8Array(b.marshal())] as const);
        return {
          message: create(JWTBundlesResponseSchema, { bundles: Object.fromEntries(docs) }),
          key: docs.map(([td, d]) => `${td}:${Buffer.from(d).toString('base64')}`).join('|'),
        };
      })) as grpc.UntypedHandleCall,
    FetchJWTSVID: ((call: grpc.ServerUnaryCall<JWTSVIDRequest, unknown>, cb: grpc.sendUnaryData<unknown>) =>
      unary(call, cb, async (selectors) => {
        const audience = call.request.audience.filter((a) => a !== '');
        if (audience.length === 0)
          return { code: grpc.status.INVALID_ARGUMENT, details: 'audience must be specified' };
        let wanted: string | undefined;
        if (call.request.spiffeId !== '') {
          try {
            wanted = parseSpiffeId(call.request.spiffeId).toString();
          } catch (err) {
            return {
              code: grpc.status.INVALID_ARGUMENT,
              details: `invalid requested SPIFFE ID: ${(err as Error).message}`,
            };
          }
        }
        const seen = new Set<string>();
        const entries = manager
          .entriesFor(selectors)
          .filter(
            (e) =>
              (wanted === undefined || e.spiffeId === wanted) &&
              !seen.has(e.spiffeId) &&
              seen.add(e.spiffeId),
          );
        if (entries.length === 0) return NO_IDENTITY;
        const svids = await Promise.all(
          entries.map(async (e) => ({
            spiffeId: e.spiffeId,
            svid: (await manager.jwtSvid(e, audience)).token,
            hint: e.hint,
          })),
        );
        o.metrics.inc('tessera_agent_workload_calls_total', 'Workload API calls.', {
          method: 'FetchJWTSVID',
        });
        return create(JWTSVIDResponseSchema, { svids });
      })) as grpc.UntypedHandleCall,
    ValidateJWTSVID: ((
      call: grpc.ServerUnaryCall<ValidateJWTSVIDRequest, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) =>
      unary(call, cb, async (selectors) => {
        if (call.request.audience === '')
          return { code: grpc.status.INVALID_ARGUMENT, details: 'audience must be specified' };
        if (call.request.svid === '')
          return { code: grpc.status.INVALID_ARGUMENT, details: 'svid must be specified' };
        const entries = manager.entriesFor(selectors);
        if (entries.length === 0) return NO_IDENTITY;
        const bundles = new JwtBundleSet(
          [manager.bundle, ...federatedFor(manager, entries)].map((b) => b.jwtBundle()),
        );
        try {
          const svid = parseAndValidateJwtSvid(call.request.svid, bundles, [call.request.audience]);
          const claims = JSON.parse(JSON.stringify(svid.claims)) as Record<string, unknown>;
          if (typeof claims.aud === 'string') claims.aud = [claims.aud];
          return create(ValidateJWTSVIDResponseSchema, {
            spiffeId: svid.id.toString(),
            claims: claims as never,
          });
        } catch (err) {
          return { code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message };
        }
      })) as grpc.UntypedHandleCall,
  };
  return { definition: workloadApiService, implementation };
}
