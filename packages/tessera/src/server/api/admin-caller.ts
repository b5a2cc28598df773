// Who is calling the admin API. grpc-js does not hand the accepted socket to handlers or
// interceptors; what it does hand them is the peer string (`call.getPeer()`), read from the
// connection's `remoteAddress`. The admin socket (admin-socket.ts) owns its listener, reads the
// kernel's peer credentials on each accepted connection, and gives the connection a unique,
// unforgeable peer tag (a Unix socket has no remote address of its own); this module maps the tag
// back to the credentials. A TCP peer's address is an IP and can never look like a tag.
import { randomUUID, X509Certificate } from 'node:crypto';
import type net from 'node:net';
import { idFromCertificate } from 'spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { PeerCredentials } from '../../common/peercred.js';

/** The caller of an admin RPC: a local process on the Unix socket, or an admin SVID over mTLS. */
export type AdminCaller =
  | { readonly kind: 'unix'; readonly uid: number; readonly pid: number }
  | { readonly kind: 'spiffe'; readonly id: string };

/** What the admin socket learnt about a connection when it was accepted. */
export type UnixPeer =
  | { readonly ok: true; readonly credentials: PeerCredentials }
  | { readonly ok: false; readonly reason: string };

const TAG_PREFIX = 'tessera-admin-unix#';
const peers = new Map<string, UnixPeer>();

/**
 * Tags an accepted Unix-socket connection with `peer` until it closes. Must run before the
 * connection is handed to grpc-js (which reads the address when the HTTP/2 session starts).
 */
export function tagUnixConnection(socket: net.Socket, peer: UnixPeer): string {
  const tag = `${TAG_PREFIX}${randomUUID()}`;
  peers.set(tag, peer);
  // Own properties shadow net.Socket's prototype getters (a Unix socket reports none).
  Object.defineProperty(socket, 'remoteAddress', { value: tag, configurable: true });
  Object.defineProperty(socket, 'remotePort', { value: undefined, configurable: true });
  socket.once('close', () => peers.delete(tag));
  return tag;
}

/** What the admin socket recorded for the connection a call came on; undefined for other transports. */
export function unixPeerOf(call: { getPeer(): string }): UnixPeer | undefined {
  return peers.get(call.getPeer());
}

/** A short form for logs and audit lines: `uid 0 pid 1234`, or the SPIFFE ID. */
export function describeCaller(caller: AdminCaller): string {
  return caller.kind === 'unix' ? `uid ${caller.uid} pid ${caller.pid}` : caller.id;
}

/** Audit fields naming the caller. */
export function callerFields(caller: AdminCaller): Record<string, string | number> {
  return caller.kind === 'unix'
    ? { caller_uid: caller.uid, caller_pid: caller.pid }
    : { caller_id: caller.id };
}

/**
 * The caller of an admin call: the peer credentials of its Unix-socket connection, or the SPIFFE
 * ID of its verified client certificate. Throws ERR_PERMISSION_DENIED when neither is known (a
 * connection the admin socket did not accept, or TLS without a client certificate).
 */
export function adminCallerOf(call: {
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } | undefined };
}): AdminCaller {
  const peer = unixPeerOf(call);
  if (peer !== undefined) {
    if (!peer.ok)
      throw new TesseraError(TesseraErrorCode.PERMISSION_DENIED, `admin: unknown caller: ${peer.reason}`);
    return { kind: 'unix', uid: peer.credentials.uid, pid: peer.credentials.pid };
  }
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  if (raw !== undefined) {
    try {
      return { kind: 'spiffe', id: idFromCertificate(new X509Certificate(raw)).toString() };
    } catch (err) {
      throw new TesseraError(
        TesseraErrorCode.PERMISSION_DENIED,
        `admin: the client certificate is not an X509-SVID: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  throw new TesseraError(
    TesseraErrorCode.PERMISSION_DENIED,
    'admin: cannot identify the caller; call over the admin Unix socket or with an admin X509-SVID',
  );
}
