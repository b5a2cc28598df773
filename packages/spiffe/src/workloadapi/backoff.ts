/**
 * Exponential back-off with jitter for reconnecting watches: the n-th delay is
 * min(max, initial * multiplier^n), of which a random `jitter` fraction is taken off, so a fleet of
 * clients that lost the agent together does not come back in lockstep. With `jitter: 'full'` the
 * whole delay is random, anywhere in [0, min(max, initial * multiplier^n)) ("full jitter"), which
 * spreads a fleet the most. Reset after any success.
 */
export interface BackoffOptions {
  /** First delay; default 1000 ms. */
  initialMs?: number;
  /** Ceiling; default 30000 ms. */
  maxMs?: number;
  /** Growth factor; default 2. */
  multiplier?: number;
  /** Fraction of each delay that is randomised, 0..1, or 'full' (anywhere from 0); default 0.2. */
  jitter?: number | 'full';
  /** Source of randomness in [0, 1); default Math.random. */
  random?: () => number;
}

export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #multiplier: number;
  readonly #jitter: number | 'full';
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.#initial = options.initialMs ?? 1000;
    this.#max = options.maxMs ?? 30_000;
    this.#multiplier = options.multiplier ?? 2;
    const jitter = options.jitter ?? 0.2;
    this.#jitter = jitter === 'full' ? 'full' : Math.min(1, Math.max(0, jitter));
    this.#random = options.random ?? Math.random;
    if (!(this.#initial > 0) || !(this.#max >= this.#initial) || !(this.#multiplier >= 1)) {
      throw new RangeError(
        'workloadapi: backoff needs initialMs > 0, maxMs >= initialMs and multiplier >= 1',
      );
    }
  }

  /** The next delay in milliseconds. */
  next(): number {
    const base = Math.min(this.#max, this.#initial * this.#multiplier ** this.#attempt);
    if (base < this.#max) this.#attempt++;
    if (this.#jitter === 'full') return Math.floor(base * this.#random());
    return Math.round(base * (1 - this.#jitter * this.#random()));
  }

  reset(): void {
    this.#attempt = 0;
  }
}
