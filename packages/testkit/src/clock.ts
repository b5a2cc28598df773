/** A clock that moves only when told to, for expiry and rotation tests. */
export class FakeClock {
  #now: number;

  constructor(start: Date = new Date()) {
    this.#now = start.getTime();
  }

  now(): Date {
    return new Date(this.#now);
  }

  /** Moves the clock forward by `ms` milliseconds and returns the new time. */
  advance(ms: number): Date {
    this.#now += ms;
    return this.now();
  }

  set(time: Date): void {
    this.#now = time.getTime();
  }
}
