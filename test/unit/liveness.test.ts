import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Liveness } from '../../src/process/liveness.js';

test('each process is asked of /proc once per round; those gone are forgotten when the round ends', () => {
  const asked: number[] = [];
  const living = new Set([1, 7]);
  const l = new Liveness((t) => (asked.push(t), living.has(t)));
  const gone: number[] = [];
  l.whenGone((t) => gone.push(t));
  assert.equal(l.alive(7), true);
  assert.equal(l.alive(9), false);
  assert.equal(l.alive(7), true); // a second collector, the same round
  assert.equal(l.alive(0), true); // the kernel's own context, never asked
  assert.deepEqual(asked, [7, 9]);
  assert.deepEqual(gone, []); // not before every collector has read its last
  l.endRound();
  assert.deepEqual(gone, [9]);
  living.delete(7);
  assert.equal(l.alive(7), false); // asked afresh in the next round
  l.endRound();
  assert.deepEqual(gone, [9, 7]);
  l.endRound();
  assert.deepEqual(gone, [9, 7]);
});
