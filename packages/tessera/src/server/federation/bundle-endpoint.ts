// This server's bundle endpoint (SPIFFE Federation §7.2, SPIRE's federation.bundle_endpoint):
// HTTPS, GET answers the trust domain's current bundle with the configured refresh hint, no client
// authentication. Profiles:
//   https_spiffe  the server presents its own X509-SVID (spiffe://<td>/tessera/server), renewed
//                 with it; peers configure that ID as endpoint_spiffe_id.
//   https_web     the server presents a certificate from files (a public or a private CA), re-read
//                 every file_sync_interval so a renewed certificate is picked up without a restart.
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { createBundleEndpointHandler, type SpiffeBundle } from '@tessera/spiffe';
import type { DaemonLogger } from '../../common/log.js';
import type { ServerIdentity } from '../api/server-identity.js';
import { createHttpsServer, createServingCertFileServer, listenOrFail } from '../serving-cert-file.js';

const SECTION = 'federation.bundle_endpoint';

export type BundleEndpointProfileConfig =
  | { readonly kind: 'https_spiffe'; readonly identity: ServerIdentity }
  | {
      readonly kind: 'https_web';
      readonly certFile: string;
      readonly keyFile: string;
      /** Milliseconds between re-reads of the files. */
      readonly fileSyncIntervalMs: number;
    };

export interface BundleEndpointOptions {
  address: string;
  port: number;
  /** Seconds, served as spiffe_refresh_hint. */
  refreshHintS: number;
  profile: BundleEndpointProfileConfig;
  /** The trust domain's current bundle. */
  bundle: () => SpiffeBundle;
  logger: DaemonLogger;
}

export interface BundleEndpoint {
  readonly port: number;
  close(): Promise<void>;
}

function svidContext(identity: ServerIdentity): SecureContextOptions {
  const svid = identity.getX509Svid();
  return {
    cert: svid.certificates.map((c) => c.toString()).join(''),
    key: svid.privateKey.export({ type: 'pkcs8', format: 'pem' }),
  };
}

export async function startBundleEndpoint(o: BundleEndpointOptions): Promise<BundleEndpoint> {
  const handler = createBundleEndpointHandler(() => o.bundle().with({ refreshHint: o.refreshHintS }), {
    logger: o.logger,
  });
  const profile = o.profile;
  let server: Server;
  const cleanups: (() => void)[] = [];
  if (profile.kind === 'https_spiffe') {
    server = createHttpsServer(SECTION, svidContext(profile.identity), handler);
    const onUpdate = () => server.setSecureContext(svidContext(profile.identity));
    profile.identity.on('update', onUpdate);
    cleanups.push(() => profile.identity.off('update', onUpdate));
  } else {
    const web = createServingCertFileServer(SECTION, profile, handler, o.logger);
    server = web.server;
    cleanups.push(web.stop);
  }
  server.on('tlsClientError', (err) =>
    o.logger.debug('federation: a bundle endpoint client failed the TLS handshake', { error: err.message }),
  );
  try {
    await listenOrFail(server, SECTION, { address: o.address, port: o.port });
  } catch (err) {
    for (const c of cleanups) c();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of cleanups) c();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
