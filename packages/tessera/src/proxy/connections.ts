// The open sockets of a listener, so that they can all be closed at once: when the workload loses
// its identity, and at shutdown (server.close() alone waits for open keep-alive connections).
import type { Server, Socket } from 'node:net';

export interface ConnectionSet {
  /** Remembers `socket` until it closes. */
  track(socket: Socket): void;
  /** Destroys every open socket. */
  dropAll(): void;
  /** Stops `server` accepting, destroys the open sockets, resolves once it is closed. */
  closeServer(server: Server): Promise<void>;
}

export function createConnectionSet(): ConnectionSet {
  const open = new Set<Socket>();
  const dropAll = () => {
    for (const s of open) s.destroy();
  };
  return {
    track(socket) {
      open.add(socket);
      socket.once('close', () => open.delete(socket));
    },
    dropAll,
    closeServer: (server) =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        dropAll();
      }),
  };
}
