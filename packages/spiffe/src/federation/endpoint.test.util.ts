// Test support for the federation tests: a real HTTPS bundle endpoint on 127.0.0.1, a schedule
// the test drives by hand, and a queue to await watcher events. Not shipped (dist/**/*.test.*).
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IssuedSvid } from '@tessera/testkit';

export interface TestEndpoint {
  readonly port: number;
  /** https://127.0.0.1:<port><path> */
  url(path?: string, host?: string): string;
  /** HTTP requests that reached the server. */
  readonly requests: number;
  /** TCP connections the server accepted (each one precedes the server's TLS handshake messages). */
  readonly connections: number;
  /** Replace the request listener. */
  handle(listener: RequestListener): void;
  /** Present another certificate from the next handshake on. */
  setCertificate(cert: IssuedSvid): void;
  close(): Promise<void>;
}

export async function startEndpoint(cert: IssuedSvid, listener?: RequestListener): Promise<TestEndpoint> {
  let handler: RequestListener = listener ?? ((_req, res) => res.writeHead(404).end());
  let requests = 0;
  let connections = 0;
  const server: Server = createServer({ key: cert.privateKeyPem, cert: cert.certificatesPem }, (req, res) => {
    requests++;
    handler(req, res);
  });
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return {
    port,
    url: (path = '/', host = '127.0.0.1') => `https://${host}:${port}${path}`,
    get requests() {
      return requests;
    },
    get connections() {
      return connections;
    },
    handle(l: RequestListener) {
      handler = l;
    },
    setCertificate(c: IssuedSvid) {
      server.setSecureContext({ key: c.privateKeyPem, cert: c.certificatesPem });
    },
    close,
  };
}

/** A request listener answering with a fixed status and body. */
export function respond(status: number, body: string | Buffer, headers: Record<string, string> = {}) {
  return (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body);
  };
}

/** Values pushed by callbacks, awaited one by one by the test. */
export class EventQueue<T> {
  readonly #items: T[] = [];
  readonly #waiters: Array<(v: T) => void> = [];

  push = (item: T): void => {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) this.#items.push(item);
    else waiter(item);
  };

  next(): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  get size(): number {
    return this.#items.length;
  }
}

/**
 * A schedule for watchBundle that records each requested delay and waits until the test calls
 * release(), so the test decides when the next fetch happens.
 */
export class ManualSchedule {
  readonly delays: number[] = [];
  readonly #requested = new EventQueue<number>();
  #release: (() => void) | undefined;

  schedule = (delayMs: number, signal: AbortSignal): Promise<void> => {
    this.delays.push(delayMs);
    return new Promise<void>((resolve) => {
      const done = () => {
        signal.removeEventListener('abort', done);
        this.#release = undefined;
        resolve();
      };
      this.#release = done;
      signal.addEventListener('abort', done, { once: true });
      this.#requested.push(delayMs);
    });
  };

  /** Resolves with the delay of the next wait the loop enters. */
  waiting(): Promise<number> {
    return this.#requested.next();
  }

  /** Ends the current wait so the loop fetches again. */
  release(): void {
    if (this.#release === undefined) throw new Error('ManualSchedule: the watch is not waiting');
    this.#release();
  }
}

/** Runs `fn` with a fresh endpoint and closes it afterwards. */
export async function withEndpoint<T>(
  cert: IssuedSvid,
  listener: RequestListener | undefined,
  fn: (endpoint: TestEndpoint) => Promise<T>,
): Promise<T> {
  const endpoint = await startEndpoint(cert, listener);
  try {
    return await fn(endpoint);
  } finally {
    await endpoint.close();
  }
}
