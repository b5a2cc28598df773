// `tessera proxy run`: the workload's identity from the Workload API (never from files), its
// policies, and its inbound and outbound listeners. Every startup failure is one ERR_STARTUP.
import type { Server } from 'node:net';
import {
  defaultWorkloadApiAddress,
  ErrorCode,
  isSpiffeError,
  JwtSource,
  parseAndValidateJwtSvid,
  type SpiffeError,
  X509Source,
} from '@tessera/spiffe';
import { type AuditLog, createAuditLog } from '../common/audit.js';
import { startHealthServer, startupError } from '../common/daemon.js';
import { createLogger, type DaemonLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { type ProxyConfig, splitHostPort } from './config.js';
import { createInboundListener, type InboundListener } from './inbound.js';
import { createOutboundListener, type OutboundListener } from './outbound.js';
import type { PolicyDecision, PolicyRequest } from './policy/types.js';
import { PolicyStore } from './policy-store.js';

const fail = (message: string, cause?: unknown) => startupError('proxy', message, cause);

export interface RunningProxy {
  /** Bound ports by listener name (useful with port 0). */
  readonly ports: ReadonlyMap<string, number>;
  /** The health port, or undefined for a worker (the primary serves health for all of them). */
  readonly healthPort: number | undefined;
  readonly metrics: Metrics;
  readonly policies: PolicyStore | undefined;
  readonly identity: X509Source;
  /** True while the Workload API gives this workload an identity. */
  hasIdentity(): boolean;
  stop(): Promise<void>;
}

export interface StartProxyOptions {
  logger?: DaemonLogger;
  /** Give up starting if no SVID arrived in this time; default: wait (and say why every 10 s). */
  identityTimeoutMs?: number;
  /** False in a worker process: the primary serves /live, /ready and /metrics. Default true. */
  serveHealth?: boolean;
  /** Told when the workload gains or loses its identity (a worker tells its primary). */
  onIdentityChange?: (hasIdentity: boolean) => void;
}

function listenOn(server: Server, listen: string, name: string): Promise<number> {
  const { host, port } = splitHostPort(listen);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) =>
      reject(
        fail(
          err.code === 'EADDRINUSE'
            ? `listener ${name}: ${listen} is already in use; choose another address in the configuration`
            : `listener ${name}: cannot listen on ${listen}: ${err.message}`,
          err,
        ),
      );
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const a = server.address();
      resolve(typeof a === 'object' && a !== null ? a.port : port);
    });
  });
}

/** Waits for the first SVID, saying every 10 s what the Workload API answered meanwhile. */
async function waitForIdentity(source: X509Source, log: DaemonLogger, timeoutMs?: number): Promise<void> {
  const nag = setInterval(() => {
    log.warn('waiting for an identity from the Workload API', {
      last_error: source.lastError?.message ?? 'none yet',
    });
  }, 10_000);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      source.ready(),
      ...(timeoutMs === undefined
        ? []
        : [
            new Promise<never>((_, reject) => {
              timer = setTimeout(
                () =>
                  reject(
                    fail(
                      `no SVID from the Workload API within ${timeoutMs} ms${source.lastError === undefined ? '' : `: ${source.lastError.message}`}`,
                    ),
                  ),
                timeoutMs,
              );
            }),
          ]),
    ]);
  } finally {
    clearInterval(nag);
    clearTimeout(timer);
  }
}

export async function startProxy(
  config: ProxyConfig,
  options: StartProxyOptions = {},
): Promise<RunningProxy> {
  const log = options.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  const metrics = new Metrics();
  const closers: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const c of closers.reverse()) await c();
    closers.length = 0;
  };
  try {
    // Policies first: a bad policy file is a startup error before anything listens.
    let policies: PolicyStore | undefined;
    if (config.policies.length > 0) {
      try {
        policies = new PolicyStore({
          paths: config.policies,
          workload: {
            namespace: config.namespace,
            labels: config.labels,
            rootNamespace: config.root_namespace,
          },
          protocols: config.inbound.map((l) => l.protocol),
          logger: log,
        });
      } catch (err) {
        throw fail(`the policies do not load: ${(err as Error).message}`, err);
      }
      const store = policies;
      closers.push(() => store.close());
      store.on('reloadFailed', () =>
        metrics.inc(
          'tessera_proxy_policy_reload_failures_total',
          'Policy reloads that failed (the previous policies stayed).',
        ),
      );
      metrics.gaugeFn('tessera_proxy_policies', 'AuthorizationPolicies loaded.', () => store.size);
    }

    let audit: AuditLog | undefined;
    if (config.audit.path !== undefined && config.audit.decisions !== 'none') {
      try {
        audit = createAuditLog({ path: config.audit.path });
        audit.record('proxy.started', { pid: process.pid });
      } catch (err) {
        throw fail(`cannot write the audit log ${config.audit.path}: ${(err as Error).message}`, err);
      }
      const a = audit;
      closers.push(() => a.close());
    }

    const address = config.workload_api_socket ?? defaultWorkloadApiAddress();
    const wlAddress = address.includes('://') ? address : `unix://${address}`;
    const identity = new X509Source({ address: wlAddress, logger: log.with({ subsystem: 'workloadapi' }) });
    closers.push(() => identity.close());
    let jwt: JwtSource | undefined;
    if (config.jwt.audiences.length > 0) {
      jwt = new JwtSource({ address: wlAddress, logger: log.with({ subsystem: 'workloadapi' }) });
      const j = jwt;
      closers.push(() => j.close());
    }
    log.info('waiting for the workload identity', { workload_api: wlAddress });
    try {
      await waitForIdentity(identity, log, options.identityTimeoutMs);
      await jwt?.ready();
    } catch (err) {
      throw isSpiffeError(err) ? fail((err as SpiffeError).message, err) : err;
    }
    log.info('identity received', { spiffe_id: identity.getX509Svid().id.toString() });

    // The identity can be taken away (the entry deleted, the agent banned): then every connection
    // is closed and none is accepted until it comes back.
    let hasIdentity = true;
    const listeners: (InboundListener | OutboundListener)[] = [];
    metrics.set(
      'tessera_proxy_identity',
      'Whether the Workload API currently gives this workload an identity.',
      1,
    );
    identity.on('update', () => {
      if (!hasIdentity) {
        log.info('identity back', { spiffe_id: identity.getX509Svid().id.toString() });
        options.onIdentityChange?.(true);
      }
      hasIdentity = true;
      metrics.set(
        'tessera_proxy_identity',
        'Whether the Workload API currently gives this workload an identity.',
        1,
      );
    });
    identity.on('watchError', (err: SpiffeError) => {
      if (err.code !== ErrorCode.WORKLOADAPI_PERMISSION_DENIED || !hasIdentity) return;
      hasIdentity = false;
      options.onIdentityChange?.(false);
      metrics.set(
        'tessera_proxy_identity',
        'Whether the Workload API currently gives this workload an identity.',
        0,
      );
      log.error('the Workload API no longer gives this workload an identity; closing every connection', {
        error: err.message,
      });
      audit?.record('proxy.identity_lost', { reason: err.message });
      for (const l of listeners) l.dropConnections();
    });

    const decide = (protocol: 'http' | 'tcp', request: PolicyRequest): PolicyDecision => {
      if (!hasIdentity)
        return { allowed: false, reason: 'denied: this workload has no identity now', audited: [] };
      if (policies === undefined)
        return { allowed: false, reason: 'denied: no policies are configured', audited: [] };
      return policies.decide(protocol, request);
    };
    const counters = new Map<string, () => void>();
    const onDecision = (listener: string, request: PolicyRequest, decision: PolicyDecision) => {
      const outcome = decision.allowed ? 'allow' : 'deny';
      let count = counters.get(`${listener}\0${outcome}`);
      if (count === undefined) {
        count = metrics.counter(
          'tessera_proxy_decisions_total',
          'Policy decisions by listener and outcome.',
          {
            listener,
            decision: outcome,
          },
        );
        counters.set(`${listener}\0${outcome}`, count);
      }
      count();
      if (audit === undefined) return;
      if (config.audit.decisions === 'denied' && decision.allowed && decision.audited.length === 0) return;
      audit.record('policy.decision', {
        listener,
        decision: decision.allowed ? 'allow' : 'deny',
        principal: request.sourcePrincipal,
        source_ip: request.sourceIp,
        method: request.http?.method,
        path: request.http?.path,
        host: request.http?.host,
        port: request.destinationPort,
        request_principal: request.auth?.principal,
        policy: decision.decidedBy?.policy,
        action: decision.decidedBy?.action,
        rule: decision.decidedBy?.rule,
        audited:
          decision.audited.length === 0
            ? undefined
            : decision.audited.map((a) => `${a.policy}#${a.rule}`).join(','),
        reason: decision.reason,
      });
    };
    const authenticate =
      jwt === undefined
        ? undefined
        : (token: string): NonNullable<PolicyRequest['auth']> => {
            const svid = parseAndValidateJwtSvid(token, jwt as JwtSource, config.jwt.audiences);
            const iss = typeof svid.claims.iss === 'string' ? svid.claims.iss : undefined;
            const sub = svid.id.toString();
            const azp = typeof svid.claims.azp === 'string' ? svid.claims.azp : undefined;
            return {
              principal: iss === undefined ? sub : `${iss}/${sub}`,
              audiences: svid.audience,
              ...(azp === undefined ? {} : { presenter: azp }),
              claims: svid.claims,
            };
          };

    const ports = new Map<string, number>();
    // On stop, every listener created drains at once (on a failed start none has a connection yet).
    closers.push(async () => {
      log.info('draining', { listeners: listeners.length, drain_timeout_ms: config.drain_timeout });
      await Promise.all(listeners.map((l) => l.close(config.drain_timeout)));
    });
    for (const [i, c] of config.inbound.entries()) {
      const l = createInboundListener(c, i, {
        identity,
        decide,
        ...(authenticate === undefined ? {} : { authenticate }),
        forwardToken: config.jwt.forward_original_token,
        onDecision,
        logger: log,
      });
      listeners.push(l);
      ports.set(l.name, await listenOn(l.server, c.listen, l.name));
    }
    for (const [i, c] of config.outbound.entries()) {
      const l = createOutboundListener(c, i, { identity, hasIdentity: () => hasIdentity, logger: log });
      listeners.push(l);
      ports.set(l.name, await listenOn(l.server, c.listen, l.name));
    }
    policies?.watch();

    let healthPort: number | undefined;
    if (options.serveHealth !== false) {
      const health = await startHealthServer({
        role: 'proxy',
        address: config.health.address,
        port: config.health.port,
        metrics,
        ready: () => hasIdentity,
      });
      closers.push(() => health.close());
      healthPort = health.port;
    }
    log.info('proxy ready', {
      listeners: [...ports].map(([n, p]) => `${n}:${p}`).join(' '),
      policies: policies?.size ?? 0,
    });
    return {
      ports,
      healthPort,
      metrics,
      policies,
      identity,
      hasIdentity: () => hasIdentity,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
