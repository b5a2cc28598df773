// Who is calling the admin API: on the admin socket, the kernel's credentials of the connection
// (common/unix-grpc.ts); over mTLS, the SPIFFE ID of the verified client certificate.
import { X509Certificate } from 'node:crypto';
import { idFromCertificate } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { unixPeerOf } from '../../common/unix-grpc.js';

/** The caller of an admin RPC: a local process on the Unix socket, or an admin SVID over mTLS. */
export type AdminCaller =
  | { readonly kind: 'unix'; readonly uid: number; readonly pid: number }
  | { readonly kind: 'spiffe'; readonly id: string };

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
