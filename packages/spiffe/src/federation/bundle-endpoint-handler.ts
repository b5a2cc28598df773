import type { IncomingMessage, ServerResponse } from 'node:http';
import { SpiffeBundle } from '../bundle/spiffe-bundle.js';
import { type Logger, silentLogger } from '../logger.js';

export interface BundleEndpointHandlerOptions {
  /** Where failures to produce the bundle are reported; default silent. */
  logger?: Logger;
}

/** A node:http / node:https request listener. */
export type BundleEndpointHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The server side of a bundle endpoint (spec §7.2): answers GET with the current SPIFFE bundle
 * from `source` as application/json, any other method with 405. `source` is called on every
 * request so the answer is always the most recent bundle; if it throws, the answer is 500 and the
 * error goes to the logger. The handler does not route: mount it on the configured path. It asks
 * for no client authentication, as the spec requires.
 */
export function createBundleEndpointHandler(
  source: () => SpiffeBundle,
  options: BundleEndpointHandlerOptions = {},
): BundleEndpointHandler {
  if (typeof source !== 'function') {
    throw new TypeError(
      'federation: the bundle endpoint handler needs a function returning the current SpiffeBundle',
    );
  }
  const logger = options.logger ?? silentLogger;
  return (req, res) => {
    if (req.method !== 'GET') {
      logger.debug?.('federation: bundle endpoint refused a request: only GET is allowed', {
        method: req.method,
        remoteAddress: req.socket.remoteAddress,
      });
      send(res, 405, 'text/plain; charset=utf-8', 'method is not allowed\n', { allow: 'GET' });
      return;
    }
    let body: string;
    let trustDomain: string | undefined;
    try {
      const bundle = source();
      if (!(bundle instanceof SpiffeBundle))
        throw new TypeError('the bundle source did not return a SpiffeBundle');
      trustDomain = bundle.trustDomain.toString();
      body = bundle.marshal();
    } catch (err) {
      logger.error?.('federation: bundle endpoint cannot serve the bundle', {
        trustDomain,
        error: (err as Error).message,
      });
      send(res, 500, 'text/plain; charset=utf-8', 'unable to serve bundle\n');
      return;
    }
    send(res, 200, 'application/json', body);
  };
}

function send(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  headers: Record<string, string> = {},
): void {
  const data = Buffer.from(body, 'utf8');
  res.writeHead(status, {
    ...headers,
    'content-type': contentType,
    'content-length': String(data.length),
    'cache-control': 'no-store',
  });
  res.end(data);
}
