/**
 * Our side of the mTLS interop tests, through the `spiffe` package's public TLS helpers: a line
 * echo server (the same protocol as the Go peer: reply `<peer id> <line>`) and a one-shot client.
 */

import type { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import {
  type Authorizer,
  authorizeAny,
  authorizeId,
  authorizeMemberOf,
  createSpiffeTlsServer,
  type Logger,
  parseTrustDomain,
  parseX509BundlePem,
  parseX509Svid,
  peerSpiffeId,
  spiffeTlsConnect,
  X509BundleSet,
} from '@tessera/spiffe';
import type { IssuedSvid } from '@tessera/testkit';
import type { Authorize } from './go-peer.js';

/** As the Go peer's flags, plus `any` (our authorizeAny: trust every bundle, accept any verified ID). */
export type OurAuthorize = Authorize | { any: true };

function authorizer(a: OurAuthorize): Authorizer {
  if ('any' in a) return authorizeAny();
  return 'id' in a ? authorizeId(a.id) : authorizeMemberOf(a.memberOf);
}

function bundleSet(bundles: Record<string, readonly X509Certificate[]>): X509BundleSet {
  return new X509BundleSet(
    Object.entries(bundles).map(([td, roots]) =>
      parseX509BundlePem(parseTrustDomain(td), roots.map((c) => c.toString()).join('')),
    ),
  );
}

/** A logger that keeps warnings and lets a test wait for one. */
class CapturingLogger implements Logger {
  readonly lines: string[] = [];
  readonly #waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];

  warn(message: string): void {
    const i = this.#waiters.findIndex((w) => w.pattern.test(message));
    if (i >= 0) this.#waiters.splice(i, 1)[0]?.resolve(message);
    else this.lines.push(message);
  }

  next(pattern: RegExp): Promise<string> {
    const i = this.lines.findIndex((l) => pattern.test(l));
    if (i >= 0) return Promise.resolve(this.lines.splice(i, 1)[0] as string);
    return new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }
}

export interface OurServer {
  address: string;
  /** Resolves with the first refusal log line matching `pattern` not already taken. */
  nextRefusal(pattern: RegExp): Promise<string>;
  /** Peer IDs of the connections that got through to the handler. */
  accepted: string[];
  close(): Promise<void>;
}

export async function startOurServer(
  svid: IssuedSvid,
  bundles: Record<string, readonly X509Certificate[]>,
  authorize: OurAuthorize,
): Promise<OurServer> {
  const logger = new CapturingLogger();
  const accepted: string[] = [];
  const sockets = new Set<TLSSocket>();
  const server = createSpiffeTlsServer(
    {
      svid: parseX509Svid(svid.certificatesPem, svid.privateKeyPem),
      bundles: bundleSet(bundles),
      authorizer: authorizer(authorize),
      logger,
    },
    (socket) => {
      const id = peerSpiffeId(socket)?.toString() ?? '(unverified)';
      accepted.push(id);
      socket.on('error', () => {});
      // readline re-emits the socket's errors; a peer that hangs up is not the server's failure.
      const lines = createInterface({ input: socket });
      lines.on('error', () => {});
      lines.once('line', (line) => {
        socket.end(`${id} ${line}\n`);
      });
    },
  );
  server.on('connection', (s: TLSSocket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    nextRefusal: (pattern) => logger.next(pattern),
    accepted,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

export type ClientResult =
  | { ok: true; reply: string; serverId: string }
  | { ok: false; error: string; log: string[] };

/** Connects once with our client helpers, sends `message`, and reports the reply or why it failed. */
export function ourClientExchange(
  svid: IssuedSvid,
  bundles: Record<string, readonly X509Certificate[]>,
  authorize: OurAuthorize,
  address: string,
  message: string,
): Promise<ClientResult> {
  const logger = new CapturingLogger();
  const sep = address.lastIndexOf(':');
  const socket = spiffeTlsConnect(
    {
      svid: parseX509Svid(svid.certificatesPem, svid.privateKeyPem),
      bundles: bundleSet(bundles),
      authorizer: authorizer(authorize),
      logger,
    },
    { host: address.slice(0, sep), port: Number(address.slice(sep + 1)) },
  );
  return new Promise((resolve) => {
    let settled = false;
    const settle = (r: ClientResult) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(r);
    };
    socket.once('secureConnect', () => socket.write(`${message}\n`));
    const lines = createInterface({ input: socket });
    lines.once('line', (line) =>
      settle({ ok: true, reply: line, serverId: peerSpiffeId(socket)?.toString() ?? '(unverified)' }),
    );
    // readline re-emits the socket's errors; both routes report the same failure.
    const fail = (err: Error) => settle({ ok: false, error: err.message, log: logger.lines });
    lines.on('error', fail);
    socket.on('error', fail);
    socket.once('close', () =>
      settle({ ok: false, error: 'connection closed before a reply', log: logger.lines }),
    );
  });
}
