// Where the agent finds the server(s): `server_address` items (`host`, `host:port`, `[v6]:port`)
// and the list of addresses they stand for once host names are looked up — every address a name
// resolves to is a server of its own, so one DNS name can stand for a whole HA group.
import { promises as dns } from 'node:dns';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { isDnsName } from '../common/dns-name.js';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';

/** One `server_address` item: a host name or IP literal, and the port if the item names one. */
export interface ServerTarget {
  /** The item as configured, for messages. */
  readonly item: string;
  /** A DNS name or an IP literal (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
}

/** Looks a host name up: every address it has (dns.promises.lookup with `all: true` by default). */
export type LookupAll = (host: string) => Promise<readonly { readonly address: string }[]>;

const lookupAll: LookupAll = (host) => dns.lookup(host, { all: true });

const SHAPES =
  'each item is host, host:port or [IPv6]:port, e.g. tessera.internal, 10.0.0.5:8081, [2001:db8::5]:8081';

/** What is wrong with a `server_address` item, or undefined if nothing is. */
export function serverAddressProblem(item: string): string | undefined {
  const split = splitItem(item);
  return typeof split === 'string' ? split : undefined;
}

/**
 * A `server_address` item as host and port, `defaultPort` (`server_port`) when it names none.
 * Throws ERR_INVALID_ARGUMENT for an item the configuration would have refused.
 */
export function parseServerAddress(item: string, defaultPort: number): ServerTarget {
  const split = splitItem(item);
  if (typeof split === 'string')
    throw new TesseraError(TesseraErrorCode.INVALID_ARGUMENT, `agent: server_address: ${split}`);
  return { item, host: split.host, port: split.port ?? defaultPort };
}

function splitItem(item: string): { host: string; port: number | undefined } | string {
  const bad = (why: string) => `${JSON.stringify(item)} ${why}; ${SHAPES}`;
  if (item.trim() === '') return bad('is empty');
  if (/[/\s]/.test(item)) return bad('is not an address (no scheme, path or spaces)');
  let host: string;
  let portText: string | undefined;
  if (item.startsWith('[')) {
    const m = /^\[([^\]]*)\](?::(.*))?$/.exec(item);
    if (m === null) return bad('has an unclosed or misplaced "]"');
    host = m[1] as string;
    portText = m[2];
    if (!isIPv6(host)) return bad(`has ${JSON.stringify(host)} in brackets, which is not an IPv6 address`);
  } else {
    const colons = item.split(':').length - 1;
    if (colons > 1)
      return isIPv6(item)
        ? bad(`is an IPv6 address without brackets; write it as [${item}]:<port>`)
        : bad('has more than one ":"');
    [host, portText] = item.split(':') as [string, string | undefined];
    if (!isIPv4(host) && (!isDnsName(host) || host.startsWith('*.') || /^[0-9.]+$/.test(host)))
      return bad(
        `has ${JSON.stringify(host)} as its host, which is neither an IPv4 address nor a DNS name (letters, digits, inner hyphens, dots)`,
      );
  }
  if (portText === undefined) return { host, port: undefined };
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= 1 && port <= 65535)) return bad(`has port ${JSON.stringify(portText)}; a port is 1 to 65535`);
  return { host, port };
}

/** `host:port` as gRPC dials it; IPv6 in brackets. */
export function formatAddress(host: string, port: number): string {
  return isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The servers the targets stand for, in their order, each address once; and the names that did not resolve. */
export interface ResolvedServers {
  readonly addresses: readonly string[];
  /** Names that could not be looked up; each is kept in `addresses` as `name:port` (gRPC looks it up again when dialling). */
  readonly failures: readonly { readonly item: string; readonly error: string }[];
}

/**
 * Looks every host name up: each address a name has is a server of its own (`host:port`), in the
 * order of the targets and of the answer. IP literals are taken as they are. A name that does not
 * resolve stays in the list as `name:port`, so the list is never empty and a later look-up (or
 * gRPC's own, when dialling) can still find it.
 */
export async function resolveServers(
  targets: readonly ServerTarget[],
  lookup: LookupAll = lookupAll,
): Promise<ResolvedServers> {
  const answers = await Promise.all(
    targets.map(async (t) => {
      if (isIP(t.host) !== 0) return { t, addresses: [t.host] };
      try {
        const found = (await lookup(t.host)).map((a) => a.address);
        if (found.length === 0) return { t, addresses: [t.host], error: 'no address' };
        return { t, addresses: found };
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        return { t, addresses: [t.host], error: e.code ?? e.message };
      }
    }),
  );
  const addresses = new Set<string>();
  const failures: { item: string; error: string }[] = [];
  for (const a of answers) {
    for (const host of a.addresses) addresses.add(formatAddress(host, a.t.port));
    if (a.error !== undefined) failures.push({ item: a.t.item, error: a.error });
  }
  return { addresses: [...addresses], failures };
}
