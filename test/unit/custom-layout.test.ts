// The custom probe's contract with bpf/custom.h, without root: what user
// space packs into .rodata lands where the compiled object's BTF puts each
// member, and every enum it numbers by is in the object.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject } from '../../src/bpf/object.js';
import { bpfObjectPath } from '../../src/paths.js';
import { CustomLayout } from '../../src/collectors/custom/layout.js';

const path = bpfObjectPath('custom.bpf.o');
const L = CustomLayout.of(path);
const obj = BpfObject.openUnloaded(path);
const slot = obj.btfType('ks_slot');
const metric = obj.btfType('ks_metric');

test('a slot is packed member by member, at its index', () => {
  assert.ok(slot?.kind === 'struct');
  const b = Buffer.alloc(3 * L.slotSize);
  L.writeSlot(b, 2, { kind: L.slotKind.strDataloc, arg: 5, size: 31, signed: true, offset: 0x1234 });
  const base = 2 * slot.size;
  assert.equal(b.readUInt8(base + slot.members.kind!.offset), L.slotKind.strDataloc);
  assert.equal(b.readUInt8(base + slot.members.arg!.offset), 5);
  assert.equal(b.readUInt8(base + slot.members.size!.offset), 31);
  assert.equal(b.readUInt8(base + slot.members.is_signed!.offset), 1);
  assert.equal(b.readUInt32LE(base + slot.members.offset!.offset), 0x1234);
  assert.equal(b.subarray(0, base).every((x) => x === 0), true);
});

test('a metric is packed with its filter value and bounds; too many bounds is an error', () => {
  assert.ok(metric?.kind === 'struct');
  const b = Buffer.alloc(2 * L.metricSize);
  L.writeMetric(b, 1, {
    valueSrc: L.src.duration, labelSrc: L.src.slot0 + 1, label2Src: L.src.ret, filterSrc: L.src.slot0,
    filterOp: L.ops['>='], bucketMode: L.buckets.explicit, needsReturn: true, labelStr: true,
    filterValue: -7n, bounds: [10n, 20n, 30n],
  });
  const base = metric.size;
  const m = metric.members;
  assert.equal(b.readUInt8(base + m.value_src!.offset), L.src.duration);
  assert.equal(b.readUInt8(base + m.label_src!.offset), L.src.slot0 + 1);
  assert.equal(b.readUInt8(base + m.label2_src!.offset), L.src.ret);
  assert.equal(b.readUInt8(base + m.filter_op!.offset), L.ops['>=']);
  assert.equal(b.readUInt8(base + m.nbounds!.offset), 3);
  assert.equal(b.readUInt8(base + m.needs_return!.offset), 1);
  assert.equal(b.readBigInt64LE(base + m.filter_val!.offset), -7n);
  assert.equal(b.readBigInt64LE(base + m.bounds!.offset + 16), 30n);
  assert.throws(() => L.writeMetric(b, 0, { valueSrc: 0, labelSrc: 0, label2Src: 0, filterSrc: 0, filterOp: 0, bucketMode: 0, needsReturn: false, labelStr: false, filterValue: 0n, bounds: Array.from({ length: L.maxBounds + 1 }, () => 1n) }), /at most 32 buckets/);
});

test('the enums are distinct, and sources past the slots follow them', () => {
  const kinds = Object.values(L.slotKind);
  assert.equal(new Set(kinds).size, kinds.length);
  assert.equal(new Set(Object.values(L.ops)).size, 6);
  assert.ok(L.src.ret > L.src.slot0 && L.src.duration !== L.src.str);
  assert.equal(L.strBytes, 32);
});
