// This server's bundle endpoint (SPIFFE Federation §7.2, SPIRE's federation.bundle_endpoint):
// HTTPS, GET answers the trust domain's current bundle with the configured refresh hint, no client
// authentication. Profiles:
//   https_spiffe  the server presents its own X509-SVID (spiffe://<td>/tessera/server), renewed
//                 with it; peers configure that ID as endpoint_spiffe_id.
//   https_web     the server presents a certificate from files (a public or a private CA), re-read
//                 every file_sync_interval so a renewed certificate is picked up without a restart.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { createBundleEndpointHandler, type SpiffeBundle } from 'spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { DaemonLogger } from '../../common/log.js';
import type { ServerIdentity } from '../api/server-identity.js';

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

/** The certificate and key of the https_web profile; each problem names the file. */
function webContext(certFile: string, keyFile: string): SecureContextOptions {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new TesseraError(
        TesseraErrorCode.STARTUP,
        `federation.bundle_endpoint: cannot read the serving ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  };
  return { cert: read(certFile, 'certificate'), key: read(keyFile, 'key') };
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
  const initial =
    profile.kind === 'https_spiffe'
      ? svidContext(profile.identity)
      : webContext(profile.certFile, profile.keyFile);
  let server: Server;
  try {
    // Node's defaults are TLS 1.2+ with forward-secret AEAD suites (Mozilla "intermediate").
    server = createServer({ ...initial, minVersion: 'TLSv1.2' }, handler);
  } catch (err) {
    throw new TesseraError(
      TesseraErrorCode.STARTUP,
      `federation.bundle_endpoint: the serving certificate or key is unusable: ${(err as Error).message}`,
      { cause: err },
    );
  }
  server.on('tlsClientError', (err) =>
    o.logger.debug('federation: a bundle endpoint client failed the TLS handshake', { error: err.message }),
  );
  const cleanups: (() => void)[] = [];
  if (profile.kind === 'https_spiffe') {
    const onUpdate = () => server.setSecureContext(svidContext(profile.identity));
    profile.identity.on('update', onUpdate);
    cleanups.push(() => profile.identity.off('update', onUpdate));
  } else {
    const timer = setInterval(() => {
      try {
        server.setSecureContext(webContext(profile.certFile, profile.keyFile));
      } catch (err) {
        o.logger.error(
          'federation: re-reading the bundle endpoint certificate failed; the previous one stays in use',
          {
            error: (err as Error).message,
          },
        );
      }
    }, profile.fileSyncIntervalMs);
    timer.unref();
    cleanups.push(() => clearInterval(timer));
  }
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.address, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    for (const c of cleanups) c();
    throw new TesseraError(
      TesseraErrorCode.STARTUP,
      `federation.bundle_endpoint: cannot listen on ${o.address}:${o.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err },
    );
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
