// The flight recorder's journal without root: records written by the
// Journal read back exactly; a torn tail, flipped bytes and garbage are
// skipped and counted; the size cap holds; one agent per journal; the
// per-second budget counts what it keeps out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Journal, JournalBusy, bootId, listSegments, frame } from '../../src/recorder/journal.js';
import { parseSegment, readJournal } from '../../src/recorder/read.js';
import { Recorder } from '../../src/recorder/recorder.js';
import { timeline, formatTimeline, readPstore } from '../../src/recorder/show.js';
import { MetricsRegistry } from '../../src/metrics/registry.js';
import { parseMetrics, sum, tmpDir } from '../helpers.js';

function journal(dir: string, o: Partial<ConstructorParameters<typeof Journal>[0]> = {}): Journal {
  const j = new Journal({ dir, maxBytes: 1 << 20, segmentBytes: 64 << 10, boot: 'boot-a', ...o });
  j.open();
  return j;
}

function write(j: Journal, n: number, from = 0): void {
  for (let i = from; i < from + n; i++) assert.equal(j.append({ t: 1_000_000 + i, k: 'exec', i, args: 'x'.repeat(i % 50) }), true);
}

test('records come back in order, with their boot, across segments', () => {
  const dir = tmpDir('ks-journal');
  const j = journal(dir, { segmentBytes: 4096 });
  for (let i = 0; i < 500; i += 50) {
    write(j, 50, i);
    j.flush(true);
  }
  j.close();
  const c = readJournal(dir);
  assert.ok(c.segments.length > 3, `${c.segments.length} segments`);
  assert.deepEqual(c.records.map((r) => r.i), Array.from({ length: 500 }, (_, i) => i));
  assert.ok(c.records.every((r) => r.boot === 'boot-a'));
  assert.deepEqual(c.segments.map((s) => [s.corrupt, s.torn]), c.segments.map(() => [0, false]));
  fs.rmSync(dir, { recursive: true });
});

test('a new agent starts a new segment; a boot is told by its segments', () => {
  const dir = tmpDir('ks-journal');
  const a = journal(dir, { boot: 'boot-a' });
  write(a, 3);
  a.close();
  const b = journal(dir, { boot: 'boot-b' });
  write(b, 2, 100);
  b.close();
  const c = readJournal(dir);
  assert.equal(c.segments.length, 2);
  assert.deepEqual(c.records.map((r) => `${r.boot}:${r.i}`), ['boot-a:0', 'boot-a:1', 'boot-a:2', 'boot-b:100', 'boot-b:101']);
  fs.rmSync(dir, { recursive: true });
});

test('a torn last record and flipped bytes are skipped and counted; the rest is read', () => {
  const dir = tmpDir('ks-journal');
  const j = journal(dir);
  write(j, 20);
  j.flush(true);
  j.close();
  const [seg] = listSegments(dir);
  const buf = fs.readFileSync(seg!.file);
  // Records' offsets, from the frames themselves.
  const offs: number[] = [];
  for (let off = 0; off < buf.length; off += 12 + buf.readUInt32LE(off + 4)) offs.push(off);
  assert.equal(offs.length, 21); // the segment header and 20 records
  // Flip a byte inside record 5's payload (index 6: the header is 0).
  buf[offs[6]! + 20]! ^= 0x40;
  // Cut the last record in the middle.
  const cut = buf.subarray(0, offs[20]! + 15);
  fs.writeFileSync(seg!.file, cut);
  const c = readJournal(dir);
  assert.deepEqual(c.records.map((r) => r.i), [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
  assert.equal(c.segments[0]!.corrupt, 1);
  assert.equal(c.segments[0]!.torn, true);
  assert.equal(c.segments[0]!.skippedBytes, offs[7]! - offs[6]!);
  fs.rmSync(dir, { recursive: true });
});

test('garbage between records and a corrupt length are skipped to the next record', () => {
  const rec = (i: number): Buffer => frame(Buffer.from(JSON.stringify({ t: i, k: 'x', i })));
  const bad = Buffer.from(rec(2));
  bad.writeUInt32LE(0x7fffffff, 4); // a length no record has
  const seg = Buffer.concat([rec(1), Buffer.from('not a record at all'), rec(3), bad, rec(4), Buffer.alloc(64)]);
  const p = parseSegment(seg);
  assert.deepEqual(p.records.map((r) => r.i), [1, 3, 4]);
  assert.equal(p.corrupt, 2);
  assert.equal(p.torn, false); // zeros after the end: preallocated, not torn
});

test('hostile bytes never throw and never make a record that was not written', () => {
  // A fixed-seed generator: the same cases each run.
  let seed = 0x2545f491;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const good = Array.from({ length: 8 }, (_, i) => frame(Buffer.from(JSON.stringify({ t: i, k: 'x', i }))));
  let cases = 0;
  for (; cases < 3000; cases++) {
    const parts: Buffer[] = [];
    for (let p = rnd(6); p > 0; p--) {
      if (rnd(2)) parts.push(good[rnd(8)]!);
      else {
        const junk = Buffer.alloc(rnd(40));
        for (let i = 0; i < junk.length; i++) junk[i] = rnd(256);
        if (rnd(3) === 0 && junk.length >= 4) Buffer.from('KSRJ').copy(junk, 0);
        parts.push(junk);
      }
    }
    const buf = Buffer.concat(parts);
    // Mutate a byte now and then, also inside good records.
    if (buf.length && rnd(2)) buf[rnd(buf.length)] = rnd(256);
    const r = parseSegment(buf);
    for (const rec of r.records) assert.ok(good.some((g) => JSON.stringify(rec) === g.subarray(12).toString()), `bogus record ${JSON.stringify(rec)}`);
  }
  console.log(`# parseSegment: ${cases} random segments, no throw, no bogus record`);
});

test('the size cap holds: the oldest segments go, the newest records stay', () => {
  const dir = tmpDir('ks-journal');
  const cap = 64 << 10;
  const j = journal(dir, { maxBytes: cap, segmentBytes: 8 << 10 });
  let maxSeen = 0;
  let next = 0;
  for (let round = 0; round < 200; round++) {
    // Some flushes hold more than a segment: they are split across segments.
    const n = round % 7 === 0 ? 150 : 25;
    write(j, n, next);
    next += n;
    j.flush(round % 10 === 0);
    const total = listSegments(dir).reduce((a, s) => a + s.bytes, 0);
    maxSeen = Math.max(maxSeen, total);
  }
  j.close();
  assert.ok(maxSeen <= cap, `journal grew to ${maxSeen} bytes, cap ${cap}`);
  const c = readJournal(dir);
  assert.equal(c.records.at(-1)!.i, next - 1);
  // What is left is a contiguous run of the newest records.
  const first = c.records[0]!.i as number;
  assert.ok(first > 0);
  assert.deepEqual(c.records.map((r) => r.i), Array.from({ length: next - first }, (_, i) => first + i));
  fs.rmSync(dir, { recursive: true });
});

test('one agent per journal: a live holder refuses, a dead one or an earlier boot is taken over', async () => {
  const dir = tmpDir('ks-journal');
  fs.mkdirSync(dir, { recursive: true });
  const live = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    const boot = bootId();
    fs.writeFileSync(path.join(dir, 'lock'), `${live.pid} ${boot}\n`);
    assert.throws(() => journal(dir, { boot }), (e: unknown) => e instanceof JournalBusy && /in use by the agent with pid/.test((e as Error).message));
    // The same pid in another boot is another process.
    fs.writeFileSync(path.join(dir, 'lock'), `${live.pid} some-earlier-boot\n`);
    journal(dir, { boot }).close();
    // A pid that is gone.
    fs.writeFileSync(path.join(dir, 'lock'), `2147483646 ${boot}\n`);
    const j = journal(dir, { boot });
    assert.equal(fs.readFileSync(path.join(dir, 'lock'), 'utf8'), `${process.pid} ${boot}\n`);
    j.close();
    assert.equal(fs.existsSync(path.join(dir, 'lock')), false);
  } finally {
    process.kill(live.pid!, 'SIGKILL');
    fs.rmSync(dir, { recursive: true });
  }
});

test('past the per-second budget records are counted, not written; severe ones always are', async () => {
  const dir = tmpDir('ks-journal');
  const m = new MetricsRegistry();
  const r = new Recorder({ path: dir, maxBytes: 1 << 20, segmentBytes: 0, maxRecordsPerSecond: 10 }, m, () => undefined);
  assert.equal(r.start({}), true); // severe: outside the budget
  // All within one second: start early in it.
  while (Date.now() % 1000 > 300) await new Promise((res) => setTimeout(res, 20));
  for (let i = 0; i < 25; i++) r.note('exec', { i });
  r.note('alert', { rule: 'x' }, true);
  r.tick();
  r.stop('test');
  const c = readJournal(dir);
  const kinds = c.records.map((x) => x.k);
  const execs = c.records.filter((x) => x.k === 'exec').length;
  const summary = c.records.find((x) => x.k === 'summary' && x.suppressed) as { suppressed: { exec: number } } | undefined;
  const text = parseMetrics(await m.registry.metrics());
  assert.equal(execs, 10);
  assert.equal(summary?.suppressed.exec, 25 - execs);
  assert.equal(sum(text, 'kernscope_recorder_records_dropped_total', { reason: 'rate_limited' }), 25 - execs);
  assert.ok(kinds.includes('alert'));
  assert.equal(kinds.at(-1), 'agent'); // the stop
  fs.rmSync(dir, { recursive: true });
});

test('show: the last boot, its last seconds, merged with the pstore log it left', () => {
  const dir = tmpDir('ks-journal');
  const ps = tmpDir('ks-pstore');
  fs.mkdirSync(ps, { recursive: true });
  const bootMs = 1_700_000_000_000;
  const a = journal(dir, { boot: 'an-earlier-boot' });
  a.append({ t: bootMs + 10_000, k: 'agent', event: 'start', boot_ms: bootMs });
  a.append({ t: bootMs + 50_000, k: 'exec', pid: 1 });
  a.append({ t: bootMs + 58_000, k: 'exit', pid: 1, signal: 9 });
  a.append({ t: bootMs + 60_000, k: 'summary', cpu_pct: 3 });
  a.close();
  const b = journal(dir, { boot: bootId() });
  b.append({ t: bootMs + 999_000, k: 'agent', event: 'start', boot_ms: bootMs + 900_000 });
  b.close();
  fs.writeFileSync(path.join(ps, 'dmesg-ramoops-0'), 'Panic#1 Part1\n<6>[   59.500000] sysrq: Trigger a crash\n<0>[   59.501000] Kernel panic - not syncing: sysrq triggered crash\n<6>[    5.000000] too early for the window\n');
  assert.deepEqual(readPstore(ps).map((l) => l.uptime), [5, 59.5, 59.501]);
  const t = timeline({ dir, lastBoot: true, seconds: 5, pstore: ps });
  assert.ok(typeof t !== 'string', String(t));
  assert.equal(t.boot, 'an-earlier-boot');
  assert.deepEqual(t.entries.map((e) => [e.k, e.rel]), [['exit', -2], ['kernel', -0.5], ['kernel', -0.499], ['summary', 0]]);
  assert.match(formatTimeline(t, 5), /Kernel panic - not syncing/);
  const now = timeline({ dir });
  assert.ok(typeof now !== 'string' && now.current && now.entries.length === 1);
  fs.rmSync(dir, { recursive: true });
  fs.rmSync(ps, { recursive: true });
});
