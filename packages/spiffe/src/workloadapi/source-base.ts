import { EventEmitter } from 'node:events';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { createWorkloadApiClient, type WorkloadApiClient, type WorkloadApiClientOptions } from './client.js';

export interface SourceOptions extends WorkloadApiClientOptions {
  /** Use this client instead of creating one (the source then does not close it). */
  client?: WorkloadApiClient;
  /** Stops the source like close(), whenever it fires (for the lifetime of the source). */
  signal?: AbortSignal;
  /**
   * create() gives up (and closes the source) if the first complete update has not arrived within
   * this many milliseconds, with ERR_SOURCE_TIMEOUT whose message ends with the last reason heard
   * (e.g. no identity issued to this process). Once ready, the source stays open until close().
   * Default: wait as long as it takes.
   */
  readyTimeoutMs?: number;
  /**
   * Where the source's client says why no update arrives (warn, once per distinct reason) and
   * when updates resume. Without a logger (and without `client`), a source still waiting for its
   * first update says why as a process warning (`SpiffeWarning`, once per distinct reason; see
   * `process.on('warning')`), so a process without an identity never waits silently.
   */
  logger?: Logger;
}

/**
 * What every live source shares: one client, watches running until close(), a `ready()` promise
 * that resolves after the first complete update, an 'update' event after each one, and
 * ERR_SOURCE_CLOSED after close(). Errors the watches recover from are emitted as 'watchError'
 * (never 'error', which would throw without a listener) and kept in `lastError`.
 */
export abstract class LiveSource extends EventEmitter {
  protected readonly client: WorkloadApiClient;
  readonly #ownsClient: boolean;
  readonly #stop = new AbortController();
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  #isReady = false;
  #closed = false;
  #lastError: SpiffeError | undefined;
  readonly #watches: Promise<void>[] = [];
  /** Whether nobody logs for this source, so waiting is said by process warnings; the last one said. */
  readonly #warnByProcess: boolean;
  #lastWarning: string | undefined;
  protected readonly name: string;
  /** What the first complete update brings, for messages: 'an X509-SVID', 'JWT bundles'. */
  readonly #awaits: string;

  protected constructor(name: string, awaits: string, options: SourceOptions) {
    super();
    this.name = name;
    this.#awaits = awaits;
    this.client = options.client ?? createWorkloadApiClient(options);
    this.#ownsClient = options.client === undefined;
    this.#warnByProcess = options.logger === undefined && options.client === undefined;
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // ready() may never be awaited; an unobserved rejection must not crash the process.
    this.#ready.catch(() => {});
    if (options.signal !== undefined) {
      if (options.signal.aborted) queueMicrotask(() => void this.close());
      else options.signal.addEventListener('abort', () => void this.close(), { once: true });
    }
  }

  /** Waits for `source` to be ready; on failure closes it and rethrows. The sources' create() functions. */
  protected static async whenReady<S extends LiveSource>(source: S, timeoutMs?: number): Promise<S> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await (timeoutMs === undefined
        ? source.ready()
        : Promise.race([
            source.ready(),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(source.#timedOut(timeoutMs)), timeoutMs);
            }),
          ]));
    } catch (err) {
      await source.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return source;
  }

  #timedOut(timeoutMs: number): SpiffeError {
    const last = this.#lastError;
    const why =
      last?.message ??
      `the Workload API at ${this.client.address.uri} has not answered yet (an agent still syncing with its server answers late)`;
    return new SpiffeError(
      ErrorCode.SOURCE_TIMEOUT,
      `${this.name}: gave up waiting for ${this.#awaits} after ${timeoutMs} ms (readyTimeoutMs): ${why}`,
      last === undefined ? undefined : { cause: last },
    );
  }

  /** Resolves after the first complete update; rejects if the source closes first or a watch fails for good. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** The last error a watch reported (cleared by the next update), for health checks. */
  get lastError(): SpiffeError | undefined {
    return this.#lastError;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops the watches and, if the source created it, the client. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop.abort();
    if (!this.#isReady) {
      this.#rejectReady(
        new SpiffeError(ErrorCode.SOURCE_CLOSED, `${this.name}: closed before the first update arrived`),
      );
    }
    if (this.#ownsClient) this.client.close();
    await Promise.allSettled(this.#watches);
  }

  protected get stopSignal(): AbortSignal {
    return this.#stop.signal;
  }

  protected assertOpen(): void {
    if (this.#closed) throw new SpiffeError(ErrorCode.SOURCE_CLOSED, `${this.name}: source is closed`);
  }

  /** Runs a watch for the lifetime of the source; a terminal failure rejects ready() and is reported. */
  protected run(watch: Promise<void>): void {
    this.#watches.push(
      watch.catch((err: unknown) => {
        const e =
          err instanceof SpiffeError
            ? err
            : new SpiffeError(ErrorCode.WORKLOADAPI_RESPONSE, `${this.name}: ${String(err)}`, { cause: err });
        this.#lastError = e;
        if (!this.#isReady) this.#rejectReady(e);
        this.emit('watchError', e);
      }),
    );
  }

  protected recordError(err: SpiffeError): void {
    this.#lastError = err;
    if (this.#warnByProcess && !this.#isReady && !this.#closed && err.message !== this.#lastWarning) {
      this.#lastWarning = err.message;
      process.emitWarning(`${this.name}: waiting for ${this.#awaits}: ${err.message}`, {
        type: 'SpiffeWarning',
        code: err.code,
      });
    }
    this.emit('watchError', err);
  }

  /** Call after each update; `complete` says whether every watch has delivered at least once. */
  protected updated(complete: boolean): void {
    this.#lastError = undefined;
    if (!complete) return;
    if (!this.#isReady) {
      this.#isReady = true;
      this.#resolveReady();
    }
    this.emit('update');
  }
}
