/**
 * When to rotate, as pure functions of the time and a key's validity window (SPIRE's schedule,
 * so operators' expectations carry over):
 * - prepare the next key (and publish it in the bundle) once less than min(lifetime/2, 30 days)
 *   of the current key's life remains;
 * - activate it (start signing with it) once less than min(lifetime/6, 7 days) remains.
 * Between the two, every agent and workload receives the next key in its bundle before anything
 * is signed with it; SVIDs signed before activation live at most lifetime/6, so the old key can
 * leave the bundle when it expires without breaking any of them.
 */

const DAY = 86_400_000;
const PREPARE_DIVISOR = 2;
const PREPARE_CAP = 30 * DAY;
const ACTIVATE_DIVISOR = 6;
const ACTIVATE_CAP = 7 * DAY;

export interface KeyWindow {
  /** When the key was issued (its NotBefore, or creation time for a JWT key). */
  issuedAt: Date;
  notAfter: Date;
}

function threshold(w: KeyWindow, divisor: number, cap: number): number {
  const lifetime = w.notAfter.getTime() - w.issuedAt.getTime();
  return w.notAfter.getTime() - Math.min(lifetime / divisor, cap);
}

/** The moment the next key should be prepared and published. */
export function prepareAt(current: KeyWindow): Date {
  return new Date(threshold(current, PREPARE_DIVISOR, PREPARE_CAP));
}

/** The moment the prepared key should start signing. */
export function activateAt(current: KeyWindow): Date {
  return new Date(threshold(current, ACTIVATE_DIVISOR, ACTIVATE_CAP));
}

export function shouldPrepareNext(current: KeyWindow, now: Date): boolean {
  return now.getTime() > prepareAt(current).getTime();
}

export function shouldActivateNext(current: KeyWindow, now: Date): boolean {
  return now.getTime() > activateAt(current).getTime();
}

/**
 * The longest SVID TTL that a CA TTL supports without SVIDs being cut short by rotation:
 * min(caTtl/6, 7 days). A longer configured TTL is still capped at the CA's expiry when issuing.
 */
export function maxSvidTtlForCaTtl(caTtlMs: number): number {
  return Math.min(caTtlMs / ACTIVATE_DIVISOR, ACTIVATE_CAP);
}

/** What the rotation loop should do now, given the current key and whether a next one is prepared. */
export type RotationStep = 'none' | 'prepare' | 'activate';

export function rotationStep(current: KeyWindow, nextPrepared: boolean, now: Date): RotationStep {
  if (!nextPrepared) return shouldPrepareNext(current, now) ? 'prepare' : 'none';
  return shouldActivateNext(current, now) ? 'activate' : 'none';
}
