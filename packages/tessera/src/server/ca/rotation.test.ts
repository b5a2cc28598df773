import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeClock } from '@tessera/testkit';
import { activateAt, maxSvidTtlForCaTtl, prepareAt, rotationStep } from './rotation.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;

describe('rotation schedule', () => {
  it('a 24 h CA: prepare at 12 h, activate at 20 h', () => {
    const issuedAt = new Date('2026-01-01T00:00:00Z');
    const w = { issuedAt, notAfter: new Date(issuedAt.getTime() + DAY) };
    assert.equal(prepareAt(w).toISOString(), '2026-01-01T12:00:00.000Z');
    assert.equal(activateAt(w).toISOString(), '2026-01-01T20:00:00.000Z');
  });

  it('a one-year CA: the thresholds are capped at 30 and 7 days before expiry', () => {
    const issuedAt = new Date('2026-01-01T00:00:00Z');
    const notAfter = new Date(issuedAt.getTime() + 365 * DAY);
    assert.equal(notAfter.getTime() - prepareAt({ issuedAt, notAfter }).getTime(), 30 * DAY);
    assert.equal(notAfter.getTime() - activateAt({ issuedAt, notAfter }).getTime(), 7 * DAY);
  });

  it('walks none → prepare → none → activate as the clock moves, with the next key published before it signs', () => {
    const clock = new FakeClock(new Date('2026-01-01T00:00:00Z'));
    const w = { issuedAt: clock.now(), notAfter: new Date(clock.now().getTime() + DAY) };
    const steps: string[] = [];
    let prepared = false;
    let preparedAt: Date | undefined;
    let activatedAt: Date | undefined;
    for (let t = 0; t <= 24 * 60; t += 10) {
      clock.set(new Date(w.issuedAt.getTime() + t * 60_000));
      const step = rotationStep(w, prepared, clock.now());
      if (step !== 'none') steps.push(step);
      if (step === 'prepare') {
        prepared = true;
        preparedAt = clock.now();
      }
      if (step === 'activate' && activatedAt === undefined) activatedAt = clock.now();
    }
    assert.equal(steps[0], 'prepare');
    assert.ok(steps.slice(1).every((s) => s === 'activate'));
    assert.ok(preparedAt !== undefined && activatedAt !== undefined);
    // The next key is in bundles for 8 h (12 h → 20 h) before it signs anything...
    assert.ok(activatedAt.getTime() - preparedAt.getTime() >= 7.9 * HOUR);
    // ...and SVIDs signed just before activation (TTL at most 24h/6 = 4 h) expire when the old CA does.
    assert.equal(maxSvidTtlForCaTtl(DAY), 4 * HOUR);
    assert.ok(activatedAt.getTime() + maxSvidTtlForCaTtl(DAY) <= w.notAfter.getTime() + 10 * 60_000);
  });
});
