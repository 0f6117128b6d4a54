import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cumulative } from '../../src/collectors/cumulative.js';

test('growth since the last read; a recreated entry counts whole; a final read forgets', () => {
  const c = new Cumulative();
  assert.deepEqual(c.delta('a', [5, 10]), [5, 10]);
  assert.deepEqual(c.delta('a', [5, 12]), [0, 2]);
  assert.deepEqual(c.delta('a', [1, 12]), [1, 0]); // the kernel made the entry again
  assert.deepEqual(c.delta('b', [3]), [3]);
  assert.equal(c.size, 2);
  assert.deepEqual(c.delta('a', [4, 20], true), [3, 8]);
  assert.equal(c.size, 1);
  assert.deepEqual(c.delta('a', [4, 20]), [4, 20]); // forgotten: a new process's entry
});

test('keys whose kernel entries are gone are forgotten', () => {
  const c = new Cumulative();
  c.delta('a', [1]);
  c.delta('b', [2]);
  c.prune(new Set(['b']));
  assert.equal(c.size, 1);
  assert.deepEqual(c.delta('a', [1]), [1]);
});

test('a count and signed sums: the count tells a recreated entry, a sum may fall', () => {
  const c = new Cumulative();
  assert.deepEqual(c.deltaCounted('k', [2, -10]), [2, -10]);
  assert.deepEqual(c.deltaCounted('k', [3, -25]), [1, -15]); // one more value, of -15
  assert.deepEqual(c.deltaCounted('k', [3, -25]), [0, 0]);
  assert.deepEqual(c.deltaCounted('k', [1, 7]), [1, 7]); // the entry was made again
  assert.deepEqual(c.deltaCounted('k', [2, 9], true), [1, 2]);
  assert.equal(c.size, 0);
});
