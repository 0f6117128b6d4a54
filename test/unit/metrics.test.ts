import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KernelHistogram } from '../../src/metrics/kernel-histogram.js';
import { BucketHistogram } from '../../src/metrics/bucket-histogram.js';
import { LabelLimiter } from '../../src/metrics/label-limiter.js';
import { MetricsRegistry, wantsOpenMetrics } from '../../src/metrics/registry.js';
import { TcpLayout, portLabel, sumField } from '../../src/collectors/tcp/decode.js';
import { BpfObject } from '../../src/bpf/object.js';
import { bpfObjectPath } from '../../src/paths.js';
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

test('tcp layouts come from the object\'s BTF (bpf/tcp.h), without root', () => {
  const obj = BpfObject.openUnloaded(bpfObjectPath('tcp.bpf.o'));
  const L = new TcpLayout(obj);
  const K = L.key;
  const dirs = obj.enumValues('ks_tcp_dir', ['TCP_DIR_OUTBOUND'] as const);
  const b = Buffer.alloc(K.size);
  b.writeUInt32LE(1234, K.tgid);
  b.writeUInt16LE(443, K.port);
  b.writeUInt8(dirs.TCP_DIR_OUTBOUND, K.dir);
  b.write('curl', K.comm, 'latin1');
  assert.deepEqual(L.decodeKey(b), { tgid: 1234, port: 443, dir: 'outbound', comm: 'curl' });
  b.write('sixteen-chars-xx', K.comm, 'latin1'); // no NUL: all 16 bytes
  assert.equal(L.decodeKey(b).comm, 'sixteen-chars-xx');
  const o = L.encodeOwner(7, 'a-very-long-process-name');
  assert.equal(o.length, 24);
  assert.equal(o.toString('latin1', 8, 23), 'a-very-long-pro');
  assert.equal(o[23], 0);
  // Counters and reasons by name, whatever their order in the header.
  assert.deepEqual(Object.keys(L.counterSlots).length, 8);
  assert.equal(new Set(Object.values(L.counterSlots)).size, 8);
  assert.deepEqual(L.dropReasons, ['socket_table_full', 'stats_table_full', 'histogram_table_full', 'listener_table_full', 'events_ringbuf_full']);
  const hk = Buffer.alloc(L.histKey.size);
  hk.writeUInt32LE(1234, L.histKey.key + K.tgid);
  hk.writeUInt32LE(obj.enumValues('ks_tcp_hist_kind', ['TCP_HIST_RTT'] as const).TCP_HIST_RTT, L.histKey.kind);
  hk.writeUInt32LE(9, L.histKey.slot);
  const h = L.decodeHistKey(hk);
  assert.deepEqual([h.kind, h.slot, h.key.readUInt32LE(K.tgid)], ['rtt', 9, 1234]);
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
