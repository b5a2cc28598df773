import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseTrustDomain } from '@tessera/spiffe';
import { type AuditLog, createAuditLog } from '../common/audit.js';
import {
  startupError as daemonStartupError,
  lockDataDir,
  makeDataDir,
  startHealthServer,
} from '../common/daemon.js';
import { createLogger, type DaemonLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { tesseraVersion } from '../common/version.js';
import { pemCertificateBlocks } from '../common/x509.js';
import { createAdminService } from './api/admin-api.js';
import { startAdminSocket } from './api/admin-socket.js';
import { AgentApi } from './api/agent-api.js';
import { ServerIdentity, serverId } from './api/server-identity.js';
import { JoinTokenAttestor } from './attestation/join-token.js';
import { NODE_ATTESTOR_PLUGINS } from './attestation/registry.js';
import type { NodeAttestor } from './attestation/types.js';
import { X509PopAttestor } from './attestation/x509pop.js';
import { jwtAlgorithmOf } from './ca/jwt-authority.js';
import { AuthorityManager } from './ca/manager.js';
import { X509Revocations } from './ca/revocation.js';
import { SigningPool } from './ca/signing-pool.js';
import type { ServerConfig } from './config.js';
import { openPostgresDatastore } from './datastore/postgres.js';
import { openSqliteDatastore } from './datastore/sqlite.js';
import type { Datastore } from './datastore/types.js';
import { type BundleEndpoint, startBundleEndpoint } from './federation/bundle-endpoint.js';
import { Federation, type FederationTiming } from './federation/federation.js';
import { checkRelationship, type FederationRelationship } from './federation/relationship.js';
import { DiskKeyManager } from './keymanager/disk.js';
import type { KeyManager } from './keymanager/key-manager.js';
import { MemoryKeyManager } from './keymanager/memory.js';
import { defaultJwksUri } from './oidc/discovery.js';
import { type OidcEndpoint, startOidcEndpoint } from './oidc/endpoint.js';
import { EntryIndex } from './registry/entry-index.js';

/** How often the rotation schedule is checked: every 10 s, more often for a short-lived test CA. */
function rotateIntervalMs(caTtlMs: number): number {
  return Math.max(100, Math.min(10_000, Math.floor(caTtlMs / 60)));
}

const startupError = (message: string, cause?: unknown) => daemonStartupError('server', message, cause);

/** Reads the upstream authority files; each problem names the file. */
function loadUpstream(disk: { cert_file: string; key_file: string; bundle_file?: string }): {
  certificate: X509Certificate;
  privateKey: KeyObject;
  chain: X509Certificate[];
  roots: X509Certificate[];
} {
  const readCerts = (file: string): X509Certificate[] => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw startupError(
        `upstream authority: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        err,
      );
    }
    const blocks = pemCertificateBlocks(text);
    if (blocks.length === 0) throw startupError(`upstream authority: ${file} holds no PEM certificate`);
    try {
      return blocks.map((b) => new X509Certificate(b));
    } catch (err) {
      throw startupError(
        `upstream authority: ${file} holds an unreadable certificate: ${(err as Error).message}`,
        err,
      );
    }
  };
  const [certificate, ...chain] = readCerts(disk.cert_file);
  if (certificate === undefined)
    throw startupError(`upstream authority: ${disk.cert_file} holds no certificate`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(readFileSync(disk.key_file));
  } catch (err) {
    throw startupError(
      `upstream authority: ${disk.key_file} is not a readable private key: ${(err as Error).message}`,
      err,
    );
  }
  if (!certificate.checkPrivateKey(privateKey))
    throw startupError(`upstream authority: ${disk.key_file} is not the key of ${disk.cert_file}`);
  if (!certificate.ca) throw startupError(`upstream authority: ${disk.cert_file} is not a CA certificate`);
  const selfSigned = certificate.subject === certificate.issuer;
  const roots =
    disk.bundle_file !== undefined ? readCerts(disk.bundle_file) : selfSigned ? [certificate] : [];
  if (roots.length === 0)
    throw startupError(
      `upstream authority: ${disk.cert_file} is not a root; set bundle_file to the upstream root(s)`,
    );
  return { certificate, privateKey, chain, roots };
}

/**
 * The node attestors the configuration enables; an unreadable x509pop CA file, or a plugin's
 * problem (attestation/registry.ts), is a startup error naming its key.
 */
async function nodeAttestors(
  config: ServerConfig,
  datastore: Datastore,
  logger: DaemonLogger,
  now: () => Date,
): Promise<Map<string, NodeAttestor>> {
  const td = parseTrustDomain(config.trust_domain);
  const out = new Map<string, NodeAttestor>();
  if (config.node_attestors.join_token.enabled) out.set('join_token', new JoinTokenAttestor(td, datastore));
  const caFile = config.node_attestors.x509pop.ca_bundle_path;
  if (caFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(caFile, 'utf8');
    } catch (err) {
      throw startupError(
        `node_attestors.x509pop: cannot read ${caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        err,
      );
    }
    const blocks = pemCertificateBlocks(text);
    if (blocks.length === 0) throw startupError(`node_attestors.x509pop: ${caFile} holds no PEM certificate`);
    let roots: X509Certificate[];
    try {
      roots = blocks.map((b) => new X509Certificate(b));
    } catch (err) {
      throw startupError(
        `node_attestors.x509pop: ${caFile} holds an unreadable certificate: ${(err as Error).message}`,
        err,
      );
    }
    out.set('x509pop', new X509PopAttestor(td, roots));
  }
  const sections = config.node_attestors as unknown as Record<string, unknown>;
  for (const plugin of NODE_ATTESTOR_PLUGINS) {
    const section = sections[plugin.name];
    if (section === undefined) continue;
    try {
      out.set(
        plugin.name,
        await plugin.create(section, {
          trustDomain: td,
          datastore,
          logger: logger.with({ subsystem: 'attestation', attestor: plugin.name }),
          now,
        }),
      );
    } catch (err) {
      throw startupError(`node_attestors.${plugin.name}: ${(err as Error).message}`, err);
    }
  }
  return out;
}

/** server.yaml's federation.federates_with, checked; each problem names the trust domain. */
function configuredRelationships(config: ServerConfig): FederationRelationship[] {
  const own = parseTrustDomain(config.trust_domain);
  return Object.entries(config.federation.federates_with).map(([name, f]) => {
    const web = f.bundle_endpoint_profile.https_web;
    let caBundlePem: string | undefined;
    if (web?.ca_bundle_path !== undefined) {
      try {
        caBundlePem = readFileSync(web.ca_bundle_path, 'utf8');
      } catch (err) {
        throw startupError(
          `federation.federates_with.${name}: cannot read ca_bundle_path ${web.ca_bundle_path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          err,
        );
      }
    }
    try {
      return checkRelationship(
        {
          trustDomain: name,
          bundleEndpointUrl: f.bundle_endpoint_url,
          profile: web === undefined ? 'https_spiffe' : 'https_web',
          ...(f.bundle_endpoint_profile.https_spiffe === undefined
            ? {}
            : { endpointSpiffeId: f.bundle_endpoint_profile.https_spiffe.endpoint_spiffe_id }),
          ...(caBundlePem === undefined ? {} : { caBundlePem }),
        },
        own,
      );
    } catch (err) {
      throw startupError(`server.yaml federation.federates_with: ${(err as Error).message}`, err);
    }
  });
}

export interface RunningServer {
  readonly trustDomain: string;
  readonly healthPort: number;
  readonly agentApiPort: number;
  readonly agentApi: AgentApi;
  readonly audit: AuditLog;
  readonly metrics: Metrics;
  readonly authority: AuthorityManager;
  readonly datastore: Datastore;
  readonly federation: Federation;
  /** Revocation of single X509-SVIDs and the trust domain's CRLs. */
  readonly revocations: X509Revocations;
  /** The bundle endpoint's port, when federation.bundle_endpoint is configured. */
  readonly bundleEndpointPort: number | undefined;
  /** The OIDC discovery endpoint's HTTPS port, when oidc_discovery serves HTTPS. */
  readonly oidcDiscoveryPort: number | undefined;
  /** Stops the loops, closes listeners and the datastore, releases the data directory. */
  stop(): Promise<void>;
}

/**
 * Starts the identity authority from a validated configuration. Every startup failure (data
 * directory, lock, datastore, keys, port) is one TesseraError with a message an operator can act on.
 */
export async function startServer(
  config: ServerConfig,
  opts: {
    logger?: DaemonLogger;
    now?: () => Date;
    /** Refresh timing of federated bundles (tests shorten the one-minute floor). */
    federationTiming?: Partial<FederationTiming>;
  } = {},
): Promise<RunningServer> {
  const logger = opts.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  const now = opts.now ?? (() => new Date());
  makeDataDir('server', config.data_dir);
  const unlock = lockDataDir('server', config.data_dir);
  const cleanups: (() => Promise<void> | void)[] = [unlock];
  const stop = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const dsLogger = logger.with({ subsystem: 'datastore' });
    const pgConfig = config.datastore.postgres;
    const datastore =
      pgConfig !== undefined
        ? await openPostgresDatastore(pgConfig.connection_string, {
            pollIntervalMs: pgConfig.poll_interval,
            retentionMs: pgConfig.event_retention,
            logger: dsLogger,
          })
        : await openSqliteDatastore(
            config.datastore.sqlite?.path ?? join(config.data_dir, 'datastore.sqlite3'),
            {
              logger: dsLogger,
            },
          );
    cleanups.push(() => datastore.close());
    const keyManager: KeyManager =
      config.key_manager === 'memory'
        ? new MemoryKeyManager()
        : new DiskKeyManager(join(config.data_dir, 'keys'));
    const upstream =
      config.upstream_authority === undefined ? undefined : loadUpstream(config.upstream_authority.disk);
    const audit = createAuditLog({ path: config.audit_log ?? join(config.data_dir, 'audit.log') });
    cleanups.push(() => audit.close());
    const authority = new AuthorityManager({
      ...(upstream === undefined ? {} : { upstream }),
      trustDomain: parseTrustDomain(config.trust_domain),
      keyManager,
      datastore,
      ...(config.key_manager === 'disk'
        ? { journalPath: join(config.data_dir, 'authority-journal.json') }
        : {}),
      caKeyType: config.ca.key_type,
      jwtKeyType: config.jwt_key_type,
      caTtlMs: config.ca.ttl,
      subject: {
        country: config.ca.subject.country,
        organization: config.ca.subject.organization,
        commonName: config.ca.subject.common_name,
      },
      ...(config.jwt_issuer === '' ? {} : { jwtIssuer: config.jwt_issuer }),
      now,
      logger: logger.with({ subsystem: 'ca' }),
    });
    // Operator commands are audited by the admin API, with the caller; the schedule's steps here.
    authority.onRotation((kind, step, id, trigger) => {
      if (trigger === 'schedule')
        audit.record(step === 'prepared' ? 'authority.prepared' : 'authority.activated', {
          kind,
          authority_id: id,
          trigger,
        });
    });
    await authority.init();
    cleanups.push(() => authority.close());
    const jwtAlgorithm = config.jwt_key_type === 'rsa-2048' ? 'RS256' : 'ES256';
    if (jwtAlgorithmOf(authority.jwt.publicKey) !== jwtAlgorithm)
      logger.warn(
        `ca: the active JWT key signs ${jwtAlgorithmOf(authority.jwt.publicKey)} but jwt_key_type is ${config.jwt_key_type}; keys made from now on are ${config.jwt_key_type}, the current one signs until the next rotation (tessera authority prepare --kind jwt, then activate, switches now)`,
        { kid: authority.jwt.kid },
      );
    const trustDomain = parseTrustDomain(config.trust_domain);
    const configured = configuredRelationships(config);
    const attestors = await nodeAttestors(config, datastore, logger, now);
    const metrics = new Metrics();
    const index = await EntryIndex.load(datastore, serverId(trustDomain));
    cleanups.push(() => index.close());
    const identity = await ServerIdentity.create({
      trustDomain,
      authority,
      datastore,
      ttlMs: config.x509_svid_ttl,
      now,
      onRenewError: (err) =>
        logger.error('server: renewing the server SVID failed; retrying in 1s', { error: err.message }),
    });
    cleanups.push(() => identity.close());
    // The server SVID follows an activation at once, not at the rotation loop's next tick: after an
    // operator's activate, taint and revoke, no agent meets a server SVID of the old CA.
    cleanups.push(
      authority.onRotation((kind, step) => {
        if (kind !== 'x509' || step !== 'activated') return;
        try {
          identity.maybeRenew();
        } catch (err) {
          logger.error(
            'server: renewing the server SVID after an activation failed; the rotation loop retries',
            {
              error: (err as Error).message,
            },
          );
        }
      }),
    );
    const revocations = new X509Revocations({
      datastore,
      authority,
      now,
      logger: logger.with({ subsystem: 'ca' }),
    });
    await revocations.init();
    cleanups.push(() => revocations.close());
    const cores = availableParallelism();
    const signing = new SigningPool(config.ca.signing_threads ?? (cores > 1 ? Math.min(cores, 8) : 0));
    cleanups.push(() => signing.close());
    const agentApi = new AgentApi({
      signing,
      crls: revocations,
      trustDomain,
      datastore,
      authority,
      index,
      identity,
      attestors,
      x509SvidTtlMs: config.x509_svid_ttl,
      jwtSvidTtlMs: config.jwt_svid_ttl,
      agentSvidTtlMs: config.agent_svid_ttl,
      audit,
      logger: logger.with({ subsystem: 'agent-api' }),
      metrics,
      now,
    });
    cleanups.push(() => agentApi.close());
    const federation = await Federation.start({
      trustDomain,
      datastore,
      configured,
      logger: logger.with({ subsystem: 'federation' }),
      metrics,
      ...(opts.federationTiming === undefined ? {} : { timing: opts.federationTiming }),
    });
    cleanups.push(() => federation.close());
    let bundleEndpoint: BundleEndpoint | undefined;
    const endpointConfig = config.federation.bundle_endpoint;
    if (endpointConfig !== undefined) {
      const web = endpointConfig.profile.https_web;
      bundleEndpoint = await startBundleEndpoint({
        address: endpointConfig.address,
        port: endpointConfig.port,
        refreshHintS: Math.max(1, Math.round(endpointConfig.refresh_hint / 1000)),
        profile:
          web === undefined
            ? { kind: 'https_spiffe', identity }
            : {
                kind: 'https_web',
                certFile: web.serving_cert_file.cert_file_path,
                keyFile: web.serving_cert_file.key_file_path,
                fileSyncIntervalMs: web.serving_cert_file.file_sync_interval,
              },
        bundle: () => identity.bundle,
        logger: logger.with({ subsystem: 'federation' }),
      });
      const endpoint = bundleEndpoint;
      cleanups.push(() => endpoint.close());
      if (endpointConfig.refresh_hint >= 24 * 3600_000)
        logger.warn(
          'federation: bundle_endpoint.refresh_hint is a day or more; peers will be slow to see a rotation',
          {
            refresh_hint_s: Math.round(endpointConfig.refresh_hint / 1000),
          },
        );
    }
    let oidc: OidcEndpoint | undefined;
    const oidcConfig = config.oidc_discovery;
    if (oidcConfig !== undefined) {
      const files = oidcConfig.serving_cert_file;
      oidc = await startOidcEndpoint({
        issuer: config.jwt_issuer,
        jwksUri: oidcConfig.jwks_uri ?? defaultJwksUri(config.jwt_issuer),
        signingAlgorithm: jwtAlgorithm,
        // The bundle as the change feed last brought it (the agent API re-reads it at each change).
        bundle: () => identity.bundle,
        listen:
          files === undefined
            ? { kind: 'unix', path: oidcConfig.listen_socket_path as string }
            : {
                kind: 'https',
                address: oidcConfig.address,
                port: oidcConfig.port,
                servingCertFile: {
                  certFile: files.cert_file_path,
                  keyFile: files.key_file_path,
                  fileSyncIntervalMs: files.file_sync_interval,
                },
              },
        logger: logger.with({ subsystem: 'oidc' }),
      });
      const endpoint = oidc;
      cleanups.push(() => endpoint.close());
    }
    let ready = true;
    const adminLogger = logger.with({ subsystem: 'admin' });
    const adminService = createAdminService({
      trustDomain,
      datastore,
      authority,
      x509SvidTtlMs: config.x509_svid_ttl,
      jwtSvidTtlMs: config.jwt_svid_ttl,
      audit,
      logger: adminLogger,
      now,
      ready: () => ready,
      version: tesseraVersion(),
      connectedAgents: () => agentApi.connectedAgents(),
      federation,
      revocations,
    });
    // The admin API is also served on the agent API port, to SVIDs of entries marked admin.
    const agentApiPort = await agentApi.listen(config.agent_api.address, config.agent_api.port, adminService);
    const timer = setInterval(() => {
      authority
        .rotate()
        .then(() => authority.prune())
        .then(() => revocations.prune())
        .then(() => {
          identity.maybeRenew();
        })
        .then(() => {
          ready = true;
        })
        .catch((err: unknown) => {
          ready = false;
          logger.error('ca: rotation step failed', { error: (err as Error).message });
        });
    }, rotateIntervalMs(config.ca.ttl));
    timer.unref();
    cleanups.push(() => clearInterval(timer));
    metrics.gaugeFn('tessera_agents', 'Attested agents in the datastore.', () => datastore.countAgents());
    metrics.gaugeFn(
      'tessera_agents_connected',
      'Agents with an open sync stream to this server.',
      () => agentApi.connectedAgents().length,
    );
    metrics.gaugeFn(
      'tessera_datastore_feed_revision',
      'Revision of the last datastore change this server applied (the same on every server when caught up).',
      () => datastore.revision,
    );
    metrics.gaugeFn(
      'tessera_datastore_feed_resyncs',
      'Times the change feed found a gap and this server reloaded everything.',
      () => datastore.feed.resyncs,
    );
    if (datastore.follower !== undefined) {
      const follower = datastore.follower;
      metrics.gaugeFn(
        'tessera_datastore_feed_listening',
        '1 while the change-feed connection (LISTEN) to PostgreSQL is up.',
        () => (follower.connected ? 1 : 0),
      );
      metrics.gaugeFn(
        'tessera_datastore_feed_reconnects',
        'Change-feed connections lost and re-established.',
        () => follower.reconnects,
      );
    }
    metrics.gaugeFn('tessera_entries', 'Registration entries in the datastore.', () =>
      datastore.countEntries(),
    );
    metrics.gaugeFn(
      'tessera_ca_x509_expiry_timestamp_seconds',
      'NotAfter of the active X.509 CA, in Unix seconds.',
      () => Math.floor(authority.x509.notAfter.getTime() / 1000),
    );
    metrics.gaugeFn(
      'tessera_ca_jwt_expiry_timestamp_seconds',
      'Expiry of the active JWT key, in Unix seconds.',
      () => Math.floor(authority.jwt.notAfter.getTime() / 1000),
    );
    const health = await startHealthServer({
      role: 'server',
      address: config.health.address,
      port: config.health.port,
      metrics,
      ready: () => ready,
    });
    const healthPort = health.port;
    cleanups.push(() => health.close());
    // The admin API (the tessera CLI) on its Unix socket; closed first on stop.
    const admin = await startAdminSocket(config.admin_socket, adminService, adminLogger, audit);
    cleanups.push(() => admin.close());
    logger.info('server started', {
      trust_domain: config.trust_domain,
      data_dir: config.data_dir,
      health: `${config.health.address}:${healthPort}`,
      agent_api: `${config.agent_api.address}:${agentApiPort}`,
      node_attestors: [...attestors.keys()].join(','),
      bundle_endpoint:
        bundleEndpoint === undefined
          ? undefined
          : `https://${endpointConfig?.address}:${bundleEndpoint.port}`,
      federates_with: federation
        .list()
        .map((v) => v.relationship.trustDomain.name)
        .join(','),
      ca: authority.x509.certificate.fingerprint256,
      jwt_kid: authority.jwt.kid,
      oidc_discovery: oidc?.listening,
    });
    return {
      trustDomain: trustDomain.name,
      healthPort,
      agentApiPort,
      agentApi,
      audit,
      metrics,
      authority,
      datastore,
      federation,
      revocations,
      bundleEndpointPort: bundleEndpoint?.port,
      oidcDiscoveryPort: oidc?.port,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
