import type { SpiffeBundle } from '../bundle/spiffe-bundle.js';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import type { TrustDomain } from '../spiffeid/trust-domain.js';
import {
  type BundleEndpointClientOptions,
  type BundleEndpointProfileOptions,
  checkFetchArguments,
  type FetchBundleOptions,
  fetchBundle,
} from './fetch-bundle.js';

/** Receives what a bundle watch sees. Called synchronously from the watch loop: keep it short. */
export interface BundleWatcher {
  /** A fetched bundle that differs from the previous one (the first fetch always counts). */
  onUpdate(bundle: SpiffeBundle): void;
  /** A failed fetch (ERR_FEDERATION_FETCH); the watch retries with back-off. */
  onError(err: SpiffeError): void;
}

/** Waits `delayMs`, or less when `signal` aborts. Injected by tests to drive the loop. */
export type Schedule = (delayMs: number, signal: AbortSignal) => Promise<void>;

export interface WatchBundleTimingOptions {
  /** Delay when the bundle has no refresh hint, in ms; default 5 minutes (spec §7.3). */
  defaultRefreshInterval?: number;
  /** Floor for the delay between fetches, in ms, whatever the hint says; default 1 minute. */
  minRefreshInterval?: number;
  /** Ceiling for the delay between fetches, in ms; default 24 hours. */
  maxRefreshInterval?: number;
  /** First retry delay after a failure, in ms, doubled on each further failure up to the refresh interval; default 5 s. */
  retryInterval?: number;
  /** How to wait between fetches; default a timer. */
  schedule?: Schedule;
}

export type WatchBundleOptions = BundleEndpointProfileOptions &
  BundleEndpointClientOptions &
  WatchBundleTimingOptions;

export const DEFAULT_REFRESH_INTERVAL_MS = 5 * 60_000;
export const MIN_REFRESH_INTERVAL_MS = 60_000;
export const MAX_REFRESH_INTERVAL_MS = 24 * 3600_000;
export const DEFAULT_RETRY_INTERVAL_MS = 5_000;
// setTimeout fires at once for delays above this.
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Keeps the bundle of `trustDomain` from the endpoint at `url` current (spec §7.3): fetches it,
 * reports a changed bundle to `watcher.onUpdate`, and fetches again after the bundle's refresh
 * hint (clamped to [minRefreshInterval, maxRefreshInterval]; defaultRefreshInterval without a
 * hint). A failed fetch goes to `watcher.onError` and is retried after retryInterval, doubling up
 * to the refresh interval. The configured URL is used on every fetch.
 *
 * With `https_spiffe` and an endpoint in the trust domain being fetched (self-serving, as SPIRE
 * servers are), trust rolls forward: `bundleSource` is only the bootstrap bundle, and each fetch
 * after a successful one verifies the endpoint against the latest fetched bundle, so the foreign
 * trust domain can rotate its roots. For an endpoint of another trust domain, `bundleSource` is
 * used on every fetch (keep it current).
 *
 * Resolves when `signal` aborts; rejects only if a watcher callback throws, or synchronously
 * invalid arguments (TypeError, or ERR_FEDERATION_FETCH for a bad URL).
 */
export async function watchBundle(
  trustDomain: TrustDomain,
  url: string | URL,
  options: WatchBundleOptions,
  watcher: BundleWatcher,
  signal: AbortSignal,
): Promise<void> {
  checkFetchArguments(trustDomain, url, options);
  if (typeof watcher?.onUpdate !== 'function' || typeof watcher.onError !== 'function') {
    throw new TypeError('federation: watcher must have onUpdate and onError functions');
  }
  if (!(signal instanceof AbortSignal)) {
    throw new TypeError('federation: watchBundle needs an AbortSignal to stop it');
  }
  const timing = checkTiming(options);
  const selfServing =
    options.profile === 'https_spiffe' && options.endpointId.trustDomain.equals(trustDomain);

  let latest: SpiffeBundle | undefined;
  let failures = 0;
  while (!signal.aborted) {
    const fetchOptions: FetchBundleOptions =
      selfServing && latest !== undefined && options.profile === 'https_spiffe'
        ? { ...options, bundleSource: latest, signal }
        : { ...options, signal };
    let delay: number;
    try {
      const bundle = await fetchBundle(trustDomain, url, fetchOptions);
      failures = 0;
      if (!bundle.equals(latest)) {
        latest = bundle;
        watcher.onUpdate(bundle);
      }
      delay = refreshDelay(bundle.refreshHint, timing);
    } catch (err) {
      if (signal.aborted) return;
      if (!isFetchError(err)) throw err;
      failures++;
      watcher.onError(err);
      delay = Math.min(
        timing.retryInterval * 2 ** Math.min(failures - 1, 30),
        refreshDelay(latest?.refreshHint, timing),
      );
    }
    if (signal.aborted) return;
    try {
      await timing.schedule(delay, signal);
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    }
  }
}

function isFetchError(err: unknown): err is SpiffeError {
  return isSpiffeError(err, ErrorCode.FEDERATION_FETCH);
}

interface Timing {
  defaultRefreshInterval: number;
  minRefreshInterval: number;
  maxRefreshInterval: number;
  retryInterval: number;
  schedule: Schedule;
}

function checkTiming(options: WatchBundleTimingOptions): Timing {
  const ms = (value: number | undefined, fallback: number, name: string, allowZero: boolean) => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
      throw new TypeError(
        `federation: ${name} must be a ${allowZero ? 'non-negative' : 'positive'} number of ms`,
      );
    }
    return value;
  };
  const timing: Timing = {
    defaultRefreshInterval: ms(
      options.defaultRefreshInterval,
      DEFAULT_REFRESH_INTERVAL_MS,
      'defaultRefreshInterval',
      false,
    ),
    minRefreshInterval: ms(options.minRefreshInterval, MIN_REFRESH_INTERVAL_MS, 'minRefreshInterval', true),
    maxRefreshInterval: ms(options.maxRefreshInterval, MAX_REFRESH_INTERVAL_MS, 'maxRefreshInterval', false),
    retryInterval: ms(options.retryInterval, DEFAULT_RETRY_INTERVAL_MS, 'retryInterval', false),
    schedule: options.schedule ?? sleep,
  };
  if (typeof timing.schedule !== 'function') throw new TypeError('federation: schedule must be a function');
  if (timing.minRefreshInterval > timing.maxRefreshInterval) {
    throw new TypeError('federation: minRefreshInterval must not exceed maxRefreshInterval');
  }
  return timing;
}

/** The delay before the next fetch for a bundle with `hint` (seconds, or none). */
function refreshDelay(hint: number | undefined, t: Timing): number {
  const wanted = hint === undefined ? t.defaultRefreshInterval : hint * 1000;
  return Math.min(Math.max(wanted, t.minRefreshInterval), t.maxRefreshInterval);
}

function sleep(delayMs: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.min(delayMs, MAX_TIMER_MS));
    signal.addEventListener('abort', done, { once: true });
  });
}
