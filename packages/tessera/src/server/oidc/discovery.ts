// OIDC discovery for JWT-SVIDs (the job of SPIRE's OIDC Discovery Provider, built into the server):
// the OpenID Provider configuration document at <issuer>/.well-known/openid-configuration and the
// JWK Set of the trust domain's JWT authorities at jwks_uri, so that relying parties that speak
// OIDC (cloud STS services, go-oidc, oauth2-proxy, PyJWT's PyJWKClient, …) verify JWT-SVIDs by
// discovery. The issuer is the server's jwt_issuer, the `iss` of every JWT-SVID it mints, so the
// two can never disagree. The keys are the bundle's, read at each request: a key is published when
// it is prepared (before it signs anything) and leaves when it expires or is revoked.
import type { JsonWebKey } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger, SpiffeBundle } from '@tessera/spiffe';
import { jwtAlgorithmOf } from '../ca/jwt-authority.js';

const WELL_KNOWN = '/.well-known/openid-configuration';

/**
 * Why `value` cannot be an issuer or jwks_uri of OIDC discovery (OpenID Connect Discovery 1.0 §3:
 * an https URL with a host and no query or fragment; a path is allowed), or undefined when it can.
 * http is allowed only with `allowInsecureScheme` (a development setup).
 */
export function oidcUrlProblem(value: string, allowInsecureScheme: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `${JSON.stringify(value)} is not a URL; it must be an https URL such as https://oidc.example.org or https://example.org/tessera`;
  }
  if (url.protocol === 'http:' && !allowInsecureScheme)
    return `${JSON.stringify(value)} uses http; relying parties fetch keys from it, so it must be https (oidc_discovery.allow_insecure_scheme: true allows http, for a development setup only)`;
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    return `${JSON.stringify(value)} uses ${url.protocol.slice(0, -1)}; it must be an https URL`;
  if (url.hostname === '') return `${JSON.stringify(value)} has no host`;
  if (url.username !== '' || url.password !== '')
    return `${JSON.stringify(value)} has user information; it must not`;
  if (url.search !== '' || value.includes('?'))
    return `${JSON.stringify(value)} has a query; an OIDC issuer has none`;
  if (url.hash !== '' || value.includes('#'))
    return `${JSON.stringify(value)} has a fragment; an OIDC issuer has none`;
  return undefined;
}

/** jwks_uri when none is configured: <issuer>/keys, as SPIRE's provider serves it. */
export function defaultJwksUri(issuer: string): string {
  return `${issuer.replace(/\/+$/, '')}/keys`;
}

/**
 * The paths this server answers: the discovery document at the issuer's path followed by
 * /.well-known/openid-configuration (spire #5480, #6408: an issuer with a path), the JWK Set at
 * jwks_uri's path.
 */
export function oidcPaths(issuer: string, jwksUri: string): { discovery: string; jwks: string } {
  return {
    discovery: `${new URL(issuer).pathname.replace(/\/+$/, '')}${WELL_KNOWN}`,
    jwks: new URL(jwksUri).pathname,
  };
}

/** One JWK of the JWK Set: the key members, `kid`, `alg`, and `use: "sig"`. */
export type OidcJwk = JsonWebKey & { kid: string; alg: string; use: 'sig' };

/**
 * The JWK Set of the bundle's JWT authorities, as OIDC relying parties want it: every key with
 * `kid`, `alg` (ES256, ES384 or RS256, from the key) and `use: "sig"`. A key of another type,
 * which Tessera never makes, is left out.
 */
export function oidcJwks(bundle: SpiffeBundle): { keys: OidcJwk[] } {
  const keys: OidcJwk[] = [];
  for (const [kid, key] of bundle.jwtAuthorities) {
    const alg = jwtAlgorithmOf(key);
    if (alg === undefined) continue;
    keys.push({ ...key.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  }
  return { keys };
}

export interface OidcDiscoveryOptions {
  /** The issuer: the server's jwt_issuer. */
  issuer: string;
  jwksUri: string;
  /** The algorithm of the configured jwt_key_type, listed even before a key of that type is published. */
  signingAlgorithm: string;
  /** The trust domain's bundle as it is now. */
  bundle: () => SpiffeBundle;
}

/**
 * The OpenID Provider metadata: issuer and jwks_uri; the members OIDC Discovery requires, set as
 * SPIRE's provider sets them where a JWT-SVID issuer has nothing to say (authorization_endpoint
 * ""); subject_types_supported ["public"]; id_token_signing_alg_values_supported: RS256 (the one
 * Discovery says must be listed), the configured key type's and those of the published keys.
 */
export function discoveryDocument(o: OidcDiscoveryOptions, jwks = oidcJwks(o.bundle())): object {
  const algorithms = new Set(['RS256', o.signingAlgorithm, ...jwks.keys.map((k) => k.alg)]);
  return {
    issuer: o.issuer,
    jwks_uri: o.jwksUri,
    authorization_endpoint: '',
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: [...algorithms].sort(),
  };
}

/**
 * The HTTP handler of the two documents (GET and HEAD); anything else is 404, or 405 for another
 * method on one of the two paths. The JWK Set is built from the bundle at each request and sent
 * with SPIRE's no-cache headers, so a relying party that honours them never holds a revoked key.
 */
export function createOidcDiscoveryHandler(
  o: OidcDiscoveryOptions,
  logger: Logger,
): (req: IncomingMessage, res: ServerResponse) => void {
  const paths = oidcPaths(o.issuer, o.jwksUri);
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const which = path === paths.discovery ? 'discovery' : path === paths.jwks ? 'jwks' : undefined;
    if (which === undefined) {
      logger.debug?.('oidc: no such document', { path, method: req.method });
      send(
        res,
        404,
        'text/plain; charset=utf-8',
        `not found; the discovery document is at ${paths.discovery}\n`,
      );
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed; use GET\n');
      return;
    }
    let body: string;
    try {
      const jwks = oidcJwks(o.bundle());
      body = JSON.stringify(which === 'jwks' ? jwks : discoveryDocument(o, jwks), null, 2);
    } catch (err) {
      logger.error?.('oidc: cannot build the document', { document: which, error: (err as Error).message });
      send(res, 500, 'text/plain; charset=utf-8', 'the keys are not available\n');
      return;
    }
    if (which === 'jwks') {
      res.setHeader('Cache-Control', 'no-cache, no-store, must-revalidate');
      res.setHeader('Pragma', 'no-cache');
      res.setHeader('Expires', '0');
    }
    send(res, 200, 'application/json', `${body}\n`, req.method === 'HEAD');
  };
}

function send(res: ServerResponse, status: number, type: string, body: string, headOnly = false): void {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.end(headOnly ? undefined : body);
}
