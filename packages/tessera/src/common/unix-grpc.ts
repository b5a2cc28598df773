// gRPC on a Unix socket, with the kernel's word on who is calling. grpc-js does not hand the
// accepted socket to handlers or interceptors; what it does hand them is the peer string
// (`call.getPeer()`), read from the connection's `remoteAddress`. So the server owns the listener:
// a net.Server accepts each connection, reads its peer credentials (SO_PEERCRED), gives it a
// unique, unforgeable peer tag (a Unix socket has no remote address of its own; a TCP peer's address
// is an IP and can never look like a tag), and injects it into grpc-js
// (Server.createConnectionInjector). unixPeerOf(call) maps the tag back to the credentials.
// Used by the server's admin socket (0700) and the agent's Workload API socket (0777).
import { randomUUID } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { TesseraError, TesseraErrorCode } from './errors.js';
import { MAX_MESSAGE_BYTES } from './grpc.js';
import type { DaemonLogger } from './log.js';
import { type PeerCredentials, peerCredentials } from './peercred.js';

/** What the socket learnt about a connection when it was accepted. */
export type UnixPeer =
  | {
      readonly ok: true;
      readonly credentials: PeerCredentials;
      /** The peer process's start time (/proc/<pid>/stat field 22) when it connected; guards pid reuse. */
      readonly startTime?: string;
    }
  | { readonly ok: false; readonly reason: string };

const TAG_PREFIX = 'tessera-unix#';
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

/** What the socket recorded for the connection a call came on; undefined for other transports. */
export function unixPeerOf(call: { getPeer(): string }): UnixPeer | undefined {
  return peers.get(call.getPeer());
}

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), if readable. */
function startTimeOf(pid: number): string | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** How long close() lets calls in flight finish before ending their connections. */
const DRAIN_MS = 2000;
/** Mode of a directory created above a socket's own: everyone may pass through, no one else may write. */
const PASSAGE_DIR_MODE = 0o755;
/** sizeof(sockaddr_un.sun_path) on Linux, less the terminating NUL. */
const MAX_SOCKET_PATH = 107;

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

export interface UnixGrpcOptions {
  path: string;
  /** Mode of the socket file (admin 0o700, agent 0o777). */
  mode: number;
  /**
   * Mode of the socket's directory when it creates it (admin 0o700, agent 0o755), whatever the
   * umask. A missing directory above that one is created 0o755: it is only passed through, and a
   * private socket's parents must not lock other users out of the directories next to its own.
   */
  dirMode: number;
  /** For messages: 'admin socket', 'agent socket'. */
  what: string;
  /** The configuration key to suggest: 'admin_socket', 'socket_path'. */
  configKey: string;
  services: readonly {
    definition: grpc.ServiceDefinition;
    implementation: grpc.UntypedServiceImplementation;
  }[];
  interceptors?: grpc.ServerInterceptor[];
  logger: DaemonLogger;
}

export interface UnixGrpcServer {
  readonly path: string;
  /** Stops accepting, lets calls in flight finish (briefly), removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/**
 * Makes `path` ready for a listener: its directory created (given `dirMode` if new; new ones above
 * it 0755), a stale socket file removed. A live server on the path, a non-socket file there, or a
 * path longer than the kernel allows is one ERR_STARTUP naming the path (and `configKey` to change it).
 */
export async function prepareUnixSocketPath(o: {
  path: string;
  dirMode: number;
  what: string;
  configKey: string;
}): Promise<void> {
  const { path } = o;
  const startupError = (message: string, cause?: unknown) =>
    new TesseraError(
      TesseraErrorCode.STARTUP,
      `${o.what} ${path}: ${message}`,
      cause === undefined ? undefined : { cause },
    );
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH)
    throw startupError(
      `the path is ${Buffer.byteLength(path)} bytes long; Unix socket paths are limited to ${MAX_SOCKET_PATH} bytes`,
    );
  const dir = dirname(path);
  try {
    // mkdir's mode is masked by the umask (a service run with UMask=0077 would get a 0700 agent
    // directory nobody else can enter), so each directory created here is given its mode outright:
    // dirMode for the socket's own, 0755 for those above it (the server's 0700 admin directory
    // /run/tessera/server must not make /run/tessera, where the agent's socket is, 0700 too).
    const first = mkdirSync(dir, { recursive: true, mode: PASSAGE_DIR_MODE });
    if (first !== undefined)
      for (let d = dir; ; d = dirname(d)) {
        chmodSync(d, d === dir ? o.dirMode : PASSAGE_DIR_MODE);
        if (d === first || d === dirname(d)) break;
      }
  } catch (err) {
    throw startupError(`cannot create the directory ${dir}: ${errnoText(err)}`, err);
  }
  let isSocket = false;
  let exists = true;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw startupError(`cannot inspect the path: ${errnoText(err)}`, err);
    exists = false;
  }
  if (exists) {
    if (!isSocket)
      throw startupError(`the path exists and is not a socket; remove it or set ${o.configKey} elsewhere`);
    if (await inUse(path))
      throw startupError(
        `another process is serving on this socket; stop it or set ${o.configKey} elsewhere`,
      );
    try {
      rmSync(path);
    } catch (err) {
      throw startupError(`cannot remove the stale socket file: ${errnoText(err)}`, err);
    }
  }
}

/**
 * Serves `services` on the Unix socket `path`. Startup problems (directory, a live server on the
 * path, a non-socket file, bind, mode) are one ERR_STARTUP naming the path.
 */
export async function serveOnUnixSocket(o: UnixGrpcOptions): Promise<UnixGrpcServer> {
  const { path, logger } = o;
  const startupError = (message: string, cause?: unknown) =>
    new TesseraError(
      TesseraErrorCode.STARTUP,
      `${o.what} ${path}: ${message}`,
      cause === undefined ? undefined : { cause },
    );
  await prepareUnixSocketPath(o);

  const server = new grpc.Server({
    ...(o.interceptors === undefined ? {} : { interceptors: o.interceptors }),
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  for (const s of o.services) server.addService(s.definition, s.implementation);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const listener = net.createServer((socket) => {
    let peer: UnixPeer;
    try {
      const credentials = peerCredentials(socket);
      const startTime = startTimeOf(credentials.pid);
      peer = startTime === undefined ? { ok: true, credentials } : { ok: true, credentials, startTime };
    } catch (err) {
      peer = { ok: false, reason: `its peer credentials cannot be read: ${(err as Error).message}` };
      logger.warn(`${o.what}: cannot read the peer credentials of a connection`, {
        error: (err as Error).message,
      });
    }
    socket.on('error', () => undefined); // a client going away mid-call is not the server's problem
    tagUnixConnection(socket, peer);
    injector.injectConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', (err) => reject(startupError(`cannot listen: ${errnoText(err)}`, err)));
    listener.listen(path, () => resolve());
  });
  try {
    chmodSync(path, o.mode);
  } catch (err) {
    listener.close();
    throw startupError(`cannot set the socket mode to ${o.mode.toString(8)}: ${errnoText(err)}`, err);
  }
  listener.on('error', (err) => logger.error(`${o.what}: socket error`, { error: err.message }));

  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
        injector.drain(DRAIN_MS);
        // Bounded: a session grpc-js never sees close (seen under load in CI) must not hold a
        // daemon's shutdown, and everything stopped after it, forever.
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, DRAIN_MS + 1000);
          server.tryShutdown(() => {
            clearTimeout(t);
            resolve();
          });
        });
        injector.destroy();
        server.forceShutdown();
        await closed;
        rmSync(path, { force: true });
      })();
      return closing;
    },
  };
}
