// Outbound: a local plain listener whose connections are carried over mTLS to a remote, presenting
// the workload's SVID and requiring the server's SPIFFE ID (one, one of several, or a trust domain).
// It is a layer-4 tunnel, so any protocol the app speaks passes; ALPN tells the server which.
import { createServer, isIP, type Server, type Socket } from 'node:net';
import {
  type Authorizer,
  authorizeMemberOf,
  authorizeOneOf,
  spiffeTlsConnect,
  type TlsBundleSource,
  type X509CrlSource,
  type X509SvidSource,
} from '@tessera/spiffe';
import type { DaemonLogger } from '../common/log.js';
import { type OutboundConfig, splitHostPort } from './config.js';
import { createConnectionSet } from './connections.js';

export interface OutboundDeps {
  identity: X509SvidSource & TlsBundleSource & X509CrlSource;
  /** False while the workload has no identity (e.g. its entry was deleted): connections are refused. */
  hasIdentity(): boolean;
  logger: DaemonLogger;
}

export interface OutboundListener {
  readonly name: string;
  readonly server: Server;
  dropConnections(): void;
  /** Stops accepting; tunnels still open after `drainMs` are closed. */
  close(drainMs?: number): Promise<void>;
}

const ALPN: Record<OutboundConfig['protocol'], string[] | undefined> = {
  http1: ['http/1.1'],
  http2: ['h2'],
  tcp: undefined,
};

export function outboundAuthorizer(config: OutboundConfig): Authorizer {
  return config.server_trust_domain !== undefined
    ? authorizeMemberOf(config.server_trust_domain)
    : authorizeOneOf(...config.server_spiffe_ids);
}

export function createOutboundListener(
  config: OutboundConfig,
  index: number,
  deps: OutboundDeps,
): OutboundListener {
  const name = config.name ?? `outbound-${index}`;
  const log = deps.logger.with({ listener: name });
  const remote = splitHostPort(config.upstream);
  const servername = config.sni ?? (isIP(remote.host) === 0 ? remote.host : undefined);
  const tlsConfig = {
    svid: deps.identity,
    bundles: deps.identity,
    authorizer: outboundAuthorizer(config),
    // A revoked server is refused at the handshake: the CRLs come with the identity.
    revocation: deps.identity,
    logger: log,
  };
  const alpn = ALPN[config.protocol];
  const connections = createConnectionSet();
  const track = connections.track;

  // Nagle's algorithm off, as Envoy does: with it, the end of each response through the tunnel
  // waited for a delayed ACK (16 KiB responses went from ~700 to ~7,000/s in bench/proxy.bench.ts).
  const server = createServer({ noDelay: true }, (local) => {
    track(local);
    local.on('error', () => {});
    if (!deps.hasIdentity()) {
      log.warn('connection refused: this workload has no identity from the Workload API now', {
        upstream: config.upstream,
      });
      local.destroy();
      return;
    }
    let remoteSocket: Socket;
    try {
      remoteSocket = spiffeTlsConnect(tlsConfig, {
        host: remote.host,
        port: remote.port,
        ...(servername === undefined ? {} : { servername }),
        ...(alpn === undefined ? {} : { ALPNProtocols: alpn }),
      });
    } catch (err) {
      log.warn('cannot originate mTLS', { upstream: config.upstream, error: (err as Error).message });
      local.destroy();
      return;
    }
    remoteSocket.setNoDelay(true);
    track(remoteSocket);
    const timer = setTimeout(() => {
      log.warn('connection to the upstream timed out', {
        upstream: config.upstream,
        timeout_ms: config.connect_timeout,
      });
      remoteSocket.destroy();
    }, config.connect_timeout);
    remoteSocket.once('secureConnect', () => clearTimeout(timer));
    remoteSocket.on('error', (err) => {
      clearTimeout(timer);
      log.warn('upstream mTLS connection failed', { upstream: config.upstream, error: err.message });
      local.destroy();
    });
    // A clean close ends the other side after what is buffered; an error tears it down.
    remoteSocket.on('close', (hadError) => {
      clearTimeout(timer);
      if (hadError) local.destroy();
      else local.end();
    });
    local.on('close', (hadError) => {
      if (hadError) remoteSocket.destroy();
      else remoteSocket.end();
    });
    // Bytes either way reset it: what is read from one side is written to the other.
    local.setTimeout(config.idle_timeout, () => {
      log.debug('idle connection closed', { upstream: config.upstream, idle_ms: config.idle_timeout });
      local.destroy();
      remoteSocket.destroy();
    });
    local.pipe(remoteSocket).pipe(local);
  });
  server.on('error', (err) => log.error('listener error', { error: err.message }));
  return {
    name,
    server,
    dropConnections: connections.dropAll,
    close: (drainMs = 0) => connections.closeServer(server, drainMs),
  };
}
