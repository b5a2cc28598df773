// The SPIFFE IDs a workload holds, as a spiffe Workload API client watching its X.509 context
// (FetchX509SVID) sees them, with waits for that set to look some way. The HA bench observes
// tessera's agent and SPIRE's agent through the same watch, so both are timed to the same point.
import { createWorkloadApiClient } from '@tessera/spiffe';

export interface X509IdWatch {
  /** The SPIFFE IDs of the latest X.509 context (empty before the first). */
  ids(): ReadonlySet<string>;
  /**
   * `performance.now()` when `check` first holds for the IDs (now, if it already does), checked on
   * every update; undefined after `timeoutMs`.
   */
  when(check: (ids: ReadonlySet<string>) => boolean, timeoutMs: number): Promise<number | undefined>;
  /** Stream errors after the first context (each followed by a reconnect). */
  readonly errors: readonly string[];
  /** Ends the watch and closes the client; idempotent. */
  close(): Promise<void>;
}

/** Watches the X.509 context on the Workload API at `socket` (a Unix socket path), reconnecting every 50–250 ms until it answers. */
export function watchX509Ids(socket: string): X509IdWatch {
  let ids: ReadonlySet<string> = new Set<string>();
  const waiters = new Set<() => void>();
  const errors: string[] = [];
  const client = createWorkloadApiClient({
    address: `unix://${socket}`,
    backoff: { initialMs: 50, maxMs: 250 },
  });
  const controller = new AbortController();
  const watching = client
    .watchX509Context(
      {
        onUpdate: (ctx) => {
          ids = new Set(ctx.svids.map((s) => s.id.toString()));
          for (const w of [...waiters]) w();
        },
        onError: (err) => {
          if (ids.size > 0) errors.push(err.message);
        },
      },
      controller.signal,
    )
    .catch(() => undefined);
  let closed: Promise<void> | undefined;
  return {
    ids: () => ids,
    when: (check, timeoutMs) =>
      new Promise((resolve) => {
        if (check(ids)) return resolve(performance.now());
        const timer = setTimeout(() => {
          waiters.delete(w);
          resolve(undefined);
        }, timeoutMs);
        const w = () => {
          if (!check(ids)) return;
          clearTimeout(timer);
          waiters.delete(w);
          resolve(performance.now());
        };
        waiters.add(w);
      }),
    errors,
    close: () => {
      closed ??= (async () => {
        controller.abort();
        await watching;
        client.close();
      })();
      return closed;
    },
  };
}
