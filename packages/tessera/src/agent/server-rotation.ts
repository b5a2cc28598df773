// Which server the agent talks to, and how long it waits before the next one: an ordered list
// entered at a random position (so a fleet spreads over the servers), moved along on each failure.
// Moving to the next server is quick (full jitter under 1 s, so the agents of a server that died
// do not all land on the next one at once); only a whole round of failures — every server, one
// after the other — backs off, exponentially with full jitter, up to 30 s.
import { Backoff } from '@tessera/spiffe';

/** The ceiling of the wait before trying the next server within a round. */
export const HOP_MS = 1000;
/** The first ceiling of the wait after a whole round failed; it doubles per round … */
export const ROUND_INITIAL_MS = 1000;
/** … up to this. */
export const ROUND_MAX_MS = 30_000;

/** The next server to try and how long to wait first. */
export interface NextServer {
  readonly address: string;
  readonly delayMs: number;
  /** Every server has failed since the last success: time to look the names up again. */
  readonly roundOver: boolean;
}

export class ServerRotation {
  #addresses: readonly string[];
  #index: number;
  /** Servers that failed one after the other since the last success or the end of a round. */
  #failures = 0;
  readonly #hop: Backoff;
  readonly #round: Backoff;

  constructor(addresses: readonly string[], random: () => number = Math.random) {
    if (addresses.length === 0) throw new TypeError('agent: ServerRotation needs at least one address');
    this.#addresses = [...addresses];
    this.#index = Math.min(addresses.length - 1, Math.floor(random() * addresses.length));
    this.#hop = new Backoff({ initialMs: HOP_MS, maxMs: HOP_MS, jitter: 'full', random });
    this.#round = new Backoff({
      initialMs: ROUND_INITIAL_MS,
      maxMs: ROUND_MAX_MS,
      jitter: 'full',
      random,
    });
  }

  /** The server to talk to now. */
  get current(): string {
    return this.#addresses[this.#index] as string;
  }

  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /** The current server failed: move to the next one, after a hop's wait or, if a round is over, the back-off's. */
  failed(): NextServer {
    this.#failures++;
    const roundOver = this.#failures >= this.#addresses.length;
    if (roundOver) this.#failures = 0;
    this.#index = (this.#index + 1) % this.#addresses.length;
    return { address: this.current, delayMs: roundOver ? this.#round.next() : this.#hop.next(), roundOver };
  }

  /** The current server answered: the next failure starts a new round, and the back-off starts again. */
  succeeded(): void {
    this.#failures = 0;
    this.#round.reset();
  }

  /**
   * A new list (names looked up again). The current server stays current if it is still listed;
   * otherwise the one at the same position is (an empty list changes nothing).
   */
  replace(addresses: readonly string[]): void {
    if (addresses.length === 0) return;
    if (addresses.length === this.#addresses.length && addresses.every((a, i) => a === this.#addresses[i]))
      return;
    const at = addresses.indexOf(this.current);
    this.#addresses = [...addresses];
    this.#index = at >= 0 ? at : this.#index % addresses.length;
    this.#failures = 0;
  }
}
