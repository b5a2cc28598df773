import { X509Certificate } from 'node:crypto';
import { type PeerCertificate, TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type {
  CaCertificateUpdateListener,
  CertificateProvider,
  IdentityCertificateUpdateListener,
} from '@grpc/grpc-js/build/src/certificate-provider.js';
import type { SpiffeError } from '../errors.js';
import { silentLogger } from '../logger.js';
import type { SpiffeId } from '../spiffeid/spiffe-id.js';
import { idFromCertificate } from '../svid/x509-svid.js';
import type { Authorizer } from './authorizer.js';
import { type SpiffeTlsConfig, secureContextOptions } from './node-tls.js';
import { peerChain, verifyPeer } from './peer.js';

/**
 * A grpc-js CertificateProvider fed by our sources: it hands out the current SVID and trust roots
 * and pushes new ones when the source emits 'update', so channels and servers rotate without restart.
 */
class SourceCertificateProvider implements CertificateProvider {
  readonly #config: SpiffeTlsConfig;
  readonly #ca = new Set<CaCertificateUpdateListener>();
  readonly #id = new Set<IdentityCertificateUpdateListener>();

  constructor(config: SpiffeTlsConfig) {
    this.#config = config;
    const src = config.svid as unknown as { on?: (e: string, f: () => void) => unknown } | undefined;
    src?.on?.('update', () => this.#publish());
    const b = config.bundles as unknown as { on?: (e: string, f: () => void) => unknown };
    if (b !== (src as unknown)) b.on?.('update', () => this.#publish());
  }

  #material(): { ca: Buffer; cert?: Buffer; key?: Buffer } {
    const o = secureContextOptions(this.#config);
    return {
      ca: Buffer.from((o.ca as string[]).join('')),
      ...(o.cert === undefined
        ? {}
        : { cert: Buffer.from(o.cert as string), key: Buffer.from(o.key as string) }),
    };
  }

  #publish(): void {
    let m: { ca: Buffer; cert?: Buffer; key?: Buffer };
    try {
      m = this.#material();
    } catch (err) {
      (this.#config.logger ?? silentLogger).error?.(
        `tlsconfig: cannot rotate gRPC credentials: ${(err as Error).message}`,
      );
      return;
    }
    for (const l of this.#ca) l({ caCertificate: m.ca });
    if (m.cert !== undefined && m.key !== undefined)
      for (const l of this.#id) l({ certificate: m.cert, privateKey: m.key });
  }

  addCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.#ca.add(listener);
    // Asynchronously: grpc-js registers its watcher only after adding the listener, and would
    // miss a synchronous first update.
    const { ca } = this.#material();
    queueMicrotask(() => {
      if (this.#ca.has(listener)) listener({ caCertificate: ca });
    });
  }
  removeCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.#ca.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.#id.add(listener);
    const { cert, key } = this.#material();
    queueMicrotask(() => {
      if (cert !== undefined && key !== undefined && this.#id.has(listener))
        listener({ certificate: cert, privateKey: key });
    });
  }
  removeIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.#id.delete(listener);
  }
}

/**
 * grpc-js channel credentials for a SPIFFE server: present the current SVID (when config.svid is
 * set), verify the server as an X509-SVID of its own trust domain and run the authorizer instead of
 * a host-name check; rotation is followed.
 */
export function grpcChannelCredentials(config: SpiffeTlsConfig): grpc.ChannelCredentials {
  const provider = new SourceCertificateProvider(config);
  const logger = config.logger ?? silentLogger;
  return grpc.experimental.createCertificateProviderChannelCredentials(
    provider,
    config.svid === undefined ? null : provider,
    {
      checkServerIdentity: (_host, cert) => {
        try {
          verifyPeer(peerChain(cert), config.bundles, config.authorizer, config.now?.(), config.revocation);
          return undefined;
        } catch (err) {
          logger.warn?.((err as Error).message, { side: 'grpc-client', code: (err as SpiffeError).code });
          return err as Error;
        }
      },
    },
  );
}

/**
 * grpc-js server credentials: present the current SVID, require a client certificate checked by
 * OpenSSL against the trusted roots (a bad chain gets a TLS alert), then verify every call's peer as
 * an X509-SVID and authorize it — a refused call ends with PERMISSION_DENIED before the handler
 * runs, and the log line says who and why. Rotation is followed.
 *
 * `clientCertificate: 'optional'` is for a server some of whose calls come before the client has an
 * SVID (a SPIFFE server's node attestation): a client without a certificate reaches the handlers,
 * which must then decide (peerSpiffeIdOfCall tells them); one that presents a certificate is still
 * verified and authorized on every call.
 */
export function grpcServerCredentials(
  config: SpiffeTlsConfig,
  options: { clientCertificate?: 'require' | 'optional' } = {},
): grpc.ServerCredentials {
  if (config.svid === undefined)
    throw new TypeError('tlsconfig: a gRPC server needs an SVID source (config.svid)');
  const optional = options.clientCertificate === 'optional';
  const provider = new SourceCertificateProvider(config);
  const creds = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, !optional);
  return grpc.experimental.createServerCredentialsWithInterceptors(creds, [
    spiffeServerInterceptor(config, optional),
  ]);
}

/**
 * The SPIFFE ID of a call's peer, verified by grpcServerCredentials' interceptor, with its leaf
 * certificate (DER); undefined when the peer presented no certificate (optional mode).
 */
export function peerSpiffeIdOfCall(call: {
  getAuthContext(): { sslPeerCertificate?: unknown };
}): { id: SpiffeId; leaf: X509Certificate } | undefined {
  const chain = peerChain(call.getAuthContext().sslPeerCertificate as PeerCertificate | undefined);
  if (chain.length === 0) return undefined;
  const leaf = new X509Certificate(chain[0] as Buffer);
  return { id: idFromCertificate(leaf), leaf };
}

/**
 * The chain the client presented, leaf first. grpc-js's auth context carries only the leaf
 * (getPeerCertificate() without details), which is not enough for an SVID signed by an
 * intermediate (a CA under an upstream authority: the bundle holds the root). The TLS socket of the
 * call's HTTP/2 session has the whole chain; it is reached through the call grpc-js hands the
 * interceptor, and the auth context is the fallback.
 */
function presentedChain(call: grpc.ServerInterceptingCallInterface): Buffer[] {
  let c: unknown = call;
  for (let depth = 0; c !== undefined && depth < 8; depth++) {
    const socket = (c as { stream?: { session?: { socket?: unknown } } }).stream?.session?.socket;
    if (socket instanceof TLSSocket) return peerChain(socket.getPeerCertificate(true));
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return peerChain(call.getAuthContext().sslPeerCertificate);
}

function spiffeServerInterceptor(config: SpiffeTlsConfig, optional: boolean): grpc.ServerInterceptor {
  const logger = config.logger ?? silentLogger;
  return (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, mdNext) => {
            const chain = presentedChain(call);
            if (optional && chain.length === 0) {
              mdNext(metadata);
              return;
            }
            try {
              verifyPeer(chain, config.bundles, config.authorizer, config.now?.(), config.revocation);
            } catch (err) {
              logger.warn?.((err as Error).message, {
                side: 'grpc-server',
                peer: call.getPeer(),
                code: (err as SpiffeError).code,
              });
              call.sendStatus({
                code: grpc.status.PERMISSION_DENIED,
                details: (err as Error).message,
                metadata: new grpc.Metadata(),
              });
              return;
            }
            mdNext(metadata);
          },
        });
      },
    });
}

export type { Authorizer };
