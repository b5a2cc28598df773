// The listener of OIDC discovery (server.yaml oidc_discovery): HTTPS on address:port with a
// certificate from files (serving_cert_file, re-read every file_sync_interval: the bundle
// endpoint's https_web code), or plain HTTP on a Unix socket (listen_socket_path, as SPIRE's
// provider) for a TLS-terminating proxy on the same host, which relying parties reach over HTTPS.
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SpiffeBundle } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { DaemonLogger } from '../../common/log.js';
import { prepareUnixSocketPath } from '../../common/unix-grpc.js';
import { createServingCertFileServer, listenOrFail, type ServingCertFile } from '../serving-cert-file.js';
import { createOidcDiscoveryHandler, oidcPaths } from './discovery.js';

const SECTION = 'oidc_discovery';

export interface OidcEndpointOptions {
  issuer: string;
  jwksUri: string;
  signingAlgorithm: string;
  bundle: () => SpiffeBundle;
  listen:
    | { kind: 'https'; address: string; port: number; servingCertFile: ServingCertFile }
    | { kind: 'unix'; path: string };
  logger: DaemonLogger;
}

export interface OidcEndpoint {
  /** The TCP port (HTTPS), or undefined on a Unix socket. */
  readonly port: number | undefined;
  /** Where the documents are served: `https://address:port` or the socket path. */
  readonly listening: string;
  close(): Promise<void>;
}

export async function startOidcEndpoint(o: OidcEndpointOptions): Promise<OidcEndpoint> {
  const handler = createOidcDiscoveryHandler(
    { issuer: o.issuer, jwksUri: o.jwksUri, signingAlgorithm: o.signingAlgorithm, bundle: o.bundle },
    o.logger,
  );
  const cleanups: (() => void)[] = [];
  let server: Server;
  const l = o.listen;
  if (l.kind === 'https') {
    const https = createServingCertFileServer(SECTION, l.servingCertFile, handler, o.logger);
    server = https.server;
    cleanups.push(https.stop);
    server.on('tlsClientError', (err) =>
      o.logger.debug('oidc: a client failed the TLS handshake', { error: err.message }),
    );
    try {
      await listenOrFail(server, SECTION, { address: l.address, port: l.port });
    } catch (err) {
      for (const c of cleanups) c();
      throw err;
    }
  } else {
    await prepareUnixSocketPath({
      path: l.path,
      dirMode: 0o755,
      what: 'oidc_discovery socket',
      configKey: 'oidc_discovery.listen_socket_path',
    });
    server = createServer(handler);
    await listenOrFail(server, SECTION, { path: l.path });
    try {
      // The proxy in front runs as its own user; the documents are public.
      chmodSync(l.path, 0o666);
    } catch (err) {
      server.close();
      throw new TesseraError(
        TesseraErrorCode.STARTUP,
        `oidc_discovery socket ${l.path}: cannot set the socket mode to 666: ${(err as Error).message}`,
        { cause: err },
      );
    }
    cleanups.push(() => rmSync(l.path, { force: true }));
  }
  const port = l.kind === 'https' ? (server.address() as AddressInfo).port : undefined;
  const paths = oidcPaths(o.issuer, o.jwksUri);
  const listening = l.kind === 'https' ? `https://${l.address}:${port}` : `unix:${l.path}`;
  o.logger.info('oidc: serving discovery', {
    issuer: o.issuer,
    jwks_uri: o.jwksUri,
    listening,
    discovery_path: paths.discovery,
    jwks_path: paths.jwks,
  });
  let closing: Promise<void> | undefined;
  return {
    port,
    listening,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => {
          for (const c of cleanups) c();
          resolve();
        });
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
