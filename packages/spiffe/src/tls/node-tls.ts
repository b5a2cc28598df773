import type { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { RequestListener } from 'node:http';
import * as http2 from 'node:http2';
import {
  Agent,
  type AgentOptions,
  createServer as createHttpsServer,
  type Server as HttpsServer,
} from 'node:https';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import type { X509BundleSource } from '../bundle/source.js';
import type { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import type { SpiffeId } from '../spiffeid/spiffe-id.js';
import type { X509SvidSource } from '../svid/source.js';
import type { X509CrlSource } from '../svid/x509-crl.js';
import type { Authorizer } from './authorizer.js';
import { peerChain, rememberPeer, verifyPeer } from './peer.js';

/** Bundles a TLS endpoint trusts; listing them lets OpenSSL check chains during the handshake. */
export interface TlsBundleSource extends X509BundleSource {
  /** Every bundle (X509Source, BundleSource and the bundle sets have it). */
  getX509Bundles?(): { list(): X509Bundle[] };
  list?(): X509Bundle[];
}

export interface SpiffeTlsConfig {
  /** The SVID this side presents; omit for a client that only verifies the server (TLS, not mTLS). */
  svid?: X509SvidSource;
  /** The bundles the peer's SVID is verified against, per trust domain. */
  bundles: TlsBundleSource;
  /** Who may connect / be connected to. */
  authorizer: Authorizer;
  logger?: Logger;
  /** Clock for verification; default now. */
  now?: () => Date;
  /**
   * Opt-in revocation checking: refuse a peer whose SVID is on a CRL its issuer signed. Pass the
   * X509Source (it holds the CRLs the Workload API sends), or any X509CrlSource.
   */
  revocation?: X509CrlSource;
}

/** Where rotation comes from: X509Source emits 'update'. */
interface Updatable {
  on(event: 'update', listener: () => void): unknown;
  off(event: 'update', listener: () => void): unknown;
}

function isUpdatable(x: unknown): x is Updatable {
  return (
    x instanceof EventEmitter ||
    (typeof x === 'object' &&
      x !== null &&
      typeof (x as Updatable).on === 'function' &&
      typeof (x as Updatable).off === 'function')
  );
}

/** The roots OpenSSL is given: those of the authorizer's trust domains when it names them, else every bundle's. */
function trustRoots(config: SpiffeTlsConfig): X509Certificate[] {
  const { bundles, authorizer } = config;
  if (authorizer.trustDomains !== undefined) {
    return authorizer.trustDomains.flatMap((td) => {
      try {
        return [...bundles.getX509BundleForTrustDomain(td).authorities];
      } catch {
        return [];
      }
    });
  }
  const list = bundles.getX509Bundles?.().list() ?? bundles.list?.();
  if (list === undefined) {
    throw new TypeError(
      'tlsconfig: the bundle source cannot list its bundles; pass an X509Source, BundleSource or a bundle set, or an authorizer that names trust domains',
    );
  }
  return list.flatMap((b) => [...b.authorities]);
}

/** The certificate, key and CA options for the current SVID and bundles. */
export function secureContextOptions(config: SpiffeTlsConfig): tls.SecureContextOptions {
  const ca = trustRoots(config).map((c) => c.toString());
  if (ca.length === 0) {
    throw new SpiffeError(
      ErrorCode.BUNDLE_NOT_FOUND,
      `tlsconfig: no trust roots available for ${config.authorizer.description}; no peer could be verified`,
    );
  }
  const opts: tls.SecureContextOptions = { ca, minVersion: 'TLSv1.2' };
  if (config.svid !== undefined) {
    const svid = config.svid.getX509Svid();
    const { certificates, privateKey } = svid.marshal();
    opts.cert = certificates;
    opts.key = privateKey;
  }
  return opts;
}

/**
 * Options for tls.connect / https.request / http2.connect that present the current SVID (if any),
 * let OpenSSL verify the server's chain against the trusted roots (a bad chain gets a TLS alert),
 * then verify it as an X509-SVID of its own trust domain and run the authorizer — host names are
 * never checked. Build them per connection so a rotated SVID or bundle is picked up; use
 * spiffeTlsConnect or spiffeHttpsAgent to also learn the server's SPIFFE ID.
 */
export function tlsClientOptions(
  config: SpiffeTlsConfig,
): tls.ConnectionOptions & { onVerified?: (id: SpiffeId) => void } {
  const logger = config.logger ?? silentLogger;
  const options: tls.ConnectionOptions & { onVerified?: (id: SpiffeId) => void } = {
    ...secureContextOptions(config),
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      try {
        const { id } = verifyPeer(
          peerChain(cert),
          config.bundles,
          config.authorizer,
          config.now?.(),
          config.revocation,
        );
        options.onVerified?.(id);
        return undefined;
      } catch (err) {
        logger.warn?.((err as Error).message, { side: 'client', code: (err as SpiffeError).code });
        return err as Error;
      }
    },
  };
  return options;
}

/** tls.connect with tlsClientOptions; the server's SPIFFE ID is then available from peerSpiffeId(socket). */
export function spiffeTlsConnect(config: SpiffeTlsConfig, options: tls.ConnectionOptions): tls.TLSSocket {
  const spiffe = tlsClientOptions(config);
  let id: SpiffeId | undefined;
  spiffe.onVerified = (verified) => {
    id = verified;
  };
  const { onVerified: _, ...connect } = spiffe;
  const socket = tls.connect({ ...options, ...connect });
  socket.once('secureConnect', () => {
    if (id !== undefined) rememberPeer(socket, id);
  });
  return socket;
}

/**
 * An https.Agent for SPIFFE mTLS: every connection is built from the current SVID and bundles and
 * verified as tlsClientOptions says; TLS sessions are not cached, so authorization runs on every
 * connection.
 */
export function spiffeHttpsAgent(config: SpiffeTlsConfig, agentOptions: AgentOptions = {}): Agent {
  const agent = new Agent({ ...agentOptions, maxCachedSessions: 0 });
  (agent as unknown as { createConnection: (o: tls.ConnectionOptions) => Duplex }).createConnection = (o) =>
    spiffeTlsConnect(config, o);
  return agent;
}

/**
 * @internal Server options: present the current SVID and require a client certificate. The chain is
 * verified in attachSpiffeTls (node's own check would drop the connection without saying why), so
 * these options are only ever used together with it, inside the create* functions below.
 */
function tlsServerOptions(config: SpiffeTlsConfig): tls.TlsOptions {
  if (config.svid === undefined)
    throw new TypeError('tlsconfig: a server needs an SVID source (config.svid)');
  return { ...secureContextOptions(config), requestCert: true, rejectUnauthorized: false };
}

interface SpiffeTlsAttachment {
  /** Rebuilds the secure context now (e.g. after a bundle change the source does not announce). */
  refresh(): void;
  /** Stops following rotation and verifying new connections. */
  detach(): void;
}

/**
 * Makes a server enforce the SPIFFE rules: each new
 * connection's client chain is verified as an X509-SVID of its own trust domain and authorized,
 * before any request is read; a refused client is disconnected and the log line says who and why.
 * When the SVID source emits 'update' (X509Source does), the server switches to the new SVID and
 * bundles without a restart.
 */
function attachSpiffeTls(server: tls.Server, config: SpiffeTlsConfig): SpiffeTlsAttachment {
  const logger = config.logger ?? silentLogger;
  // The listeners already registered (the connection handler of http/https/http2 servers, or the one
  // given to tls.createServer) run only for a verified peer: emit() would call them even after we
  // destroyed the socket, so they are moved behind the check.
  const guarded = server.listeners('secureConnection') as ((socket: tls.TLSSocket) => void)[];
  server.removeAllListeners('secureConnection');
  const onConnection = (socket: tls.TLSSocket) => {
    try {
      const { id } = verifyPeer(
        peerChain(socket.getPeerCertificate(true)),
        config.bundles,
        config.authorizer,
        config.now?.(),
        config.revocation,
      );
      if (!socket.authorized) {
        // Belt and braces: OpenSSL's own check against the trusted roots must agree.
        throw new SpiffeError(
          ErrorCode.TLS_PEER_REFUSED,
          `tlsconfig: peer "${id}" refused: OpenSSL chain check failed: ${String(socket.authorizationError)}`,
        );
      }
      rememberPeer(socket, id);
    } catch (err) {
      logger.warn?.((err as Error).message, {
        side: 'server',
        remoteAddress: socket.remoteAddress,
        code: (err as SpiffeError).code,
      });
      // end() sends a TLS close_notify alert before closing; the peer never gets application data.
      socket.once('finish', () => socket.destroy());
      socket.on('error', () => {});
      socket.end();
      return;
    }
    for (const l of guarded) l.call(server, socket);
  };
  const onClientError = (err: Error, socket: tls.TLSSocket) => {
    logger.warn?.(`tlsconfig: TLS handshake with a client failed: ${err.message}`, {
      side: 'server',
      remoteAddress: socket.remoteAddress,
    });
  };
  const refresh = () => {
    try {
      server.setSecureContext({ ...tlsServerOptions(config) } as tls.SecureContextOptions);
    } catch (err) {
      logger.error?.(`tlsconfig: cannot switch to the rotated SVID or bundles: ${(err as Error).message}`);
    }
  };
  server.on('secureConnection', onConnection);
  server.on('tlsClientError', onClientError);
  const sources = new Set(([config.svid, config.bundles] as unknown[]).filter(isUpdatable));
  for (const s of sources) s.on('update', refresh);
  return {
    refresh,
    detach: () => {
      server.off('secureConnection', onConnection);
      server.off('tlsClientError', onClientError);
      for (const l of guarded) server.on('secureConnection', l);
      for (const s of sources) s.off('update', refresh);
    },
  };
}

/** A server with its SPIFFE TLS wiring; `refreshTls()` re-reads the SVID and bundles now. */
export type SpiffeServer<S> = S & { refreshTls(): void };

function finish<S extends tls.Server>(server: S, config: SpiffeTlsConfig): SpiffeServer<S> {
  const attachment = attachSpiffeTls(server, config);
  server.once('close', () => attachment.detach());
  return Object.assign(server, { refreshTls: attachment.refresh });
}

/**
 * A node:tls server for SPIFFE mTLS. It presents the current SVID and follows rotation (the
 * source's 'update' event) without a restart. Each client must present an X509-SVID that verifies
 * against the bundle of its own trust domain and that the authorizer accepts; anyone else is
 * disconnected with a TLS close_notify before `listener` sees the socket, and the log line says who
 * and why. `peerSpiffeId(socket)` gives the client's ID.
 */
export function createSpiffeTlsServer(
  config: SpiffeTlsConfig,
  listener?: (socket: tls.TLSSocket) => void,
  options: Pick<tls.TlsOptions, 'handshakeTimeout'> = {},
): SpiffeServer<tls.Server> {
  return finish(tls.createServer({ ...options, ...tlsServerOptions(config) }, listener), config);
}

/** As createSpiffeTlsServer, for HTTPS; `peerSpiffeId(req.socket)` in the handler. */
export function createSpiffeHttpsServer(
  config: SpiffeTlsConfig,
  handler?: RequestListener,
): SpiffeServer<HttpsServer> {
  return finish(createHttpsServer(tlsServerOptions(config), handler), config);
}

/** As createSpiffeTlsServer, for HTTP/2; `peerSpiffeId(stream.session.socket)` in the handler. */
export function createSpiffeHttp2Server(
  config: SpiffeTlsConfig,
  options: http2.SecureServerOptions = {},
): SpiffeServer<http2.Http2SecureServer> {
  return finish(http2.createSecureServer({ ...options, ...tlsServerOptions(config) }), config);
}
