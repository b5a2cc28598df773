import { createRequire } from 'node:module';
import net from 'node:net';
import { constants } from 'node:os';

/**
 * Who is on the other end of a connected Unix-domain socket, as the kernel recorded it when the
 * client called connect(2) (Linux SO_PEERCRED). The client cannot forge these: they are the
 * credentials of the process that connected, not anything it sent.
 */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

// <sys/socket.h> on Linux (the same on every architecture Node ships for).
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SO_DOMAIN = 39;
const AF_UNIX = 1;
/** sizeof(struct ucred): pid_t pid; uid_t uid; gid_t gid; */
const UCRED_SIZE = 12;

type GetSockOpt = (fd: number, level: number, name: number, value: Int32Array, length: number[]) => number;

interface Libc {
  getsockopt: GetSockOpt;
  errno: () => number;
}

let libc: Libc | undefined;

/** koffi is loaded and libc bound on the first call, so importing this module costs nothing. */
function bindLibc(): Libc {
  if (libc !== undefined) return libc;
  let koffi: typeof import('koffi');
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  } catch (err) {
    throw new Error('peercred: cannot load the koffi FFI module; reinstall the tessera package', {
      cause: err,
    });
  }
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load('libc.so.6');
  } catch (err) {
    throw new Error('peercred: cannot load libc.so.6; peer credentials need Linux with glibc', {
      cause: err,
    });
  }
  libc = {
    getsockopt: lib.func(
      'int getsockopt(int sockfd, int level, int optname, void *optval, _Inout_ uint32_t *optlen)',
    ) as GetSockOpt,
    errno: () => koffi.errno(),
  };
  return libc;
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) {
    if (value === errno) return `${name} (errno ${errno})`;
  }
  return `errno ${errno}`;
}

/** getsockopt(2) into `value`; returns the length the kernel wrote, or throws naming the option. */
function getSockOpt(lib: Libc, fd: number, name: number, optName: string, value: Int32Array): number {
  const length = [value.byteLength];
  if (lib.getsockopt(fd, SOL_SOCKET, name, value, length) !== 0) {
    throw new Error(
      `peercred: getsockopt(fd ${fd}, SOL_SOCKET, ${optName}) failed: ${errnoName(lib.errno())}`,
    );
  }
  return length[0]!;
}

/** The file descriptor libuv holds for a connected socket; `_handle` is Node's internal wrap. */
function socketFd(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  if (handle === undefined || handle === null) {
    throw new Error(
      'peercred: the socket has no handle (destroyed, closed, or not yet connected); ' +
        'read peer credentials in the server "connection" handler, before the socket is closed',
    );
  }
  const fd = handle.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new Error(
      `peercred: the socket handle has no file descriptor (fd ${String(fd)}); ` +
        'peer credentials need a connected socket on Linux',
    );
  }
  return fd;
}

/**
 * The pid, uid and gid of the process that connected to `socket`, an accepted (or connected)
 * Unix-domain socket. Linux only. Throws, naming what failed, if the socket is not a connected
 * Unix-domain socket (TCP, destroyed, no fd) or getsockopt fails; never returns made-up values.
 */
export function peerCredentials(socket: net.Socket): PeerCredentials {
  if (!(socket instanceof net.Socket)) {
    throw new TypeError('peercred: peerCredentials expects a net.Socket');
  }
  if (process.platform !== 'linux') {
    throw new Error(`peercred: peer credentials (SO_PEERCRED) are Linux-only; this is ${process.platform}`);
  }
  const fd = socketFd(socket);
  const lib = bindLibc();

  // Check the address family first: on a TCP socket Linux answers SO_PEERCRED with success and
  // pid 0, uid and gid 4294967295 (-1) rather than an error.
  const domain = new Int32Array(1);
  getSockOpt(lib, fd, SO_DOMAIN, 'SO_DOMAIN', domain);
  if (domain[0] !== AF_UNIX) {
    throw new Error(
      `peercred: fd ${fd} is not a Unix-domain socket (address family ${domain[0]}, AF_UNIX is ${AF_UNIX}); ` +
        'peer credentials exist only for Unix-domain sockets, not TCP',
    );
  }

  // struct ucred in native byte order: a typed array reads it the same way.
  const ucred = new Int32Array(UCRED_SIZE / 4);
  const length = getSockOpt(lib, fd, SO_PEERCRED, 'SO_PEERCRED', ucred);
  if (length !== UCRED_SIZE) {
    throw new Error(
      `peercred: getsockopt(SO_PEERCRED) on fd ${fd} returned ${length} bytes, expected ${UCRED_SIZE}`,
    );
  }
  const [pid] = ucred;
  const [, uid, gid] = new Uint32Array(ucred.buffer);
  if (pid === undefined || uid === undefined || gid === undefined || pid <= 0) {
    throw new Error(
      `peercred: fd ${fd} has no peer credentials (pid ${pid}); the Unix-domain socket is not connected`,
    );
  }
  return { pid, uid, gid };
}

/**
 * Whether a peer may use the admin API: root, or the uid this server runs as. `ownUid` defaults
 * to `process.getuid()`; where there is none (not POSIX) only root is admitted.
 */
export function isAdminPeer(
  creds: PeerCredentials,
  ownUid: number | undefined = process.getuid?.(),
): boolean {
  return creds.uid === 0 || (ownUid !== undefined && creds.uid === ownUid);
}
