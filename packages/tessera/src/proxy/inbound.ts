// Inbound: terminate mTLS with the workload's SVID, verify the client's X509-SVID, apply the
// AuthorizationPolicies, and forward to the local app in plain HTTP/1.1 or TCP. A denied HTTP request
// gets Envoy's `403 RBAC: access denied`; a denied TCP connection is closed.
import type { X509Certificate } from 'node:crypto';
import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  STATUS_CODES,
} from 'node:http';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2ServerRequest,
  type Http2ServerResponse,
  connect as http2Connect,
  constants as http2Constants,
} from 'node:http2';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import {
  type Authorizer,
  authorizeAny,
  createSpiffeHttp2Server,
  createSpiffeTlsServer,
  parseTrustDomain,
  peerSpiffeId,
  type TlsBundleSource,
  type X509CrlSource,
  type X509SvidSource,
} from '@tessera/spiffe';
import type { DaemonLogger } from '../common/log.js';
import type { InboundConfig } from './config.js';
import { splitHostPort } from './config.js';
import { createConnectionSet } from './connections.js';
import { normalizePath } from './policy/index.js';
import type { PolicyDecision, PolicyRequest } from './policy/types.js';
import { forwardedClientCert, XFCC_HEADER, xfccElement } from './xfcc.js';

/** What the inbound listener needs from the proxy: the narrow view of its identity and its policies. */
export interface InboundDeps {
  /** The workload's SVID and the bundles clients are verified against (an X509Source is both). */
  identity: X509SvidSource & TlsBundleSource & X509CrlSource;
  /** Decides one request or connection with the policies in force now. */
  decide(protocol: 'http' | 'tcp', request: PolicyRequest): PolicyDecision;
  /**
   * Verifies a bearer token as a JWT-SVID; undefined when JWT authentication is not configured.
   * Returns the request's auth attributes, or throws with the reason.
   */
  authenticate?(token: string): NonNullable<PolicyRequest['auth']>;
  /** Whether the token header is passed on to the app after verification. */
  forwardToken: boolean;
  /** Every decision, for the audit log and metrics. */
  onDecision(listener: string, request: PolicyRequest, decision: PolicyDecision): void;
  logger: DaemonLogger;
}

export interface InboundListener {
  readonly name: string;
  readonly server: Server;
  /** Closes every open connection (e.g. the workload lost its identity). */
  dropConnections(): void;
  /**
   * Stops accepting; requests in flight are answered (HTTP/1.1 answers then say `connection:
   * close`, HTTP/2 sessions get a GOAWAY) and what is still open after `drainMs` is closed.
   */
  close(drainMs?: number): Promise<void>;
}

// Hop-by-hop headers (RFC 9110 §7.6.1) and HTTP/2 connection-specific ones are never forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'http2-settings',
]);

const DENIED_BODY = 'RBAC: access denied';
const JWT_FAILED_BODY = 'Jwt verification fails';
const UPSTREAM_FAILED_BODY =
  'upstream connect error or disconnect/reset before headers. reset reason: connection failure';

/** An answer the proxy gives itself, without the app. */
interface LocalReply {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | number>>;
  readonly body: string;
}

const localReply = (status: number, body: string, extra: Record<string, string> = {}): LocalReply =>
  Object.freeze({
    status,
    headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), ...extra },
    body,
  });
const BAD_REQUEST = localReply(400, 'Bad Request');
const JWT_FAILED = localReply(401, JWT_FAILED_BODY, { 'www-authenticate': 'Bearer realm="tessera"' });
const DENIED = localReply(403, DENIED_BODY);
const UPSTREAM_FAILED = localReply(503, UPSTREAM_FAILED_BODY);
const upgradeRefused = (protocol: string) =>
  localReply(403, `upgrade to ${JSON.stringify(protocol)} is not proxied: only websocket is`);

/** Headers without pseudo-headers and hop-by-hop ones. */
function endToEnd(from: IncomingHttpHeaders | OutgoingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const k in from) {
    const v = from[k];
    if (v !== undefined && k.charCodeAt(0) !== 58 /* : */ && !HOP_BY_HOP.has(k)) out[k] = v;
  }
  return out;
}

interface H2cSession {
  /** The open session, or a new one when there is none (or it ended). */
  get(): ClientHttp2Session;
  close(): void;
}

/** HTTP/2 with prior knowledge to the app over TCP or a Unix socket: one session, reopened on demand. */
function h2cSession(target: { host?: string; port?: number; socketPath?: string }): H2cSession {
  let session: ClientHttp2Session | undefined;
  return {
    get() {
      if (session !== undefined && !session.closed && !session.destroyed) return session;
      const s = http2Connect('http://app', {
        createConnection: () =>
          target.socketPath === undefined
            ? netConnect({ host: target.host as string, port: target.port as number, noDelay: true })
            : netConnect({ path: target.socketPath }),
      });
      // A failed session fails its streams, which answer their clients; nothing else to do here.
      s.on('error', () => {});
      s.on('close', () => {
        if (session === s) session = undefined;
      });
      session = s;
      return s;
    },
    close() {
      session?.close();
    },
  };
}

/**
 * An HTTP/1.1 response head, for a socket taken over by an upgrade: the status line, the headers
 * given as name/value pairs, and a blank line.
 */
function rawHead(status: number, message: string | undefined, headers: Iterable<[string, unknown]>): string {
  let head = `HTTP/1.1 ${status} ${message ?? STATUS_CODES[status] ?? ''}\r\n`;
  for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
  return `${head}\r\n`;
}

/** An IncomingMessage's headers as name/value pairs, names as received. */
function* rawPairs(m: IncomingMessage): Generator<[string, string]> {
  for (let i = 0; i < m.rawHeaders.length; i += 2)
    yield [m.rawHeaders[i] as string, m.rawHeaders[i + 1] as string];
}

/** A LocalReply as HTTP/1.1 bytes, for a socket taken over by an upgrade; the connection then ends. */
function rawResponse(r: LocalReply): string {
  return rawHead(r.status, undefined, [...Object.entries(r.headers), ['connection', 'close']]) + r.body;
}

/** Node reports IPv4 peers on a dual-stack socket as ::ffff:a.b.c.d; policies are written with a.b.c.d. */
export function plainIp(address: string | undefined): string | undefined {
  return address?.startsWith('::ffff:') === true && address.includes('.') ? address.slice(7) : address;
}

function trustAuthorizer(trustDomains: readonly string[]): Authorizer {
  if (trustDomains.length === 0) return authorizeAny();
  const tds = trustDomains.map((t) => parseTrustDomain(t));
  const check = (id: { trustDomain: { equals(o: unknown): boolean } }) => {
    if (!tds.some((td) => id.trustDomain.equals(td)))
      throw new Error(
        `tlsconfig: trust domain "${String(id.trustDomain)}" is not one of ${trustDomains.join(', ')}`,
      );
  };
  return Object.assign(check, { trustDomains: tds, description: `members of ${trustDomains.join(', ')}` });
}

// The client certificate and its XFCC element are worked out once per connection.
const PEER_INFO = Symbol('tessera.proxy.peer');
interface PeerInfo {
  cert: X509Certificate | undefined;
  xfcc: string | undefined;
}

function peerInfo(socket: TLSSocket, by: () => string): PeerInfo {
  const cached = (socket as unknown as { [PEER_INFO]?: PeerInfo })[PEER_INFO];
  if (cached !== undefined) return cached;
  const cert = socket.getPeerX509Certificate();
  const id = peerSpiffeId(socket);
  const info: PeerInfo = {
    cert,
    xfcc:
      cert === undefined || id === undefined
        ? undefined
        : xfccElement({ by: by(), client: cert, clientId: id.toString() }),
  };
  Object.defineProperty(socket, PEER_INFO, { value: info });
  return info;
}

export function createInboundListener(
  config: InboundConfig,
  index: number,
  deps: InboundDeps,
): InboundListener {
  const name = config.name ?? `inbound-${index}`;
  const log = deps.logger.with({ listener: name });
  const listen = splitHostPort(config.listen);
  const unixPath = config.upstream.startsWith('unix:')
    ? config.upstream.slice('unix:'.length).replace(/^\/\//, '')
    : undefined;
  const upstream = unixPath === undefined ? splitHostPort(config.upstream) : undefined;
  const policyPort = config.policy_port ?? upstream?.port ?? listen.port;
  const tlsConfig = {
    svid: deps.identity,
    bundles: deps.identity,
    authorizer: trustAuthorizer(config.trust_domains),
    // A revoked client is refused at the handshake: the CRLs come with the identity.
    revocation: deps.identity,
    logger: log,
  };
  const connections = createConnectionSet();
  let draining = false;
  const track = connections.track;
  const ownId = () => {
    try {
      return deps.identity.getX509Svid().id.toString();
    } catch {
      return '';
    }
  };

  // Built property by property: object spreads cost a measurable share of a small request.
  const baseRequest = (socket: TLSSocket, protocol: 'http' | 'tcp'): PolicyRequest => {
    const request: { -readonly [K in keyof PolicyRequest]: PolicyRequest[K] } = {
      protocol,
      destinationPort: policyPort,
    };
    const principal = peerSpiffeId(socket)?.toString();
    if (principal !== undefined) request.sourcePrincipal = principal;
    const ip = plainIp(socket.remoteAddress);
    if (ip !== undefined) {
      request.sourceIp = ip;
      request.remoteIp = ip;
    }
    const local = plainIp(socket.localAddress);
    if (local !== undefined) request.destinationIp = local;
    if (typeof socket.servername === 'string') request.sni = socket.servername;
    return request;
  };

  let server: Server;
  if (config.protocol === 'tcp') {
    const tcp = createSpiffeTlsServer(
      tlsConfig,
      (socket) => {
        const request = baseRequest(socket, 'tcp');
        const decision = deps.decide('tcp', request);
        deps.onDecision(name, request, decision);
        if (!decision.allowed) {
          log.info('connection denied', { principal: request.sourcePrincipal, reason: decision.reason });
          socket.destroy();
          return;
        }
        const app = netConnect(
          unixPath === undefined
            ? { host: upstream?.host as string, port: upstream?.port as number, noDelay: true }
            : { path: unixPath },
        );
        track(app);
        const fail = (err: Error) => {
          log.warn('upstream connection failed', { upstream: config.upstream, error: err.message });
          socket.destroy();
          app.destroy();
        };
        app.on('error', fail);
        socket.on('error', () => app.destroy());
        // Either way counts: socket timeouts are reset by reads and by writes.
        socket.setTimeout(config.idle_timeout, () => {
          log.debug('idle connection closed', {
            principal: request.sourcePrincipal,
            idle_ms: config.idle_timeout,
          });
          socket.destroy();
          app.destroy();
        });
        socket.pipe(app).pipe(socket);
      },
      { handshakeTimeout: config.handshake_timeout },
    );
    server = tcp;
  } else {
    // Nagle's algorithm off on every proxied socket, as Envoy does: with it, the last segment of a
    // response waits for the peer's delayed ACK (~40 ms a request, measured in bench/proxy.bench.ts).
    const agent = new HttpAgent({ keepAlive: true, scheduling: 'lifo', noDelay: true });
    const h2 = createSpiffeHttp2Server(tlsConfig, {
      allowHTTP1: true,
      handshakeTimeout: config.handshake_timeout,
    });
    // Idle connections are closed: HTTP/2 sessions and HTTP/1.1 sockets alike (node's server timeout).
    h2.setTimeout(config.idle_timeout);
    const upstreamTarget =
      unixPath === undefined ? { host: upstream?.host, port: upstream?.port } : { socketPath: unixPath };

    /**
     * Normalizes, authenticates and decides one HTTP request: the request as the policies saw it and
     * the path to forward, or the answer the proxy gives itself (400, 401, 403).
     */
    const admit = (
      socket: TLSSocket,
      method: string,
      url: string | undefined,
      headers: IncomingHttpHeaders,
      host: string,
    ): { request: PolicyRequest; target: string } | LocalReply => {
      // As Envoy under Istio: the path is normalized once (%XX of unreserved characters decoded,
      // `\` as `/`, `.` and `..` resolved), then matched AND forwarded in that form, so that
      // /public/../admin cannot slip past a policy on /admin. A target that cannot be normalized
      // (%00, not origin-form) is refused.
      const target = url?.startsWith('/') === true ? normalizePath(url) : undefined;
      if (target === undefined) {
        log.info('request refused: a request target that cannot be normalized', {
          principal: peerSpiffeId(socket)?.toString(),
        });
        return BAD_REQUEST;
      }
      const request = baseRequest(socket, 'http') as {
        -readonly [K in keyof PolicyRequest]: PolicyRequest[K];
      };
      request.http = { method, path: target, host, headers };
      const bearer = /^Bearer\s+(\S+)\s*$/i.exec(headers.authorization ?? '')?.[1];
      if (bearer !== undefined && deps.authenticate !== undefined) {
        try {
          request.auth = deps.authenticate(bearer);
        } catch (err) {
          log.info('request refused: JWT-SVID did not verify', {
            principal: request.sourcePrincipal,
            reason: (err as Error).message,
          });
          return JWT_FAILED;
        }
      }
      const decision = deps.decide('http', request);
      deps.onDecision(name, request, decision);
      if (!decision.allowed) {
        log.info('request denied', {
          principal: request.sourcePrincipal,
          method,
          path: target,
          reason: decision.reason,
        });
        return DENIED;
      }
      return { request, target };
    };

    /** The headers sent to the app: end-to-end ones, the host, x-forwarded-proto and the XFCC. */
    const upstreamHeaders = (
      socket: TLSSocket,
      headers: IncomingHttpHeaders,
      host: string,
      request: PolicyRequest,
    ): OutgoingHttpHeaders => {
      const out = endToEnd(headers);
      out.host = host;
      if (request.auth !== undefined && !deps.forwardToken) delete out.authorization;
      const element = peerInfo(socket, ownId).xfcc;
      if (element !== undefined)
        out[XFCC_HEADER] = forwardedClientCert(config.forward_client_cert, headers[XFCC_HEADER], element);
      else delete out[XFCC_HEADER];
      out['x-forwarded-proto'] = 'https';
      return out;
    };

    /**
     * While shutting down, an HTTP/1.1 answer is its connection's last (`connection: close`, and
     * node closes the socket after it); HTTP/2 sessions were sent a GOAWAY instead.
     */
    const lastIfDraining = (res: Http2ServerResponse) => {
      if (draining && res.req.httpVersionMajor === 1) res.setHeader('connection', 'close');
    };

    /** The app could not be reached or reset: Envoy's 503 if nothing was answered yet, else a reset. */
    const upstreamFailed = (res: Http2ServerResponse, err: Error) => {
      log.warn('upstream request failed', { upstream: config.upstream, error: err.message });
      if (!res.headersSent) {
        lastIfDraining(res);
        res.writeHead(UPSTREAM_FAILED.status, UPSTREAM_FAILED.headers);
        res.end(UPSTREAM_FAILED.body);
      } else {
        res.destroy();
      }
    };

    // An app that speaks HTTP/2 in cleartext (gRPC): one session, each request a stream on it.
    const h2c = config.upstream_protocol === 'http2' ? h2cSession(upstreamTarget) : undefined;

    /** Forwards one admitted request as a stream to the h2c app; its answer and trailers come back. */
    const forwardH2c = (
      session: H2cSession,
      req: Http2ServerRequest | IncomingMessage,
      res: Http2ServerResponse,
      socket: TLSSocket,
      headers: IncomingHttpHeaders,
      host: string,
      request: PolicyRequest,
      target: string,
      noBody: boolean,
    ) => {
      const out = upstreamHeaders(socket, headers, host, request);
      delete out.host;
      out[':method'] = req.method;
      out[':path'] = target;
      out[':authority'] = host;
      out[':scheme'] = 'http';
      // The one TE value HTTP/2 allows, which gRPC servers look for.
      if (/(^|,)\s*trailers\s*(,|$)/i.test(String(headers.te ?? ''))) out.te = 'trailers';
      const failed = (err: Error) => upstreamFailed(res, err);
      let stream: ClientHttp2Stream;
      try {
        stream = session.get().request(out, { endStream: noBody });
      } catch (err) {
        failed(err as Error);
        return;
      }
      stream.on('response', (h, flags) => {
        const status = Number(h[':status']) || 502;
        if ((flags & http2Constants.NGHTTP2_FLAG_END_STREAM) !== 0 && req.httpVersionMajor === 2) {
          // Headers that end the stream (gRPC's trailers-only answer, its status in them) are sent
          // on as one HEADERS frame that ends the stream: gRPC clients read the status only there.
          res.stream.respond({ ...endToEnd(h), ':status': status }, { endStream: true });
          return;
        }
        lastIfDraining(res);
        res.writeHead(status, endToEnd(h));
        stream.pipe(res as unknown as NodeJS.WritableStream);
      });
      stream.on('trailers', (t) => res.addTrailers(endToEnd(t) as Record<string, string>));
      stream.on('error', failed);
      res.on('close', () => {
        if (!res.writableFinished && !stream.closed) stream.close(http2Constants.NGHTTP2_CANCEL);
      });
      if (noBody) req.resume();
      else (req as IncomingMessage).pipe(stream);
    };

    h2.on('request', (req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse) => {
      const socket = req.socket as TLSSocket;
      const headers = req.headers as IncomingHttpHeaders;
      const host = (headers[':authority'] as string | undefined) ?? headers.host ?? '';
      const admitted = admit(socket, req.method ?? 'GET', req.url, headers, host);
      if ('status' in admitted) {
        lastIfDraining(res);
        res.writeHead(admitted.status, admitted.headers);
        res.end(admitted.body);
        return;
      }
      const { request, target } = admitted;
      // A request without a body (most GETs) is ended at once: piping an empty body costs a
      // measurable share of a small request.
      const noBody =
        headers['content-length'] === undefined &&
        headers['transfer-encoding'] === undefined &&
        req.readableLength === 0 &&
        (req.method === 'GET' || req.method === 'HEAD');
      if (h2c !== undefined) {
        forwardH2c(h2c, req, res, socket, headers, host, request, target, noBody);
        return;
      }
      const up = httpRequest({
        agent,
        method: req.method,
        path: target,
        headers: upstreamHeaders(socket, headers, host, request),
        ...upstreamTarget,
      });
      up.on('response', (r) => {
        lastIfDraining(res);
        res.writeHead(r.statusCode ?? 502, endToEnd(r.headers));
        r.pipe(res as unknown as NodeJS.WritableStream);
      });
      up.on('error', (err) => upstreamFailed(res, err));
      res.on('close', () => {
        if (!res.writableFinished) up.destroy();
      });
      if (noBody) {
        req.resume();
        up.end();
      } else {
        (req as IncomingMessage).pipe(up);
      }
    });

    // HTTP/1.1 upgrades (WebSocket), as Istio enables them in Envoy: the upgrade request is decided
    // like any request; once the app answers 101 the two sockets are joined. Other protocols are
    // refused with 403, as Envoy refuses upgrades it is not configured for.
    h2.on('upgrade', (req: IncomingMessage, duplex: Duplex, head: Buffer) => {
      const socket = duplex as TLSSocket;
      socket.on('error', () => {});
      const refuse = (r: LocalReply) => socket.end(rawResponse(r));
      const protocol = req.headers.upgrade ?? '';
      if (protocol.toLowerCase() !== 'websocket') {
        log.info('upgrade refused: only websocket is proxied', {
          principal: peerSpiffeId(socket)?.toString(),
          upgrade: protocol,
        });
        refuse(upgradeRefused(protocol));
        return;
      }
      const host = req.headers.host ?? '';
      const admitted = admit(socket, req.method ?? 'GET', req.url, req.headers, host);
      if ('status' in admitted) {
        refuse(admitted);
        return;
      }
      const out = upstreamHeaders(socket, req.headers, host, admitted.request);
      out.connection = 'upgrade';
      out.upgrade = protocol;
      const up = httpRequest({
        agent: false,
        method: req.method,
        path: admitted.target,
        headers: out,
        ...upstreamTarget,
      });
      up.on('upgrade', (r: IncomingMessage, app: Socket, appHead: Buffer) => {
        track(app);
        app.setNoDelay(true);
        socket.write(rawHead(r.statusCode ?? 101, r.statusMessage, rawPairs(r)));
        if (appHead.length > 0) socket.write(appHead);
        if (head.length > 0) app.write(head);
        const close = () => {
          socket.destroy();
          app.destroy();
        };
        app.on('error', close);
        app.on('close', close);
        socket.on('close', close);
        socket.setTimeout(config.idle_timeout, () => {
          log.debug('idle upgraded connection closed', { principal: admitted.request.sourcePrincipal });
          close();
        });
        app.pipe(socket).pipe(app);
      });
      // The app did not switch protocols: its answer goes back, and the connection ends with it.
      up.on('response', (r: IncomingMessage) => {
        const kept = [...rawPairs(r)].filter(([k]) => {
          const name = k.toLowerCase();
          return !HOP_BY_HOP.has(name) && name !== 'content-length';
        });
        socket.write(rawHead(r.statusCode ?? 502, r.statusMessage, [...kept, ['connection', 'close']]));
        r.pipe(socket);
      });
      up.on('error', (err) => {
        log.warn('upstream upgrade request failed', { upstream: config.upstream, error: err.message });
        refuse(UPSTREAM_FAILED);
      });
      up.end();
    });
    h2.on('close', () => {
      agent.destroy();
      h2c?.close();
    });
    server = h2;
  }
  server.on('secureConnection', track);
  server.on('connection', (s: Socket) => {
    s.setNoDelay(true);
    track(s);
  });
  return {
    name,
    server,
    dropConnections: connections.dropAll,
    close: (drainMs = 0) => {
      draining = true;
      return connections.closeServer(server, drainMs);
    },
  };
}
