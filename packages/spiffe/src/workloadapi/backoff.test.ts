import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from './backoff.js';

describe('Backoff', () => {
  it('grows exponentially to the ceiling, takes off at most the jitter fraction, and resets', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.5, random: () => 0 });
    assert.deepEqual(
      [b.next(), b.next(), b.next(), b.next(), b.next(), b.next()],
      [100, 200, 400, 800, 1000, 1000],
    );
    b.reset();
    assert.equal(b.next(), 100);
    const j = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0.5, random: () => 0.999 });
    const d = j.next();
    assert.ok(d >= 50 && d < 100, `jittered delay ${d}`);
    assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  });

  it("with jitter: 'full', each delay is anywhere in [0, the step's ceiling), the ceiling growing to maxMs", () => {
    const draws = [0, 0.999_999, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0];
    const b = new Backoff({
      initialMs: 1000,
      maxMs: 30_000,
      jitter: 'full',
      random: () => draws.shift() ?? assert.fail('more draws than expected'),
    });
    // Ceilings 1 s, 2 s, 4 s, 8 s, 16 s, then 30 s for good; each delay is random × its ceiling.
    assert.deepEqual(
      [b.next(), b.next(), b.next(), b.next(), b.next(), b.next(), b.next(), b.next()],
      [0, 1999, 2000, 4000, 8000, 15_000, 15_000, 15_000],
    );
    b.reset();
    assert.equal(b.next(), 0, 'random() = 0 retries at once');
    const top = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 'full', random: () => 0.999_999_9 });
    assert.ok(top.next() < 1000, 'never the ceiling itself');
  });
});
