import { isIP } from 'node:net';
import { ErrorCode, SpiffeError } from '../errors.js';

/** The environment variable every SPIFFE client falls back to (spec §6). */
export const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';

/** A parsed Workload API endpoint address. */
export type WorkloadApiAddress =
  | { readonly kind: 'unix'; readonly path: string; readonly uri: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number; readonly uri: string };

function bad(uri: string, message: string): SpiffeError {
  return new SpiffeError(
    ErrorCode.WORKLOADAPI_ADDRESS,
    `workloadapi: invalid endpoint address ${JSON.stringify(uri)}: ${message}; use unix:///path/to/socket or tcp://<ip>:<port>`,
  );
}

/**
 * Parses a Workload API endpoint address as the spec says (§6): `unix:///absolute/path` (or
 * `unix:/absolute/path`) with nothing else, or `tcp://<IP literal>:<port>` with nothing else.
 * Messages follow go-spiffe's; unlike go-spiffe, `unix://host/path` is refused, as the spec requires.
 */
export function parseWorkloadApiAddress(uri: string): WorkloadApiAddress {
  if (typeof uri !== 'string') throw new TypeError('workloadapi: address must be a string');
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw bad(uri, 'workload endpoint socket is not a valid URI');
  }
  if (url.protocol === 'unix:') {
    if (url.username !== '' || url.password !== '')
      throw bad(uri, 'workload endpoint unix socket URI must not include user info');
    if (url.host !== '')
      throw bad(
        uri,
        'workload endpoint unix socket URI must not include an authority (host); use unix:///path',
      );
    if (url.pathname === '' && !uri.includes('//'))
      throw bad(uri, 'workload endpoint unix socket URI must not be opaque');
    if (url.pathname === '' || url.pathname === '/')
      throw bad(uri, 'workload endpoint unix socket URI must include a path');
    if (!url.pathname.startsWith('/')) throw bad(uri, 'workload endpoint unix socket URI must not be opaque');
    if (url.search !== '' || uri.includes('?'))
      throw bad(uri, 'workload endpoint unix socket URI must not include query values');
    if (url.hash !== '' || uri.includes('#'))
      throw bad(uri, 'workload endpoint unix socket URI must not include a fragment');
    return { kind: 'unix', path: decodeURIComponent(url.pathname), uri };
  }
  if (url.protocol === 'tcp:') {
    if (url.username !== '' || url.password !== '')
      throw bad(uri, 'workload endpoint tcp socket URI must not include user info');
    if (url.hostname === '') throw bad(uri, 'workload endpoint tcp socket URI must include a host');
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    if (isIP(host) === 0)
      throw bad(uri, 'workload endpoint tcp socket URI host component must be an IP:port');
    if (url.port === '')
      throw bad(uri, 'workload endpoint tcp socket URI host component must include a port');
    if (url.pathname !== '') throw bad(uri, 'workload endpoint tcp socket URI must not include a path');
    if (url.search !== '' || uri.includes('?'))
      throw bad(uri, 'workload endpoint tcp socket URI must not include query values');
    if (url.hash !== '' || uri.includes('#'))
      throw bad(uri, 'workload endpoint tcp socket URI must not include a fragment');
    return { kind: 'tcp', host, port: Number(url.port), uri };
  }
  throw bad(uri, 'workload endpoint socket URI must have a "tcp" or "unix" scheme');
}

/**
 * Where a Tessera agent serves the Workload API when its `socket_path` is not set. Every entry
 * point that finds the Workload API without being told (this library's client and sources,
 * `tessera api`, the proxy, the agent's own default) takes it from here, so a change is one edit.
 */
export const DEFAULT_WORKLOAD_API_SOCKET = '/run/tessera/agent.sock';

/**
 * The Workload API address to use when none is given: `SPIFFE_ENDPOINT_SOCKET` when set and not
 * empty (spec §6), else `unix://` + DEFAULT_WORKLOAD_API_SOCKET. Not parsed.
 */
export function defaultWorkloadApiAddress(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[SPIFFE_ENDPOINT_SOCKET];
  return fromEnv === undefined || fromEnv === '' ? `unix://${DEFAULT_WORKLOAD_API_SOCKET}` : fromEnv;
}

/** Says where an address came from, for messages: the option, SPIFFE_ENDPOINT_SOCKET or the default. */
export function workloadApiAddressOrigin(address?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (address !== undefined) return 'the address option';
  const fromEnv = env[SPIFFE_ENDPOINT_SOCKET];
  return fromEnv === undefined || fromEnv === ''
    ? `the default; ${SPIFFE_ENDPOINT_SOCKET} is not set`
    : SPIFFE_ENDPOINT_SOCKET;
}

/** The address given, else defaultWorkloadApiAddress(env), parsed. */
export function resolveWorkloadApiAddress(
  address?: string,
  env: NodeJS.ProcessEnv = process.env,
): WorkloadApiAddress {
  return parseWorkloadApiAddress(address ?? defaultWorkloadApiAddress(env));
}

/** The grpc-js target for an address. */
export function grpcTarget(address: WorkloadApiAddress): string {
  if (address.kind === 'unix') return `unix://${address.path}`;
  return isIP(address.host) === 6
    ? `ipv6:[${address.host}]:${address.port}`
    : `ipv4:${address.host}:${address.port}`;
}
