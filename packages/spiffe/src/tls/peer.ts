import type { X509Certificate } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { X509BundleSource } from '../bundle/source.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { SpiffeId } from '../spiffeid/spiffe-id.js';
import type { X509CrlSource } from '../svid/x509-crl.js';
import { verifyX509Svid } from '../svid/x509-verify.js';
import type { Authorizer } from './authorizer.js';

// A symbol property, not a WeakMap: http2 hands out a proxy of the socket, which forwards property reads.
const PEER_ID = Symbol('spiffe.peerId');

/** The chain a peer presented (DER, leaf first), from node's detailed peer certificate. */
export function peerChain(cert: PeerCertificate | undefined): Buffer[] {
  const out: Buffer[] = [];
  let c = cert as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined;
  const seen = new Set<string>();
  while (c?.raw !== undefined && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/**
 * Verifies a TLS peer's chain as an X509-SVID of its own trust domain and runs the authorizer.
 * Throws ERR_TLS_PEER_REFUSED whose message says who was refused and why (the cause is the
 * verification or authorization error).
 */
export function verifyPeer(
  chain: readonly (X509Certificate | Uint8Array)[],
  bundles: X509BundleSource,
  authorizer: Authorizer,
  now?: Date,
  revocation?: X509CrlSource,
): { id: SpiffeId; verifiedChain: X509Certificate[] } {
  if (chain.length === 0)
    throw new SpiffeError(ErrorCode.TLS_PEER_REFUSED, 'tlsconfig: peer refused: it presented no certificate');
  let verified: { id: SpiffeId; verifiedChain: X509Certificate[] };
  try {
    verified = verifyX509Svid(chain, bundles, {
      ...(now === undefined ? {} : { now }),
      ...(revocation === undefined ? {} : { revocation }),
    });
  } catch (err) {
    throw new SpiffeError(ErrorCode.TLS_PEER_REFUSED, `tlsconfig: peer refused: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    authorizer(verified.id, verified.verifiedChain);
  } catch (err) {
    throw new SpiffeError(
      ErrorCode.TLS_PEER_REFUSED,
      `tlsconfig: peer "${verified.id}" refused by the authorizer (${authorizer.description}): ${(err as Error).message.replace(/^tlsconfig: /, '')}`,
      { cause: err },
    );
  }
  return verified;
}

/** @internal */
export function rememberPeer(socket: object, id: SpiffeId): void {
  Object.defineProperty(socket, PEER_ID, { value: id, configurable: true });
}

/**
 * The SPIFFE ID of the peer on a socket that our TLS helpers verified (client or server side),
 * e.g. `peerSpiffeId(req.socket)` in an https or http2 handler. Undefined when not verified.
 */
export function peerSpiffeId(socket: TLSSocket | object): SpiffeId | undefined {
  return (socket as { [PEER_ID]?: SpiffeId })[PEER_ID];
}
