import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ServerRotation } from './server-rotation.js';

/** Randomness that plays back `draws`, then fails the test if asked for more. */
function draws(...values: number[]): () => number {
  return () => values.shift() ?? assert.fail('asked for more random numbers than the test expected');
}

describe('ServerRotation', () => {
  it('starts at a random server, so a fleet spreads over them', () => {
    const list = ['a:1', 'b:1', 'c:1'];
    assert.equal(new ServerRotation(list, draws(0)).current, 'a:1');
    assert.equal(new ServerRotation(list, draws(0.4)).current, 'b:1');
    assert.equal(new ServerRotation(list, draws(0.999_999)).current, 'c:1');
  });

  it('moves to the next server within a round after under 1 s; a whole failed round backs off, doubling to 30 s', () => {
    // Start at b; then every wait draws 0.5 (half of its ceiling).
    const r = new ServerRotation(['a:1', 'b:1', 'c:1'], draws(0.4, ...Array(20).fill(0.5)));
    const step = () => {
      const n = r.failed();
      return `${n.address} ${n.delayMs}${n.roundOver ? ' round over' : ''}`;
    };
    assert.deepEqual(Array.from({ length: 12 }, step), [
      'c:1 500', // b failed: the next one, quickly
      'a:1 500',
      'b:1 500 round over', // a, b and c all failed: back off (ceiling 1 s)
      'c:1 500',
      'a:1 500',
      'b:1 1000 round over', // ceiling 2 s
      'c:1 500',
      'a:1 500',
      'b:1 2000 round over', // 4 s
      'c:1 500',
      'a:1 500',
      'b:1 4000 round over', // 8 s
    ]);
    r.succeeded();
    assert.deepEqual([step(), step(), step()], ['c:1 500', 'a:1 500', 'b:1 500 round over']);
  });

  it('caps the back-off at 30 s, and with one server every failure is a round', () => {
    const r = new ServerRotation(['only:1'], draws(0, ...Array(8).fill(0.999_999)));
    const delays = Array.from({ length: 7 }, () => r.failed()).map((n) => {
      assert.equal(n.address, 'only:1');
      assert.equal(n.roundOver, true);
      return n.delayMs;
    });
    // Full jitter under ceilings of 1, 2, 4, 8, 16, 30, 30 s: each just under its ceiling.
    assert.deepEqual(delays, [999, 1999, 3999, 7999, 15_999, 29_999, 29_999]);
    const zero = new ServerRotation(['only:1'], draws(0, 0));
    assert.equal(zero.failed().delayMs, 0, 'full jitter: the first retry may be at once');
  });

  it('takes a new list (DNS again), keeping the current server if it is still there', () => {
    const r = new ServerRotation(['a:1', 'b:1'], draws(0.6));
    assert.equal(r.current, 'b:1');
    r.replace(['x:1', 'b:1', 'y:1']);
    assert.equal(r.current, 'b:1');
    assert.deepEqual(r.addresses, ['x:1', 'b:1', 'y:1']);
    r.replace(['p:1', 'q:1']);
    assert.equal(r.current, 'q:1', 'the same position when the current one is gone');
    r.replace([]);
    assert.deepEqual(r.addresses, ['p:1', 'q:1'], 'an empty answer changes nothing');
    assert.throws(() => new ServerRotation([]), TypeError);
  });
});
