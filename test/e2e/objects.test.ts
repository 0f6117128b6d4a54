import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, expectConfigErrors, freePort, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';

// A user's own BPF object (examples/own-object), exported from its maps by
// the YAML beside it: exact counts from real execs, writes and connects.

const QUIET = `collectors: { tcp: { enabled: false }, http: { enabled: false }, process: { enabled: false } }
security: { enabled: false }
`;
const OBJECT = path.join(ROOT, 'bpf', '.output', 'examples', 'own-object', 'own.bpf.o');
let dir: string;

before(() => {
  assert.ok(isRoot, 'BPF needs root (CI runs as root)');
  dir = tmpDir('ks-objects');
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

function exampleConfig(): string {
  const text = fs.readFileSync(path.join(ROOT, 'examples', 'own-object', 'kernscope.yaml'), 'utf8');
  return QUIET + text.replace(/path: \S+/, `path: ${OBJECT}`);
}

function connectOnce(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.2', port });
    s.on('error', () => resolve());
    s.on('connect', () => {
      s.destroy();
      resolve();
    });
  });
}

test('own object: counters, a per-CPU log2 histogram and inet/ksym/string decoders, exact', async () => {
  const tru = path.join(dir, 'ks-own-true');
  const dd = path.join(dir, 'ks-own-dd');
  fs.copyFileSync('/bin/true', tru);
  fs.copyFileSync('/bin/dd', dd);
  fs.chmodSync(tru, 0o755);
  fs.chmodSync(dd, 0o755);
  const agent = await startAgent(exampleConfig());
  try {
    for (let i = 0; i < 5; i++) execFileSync(tru);
    // dd writes its 7 blocks of 1000 bytes and nothing else (status=none).
    execFileSync(dd, ['if=/dev/zero', 'of=/dev/null', 'bs=1000', 'count=7', 'status=none']);
    const port = await freePort(); // nothing listens there: each attempt is refused
    for (let i = 0; i < 3; i++) await connectOnce(port);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'own_tcp_connects_total', { daddr: '127.0.0.2' }) >= 3, 5000);
    assert.equal(sum(m, 'own_execs_total', { uid: 'root', comm: 'ks-own-true' }), 5);
    assert.equal(sum(m, 'own_execs_total', { comm: 'ks-own-dd' }), 1);
    const w = { comm: 'ks-own-dd' };
    assert.equal(sum(m, 'own_write_bytes_count', w), 7);
    assert.equal(sum(m, 'own_write_bytes_bucket', { ...w, le: '512' }), 0);
    assert.equal(sum(m, 'own_write_bytes_bucket', { ...w, le: '1024' }), 7);
    assert.equal(sum(m, 'own_write_bytes_sum', w), 7 * 512); // lower bounds
    assert.equal(sum(m, 'own_tcp_connects_total', { daddr: '127.0.0.2', dport: String(port) }), 3);
    const fns = m.filter((s) => s.name === 'own_timers_total').map((s) => s.labels.function!);
    assert.ok(fns.length > 0, 'timers expire all the time');
    const kallsyms = new Set(fs.readFileSync('/proc/kallsyms', 'utf8').split('\n').map((l) => l.split(/\s+/)[2]));
    assert.ok(fns.every((f) => kallsyms.has(f)), `named kernel functions: ${fns.join(', ')}`);
  } finally {
    await agent.stop();
  }
});

test('mistakes in objects get plain messages and exit 2', async () => {
  const base = (metric: string, extra = ''): string => `objects:\n  - name: o\n    path: ${OBJECT}\n${extra}    metrics:\n      - ${metric}\n`;
  const cases: Array<[string, RegExp]> = [
    [`objects:\n  - name: o\n    path: /nonexistent.bpf.o\n    metrics: [{ name: x, type: counter, map: m }]\n`, /object "o": no such file \/nonexistent\.bpf\.o/],
    [base('{ name: x, type: counter, map: exec }'), /object "o": metric "x": no map exec \(it has: [^)]*execs/],
    [base('{ name: x, type: counter, map: execs, labels: [{ name: a, size: 4, decoder: uint }, { name: b, size: 32, decoder: string }] }'), /metric "x": the labels take 36 bytes, the key of map execs has 20/],
    [base('{ name: x, type: counter, map: connects, labels: [{ name: a, size: 6, decoder: inet }] }'), /label a: decoder inet reads 4 or 16 bytes, not 6/],
    [base('{ name: x, type: histogram, map: write_sizes, labels: [{ name: c, size: 16, decoder: string }] }'), /metric "x": a histogram needs bucket/],
    [base('{ name: x, type: counter, map: execs }', '    programs: [on_exe]\n'), /no program on_exe \(it has: on_exec, on_write, on_state, on_timer\)/],
    [base('{ name: x, type: counter, map: execs, labels: [{ name: a, size: 4, decoder: ip }] }'), /objects\[0\]\.metrics\[0\]\.labels\[0\]\.decoder: expected one of/],
  ];
  await expectConfigErrors(dir, cases);
});
