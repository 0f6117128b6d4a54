// The custom probe's spec stage, without root: a probe from the config is
// checked and put in the kernel's terms (slots, sources, buckets) as
// bpf/custom.h numbers them; tracefs and DWARF answers are given here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bpfObjectPath } from '../../src/paths.js';
import { CustomLayout } from '../../src/collectors/custom/layout.js';
import { compileProbe, type Resolvers } from '../../src/collectors/custom/spec.js';
import type { ProbeConfig } from '../../src/config/schema.js';

const L = CustomLayout.of(bpfObjectPath('custom.bpf.o'));
const resolve: Resolvers = {
  exists: (b) => b === '/bin/app',
  fields: (category, name) => {
    if (`${category}:${name}` === 'sched:sched_process_exec') return [
      { name: 'common_pid', offset: 4, size: 4, signed: true, kind: 'int' },
      { name: 'filename', offset: 8, size: 4, signed: false, kind: 'dataloc' },
      { name: 'pid', offset: 12, size: 4, signed: true, kind: 'int' },
    ];
    if (`${category}:${name}` === 'block:block_rq_issue' || `${category}:${name}` === 'block:block_rq_complete') return [
      { name: 'dev', offset: 8, size: 4, signed: false, kind: 'int' },
      { name: 'sector', offset: 16, size: 8, signed: false, kind: 'int' },
      { name: 'rwbs', offset: 32, size: 8, signed: false, kind: 'chars' },
    ];
    throw new Error(`no tracepoint ${category}:${name}`);
  },
  member: (_binary, spec) => {
    if (spec === 'payment.amount') return { offset: 8, size: 8, signed: true, string: false };
    if (spec === 'payment.currency') return { offset: 16, size: 4, signed: false, string: true };
    throw new Error(`struct payment has no member ${spec.split('.')[1]}`);
  },
};
const probe = (p: Partial<ProbeConfig>): ProbeConfig => ({ name: 'p', metrics: [{ name: 'p_total', type: 'counter' }], ...p });
const error = (p: Partial<ProbeConfig>): string => {
  try {
    compileProbe(probe(p), L, resolve);
  } catch (e) {
    assert.equal((e as { code?: string }).code, 'ERR_KERNSCOPE_CONFIG');
    return (e as Error).message;
  }
  return assert.fail('expected a config error');
};

test('a uprobe with a struct member, a string and a return: slots, sources and the return hook', () => {
  const s = compileProbe(probe({
    uprobe: '/bin/app:process_payment',
    args: { amount: { arg: 0, member: 'payment.amount' }, currency: { arg: 0, member: 'payment.currency' }, id: { arg: 1, type: 'u32' } },
    metrics: [
      { name: 'paid', type: 'histogram', value: 'amount', buckets: [100, 1000], labels: [{ name: 'currency', from: 'currency' }, { name: 'result', from: 'ret' }] },
      { name: 'slow', type: 'counter', filter: { from: 'duration', op: '>', value: 1000 } },
    ],
  }), L, resolve);
  assert.deepEqual(s.slots, [
    { kind: L.slotKind.deref, arg: 0, size: 8, signed: true, offset: 8 },
    { kind: L.slotKind.strUser, arg: 0, size: 4, signed: false, offset: 16 },
    { kind: L.slotKind.arg, arg: 1, size: 4, signed: false, offset: 0 },
  ]);
  const [paid, slow] = s.metrics;
  assert.equal(paid!.kernel.valueSrc, L.src.slot0);
  assert.equal(paid!.kernel.labelSrc, L.src.ret);
  assert.equal(paid!.kernel.labelStr, true);
  assert.equal(paid!.kernel.bucketMode, L.buckets.explicit);
  assert.deepEqual(paid!.kernel.bounds, [100n, 1000n]);
  assert.deepEqual(paid!.labels.map((l) => [l.spec.name, l.string, l.slot]), [['currency', true, -1], ['result', false, 0]]);
  assert.equal(slow!.kernel.filterSrc, L.src.duration);
  assert.equal(slow!.kernel.filterOp, L.ops['>']);
  assert.equal(s.hasReturn, true);
  assert.deepEqual([s.first, s.end], ['custom_entry', 'custom_return']);
});

test('a tracepoint pair: fields as slots, durations in ns, the end matched by its fields', () => {
  const s = compileProbe(probe({
    tracepoint: 'block:block_rq_issue',
    until: 'block:block_rq_complete',
    pairBy: ['dev', 'sector'],
    args: { dev: { field: 'dev' }, sector: { field: 'sector' }, rwbs: { field: 'rwbs' } },
    metrics: [{ name: 'io_seconds', type: 'histogram', value: 'duration', buckets: [0.001], labels: [{ name: 'op', from: 'rwbs' }] }],
  }), L, resolve);
  assert.deepEqual(s.slots.map((x) => x.kind), [L.slotKind.field, L.slotKind.field, L.slotKind.strField]);
  assert.deepEqual(s.pairSlots, [1, 2]);
  assert.deepEqual(s.endSlots, [
    { kind: L.slotKind.field, arg: 0, size: 4, signed: false, offset: 8 },
    { kind: L.slotKind.field, arg: 0, size: 8, signed: false, offset: 16 },
  ]);
  assert.equal(s.metrics[0]!.unit, 1e9);
  assert.deepEqual(s.metrics[0]!.kernel.bounds, [1000000n]);
  assert.deepEqual([s.first, s.end], ['custom_tp', 'custom_tp_done']);
});

test('mistakes are named by probe and key, before anything is loaded', () => {
  assert.equal(error({ uprobe: '/bin/nope:f' }), 'probe "p": no such binary /bin/nope');
  assert.equal(error({ tracepoint: 'sched:nope' }), 'probe "p": no tracepoint sched:nope');
  assert.equal(error({ tracepoint: 'sched:sched_process_exec', args: { f: { field: 'filenam' } } }), 'probe "p": args.f: sched:sched_process_exec has no field filenam (it has: common_pid, filename, pid)');
  assert.equal(error({ tracepoint: 'sched:sched_process_exec', args: { f: { arg: 0 } } }), 'probe "p": args.f: the args of a tracepoint are its fields: give field');
  assert.equal(error({ uprobe: '/bin/app:f', args: { x: { arg: 0, member: 'payment.amont' } } }), 'probe "p": args.x: struct payment has no member amont');
  assert.equal(error({ uprobe: '/bin/app:f', args: { x: { arg: 0, offset: 1, member: 'payment.amount' } } }), 'probe "p": args.x: give offset or member, not both');
  assert.equal(error({ uprobe: '/bin/app:f', args: { a: { arg: 0, type: 'string' }, b: { arg: 1, type: 'string' } } }), 'probe "p": args.b: one string per probe (a is one)');
  assert.equal(error({ usdt: '/bin/app:prov:tick', metrics: [{ name: 'm', type: 'counter', label: { name: 'r', from: 'ret' } }] }), 'probe "p": metric "m": ret needs a uprobe (a USDT probe has no return)');
  assert.equal(error({ uprobe: '/bin/app:f', metrics: [{ name: 'm', type: 'gauge' }] }), 'probe "p": metric "m": a gauge needs value');
  assert.equal(error({ uprobe: '/bin/app:f', metrics: [{ name: 'm', type: 'counter', buckets: 'log2' }] }), 'probe "p": metric "m": buckets go with a histogram');
  assert.equal(error({ uprobe: '/bin/app:f', args: { s: { arg: 0, type: 'string' } }, metrics: [{ name: 'm', type: 'histogram', value: 's' }] }), 'probe "p": metric "m": s is a string: it can only be a label');
  assert.equal(error({ uprobe: '/bin/app:f+4', metrics: [{ name: 'm', type: 'histogram', value: 'duration' }] }), 'probe "p": a return (ret, duration, uretprobe) is hooked at the function\'s entry: give the symbol without +offset');
  assert.equal(error({ uprobe: '/bin/app:f', until: 'a:b' }), 'probe "p": until goes with usdt or tracepoint');
  assert.equal(error({ uprobe: '/bin/app:f', metrics: [{ name: 'm', type: 'histogram', value: 'duration', buckets: Array.from({ length: L.maxBounds + 1 }, (_, i) => i + 1) }] }), `probe "p": metric "m": at most ${L.maxBounds} buckets`);
  assert.equal(error({ tracepoint: 'block:block_rq_issue', until: 'block:block_rq_complete', pairBy: ['rwbs'], args: { rwbs: { field: 'rwbs' } }, metrics: [{ name: 'm', type: 'histogram', value: 'duration' }] }), 'probe "p": pairBy: "rwbs" is not one of the numeric args (none)');
});

test('the limits are the C arrays\' lengths', () => {
  assert.equal(L.maxSlots, 4);
  assert.equal(L.maxMetrics, 8);
  assert.equal(L.maxPairs, 2);
});
