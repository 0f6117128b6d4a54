/**
 * The custom probe's kernel contract (bpf/custom.h), read from the object's
 * BTF instead of repeated here: the slots and metrics user space packs into
 * .rodata before the load, the aggregation key and value it reads back, and
 * the enums both sides number. A header that drifts from what this module
 * needs fails at open, naming the struct, member or enumerator.
 */
import { BpfObject } from '../../bpf/object.js';
import { KernscopeError } from '../../errors.js';

type Members = Record<string, { offset: number; size: number }>;

function struct(obj: BpfObject, name: string, need: readonly string[]): { size: number; m: Members } {
  const t = obj.members(name, need);
  return { size: t.size, m: t.members };
}

/** Where one byte-sized or wider field goes, written by width. */
function writer(m: Members, name: string): (b: Buffer, base: number, v: number | bigint) => void {
  const { offset, size } = m[name]!;
  return (b, base, v) => {
    const at = base + offset;
    if (size === 1) b.writeUInt8(Number(v), at);
    else if (size === 2) b.writeUInt16LE(Number(v), at);
    else if (size === 4) b.writeUInt32LE(Number(v), at);
    else b.writeBigInt64LE(BigInt(v), at);
  };
}

export interface SlotSpec {
  kind: number;
  arg: number;
  size: number;
  signed: boolean;
  offset: number;
}

export interface MetricSpec {
  valueSrc: number;
  labelSrc: number;
  label2Src: number;
  filterSrc: number;
  filterOp: number;
  bucketMode: number;
  needsReturn: boolean;
  labelStr: boolean;
  filterValue: bigint;
  /** Explicit bounds, in the kernel's unit. */
  bounds: bigint[];
}

export class CustomLayout {
  readonly slotSize: number;
  readonly metricSize: number;
  /** Slots, metrics and pair fields a probe has (the .rodata arrays' lengths: CUSTOM_SLOTS, CUSTOM_METRICS). */
  readonly maxSlots: number;
  readonly maxMetrics: number;
  readonly maxPairs: number;
  /** Explicit bounds a metric holds (struct ks_metric bounds[]). */
  readonly maxBounds: number;
  /** Bytes of a string label (struct ks_agg_key str[]), its NUL included. */
  readonly strBytes: number;
  readonly key: { label: number; label2: number; bucket: number; metric: number; str: number };
  readonly value: { count: number; sum: number; last: number };
  readonly slotKind: { arg: number; deref: number; field: number; strUser: number; strField: number; strDataloc: number };
  readonly src: { slot0: number; ret: number; duration: number; str: number };
  readonly ops: Record<'==' | '!=' | '<' | '<=' | '>' | '>=', number>;
  readonly buckets: { explicit: number; log2: number };
  private readonly putSlot: Array<(b: Buffer, base: number, v: number | bigint) => void>;
  private readonly putMetric: Record<string, (b: Buffer, base: number, v: number | bigint) => void>;
  private readonly boundsAt: number;

  constructor(obj: BpfObject) {
    const slot = struct(obj, 'ks_slot', ['kind', 'arg', 'size', 'is_signed', 'offset']);
    this.slotSize = slot.size;
    this.putSlot = ['kind', 'arg', 'size', 'is_signed', 'offset'].map((n) => writer(slot.m, n));
    const metricMembers = ['value_src', 'label_src', 'filter_src', 'filter_op', 'bucket_mode', 'nbounds', 'needs_return', 'label_str', 'label2_src', 'filter_val', 'bounds'];
    const metric = struct(obj, 'ks_metric', metricMembers);
    this.metricSize = metric.size;
    this.putMetric = Object.fromEntries(metricMembers.filter((n) => n !== 'bounds').map((n) => [n, writer(metric.m, n)]));
    this.boundsAt = metric.m.bounds!.offset;
    this.maxBounds = metric.m.bounds!.size / 8;
    this.maxSlots = obj.rodataSize('slots') / slot.size;
    this.maxMetrics = obj.rodataSize('metrics') / metric.size;
    this.maxPairs = obj.rodataSize('pair_slots');
    if (obj.rodataSize('end_slots') !== this.maxPairs * slot.size) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${obj.path}: end_slots does not hold one slot per pair_slots entry`);
    const key = struct(obj, 'ks_agg_key', ['label', 'label2', 'bucket', 'metric', 'str']);
    this.key = { label: key.m.label!.offset, label2: key.m.label2!.offset, bucket: key.m.bucket!.offset, metric: key.m.metric!.offset, str: key.m.str!.offset };
    this.strBytes = key.m.str!.size;
    const value = struct(obj, 'ks_agg_value', ['count', 'sum', 'last']);
    this.value = { count: value.m.count!.offset, sum: value.m.sum!.offset, last: value.m.last!.offset };
    const k = obj.enumValues('ks_slot_kind', ['KS_SLOT_ARG', 'KS_SLOT_ARG_DEREF', 'KS_SLOT_FIELD', 'KS_SLOT_STR_USER', 'KS_SLOT_STR_FIELD', 'KS_SLOT_STR_DATALOC'] as const);
    this.slotKind = { arg: k.KS_SLOT_ARG, deref: k.KS_SLOT_ARG_DEREF, field: k.KS_SLOT_FIELD, strUser: k.KS_SLOT_STR_USER, strField: k.KS_SLOT_STR_FIELD, strDataloc: k.KS_SLOT_STR_DATALOC };
    const s = obj.enumValues('ks_src', ['KS_SRC_SLOT0', 'KS_SRC_RET', 'KS_SRC_DURATION', 'KS_SRC_STR'] as const);
    this.src = { slot0: s.KS_SRC_SLOT0, ret: s.KS_SRC_RET, duration: s.KS_SRC_DURATION, str: s.KS_SRC_STR };
    const o = obj.enumValues('ks_op', ['KS_OP_EQ', 'KS_OP_NE', 'KS_OP_LT', 'KS_OP_LE', 'KS_OP_GT', 'KS_OP_GE'] as const);
    this.ops = { '==': o.KS_OP_EQ, '!=': o.KS_OP_NE, '<': o.KS_OP_LT, '<=': o.KS_OP_LE, '>': o.KS_OP_GT, '>=': o.KS_OP_GE };
    const b = obj.enumValues('ks_buckets', ['KS_BUCKETS_EXPLICIT', 'KS_BUCKETS_LOG2'] as const);
    this.buckets = { explicit: b.KS_BUCKETS_EXPLICIT, log2: b.KS_BUCKETS_LOG2 };
  }

  /** Read once per object file: the layout is fixed when it is compiled. */
  static of(path: string): CustomLayout {
    let l = cache.get(path);
    if (!l) {
      const obj = BpfObject.openUnloaded(path);
      try {
        l = new CustomLayout(obj);
      } finally {
        obj.close();
      }
      cache.set(path, l);
    }
    return l;
  }

  /** Writes struct ks_slot number `i` of an array. */
  writeSlot(b: Buffer, i: number, s: SlotSpec): void {
    const base = i * this.slotSize;
    const [kind, arg, size, signed, offset] = this.putSlot;
    kind!(b, base, s.kind);
    arg!(b, base, s.arg);
    size!(b, base, s.size);
    signed!(b, base, s.signed ? 1 : 0);
    offset!(b, base, s.offset);
  }

  /** Writes struct ks_metric number `i` of an array. */
  writeMetric(b: Buffer, i: number, m: MetricSpec): void {
    if (m.bounds.length > this.maxBounds) throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `at most ${this.maxBounds} buckets`);
    const base = i * this.metricSize;
    const p = this.putMetric;
    p.value_src!(b, base, m.valueSrc);
    p.label_src!(b, base, m.labelSrc);
    p.label2_src!(b, base, m.label2Src);
    p.filter_src!(b, base, m.filterSrc);
    p.filter_op!(b, base, m.filterOp);
    p.bucket_mode!(b, base, m.bucketMode);
    p.nbounds!(b, base, m.bounds.length);
    p.needs_return!(b, base, m.needsReturn ? 1 : 0);
    p.label_str!(b, base, m.labelStr ? 1 : 0);
    p.filter_val!(b, base, m.filterValue);
    m.bounds.forEach((v, j) => b.writeBigInt64LE(v, base + this.boundsAt + j * 8));
  }
}

const cache = new Map<string, CustomLayout>();
