// The `systemd` workload attestor: the unit the caller's process belongs to, as systemd's manager
// says over D-Bus (org.freedesktop.systemd1.Manager.GetUnitByPID, then the unit's Id and
// FragmentPath), with SPIRE's selector names: systemd:id:<unit>, systemd:fragment_path:<file>.
import { formatDuration } from '../../common/duration.js';
import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';
import { connectDbus, type DbusConnection, DbusError, type DbusReply } from './dbus.js';
import { lookupTimeout, refusal } from './lookup.js';
import type { WorkloadAttestor } from './types.js';

/** The keys of the selectors this attestor yields: `systemd:<key>:<value>`. */
export const SYSTEMD_SELECTOR_KEYS = ['id', 'fragment_path'] as const;

/** The system bus, where the system manager (pid 1) answers. */
export const DEFAULT_SYSTEM_BUS = 'unix:path=/run/dbus/system_bus_socket';

export interface SystemdWorkloadAttestorOptions {
  /** The D-Bus address systemd is on: the system bus (default), a user bus, or systemd's private socket. */
  busAddress?: string;
  /** How long one caller's lookup may take, connecting included. Default 3 s. */
  timeoutMs?: number;
}

const SYSTEMD = 'org.freedesktop.systemd1';

export class SystemdWorkloadAttestor implements WorkloadAttestor {
  readonly type = 'systemd';
  readonly #address: string;
  readonly #timeoutMs: number;
  /** One connection, opened on first use and again after it fails. */
  #conn: Promise<DbusConnection> | undefined;

  constructor(opts: SystemdWorkloadAttestorOptions = {}) {
    this.#address = opts.busAddress ?? DEFAULT_SYSTEM_BUS;
    this.#timeoutMs = opts.timeoutMs ?? 3000;
  }

  /**
   * No selectors when systemd says the process is in no unit (NoUnitForPID); throws when the bus
   * cannot be reached, systemd is not on it, the call is denied, or no answer comes in time.
   */
  async attest(caller: PeerCredentials): Promise<Selector[]> {
    const what = `process ${caller.pid}`;
    return lookupTimeout(
      this.#timeoutMs,
      `workload attestation: systemd: no answer from D-Bus at ${this.#address} about ${what} within ${formatDuration(this.#timeoutMs)}; is systemd on that bus (workload_attestors.systemd.bus_address), or raise workload_attestors.systemd.timeout`,
      async (signal) => {
        let conn: DbusConnection;
        try {
          conn = await this.#connection(signal);
        } catch (err) {
          if (signal.aborted) throw err;
          throw refusal(
            `workload attestation: systemd: cannot connect to D-Bus at ${this.#address} to look up ${what}: ${(err as Error).message.replace(/^dbus: /, '')}; set workload_attestors.systemd.bus_address to the bus systemd is on`,
            { cause: err },
          );
        }
        const ask = async (what2: string, call: () => Promise<DbusReply>) => {
          try {
            return await call();
          } catch (err) {
            if (!conn.open) this.#conn = undefined;
            throw err instanceof DbusError || signal.aborted
              ? err
              : refusal(
                  `workload attestation: systemd: ${what2} on ${this.#address}: ${(err as Error).message}`,
                  {
                    cause: err,
                  },
                );
          }
        };
        let unit: string;
        try {
          const reply = await ask('GetUnitByPID', () =>
            conn.call(
              {
                destination: SYSTEMD,
                path: '/org/freedesktop/systemd1',
                interface: `${SYSTEMD}.Manager`,
                member: 'GetUnitByPID',
                signature: 'u',
                body: [caller.pid],
              },
              signal,
            ),
          );
          if (reply.signature !== 'o')
            throw refusal(
              `workload attestation: systemd: GetUnitByPID answered with signature ${JSON.stringify(reply.signature)}, not an object path`,
            );
          unit = reply.body[0] as string;
        } catch (err) {
          // Not in any unit systemd manages (a process outside the manager's tree): no selectors.
          if (err instanceof DbusError && err.errorName === `${SYSTEMD}.NoUnitForPID`) return [];
          if (err instanceof DbusError)
            throw refusal(
              `workload attestation: systemd: GetUnitByPID(${caller.pid}) on ${this.#address} failed: ${err.message}${err.errorName === 'org.freedesktop.DBus.Error.ServiceUnknown' ? '; systemd is not on this bus: set workload_attestors.systemd.bus_address' : ''}`,
              { cause: err },
            );
          throw err;
        }
        const property = async (name: string): Promise<string> => {
          let reply: DbusReply;
          try {
            reply = await ask(`reading ${name} of ${unit}`, () =>
              conn.call(
                {
                  destination: SYSTEMD,
                  path: unit,
                  interface: 'org.freedesktop.DBus.Properties',
                  member: 'Get',
                  signature: 'ss',
                  body: [`${SYSTEMD}.Unit`, name],
                },
                signal,
              ),
            );
          } catch (err) {
            if (err instanceof DbusError)
              throw refusal(
                `workload attestation: systemd: reading ${name} of unit ${unit} (${what}) on ${this.#address} failed: ${err.message}`,
                { cause: err },
              );
            throw err;
          }
          const v = reply.body[0];
          if (reply.signature !== 'v' || typeof v !== 'object' || Array.isArray(v) || v.signature !== 's')
            throw refusal(
              `workload attestation: systemd: ${name} of unit ${unit} is not a string (signature ${JSON.stringify(reply.signature)})`,
            );
          return v.value as string;
        };
        const [id, fragmentPath] = [await property('Id'), await property('FragmentPath')];
        if (id === '') throw refusal(`workload attestation: systemd: unit ${unit} (${what}) has an empty Id`);
        const out: Selector[] = [{ type: 'systemd', value: `id:${id}` }];
        // A unit made at run time with no unit file (a scope) has no fragment path: no selector.
        if (fragmentPath !== '') out.push({ type: 'systemd', value: `fragment_path:${fragmentPath}` });
        return out;
      },
    );
  }

  #connection(signal: AbortSignal): Promise<DbusConnection> {
    const current = this.#conn;
    if (current !== undefined) {
      return abortable(
        current.then((c) => {
          if (c.open) return c;
          if (this.#conn === current) this.#conn = undefined;
          return this.#connection(signal);
        }),
        signal,
      );
    }
    // Connecting is not tied to one caller's signal: a slow first caller must not spoil the
    // connection for the next; it is bounded by the attestor's own timeout.
    const next = connectDbus(this.#address, AbortSignal.timeout(this.#timeoutMs));
    this.#conn = next;
    next.catch(() => {
      if (this.#conn === next) this.#conn = undefined;
    });
    return abortable(next, signal);
  }

  /** Closes the D-Bus connection (the agent's shutdown). */
  close(): void {
    const c = this.#conn;
    this.#conn = undefined;
    void c?.then((conn) => conn.close()).catch(() => undefined);
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
