// The admin API (proto/tessera/admin/v1/admin.proto): what the `tessera` CLI calls. Transport and
// authorisation are not here: the admin socket (admin-socket.ts) admits root and the server's own
// uid only. Every change is written to the audit log with its caller (adminCallerOf).
import { randomBytes } from 'node:crypto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type * as grpc from '@grpc/grpc-js';
import {
  normalizeSerial,
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  type SpiffeBundle,
  type SpiffeId,
  type TrustDomain,
} from '@tessera/spiffe';
import { WORKLOAD_SELECTOR_KEYS } from '../../agent/workload/registry.js';
import type { AuditLog } from '../../common/audit.js';
import { isTesseraError, TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { grpcImplementation, grpcServiceDefinition, toGrpcStatus } from '../../common/grpc.js';
import type { DaemonLogger } from '../../common/log.js';
import {
  Admin,
  type AgentSchema,
  type AuthoritySchema,
  type StatusSchema,
} from '../../gen/tessera/admin/v1/admin_pb.js';
import type { Bundle, Entry } from '../../gen/tessera/common/v1/types_pb.js';
import { joinTokenAgentId } from '../attestation/join-token-id.js';
import type { AuthorityInfo, AuthorityKind, AuthorityManager } from '../ca/manager.js';
import type { X509Revocations } from '../ca/revocation.js';
import type {
  AttestedAgent,
  Datastore,
  EntryInput,
  RegistrationEntry,
  Selector,
  X509Revocation,
} from '../datastore/types.js';
import { federationHandlers } from '../federation/admin.js';
import type { Federation } from '../federation/federation.js';
import { bundleToProto, entryInputFromProto, entryToProto } from '../registry/entry-proto.js';
import { adminCallerOf, callerFields } from './admin-caller.js';

/** Join tokens live 600 s unless the request says otherwise (SPIRE's default). */
export const DEFAULT_JOIN_TOKEN_TTL_SECONDS = 600;
/**
 * Bytes of randomness in a join token, hex-encoded (64 characters): nothing a shell or an option
 * parser treats specially (a base64url token may start with '-', which `--join-token -x…` misreads).
 */
const JOIN_TOKEN_BYTES = 32;

/** What the admin API needs from the authority: the signing keys and the operator's key commands. */
export type AdminAuthority = Pick<
  AuthorityManager,
  'x509' | 'jwt' | 'list' | 'prepare' | 'activate' | 'taint' | 'revoke'
>;

export interface AdminServiceDeps {
  trustDomain: TrustDomain;
  datastore: Datastore;
  authority: AdminAuthority;
  /** Default TTLs of minted SVIDs, in milliseconds (config x509_svid_ttl, jwt_svid_ttl). */
  x509SvidTtlMs: number;
  jwtSvidTtlMs: number;
  audit: AuditLog;
  logger: DaemonLogger;
  now?: () => Date;
  /** Whether the server is ready (Health); default always. */
  ready?: () => boolean;
  /** Reported by Health. */
  version?: string;
  /** SPIFFE IDs of the agents with an open sync stream to this server (the agent API knows). */
  connectedAgents?: () => Iterable<string>;
  /** The federation relationships and their refreshes (absent: the federation methods refuse). */
  federation?: Federation;
  /** Revocation of single X509-SVIDs (absent: the revocation methods refuse). */
  revocations?: X509Revocations;
  /** Randomness for join tokens; default crypto.randomBytes. */
  randomBytes?: (n: number) => Buffer;
}

function revocationsOf(deps: AdminServiceDeps): X509Revocations {
  if (deps.revocations === undefined)
    throw new TesseraError(
      TesseraErrorCode.INVALID_ARGUMENT,
      'admin: X509-SVID revocation is not available on this server',
    );
  return deps.revocations;
}

function revocationToProto(r: X509Revocation) {
  return {
    serial: r.serial,
    authorityId: r.authorityId,
    spiffeId: r.spiffeId,
    entryId: r.entryId,
    reason: r.reason,
    revokedAt: seconds(r.revokedAt),
    expiresAt: seconds(r.expiresAt),
  };
}

function crlToProto(c: { authorityId: string; number: bigint; der: Buffer; updatedAt: Date }) {
  return { authorityId: c.authorityId, number: c.number, der: c.der, updatedAt: seconds(c.updatedAt) };
}

function invalid(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.INVALID_ARGUMENT, `admin: ${message}`);
}

const seconds = (d: Date | undefined): bigint =>
  d === undefined ? 0n : BigInt(Math.floor(d.getTime() / 1000));

/**
 * An entry as the server takes it: its SPIFFE ID and parent in the server's trust domain (a foreign
 * identity is reached by federation, never registered here), and `unix` selectors with a key the
 * unix workload attestor yields and a value (`unix:uid` alone matches no workload, ever).
 */
/** A selector of each workload attestor's, for messages. */
const SELECTOR_EXAMPLES: Record<string, string> = {
  unix: 'unix:uid:1000',
  systemd: 'systemd:id:nginx.service',
  docker: 'docker:label:com.example.app:web',
};

function entryInput(e: Entry, td: TrustDomain): EntryInput {
  if (e.expiresAt < 0n) throw invalid(`expires_at ${e.expiresAt} must be Unix seconds (0 = never)`);
  const input = entryInputFromProto(e);
  for (const [field, id] of [
    ['spiffeId', input.spiffeId],
    ['parentId', input.parentId],
  ] as const) {
    let member = false;
    try {
      member = parseSpiffeId(id).memberOf(td);
    } catch {
      // Not a SPIFFE ID: the datastore's check says so, naming the field.
      continue;
    }
    if (!member)
      throw new TesseraError(
        TesseraErrorCode.ENTRY_INVALID,
        `entry: ${field} "${id}" is not in this server's trust domain "${td.name}"; register identities of ${td.name} (a workload reaches another trust domain through federatesWith)`,
      );
  }
  for (const s of input.selectors) {
    const keys = WORKLOAD_SELECTOR_KEYS[s.type];
    if (keys === undefined) continue;
    const i = s.value.indexOf(':');
    const key = i < 0 ? s.value : s.value.slice(0, i);
    const example = SELECTOR_EXAMPLES[s.type] ?? `${s.type}:${keys[0]}:<value>`;
    if (!keys.includes(key))
      throw new TesseraError(
        TesseraErrorCode.ENTRY_INVALID,
        `entry: selector "${s.type}:${s.value}" has no key the ${s.type} attestor yields; use ${s.type}:<key>:<value> with key one of ${keys.join(', ')} (e.g. ${example})`,
      );
    if (i < 0 || i === s.value.length - 1)
      throw new TesseraError(
        TesseraErrorCode.ENTRY_INVALID,
        `entry: selector "${s.type}:${s.value}" has no value and would match no workload; write ${s.type}:${key}:<value> (e.g. ${example})`,
      );
  }
  return input;
}

function statusOf(err: unknown): MessageInitShape<typeof StatusSchema> {
  const s = toGrpcStatus(err);
  return { code: s.code, message: s.details, errorCode: isTesseraError(err) ? err.code : '' };
}

const selectorText = (selectors: readonly Selector[]) =>
  selectors.map((s) => `${s.type}:${s.value}`).join(',');

function selectorFilter(s: { type: string; value: string } | undefined): Selector | undefined {
  if (s === undefined || (s.type === '' && s.value === '')) return undefined;
  if (s.type === '' || s.value === '')
    throw invalid(`selector filter "${s.type}:${s.value}" needs both a type and a value (type:value)`);
  return { type: s.type, value: s.value };
}

function pageSize(n: number): number | undefined {
  if (n < 0) throw invalid(`page_size ${n} must not be negative (0 = the default)`);
  return n === 0 ? undefined : n;
}

function parseKind(kind: string): AuthorityKind {
  if (kind === 'x509' || kind === 'jwt') return kind;
  throw invalid(`authority kind ${JSON.stringify(kind)} is not one of x509, jwt`);
}

function parseId(field: string, value: string): SpiffeId {
  if (value === '') throw invalid(`${field} is required`);
  try {
    return parseSpiffeId(value);
  } catch (err) {
    throw invalid(`${field} ${JSON.stringify(value)} is not a SPIFFE ID: ${(err as Error).message}`);
  }
}

function parseTd(value: string): TrustDomain {
  if (value === '') throw invalid('trust_domain is required');
  try {
    return parseTrustDomain(value);
  } catch (err) {
    throw invalid(`trust domain ${JSON.stringify(value)}: ${(err as Error).message}`);
  }
}

/** Seconds from a request (0 = `fallbackMs`) to milliseconds. */
function ttlMs(field: string, secs: number, fallbackMs: number): number {
  if (secs < 0)
    throw invalid(`${field} ${secs} must be a positive number of seconds (0 = the server default)`);
  return secs === 0 ? fallbackMs : secs * 1000;
}

// A SPIFFE ID path segment: what an agent name may be.
const SEGMENT = /^[A-Za-z0-9._-]+$/;

function authorityOut(a: AuthorityInfo): MessageInitShape<typeof AuthoritySchema> {
  return {
    kind: a.kind,
    id: a.id,
    status: a.status,
    tainted: a.tainted,
    notAfter: seconds(a.notAfter),
    certificate: a.certificate?.raw ?? new Uint8Array(),
  };
}

/**
 * The Admin gRPC service: a ServiceDefinition and its implementation, to add to any grpc-js
 * server whose transport has authorised the caller (the admin socket does).
 */
export function createAdminService(deps: AdminServiceDeps): {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
} {
  const { datastore: ds, authority, audit, trustDomain: td } = deps;
  const now = deps.now ?? (() => new Date());
  const random = deps.randomBytes ?? randomBytes;
  const logger = deps.logger;

  const ownTrustDomain = (t: TrustDomain, what: string) => {
    if (t.equals(td))
      throw invalid(
        `cannot ${what} the bundle of "${td.name}": it is this server's own trust domain, kept by its authority; ` +
          'only federated trust domains are set here',
      );
  };

  const connected = () => new Set(deps.connectedAgents?.() ?? []);
  const agentOut = (a: AttestedAgent, online: ReadonlySet<string>): MessageInitShape<typeof AgentSchema> => ({
    spiffeId: a.spiffeId,
    attestor: a.attestor,
    selectors: a.selectors.map((s) => ({ type: s.type, value: s.value })),
    serial: a.serial,
    expiresAt: seconds(a.expiresAt),
    banned: a.banned,
    createdAt: seconds(a.createdAt),
    updatedAt: seconds(a.updatedAt),
    connected: online.has(a.spiffeId),
  });

  /** One key command of an operator; the authority it acted on. */
  const authorityOp = async (
    op: 'prepare' | 'activate' | 'taint' | 'revoke',
    req: { kind: string; id: string },
    call: grpc.ServerUnaryCall<unknown, unknown>,
  ): Promise<MessageInitShape<typeof AuthoritySchema>> => {
    const caller = adminCallerOf(call);
    const kind = parseKind(req.kind);
    let acted: AuthorityInfo;
    if (op === 'prepare' || op === 'activate') {
      acted = await authority[op](kind);
    } else {
      if (req.id === '') throw invalid(`id is required to ${op} an authority (see tessera authority show)`);
      acted = await authority[op](kind, req.id);
    }
    const event = (
      {
        prepare: 'authority.prepared',
        activate: 'authority.activated',
        taint: 'authority.tainted',
        revoke: 'authority.revoked',
      } as const
    )[op];
    audit.record(event, { kind, authority_id: acted.id, trigger: 'operator', ...callerFields(caller) });
    logger.info(`admin: ${op} ${kind} authority`, { authority_id: acted.id, ...callerFields(caller) });
    return authorityOut(acted);
  };

  const implementation = grpcImplementation(
    Admin,
    {
      async createEntries(req, call) {
        const caller = adminCallerOf(call);
        const results: MessageInitShape<typeof StatusSchema>[] = [];
        const created: (RegistrationEntry | undefined)[] = [];
        const inputs: (EntryInput | undefined)[] = req.entries.map((e, i) => {
          try {
            return entryInput(e, td);
          } catch (err) {
            results[i] = statusOf(err);
            return undefined;
          }
        });
        const valid = inputs.flatMap((input, i) => (input === undefined ? [] : [{ input, i }]));
        let batchOk = false;
        if (valid.length === inputs.length && valid.length > 0) {
          // The common case in one transaction; on any failure, entry by entry to say which failed.
          try {
            const all = await ds.createEntries(valid.map((v) => v.input));
            all.forEach((e, i) => {
              created[i] = e;
            });
            batchOk = true;
          } catch (err) {
            if (!isTesseraError(err))
              logger.warn('admin: batch entry create failed; retrying one by one', {
                error: (err as Error).message,
              });
          }
        }
        if (!batchOk)
          for (const { input, i } of valid) {
            try {
              created[i] = await ds.createEntry(input);
            } catch (err) {
              if (!isTesseraError(err))
                logger.error('admin: entry create failed', { error: (err as Error).message });
              results[i] = statusOf(err);
            }
          }
        return {
          results: req.entries.map((_, i) => {
            const e = created[i];
            if (e === undefined) return { status: results[i] ?? statusOf(undefined) };
            audit.record('entry.created', {
              entry_id: e.id,
              spiffe_id: e.spiffeId,
              parent_id: e.parentId,
              selectors: selectorText(e.selectors),
              ...callerFields(caller),
            });
            return { status: { code: 0, message: '', errorCode: '' }, entry: entryToProto(e) };
          }),
        };
      },

      async updateEntry(req, call) {
        const caller = adminCallerOf(call);
        const e = req.entry;
        if (e === undefined) throw invalid('entry is required');
        if (e.id === '') throw invalid('entry id is required');
        if (e.revision <= 0n)
          throw invalid(
            `entry revision ${e.revision} is not one the server gave; read the entry and send its revision`,
          );
        const updated = await ds.updateEntry(e.id, Number(e.revision), entryInput(e, td));
        audit.record('entry.updated', {
          entry_id: updated.id,
          spiffe_id: updated.spiffeId,
          parent_id: updated.parentId,
          selectors: selectorText(updated.selectors),
          revision: updated.revision,
          ...callerFields(caller),
        });
        return entryToProto(updated);
      },

      async deleteEntries(req, call) {
        const caller = adminCallerOf(call);
        const results = [];
        for (const id of req.ids) {
          try {
            const e = await ds.getEntry(id);
            if (e === undefined)
              throw new TesseraError(TesseraErrorCode.ENTRY_NOT_FOUND, `entry: no entry has ID "${id}"`);
            await ds.deleteEntry(id);
            audit.record('entry.deleted', {
              entry_id: id,
              spiffe_id: e.spiffeId,
              parent_id: e.parentId,
              ...callerFields(caller),
            });
            results.push({ id, status: { code: 0 } });
          } catch (err) {
            if (!isTesseraError(err))
              logger.error('admin: entry delete failed', { error: (err as Error).message });
            results.push({ id, status: statusOf(err) });
          }
        }
        return { results };
      },

      async getEntry(req) {
        if (req.id === '') throw invalid('id is required');
        const e = await ds.getEntry(req.id);
        if (e === undefined)
          throw new TesseraError(TesseraErrorCode.ENTRY_NOT_FOUND, `entry: no entry has ID "${req.id}"`);
        return entryToProto(e);
      },

      async listEntries(req) {
        const bySelector = selectorFilter(req.bySelector);
        const size = pageSize(req.pageSize);
        const page = await ds.listEntries({
          ...(req.bySpiffeId === ''
            ? {}
            : { bySpiffeId: parseId('by_spiffe_id', req.bySpiffeId).toString() }),
          ...(req.byParentId === ''
            ? {}
            : { byParentId: parseId('by_parent_id', req.byParentId).toString() }),
          ...(bySelector === undefined ? {} : { bySelector }),
          ...(size === undefined ? {} : { pageSize: size }),
          ...(req.pageToken === '' ? {} : { pageToken: req.pageToken }),
        });
        return { entries: page.entries.map(entryToProto), nextPageToken: page.nextPageToken ?? '' };
      },

      async countEntries() {
        return { count: BigInt(await ds.countEntries()) };
      },

      async createJoinToken(req, call) {
        const caller = adminCallerOf(call);
        if (req.ttl < 0) throw invalid(`ttl ${req.ttl} must be a positive number of seconds (0 = 600)`);
        const ttl = req.ttl === 0 ? DEFAULT_JOIN_TOKEN_TTL_SECONDS : req.ttl;
        const name = req.agentName;
        if (name !== '' && (!SEGMENT.test(name) || name === '.' || name === '..'))
          throw invalid(
            `agent_name ${JSON.stringify(name)} must be one SPIFFE ID path segment: letters, digits, ".", "_" or "-"`,
          );
        const alias = req.spiffeId === '' ? undefined : parseId('spiffe_id', req.spiffeId);
        if (alias !== undefined && !alias.memberOf(td))
          throw invalid(`spiffe_id "${alias}" is not in this server's trust domain "${td.name}"`);
        const token = random(JOIN_TOKEN_BYTES).toString('hex');
        const agentId = joinTokenAgentId(td, token, name === '' ? undefined : name);
        const expiresAt = new Date(now().getTime() + ttl * 1000);
        // The alias entry first: if it is refused (a duplicate, say), no token exists that nobody knows.
        let entry: RegistrationEntry | undefined;
        if (alias !== undefined)
          entry = await ds.createEntry({
            spiffeId: alias.toString(),
            parentId: agentId,
            selectors: [{ type: 'join_token', value: `name:${agentId.slice(agentId.lastIndexOf('/') + 1)}` }],
          });
        try {
          await ds.createJoinToken({ token, expiresAt, ...(name === '' ? {} : { agentName: name }) });
        } catch (err) {
          if (entry !== undefined) await ds.deleteEntry(entry.id).catch(() => undefined);
          throw err;
        }
        if (entry !== undefined)
          audit.record('entry.created', {
            entry_id: entry.id,
            spiffe_id: entry.spiffeId,
            parent_id: entry.parentId,
            selectors: selectorText(entry.selectors),
            ...callerFields(caller),
          });
        // The token itself is never logged: the agent ID (from its hash, or the fixed name) names it.
        audit.record('join_token.created', {
          agent_id: agentId,
          expires_at: expiresAt.toISOString(),
          entry_id: entry?.id,
          ...callerFields(caller),
        });
        return { token, expiresAt: seconds(expiresAt), agentId };
      },

      async listAgents(req) {
        const bySelector = selectorFilter(req.bySelector);
        const size = pageSize(req.pageSize);
        if (req.banned !== '' && req.banned !== 'true' && req.banned !== 'false')
          throw invalid(`banned ${JSON.stringify(req.banned)} must be "", "true" or "false"`);
        const page = await ds.listAgents({
          ...(bySelector === undefined ? {} : { bySelector }),
          ...(req.banned === '' ? {} : { banned: req.banned === 'true' }),
          ...(size === undefined ? {} : { pageSize: size }),
          ...(req.pageToken === '' ? {} : { pageToken: req.pageToken }),
        });
        const online = connected();
        return {
          agents: page.agents.map((a) => agentOut(a, online)),
          nextPageToken: page.nextPageToken ?? '',
        };
      },

      async getAgent(req) {
        const id = parseId('spiffe_id', req.spiffeId).toString();
        const a = await ds.getAgent(id);
        if (a === undefined)
          throw new TesseraError(TesseraErrorCode.AGENT_NOT_FOUND, `agent: no attested agent "${id}"`);
        return agentOut(a, connected());
      },

      async banAgent(req, call) {
        const caller = adminCallerOf(call);
        const id = parseId('spiffe_id', req.spiffeId).toString();
        await ds.banAgent(id);
        audit.record('agent.banned', { agent_id: id, ...callerFields(caller) });
        logger.info('admin: agent banned', { agent_id: id, ...callerFields(caller) });
        return {};
      },

      async evictAgent(req, call) {
        const caller = adminCallerOf(call);
        const id = parseId('spiffe_id', req.spiffeId).toString();
        await ds.deleteAgent(id);
        audit.record('agent.evicted', { agent_id: id, ...callerFields(caller) });
        logger.info('admin: agent evicted', { agent_id: id, ...callerFields(caller) });
        return {};
      },

      async countAgents() {
        return { count: BigInt(await ds.countAgents()) };
      },

      async getBundle() {
        const b = await ds.getBundle(td);
        if (b === undefined)
          throw new TesseraError(TesseraErrorCode.BUNDLE_NOT_FOUND, `bundle: no bundle for "${td.name}" yet`);
        return bundleToProto(b);
      },

      async listBundles() {
        return { bundles: (await ds.listBundles()).map(bundleToProto) };
      },

      async setBundle(req: Bundle, call) {
        const caller = adminCallerOf(call);
        const t = parseTd(req.trustDomain);
        ownTrustDomain(t, 'set');
        let bundle: SpiffeBundle;
        try {
          bundle = parseSpiffeBundle(t, req.spiffeBundle);
        } catch (err) {
          throw invalid(
            `the bundle of "${t.name}" is not a SPIFFE bundle document: ${(err as Error).message}`,
          );
        }
        if (bundle.x509Authorities.length === 0 && bundle.jwtAuthorities.size === 0)
          throw invalid(`the bundle of "${t.name}" has no authorities; delete the bundle instead`);
        const stored = await ds.updateBundle(t, () => bundle);
        audit.record('bundle.set', {
          trust_domain: t.name,
          sequence: String(stored.sequenceNumber ?? 0n),
          x509_authorities: stored.x509Authorities.length,
          jwt_authorities: stored.jwtAuthorities.size,
          ...callerFields(caller),
        });
        return bundleToProto(stored);
      },

      async deleteBundle(req, call) {
        const caller = adminCallerOf(call);
        const t = parseTd(req.trustDomain);
        ownTrustDomain(t, 'delete');
        if (!(await ds.deleteBundle(t)))
          throw new TesseraError(
            TesseraErrorCode.BUNDLE_NOT_FOUND,
            `bundle: no bundle is stored for "${t.name}"`,
          );
        audit.record('bundle.deleted', { trust_domain: t.name, ...callerFields(caller) });
        return {};
      },

      async mintX509SVID(req, call) {
        const caller = adminCallerOf(call);
        const id = parseId('spiffe_id', req.spiffeId);
        if (req.csr.length === 0) throw invalid('csr is required (DER PKCS#10, signed by the SVID key)');
        const ca = authority.x509;
        const issued = ca.issueX509Svid({
          csr: req.csr,
          spiffeId: id,
          dnsNames: req.dnsNames,
          ttlMs: ttlMs('ttl', req.ttl, deps.x509SvidTtlMs),
          now: now(),
        });
        await ds.recordX509Svids([
          {
            serial: normalizeSerial(issued.serial),
            authorityId: ca.id,
            spiffeId: id.toString(),
            entryId: '',
            expiresAt: issued.expiresAt,
          },
        ]);
        const bundle = await ds.getBundle(td);
        audit.record('svid.issued', {
          type: 'x509',
          spiffe_id: id.toString(),
          serial: issued.serial,
          expires_at: issued.expiresAt.toISOString(),
          via: 'admin',
          ...callerFields(caller),
        });
        return {
          svidChain: [...issued.chainDer],
          bundle: (bundle?.x509Authorities ?? [authority.x509.certificate]).map((c) => c.raw),
          expiresAt: seconds(issued.expiresAt),
        };
      },

      async revokeX509SVID(req, call) {
        const caller = adminCallerOf(call);
        const r = revocationsOf(deps);
        const by =
          req.by.case === 'serial' && req.by.value !== ''
            ? { serial: req.by.value }
            : req.by.case === 'entryId' && req.by.value !== ''
              ? { entryId: req.by.value }
              : undefined;
        if (by === undefined) throw invalid('give the serial of the X509-SVID to revoke, or an entry ID');
        const result = await r.revoke(by, req.reason);
        for (const x of result.revoked)
          audit.record('svid.revoked', {
            type: 'x509',
            serial: x.serial,
            spiffe_id: x.spiffeId,
            entry_id: x.entryId,
            authority: x.authorityId,
            reason: x.reason,
            ...callerFields(caller),
          });
        return {
          revoked: result.revoked.map(revocationToProto),
          alreadyRevoked: result.alreadyRevoked.map(revocationToProto),
          crls: result.crls.map(crlToProto),
          warnings: result.warnings,
        };
      },

      async listX509Revocations() {
        const r = revocationsOf(deps);
        return { revocations: (await r.list()).map(revocationToProto), crls: r.crls().map(crlToProto) };
      },

      async mintJWTSVID(req, call) {
        const caller = adminCallerOf(call);
        const id = parseId('spiffe_id', req.spiffeId);
        if (req.audience.every((a) => a === '')) throw invalid('audience is required');
        const minted = await authority.jwt.mint({
          spiffeId: id,
          audience: req.audience,
          ttlMs: ttlMs('ttl', req.ttl, deps.jwtSvidTtlMs),
          now: now(),
        });
        audit.record('svid.issued', {
          type: 'jwt',
          spiffe_id: id.toString(),
          audience: req.audience.join(','),
          kid: authority.jwt.kid,
          expires_at: minted.expiresAt.toISOString(),
          via: 'admin',
          ...callerFields(caller),
        });
        return { token: minted.token, expiresAt: seconds(minted.expiresAt) };
      },

      async getAuthorities() {
        return { authorities: (await authority.list()).map(authorityOut) };
      },
      prepareAuthority: (req, call) => authorityOp('prepare', req, call),
      activateAuthority: (req, call) => authorityOp('activate', req, call),
      taintAuthority: (req, call) => authorityOp('taint', req, call),
      revokeAuthority: (req, call) => authorityOp('revoke', req, call),

      async health() {
        return { ready: deps.ready?.() ?? true, trustDomain: td.name, version: deps.version ?? '' };
      },

      ...federationHandlers({
        trustDomain: td,
        datastore: ds,
        ...(deps.federation === undefined ? {} : { federation: deps.federation }),
        audit,
        logger,
      }),
    },
    (method, err) => {
      if (isTesseraError(err))
        logger.debug(`admin: ${method} refused`, { code: err.code, error: err.message });
      else logger.error(`admin: ${method} failed`, { error: (err as Error)?.message ?? String(err) });
    },
  );
  return { definition: grpcServiceDefinition(Admin), implementation };
}
