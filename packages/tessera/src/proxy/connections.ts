// The open sockets of a listener, so that they can all be closed at once: when the workload loses
// its identity, and at the end of a shutdown's drain (server.close() alone waits for every open
// connection).
import type { Server, Socket } from 'node:net';

export interface ConnectionSet {
  /** Remembers `socket` until it closes. */
  track(socket: Socket): void;
  /** Destroys every open socket. */
  dropAll(): void;
  /**
   * Stops `server` accepting and resolves once every connection has closed, destroying those still
   * open after `drainMs` (0: at once).
   */
  closeServer(server: Server, drainMs?: number): Promise<void>;
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
    closeServer: (server, drainMs = 0) =>
      new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          clearTimeout(timer);
          dropAll();
          resolve();
        };
        server.close(done);
        if (drainMs <= 0) dropAll();
        else timer = setTimeout(dropAll, drainMs);
      }),
  };
}
