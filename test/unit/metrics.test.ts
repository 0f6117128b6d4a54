import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KernelHistogram } from '../../src/metrics/kernel-histogram.js';
import { BucketHistogram } from '../../src/metrics/bucket-histogram.js';
import { LabelLimiter } from '../../src/metrics/label-limiter.js';
import { MetricsRegistry, wantsOpenMetrics } from '../../src/metrics/registry.js';
import { decodeKey, encodeOwner, portLabel, sumField } from '../../src/collectors/tcp/decode.js';
import { parseMetrics } from '../helpers.js';

test('kernel log2 slots become cumulative Prometheus buckets', async () => {
  const h = new KernelHistogram('x_seconds', 'help', ['a'], 3, 5, 1e-6);
  assert.deepEqual(h.bounds, [16e-6, 32e-6, 64e-6]);
  h.add('k', { a: '1' }, 0, 2, 0.000002); // below minSlot: first bucket
  h.add('k', { a: '1' }, 4, 3, 0.00006);
  h.add('k', { a: '1' }, 9, 1, 0.001); // above maxSlot: only +Inf
  const m = new MetricsRegistry();
  m.register(h);
  const s = parseMetrics((await m.render(false)).body);
  const bucket = (le: string): number => s.find((x) => x.name === 'x_seconds_bucket' && x.labels.le === le)!.value;
  assert.equal(bucket('0.000016'), 2);
  assert.equal(bucket('0.000032'), 5);
  assert.equal(bucket('0.000064'), 5);
  assert.equal(bucket('+Inf'), 6);
  assert.equal(s.find((x) => x.name === 'x_seconds_count')!.value, 6);
  assert.ok(Math.abs(s.find((x) => x.name === 'x_seconds_sum')!.value - 0.001062) < 1e-12);
});

test('OpenMetrics rendering keeps counters intact for later text scrapes', async () => {
  const m = new MetricsRegistry();
  m.counter('a_things_total', 'things', ['x']).inc({ x: '1' }, 3);
  const om = await m.render(true);
  assert.match(om.contentType, /application\/openmetrics-text/);
  assert.match(om.body, /^# TYPE a_things counter$/m);
  assert.match(om.body, /^a_things_total\{x="1"\} 3$/m);
  assert.match(om.body, /# EOF\n$/);
  const text = await m.render(false);
  assert.match(text.body, /^a_things_total\{x="1"\} 3$/m);
  assert.ok(wantsOpenMetrics('application/openmetrics-text;version=1.0.0,text/plain;q=0.5'));
  assert.ok(!wantsOpenMetrics('text/plain'));
});

test('label limiter folds and counts each refused set once', () => {
  let overflows = 0;
  const l = new LabelLimiter(2, () => overflows++);
  assert.deepEqual(l.admit('a', { s: 'a' }), { s: 'a' });
  assert.deepEqual(l.admit('b', { s: 'b' }), { s: 'b' });
  assert.deepEqual(l.admit('c', { s: 'c' }), { s: '_overflow' });
  assert.deepEqual(l.admit('c', { s: 'c' }), { s: '_overflow' });
  assert.deepEqual(l.admit('a', { s: 'a' }), { s: 'a' });
  assert.equal(overflows, 1);
});

test('tcp key layout matches bpf/tcp.h', () => {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(1234, 0);
  b.writeUInt16LE(443, 4);
  b.writeUInt8(1, 6);
  b.write('curl', 8, 'latin1');
  assert.deepEqual(decodeKey(b), { tgid: 1234, port: 443, dir: 1, comm: 'curl' });
  b.write('sixteen-chars-xx', 8, 'latin1'); // no NUL: all 16 bytes
  assert.equal(decodeKey(b).comm, 'sixteen-chars-xx');
  const o = encodeOwner(7, 'a-very-long-process-name');
  assert.equal(o.length, 24);
  assert.equal(o.toString('latin1', 8, 23), 'a-very-long-pro');
  assert.equal(o[23], 0);
});

test('per-CPU sums and port labels', () => {
  const v = Buffer.alloc(32);
  v.writeBigUInt64LE(5n, 0);
  v.writeBigUInt64LE(7n, 8);
  v.writeBigUInt64LE(11n, 16);
  v.writeBigUInt64LE(13n, 24);
  assert.equal(sumField(v, 16, 2, 0), 16);
  assert.equal(sumField(v, 16, 2, 1), 20);
  assert.equal(portLabel(0), 'unknown');
  assert.equal(portLabel(5432), '5432');
  assert.equal(portLabel(40000), '40000');
});

test('BucketHistogram.addBuckets: counts bucketed in the kernel add up with observations', () => {
  const h = new BucketHistogram('x_seconds', 'help', [0.1, 1]);
  const s = h.series('a', { k: 'a' });
  h.observe(s, 0.05);
  h.addBuckets(s, [2, 3, 4], 9, 7.5); // 2 at or below 0.1, 3 to 1, 4 past 1 (+Inf)
  const v = h.get().values;
  const at = (le: string | number): number => v.find((x) => x.metricName === 'x_seconds_bucket' && x.labels.le === le)!.value;
  assert.equal(at(0.1), 3);
  assert.equal(at(1), 6);
  assert.equal(at('+Inf'), 10);
  assert.ok(Math.abs(v.find((x) => x.metricName === 'x_seconds_sum')!.value - 7.55) < 1e-9);
  assert.equal(v.find((x) => x.metricName === 'x_seconds_count')!.value, 10);
});
