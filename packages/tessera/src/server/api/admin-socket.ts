import * as grpc from '@grpc/grpc-js';
import type { AuditLog } from '../../common/audit.js';
import { TesseraErrorCode } from '../../common/errors.js';
import { ERROR_CODE_METADATA } from '../../common/grpc.js';
import type { DaemonLogger } from '../../common/log.js';
import { isAdminPeer } from '../../common/peercred.js';
import { serveOnUnixSocket, unixPeerOf } from '../../common/unix-grpc.js';

export interface AdminSocket {
  /** Stops accepting, lets calls in flight finish (briefly), removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves `service` (createAdminService) on the Unix socket `path`. Startup problems (directory,
 * a live server on the path, a non-socket file, bind) are one ERR_STARTUP naming the path.
 */
export async function startAdminSocket(
  path: string,
  service: { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation },
  logger: DaemonLogger,
  audit: AuditLog,
  opts: { ownUid?: number } = {},
): Promise<AdminSocket> {
  const ownUid = opts.ownUid ?? process.getuid?.();
  const refuse: grpc.ServerInterceptor = (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, mdNext) => {
            const peer = unixPeerOf(call);
            const denied =
              peer === undefined
                ? 'the connection was not accepted by the admin socket'
                : !peer.ok
                  ? peer.reason
                  : isAdminPeer(peer.credentials, ownUid)
                    ? undefined
                    : `uid ${peer.credentials.uid} is neither root nor the server's uid ${ownUid ?? '(none)'}`;
            if (denied === undefined) {
              mdNext(metadata);
              return;
            }
            const who = peer?.ok === true ? { uid: peer.credentials.uid, pid: peer.credentials.pid } : {};
            const rpc = method.path.slice(method.path.lastIndexOf('/') + 1);
            logger.warn('admin: refused a call', { ...who, method: rpc, reason: denied });
            audit.record('admin.denied', {
              ...(peer?.ok === true
                ? { caller_uid: peer.credentials.uid, caller_pid: peer.credentials.pid }
                : {}),
              method: rpc,
              reason: denied,
            });
            const trailer = new grpc.Metadata();
            trailer.set(ERROR_CODE_METADATA, TesseraErrorCode.PERMISSION_DENIED);
            call.sendStatus({
              code: grpc.status.PERMISSION_DENIED,
              details: `admin: permission denied: ${denied}; call as root or as the server's user`,
              metadata: trailer,
            });
          },
        });
      },
    });

  const socket = await serveOnUnixSocket({
    path,
    mode: 0o700,
    dirMode: 0o700,
    what: 'admin socket',
    configKey: 'admin_socket',
    services: [service],
    interceptors: [refuse],
    logger,
  });
  logger.info('admin API listening', { socket: path });
  return { close: () => socket.close() };
}
