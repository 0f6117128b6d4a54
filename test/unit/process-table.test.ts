// The process table's bound: past it the oldest entry is forgotten, and
// each one forgotten is counted, exactly; exited processes past their grace
// go at a sweep without counting as lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProcessTable } from '../../src/process/table.js';
import type { ProcEvent } from '../../src/collectors/process/decode.js';

const fork = (pid: number, ppid: number): ProcEvent => ({ kind: 'fork', tsNs: 0, cgroupId: 0n, pid, ppid, uid: 0, exitCode: 0, comm: 'x', killed: false });
const exit = (pid: number): ProcEvent => ({ ...fork(pid, 1), kind: 'exit' });

test('a full table forgets its oldest entry and counts each one', () => {
  let told = 0;
  const t = new ProcessTable(100, 60_000, () => told++);
  for (let pid = 1000; pid < 1250; pid++) t.apply(fork(pid, 1));
  assert.equal(t.size, 100);
  assert.equal(t.lost, 150);
  assert.equal(told, 150);
  // The newest stay, with their parents where those are still held.
  assert.equal(t.get(1149), undefined);
  assert.equal(t.get(1150)?.pid, 1150);
  assert.equal(t.get(1249)?.pid, 1249);
  // A process already held is updated in place: nothing forgotten.
  t.apply(fork(1249, 1248));
  assert.equal(t.lost, 150);
});

test('exited processes past their grace are swept, not lost', () => {
  let told = 0;
  const t = new ProcessTable(10, 0, () => told++);
  for (let pid = 1; pid <= 10; pid++) t.apply(fork(pid, 1));
  for (let pid = 1; pid <= 5; pid++) t.apply(exit(pid));
  const until = Date.now() + 5;
  while (Date.now() <= until); // past a grace of 0 ms
  t.sweep();
  assert.equal(t.size, 5);
  for (let pid = 11; pid <= 15; pid++) t.apply(fork(pid, 1));
  assert.equal(t.size, 10);
  assert.equal(told, 0);
  t.apply(fork(16, 1));
  assert.equal(told, 1);
  assert.equal(t.get(6), undefined);
});
