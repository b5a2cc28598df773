// The admin API on a Unix socket. The socket file is 0700 in a directory created 0700, so only the
// server's own uid (and root) can normally connect; and whatever the file modes, every call is
// checked against the caller's kernel credentials (SO_PEERCRED): a peer that is neither root nor
// the server's uid gets PERMISSION_DENIED (with the tessera-error-code trailer) and an audit event.
//
// grpc-js does not show handlers the accepted socket, so the server owns the listener: a net.Server
// accepts each connection, reads its credentials, tags it (admin-caller.ts), and injects it into
// grpc-js (Server.createConnectionInjector). Refusing in a server interceptor, rather than
// destroying the connection, gives the client a clear status instead of a reset.
import { chmodSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { AuditLog } from '../../common/audit.js';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { ERROR_CODE_METADATA, MAX_MESSAGE_BYTES } from '../../common/grpc.js';
import type { DaemonLogger } from '../../common/log.js';
import { isAdminPeer, peerCredentials } from '../../common/peercred.js';
import { tagUnixConnection, type UnixPeer, unixPeerOf } from './admin-caller.js';

/** How long close() lets calls in flight finish before ending their connections. */
const DRAIN_MS = 2000;
/** sizeof(sockaddr_un.sun_path) on Linux, less the terminating NUL. */
const MAX_SOCKET_PATH = 107;

function startupError(path: string, message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.STARTUP,
    `admin socket ${path}: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

const errnoText = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/** Whether something accepts connections on `path` (a live server, as opposed to a stale file). */
function inUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Makes the path usable: the parent directory (created 0700), and no stale socket file. */
async function preparePath(path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH)
    throw startupError(
      path,
      `the path is ${Buffer.byteLength(path)} bytes long; Unix socket paths are limited to ${MAX_SOCKET_PATH} bytes`,
    );
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw startupError(path, `cannot create the directory ${dirname(path)}: ${errnoText(err)}`, err);
  }
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw startupError(path, `cannot inspect the path: ${errnoText(err)}`, err);
  }
  if (!isSocket)
    throw startupError(path, 'the path exists and is not a socket; remove it or set admin_socket elsewhere');
  if (await inUse(path))
    throw startupError(
      path,
      'another process is serving on this socket; stop it or set admin_socket elsewhere',
    );
  try {
    rmSync(path);
  } catch (err) {
    throw startupError(path, `cannot remove the stale socket file: ${errnoText(err)}`, err);
  }
}

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
  await preparePath(path);

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

  const server = new grpc.Server({
    interceptors: [refuse],
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  server.addService(service.definition, service.implementation);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const listener = net.createServer((socket) => {
    let peer: UnixPeer;
    try {
      peer = { ok: true, credentials: peerCredentials(socket) };
    } catch (err) {
      peer = { ok: false, reason: `its peer credentials cannot be read: ${(err as Error).message}` };
      logger.warn('admin: cannot read the peer credentials of a connection', {
        error: (err as Error).message,
      });
    }
    socket.on('error', () => undefined); // a client going away mid-call is not the server's problem
    tagUnixConnection(socket, peer);
    injector.injectConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', (err) => reject(startupError(path, `cannot listen: ${errnoText(err)}`, err)));
    listener.listen(path, () => resolve());
  });
  try {
    chmodSync(path, 0o700);
  } catch (err) {
    listener.close();
    throw startupError(path, `cannot set the socket mode to 0700: ${errnoText(err)}`, err);
  }
  listener.on('error', (err) => logger.error('admin: socket error', { error: err.message }));
  logger.info('admin API listening', { socket: path });

  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
        injector.drain(DRAIN_MS);
        await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
        injector.destroy();
        server.forceShutdown();
        await closed;
        rmSync(path, { force: true });
      })();
      return closing;
    },
  };
}
