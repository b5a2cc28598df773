// `tessera agent run`: resume from data_dir or attest, then keep the node's identities current and
// serve them on the Workload API socket. Every startup failure is one ERR_STARTUP naming its cause.
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { create, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import {
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  parseX509BundlePem,
  SpiffeBundle,
  type TrustDomain,
  type X509Bundle,
} from '@tessera/spiffe';
import { createCsr } from '../common/csr.js';
import { lockDataDir, makeDataDir, startHealthServer, startupError } from '../common/daemon.js';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';
import { grpcErrorText } from '../common/grpc.js';
import { createLogger, type DaemonLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { serveOnUnixSocket, unixPeerOf } from '../common/unix-grpc.js';
import { pemCertificateBlocks } from '../common/x509.js';
import { X509PopPayloadSchema } from '../gen/tessera/agent/v1/agent_pb.js';
import { x509popChallengeResponse } from '../server/attestation/x509pop.js';
import { generateKeyPairOfType } from '../server/keymanager/generate.js';
import type { AgentConfig } from './config.js';
import { createSds } from './endpoints/sds.js';
import { createWorkloadApi } from './endpoints/workload-api.js';
import { AgentManager } from './manager.js';
import { AGENT_NODE_ATTESTOR_PLUGINS, type NodeEvidence } from './node-attestation/registry.js';
import { type LookupAll, parseServerAddress, resolveServers } from './server-address.js';
import { ServerClient } from './server-client.js';
import { socketAccessProblems, socketAccessWarning } from './socket-access.js';
import {
  type AgentState,
  loadAgentState,
  loadSavedBundle,
  saveAgentSvid,
  saveBundle,
  savedBundlePath,
} from './state.js';
import { attestWorkload } from './workload/attest.js';
import { createWorkloadAttestors } from './workload/registry.js';

const fail = (message: string, cause?: unknown) => startupError('agent', message, cause);

export interface RunningAgent {
  readonly manager: AgentManager;
  readonly healthPort: number;
  readonly socketPath: string;
  /**
   * Settles with why, when the agent cannot go on by itself: the server evicted it and it cannot
   * attest again (e.g. its join token was used). Never settles otherwise. Call stop() after it.
   */
  readonly fatal: Promise<TesseraError>;
  stop(): Promise<void>;
}

/** The bundle the agent trusts the server with before it has one of its own. */
async function bootstrapBundle(config: AgentConfig, td: TrustDomain): Promise<X509Bundle | 'insecure'> {
  const parse = (text: string, from: string): X509Bundle => {
    try {
      return text.trimStart().startsWith('{')
        ? parseSpiffeBundle(td, text).x509Bundle()
        : parseX509BundlePem(td, text);
    } catch (err) {
      throw fail(
        `the trust bundle from ${from} is not a PEM or SPIFFE bundle: ${(err as Error).message}`,
        err,
      );
    }
  };
  if (config.trust_bundle_path !== undefined) {
    let text: string;
    try {
      text = readFileSync(config.trust_bundle_path, 'utf8');
    } catch (err) {
      throw fail(
        `cannot read trust_bundle_path ${config.trust_bundle_path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        err,
      );
    }
    return parse(text, config.trust_bundle_path);
  }
  if (config.trust_bundle_url !== undefined) {
    let res: Response;
    try {
      res = await fetch(config.trust_bundle_url, { signal: AbortSignal.timeout(10_000) });
    } catch (err) {
      throw fail(`cannot fetch trust_bundle_url ${config.trust_bundle_url}: ${(err as Error).message}`, err);
    }
    if (!res.ok) throw fail(`trust_bundle_url ${config.trust_bundle_url} answered HTTP ${res.status}`);
    return parse(await res.text(), config.trust_bundle_url);
  }
  if (config.insecure_bootstrap) return 'insecure';
  throw fail(
    'the agent has no identity yet and no way to trust the server: set trust_bundle_path, trust_bundle_url, or (labs only) insecure_bootstrap: true',
  );
}

/** The node attestor the configuration names (join_token when it names none). */
function nodeAttestorName(config: AgentConfig): string {
  const sections = config.node_attestor as unknown as Record<string, unknown>;
  for (const plugin of AGENT_NODE_ATTESTOR_PLUGINS)
    if (sections[plugin.name] !== undefined) return plugin.name;
  return config.node_attestor.x509pop !== undefined ? 'x509pop' : 'join_token';
}

/** The node attestor's evidence and, for challenge–response attestors, how to answer. */
async function nodeEvidence(
  config: AgentConfig,
  joinToken: string | undefined,
  logger: DaemonLogger,
): Promise<NodeEvidence> {
  const sections = config.node_attestor as unknown as Record<string, unknown>;
  for (const plugin of AGENT_NODE_ATTESTOR_PLUGINS) {
    const section = sections[plugin.name];
    if (section === undefined) continue;
    if (joinToken !== undefined)
      throw fail(
        `--join-token is for the join_token node attestor; this agent's node_attestor is ${plugin.name}`,
      );
    try {
      return await plugin.evidence(section, { logger: logger.with({ attestor: plugin.name }) });
    } catch (err) {
      throw fail(`node_attestor.${plugin.name}: ${(err as Error).message}`, err);
    }
  }
  const pop = config.node_attestor.x509pop;
  if (pop !== undefined) {
    let chain: X509Certificate[];
    let key: KeyObject;
    try {
      chain = pemCertificateBlocks(readFileSync(pop.certificate_path, 'utf8')).map(
        (b) => new X509Certificate(b),
      );
    } catch (err) {
      throw fail(
        `node_attestor.x509pop: cannot read ${pop.certificate_path}: ${(err as Error).message}`,
        err,
      );
    }
    if (chain.length === 0)
      throw fail(`node_attestor.x509pop: ${pop.certificate_path} holds no PEM certificate`);
    try {
      key = createPrivateKey(readFileSync(pop.private_key_path));
    } catch (err) {
      throw fail(
        `node_attestor.x509pop: cannot read the key ${pop.private_key_path}: ${(err as Error).message}`,
        err,
      );
    }
    if (!chain[0]?.checkPrivateKey(key))
      throw fail(`node_attestor.x509pop: ${pop.private_key_path} is not the key of ${pop.certificate_path}`);
    return {
      type: 'x509pop',
      payload: toBinary(
        X509PopPayloadSchema,
        create(X509PopPayloadSchema, { certificates: chain.map((c) => c.raw) }),
      ),
      respond: (nonce) => x509popChallengeResponse(nonce, key),
    };
  }
  const jt = config.node_attestor.join_token;
  let token = joinToken ?? jt?.token;
  if (token === undefined && jt?.token_file !== undefined) {
    try {
      token = readFileSync(jt.token_file, 'utf8').split('\n')[0]?.trim();
    } catch (err) {
      throw fail(
        `node_attestor.join_token: cannot read token_file ${jt.token_file}: ${(err as Error).message}`,
        err,
      );
    }
  }
  if (token === undefined || token === '')
    throw fail(
      'the agent is not attested yet: give it a join token (--join-token, node_attestor.join_token.token or token_file)',
    );
  return { type: 'join_token', payload: Buffer.from(token, 'utf8') };
}

/** The trust domain in the spiffe library's refusal of a server SVID for which there is no bundle. */
const SERVER_OF_TRUST_DOMAIN =
  /no X\.509 bundle for trust domain "([^"]+)" of "spiffe:\/\/[^"/]+\/tessera\/server"/;

/** OpenSSL's words for a server certificate that no authority of the bundle it was checked with signed. */
const UNTRUSTED_SERVER =
  /self[- ]signed certificate in certificate chain|unable to get local issuer certificate|unable to get issuer certificate|unable to verify the first certificate|certificate signature failure/;

function otherTrustDomain(address: string, server: string, td: TrustDomain): Error {
  return fail(
    `the server at ${address} is in trust domain "${server}", but this agent's trust_domain is "${td.name}"; set trust_domain: ${server} in the agent's configuration, or point server_address at a server of ${td.name}`,
  );
}

/** One way to trust the server for attestation, and its name in messages. */
interface BootstrapTrust {
  readonly trust: X509Bundle | 'insecure';
  /** `trust_bundle_path /etc/tessera/bundle.pem`, `the bundle saved in data_dir (…/bundle.json)`, … */
  readonly from: string;
}

function configuredTrustName(config: AgentConfig): string {
  if (config.trust_bundle_path !== undefined) return `trust_bundle_path ${config.trust_bundle_path}`;
  if (config.trust_bundle_url !== undefined) return `trust_bundle_url ${config.trust_bundle_url}`;
  return 'insecure_bootstrap';
}

/**
 * The bundle the agent saved in data_dir, when it has one with X.509 authorities that differ from
 * the configured bootstrap trust: the server sent it (over a connection the agent had verified)
 * and kept it current through every rotation since, while trust_bundle_path is what was true when
 * the file was written. A damaged file is ignored (logged): the configured trust still stands.
 */
function savedTrust(
  config: AgentConfig,
  td: TrustDomain,
  configured: BootstrapTrust,
  logger: DaemonLogger,
): BootstrapTrust | undefined {
  let saved: SpiffeBundle | undefined;
  try {
    saved = loadSavedBundle(config.data_dir, td);
  } catch (err) {
    logger.warn(`agent: ignoring the bundle saved in data_dir: ${(err as Error).message}`);
    return undefined;
  }
  if (saved === undefined || saved.x509Authorities.length === 0) return undefined;
  const x509 = saved.x509Bundle();
  if (configured.trust !== 'insecure' && x509.equals(configured.trust)) return undefined;
  return { trust: x509, from: `the bundle saved in data_dir (${savedBundlePath(config.data_dir)})` };
}

/**
 * Attests the node and saves the agent SVID, key and bundle in data_dir. The server is trusted
 * with the bundle saved in data_dir first when it differs from the configured bootstrap trust (it
 * follows CA rotations; a trust_bundle_path file does not), then with the configured one. With
 * each, the servers are tried in turn, from a random one, until one answers: one that cannot be
 * reached (UNAVAILABLE, e.g. connection refused, a failed TLS handshake, shutting down) or does not
 * answer in time gives way to the next; a refusal is an answer (the servers share their datastore)
 * and ends the attempt. When no authority of either bundle signed the servers' certificates, the
 * error says the configured bundle is stale and how to refresh it.
 */
async function attest(
  config: AgentConfig,
  td: TrustDomain,
  servers: readonly string[],
  joinToken: string | undefined,
  logger: DaemonLogger,
  random: () => number,
): Promise<AgentState> {
  const evidence = await nodeEvidence(config, joinToken, logger);
  const configured: BootstrapTrust = {
    trust: await bootstrapBundle(config, td),
    from: configuredTrustName(config),
  };
  const saved = savedTrust(config, td, configured, logger);
  const trusts = saved === undefined ? [configured] : [saved, configured];
  const untrusted: string[][] = [];
  for (const t of trusts) {
    const r = await attestWith(config, td, servers, evidence, t, logger, random);
    if (!('untrusted' in r)) {
      if (t === saved)
        logger.info(`agent: trusted the server with ${saved.from}, which differs from ${configured.from}`);
      else if (saved !== undefined)
        logger.warn(
          `agent: ${saved.from} is stale (no authority in it signed the server's certificate); trusted the server with ${configured.from}`,
        );
      return r;
    }
    untrusted.push(r.untrusted);
    if (t === saved)
      logger.warn(`agent: ${saved.from} is stale (${r.untrusted.join('; ')}); trying ${configured.from}`);
  }
  const refresh =
    config.trust_bundle_path !== undefined
      ? `Refresh it from the server: tessera bundle show > ${config.trust_bundle_path} (on the server's host; copy the file here if the agent runs elsewhere), then start the agent again`
      : `Make ${config.trust_bundle_url} serve the server's current bundle (tessera bundle show), then start the agent again`;
  throw fail(
    `node attestation (${evidence.type}) failed: ${configured.from} is stale: no authority in it signed the certificate of ${untrusted.at(-1)?.join('; ')}` +
      `${saved === undefined ? '' : `, nor one in ${saved.from}`}. The server's CA has changed since the bundle was written (rotated, or revoked with tessera authority revoke), or the bundle is another server's. ${refresh}`,
  );
}

/**
 * One attempt at attestation, trusting the server with `t`: the agent's state, or `untrusted` (one
 * "the server at <address> (<why>)" each) when no server's certificate verified with it.
 */
async function attestWith(
  config: AgentConfig,
  td: TrustDomain,
  servers: readonly string[],
  evidence: NodeEvidence,
  t: BootstrapTrust,
  logger: DaemonLogger,
  random: () => number,
): Promise<AgentState | { untrusted: string[] }> {
  const { trust } = t;
  if (trust === 'insecure')
    logger.warn(
      'agent: INSECURE BOOTSTRAP — the server is not authenticated for this first attestation (insecure_bootstrap: true); never use this outside a lab',
    );
  const start = Math.floor(random() * servers.length) % servers.length;
  const order = [...servers.slice(start), ...servers.slice(0, start)];
  const failures: string[] = [];
  const untrusted: string[] = [];
  let mismatch: Error | undefined;
  for (const address of order) {
    const client = new ServerClient({
      address,
      trustDomain: td,
      ...(trust === 'insecure' ? { insecure: true } : { bundle: trust }),
    });
    const key = generateKeyPairOfType('ec-p256').privateKey;
    try {
      const r = await client.attest(
        { type: evidence.type, payload: evidence.payload, csr: createCsr(key) },
        evidence.respond,
      );
      // An insecure bootstrap believes any server: one of another trust domain is found out here.
      const issuedIn = parseSpiffeId(r.spiffeId).trustDomain.name;
      if (issuedIn !== td.name) {
        mismatch = otherTrustDomain(address, issuedIn, td);
        throw mismatch;
      }
      const chain = r.svidChain.map((d) => new X509Certificate(d));
      const bundle =
        r.bundle === undefined
          ? new SpiffeBundle({ trustDomain: td })
          : parseSpiffeBundle(td, Buffer.from(r.bundle.spiffeBundle).toString());
      saveAgentSvid(config.data_dir, chain, key);
      saveBundle(config.data_dir, bundle);
      logger.info('agent: attested', {
        spiffe_id: r.spiffeId,
        attestor: evidence.type,
        selectors: r.selectors.length,
        server: address,
      });
      return { chain, key, bundle };
    } catch (err) {
      if (err === mismatch) throw err;
      const text = grpcErrorText(err);
      // The server's SVID names its trust domain: another one than ours is a configuration mistake,
      // said as such (not as a bundle to add by federation).
      const server = text.match(SERVER_OF_TRUST_DOMAIN)?.[1];
      if (server !== undefined && server !== td.name) throw otherTrustDomain(address, server, td);
      const code = (err as { code?: unknown }).code;
      const unreachable = code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED;
      // A certificate this bundle does not vouch for: another server may have one it does (the
      // servers' CAs are in one bundle), else the caller tries another bundle or says it is stale.
      const notVouched = unreachable ? text.match(UNTRUSTED_SERVER)?.[0] : undefined;
      if (notVouched !== undefined) untrusted.push(`the server at ${address} (${notVouched})`);
      else if (!unreachable || servers.length === 1)
        throw fail(`node attestation (${evidence.type}) with the server at ${address} failed: ${text}`, err);
      failures.push(`${address}: ${text}`);
      const next = order[failures.length];
      if (next !== undefined)
        logger.warn(`agent: server ${address} unreachable; trying ${next}`, {
          server: address,
          next,
          error: text,
        });
    } finally {
      client.close();
    }
  }
  if (untrusted.length === failures.length) return { untrusted };
  throw fail(
    `node attestation (${evidence.type}) failed: none of the ${servers.length} servers answered: ${failures.join('; ')}`,
  );
}

export interface StartAgentOptions {
  joinToken?: string;
  logger?: DaemonLogger;
  /** Looks host names in server_address up (all their addresses); default dns.promises.lookup. */
  lookup?: LookupAll;
  /** Randomness for the first server tried and the jittered waits; default Math.random. */
  random?: () => number;
}

export async function startAgent(config: AgentConfig, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  const logger = opts.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  const td = parseTrustDomain(config.trust_domain);
  const random = opts.random ?? Math.random;
  const targets = config.server_address.map((item) => parseServerAddress(item, config.server_port));
  const lookUp = async (): Promise<readonly string[]> => {
    const r = await resolveServers(targets, opts.lookup);
    for (const f of r.failures)
      logger.warn('agent: cannot look up a server address; gRPC will try it when dialling', {
        server: f.item,
        error: f.error,
      });
    return r.addresses;
  };
  const servers = await lookUp();
  makeDataDir('agent', config.data_dir);
  const unlock = lockDataDir('agent', config.data_dir);
  const cleanups: (() => Promise<void> | void)[] = [unlock];
  const stop = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    let state = loadAgentState(config.data_dir, td);
    const expired =
      state !== undefined && new Date((state.chain[0] as X509Certificate).validTo).getTime() <= Date.now();
    if (state === undefined || expired || opts.joinToken !== undefined) {
      if (expired) logger.warn('agent: the saved agent SVID has expired; attesting again');
      state = await attest(config, td, servers, opts.joinToken, logger, random);
    } else {
      logger.info('agent: resuming with the saved agent SVID', {
        expires: (state.chain[0] as X509Certificate).validTo,
      });
    }
    const metrics = new Metrics();
    const manager = new AgentManager({
      trustDomain: td,
      servers,
      resolveServers: lookUp,
      random,
      dataDir: config.data_dir,
      state,
      workloadKeyType: config.workload_key_type,
      logger: logger.with({ subsystem: 'manager' }),
      metrics,
    });
    cleanups.push(() => manager.close());
    // Evicted (its record deleted on the server), or its SVID no longer trusted (its CA revoked while
    // it was away): attest again as at first start, else give up.
    let giveUp: (err: TesseraError) => void = () => undefined;
    const fatal = new Promise<TesseraError>((resolve) => {
      giveUp = resolve;
    });
    let stopping = false;
    manager.on('refused', (refusal) => {
      if (refusal.kind !== 'evicted' && refusal.kind !== 'untrusted') return;
      const id = manager.id;
      void (async () => {
        try {
          const fresh = await attest(config, td, await lookUp(), opts.joinToken, logger, random);
          if (!stopping) manager.resume(fresh);
        } catch (err) {
          const why = (err as Error).message.replace(/^agent: /, '');
          const message =
            `agent: ${refusal.kind === 'evicted' ? 'the server evicted this agent' : "the server no longer trusts this agent's SVID (its CA was revoked while the agent was away, or it expired)"} (${id}) and it cannot attest again: ${why}` +
            (nodeAttestorName(config) === 'join_token'
              ? '. A join token is used once: generate a new one on the server (tessera token generate) and start the agent with it (tessera agent run --join-token <token>)'
              : '');
          logger.error(message);
          giveUp(new TesseraError(TesseraErrorCode.ATTESTATION_FAILED, message, { cause: err }));
        }
      })();
    });
    cleanups.push(() => {
      stopping = true;
    });
    manager.start();
    const workloadAttestors = createWorkloadAttestors(
      config.workload_attestors,
      logger.with({ subsystem: 'workload-attestation' }),
    );
    cleanups.push(() => workloadAttestors.close());
    const attestors = workloadAttestors.attestors;
    const attestCaller = async (call: { getPeer(): string }) => {
      const peer = unixPeerOf(call);
      if (peer === undefined || !peer.ok)
        throw new Error(peer?.ok === false ? peer.reason : 'the caller is unknown');
      return attestWorkload(
        peer.credentials,
        attestors,
        peer.startTime === undefined ? {} : { acceptedStartTime: peer.startTime },
      );
    };
    const services = [
      createWorkloadApi({
        manager,
        attest: attestCaller,
        logger: logger.with({ subsystem: 'workload-api' }),
        metrics,
      }),
      createSds({
        manager,
        attest: attestCaller,
        names: {
          defaultSvid: config.sds.default_svid_name,
          defaultBundle: config.sds.default_bundle_name,
          allBundles: config.sds.default_all_bundles_name,
        },
        disableSpiffeCertValidation: config.sds.disable_spiffe_cert_validation,
        logger: logger.with({ subsystem: 'sds' }),
        metrics,
      }),
    ];
    for (const path of [
      config.socket_path,
      ...(config.additional_socket_path === undefined ? [] : [config.additional_socket_path]),
    ]) {
      const configKey = path === config.socket_path ? 'socket_path' : 'additional_socket_path';
      const socket = await serveOnUnixSocket({
        path,
        mode: 0o777,
        dirMode: 0o755,
        what: 'agent socket',
        configKey,
        services,
        logger,
      });
      cleanups.push(() => socket.close());
      const closed = socketAccessProblems(path);
      if (closed.length > 0)
        logger.warn(socketAccessWarning(path, configKey, closed), {
          socket: path,
          closed: closed.map((p) => `${p.path}=0${p.mode.toString(8)}`).join(','),
        });
    }
    const health = await startHealthServer({
      role: 'agent',
      address: config.health.address,
      port: config.health.port,
      metrics,
      ready: () => manager.synced && manager.refusal === undefined,
    });
    cleanups.push(() => health.close());
    logger.info('agent started', {
      spiffe_id: manager.id,
      servers: servers.join(','),
      socket: config.socket_path,
      health: `${config.health.address}:${health.port}`,
    });
    return { manager, healthPort: health.port, socketPath: config.socket_path, fatal, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
