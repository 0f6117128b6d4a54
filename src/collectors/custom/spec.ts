/**
 * A probe from the config, checked and put in the kernel's terms before
 * anything is loaded: the slots its args are read into, each metric's
 * sources, filter and buckets (bpf/custom.h, numbered by the object's BTF
 * through CustomLayout), and what the export stage needs to name series.
 * Every mistake is one ERR_KERNSCOPE_CONFIG naming the probe and the key.
 */
import fs from 'node:fs';
import type { ProbeConfig, ProbeLabel, ProbeMetric } from '../../config/schema.js';
import { KernscopeError } from '../../errors.js';
import { resolveMember } from './binary.js';
import type { CustomLayout, MetricSpec, SlotSpec } from './layout.js';
import { tracepointFields, type TpField } from './tracefs.js';

const TYPES: Record<string, [number, boolean]> = { u8: [1, false], u16: [2, false], u32: [4, false], u64: [8, false], s8: [1, true], s16: [2, true], s32: [4, true], s64: [8, true] };

export interface Where {
  kind: 'uprobe' | 'uretprobe' | 'usdt' | 'tracepoint';
  binary: string;
  symbol?: string;
  /** With symbol: bytes into the function; alone: an address in the binary. */
  offset?: number;
  /** usdt: provider; tracepoint: category */
  provider?: string;
  name?: string;
}

/** "/bin/x:symbol", "/bin/x:provider:name" or "category:name". */
export function where(p: ProbeConfig): Where {
  const sym = p.uprobe ?? p.uretprobe;
  if (sym) {
    const i = sym.lastIndexOf(':');
    const kind = p.uprobe ? 'uprobe' : 'uretprobe';
    const target = sym.slice(i + 1);
    if (/^0x/i.test(target)) return { kind, binary: sym.slice(0, i), offset: Number(target) };
    const [symbol, off] = target.split('+');
    return { kind, binary: sym.slice(0, i), symbol: symbol!, ...(off ? { offset: Number(off) } : {}) };
  }
  if (p.tracepoint) {
    const [category, name] = p.tracepoint.split(':');
    return { kind: 'tracepoint', binary: '', provider: category!, name: name! };
  }
  const [binary, provider, name] = p.usdt!.split(':');
  return { kind: 'usdt', binary: binary!, provider: provider!, name: name! };
}

/** One metric: what the kernel computes, and how its series are named. */
export interface MetricPlan {
  metric: ProbeMetric;
  kernel: MetricSpec;
  /** Durations are counted in ns and exported in seconds. */
  unit: number;
  /** A counter that adds its value instead of counting calls. */
  sums: boolean;
  /** slot: which number of the key (0 or 1) a numeric label reads. */
  labels: Array<{ spec: ProbeLabel; string: boolean; slot: number }>;
  /** The hook in words, for default help texts. */
  what: string;
}

export interface ProbeSpec {
  probe: ProbeConfig;
  where: Where;
  slots: SlotSpec[];
  metrics: MetricPlan[];
  /** A return (uretprobe), a duration or a pair's end is hooked too. */
  hasReturn: boolean;
  /** Tracepoint pairs: for each pairBy field, its arg slot (1-based), and where the end reads it. */
  pairSlots: number[];
  endSlots: SlotSpec[];
  /** Programs of bpf/custom.bpf.c: the hook's, and its end's when hasReturn. */
  first: string;
  end: string;
}

/** Where a spec's facts about the world come from: tracefs and DWARF (tests pass their own). */
export interface Resolvers {
  fields(category: string, name: string): TpField[];
  member: typeof resolveMember;
  exists(binary: string): boolean;
}

const REAL: Resolvers = { fields: tracepointFields, member: resolveMember, exists: (b) => fs.existsSync(b) };

const PROGRAMS: Record<Where['kind'], [string, string]> = {
  uprobe: ['custom_entry', 'custom_return'],
  uretprobe: ['custom_entry', 'custom_return'],
  usdt: ['custom_usdt', 'custom_usdt_done'],
  tracepoint: ['custom_tp', 'custom_tp_done'],
};
export const ALL_PROGRAMS = Object.values(PROGRAMS).flat();

/** Checks a probe and puts it in the kernel's terms; throws ERR_KERNSCOPE_CONFIG on the first mistake. */
export function compileProbe(p: ProbeConfig, L: CustomLayout, resolve: Resolvers = REAL): ProbeSpec {
  const w = where(p);
  const bad = (msg: string): never => {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `probe "${p.name}": ${msg}`);
  };
  const tp = w.kind === 'tracepoint';
  if (!tp && !resolve.exists(w.binary)) bad(`no such binary ${w.binary}`);
  const fieldsOf = (category: string, name: string): TpField[] => {
    try {
      return resolve.fields(category, name);
    } catch (e) {
      return bad((e as Error).message);
    }
  };
  const fields = tp ? fieldsOf(w.provider!, w.name!) : [];
  const names = Object.keys(p.args ?? {});
  if (names.length > L.maxSlots) bad(`at most ${L.maxSlots} args`);
  if (p.metrics.length > L.maxMetrics) bad(`at most ${L.maxMetrics} metrics`);
  if ((p.pairBy?.length ?? 0) > L.maxPairs) bad(`pairBy: at most ${L.maxPairs} fields`);
  const K = L.slotKind;
  const STR_BYTES = L.strBytes;
  const slots: SlotSpec[] = [];
  let strArg = '';
  names.forEach((n, i) => {
    const a = p.args![n]!;
    let isStr = a.type === 'string';
    if (tp) {
      if (a.arg !== undefined || a.offset !== undefined || a.member) bad(`args.${n}: the args of a tracepoint are its fields: give field`);
      const list = fields.map((f) => f.name).join(', ');
      if (!a.field) bad(`args.${n}: give field (${p.tracepoint} has: ${list})`);
      const f = fields.find((x) => x.name === a.field) ?? bad(`args.${n}: ${p.tracepoint} has no field ${a.field} (it has: ${list})`);
      if (f.kind === 'chars' || f.kind === 'dataloc') {
        isStr = true;
        const size = Math.min(a.size ?? STR_BYTES - 1, f.kind === 'chars' ? f.size : STR_BYTES - 1);
        slots[i] = { kind: f.kind === 'chars' ? K.strField : K.strDataloc, arg: 0, size, signed: false, offset: f.offset };
      } else if (f.kind === 'int') {
        if (isStr) bad(`args.${n}: field ${f.name} is not a string`);
        const [size, signed] = a.type ? TYPES[a.type]! : [f.size, f.signed];
        slots[i] = { kind: K.field, arg: 0, size, signed, offset: f.offset };
      } else bad(`args.${n}: field ${f.name} is neither an integer nor a string`);
    } else {
      if (a.field) bad(`args.${n}: field goes with tracepoint; give arg`);
      if (a.arg === undefined) bad(`args.${n}: give arg, the argument's index`);
      let offset = a.offset;
      let [size, signed] = isStr ? [a.size ?? STR_BYTES - 1, false] : TYPES[a.type ?? 'u64']!;
      if (a.member) {
        if (a.offset !== undefined) bad(`args.${n}: give offset or member, not both`);
        try {
          const r = resolve.member(w.binary, a.member, STR_BYTES);
          offset = r.offset;
          if (r.string) [isStr, size, signed] = [true, Math.min(a.size ?? r.size, r.size), false];
          else if (isStr) bad(`args.${n}: ${a.member} is not a char array`);
          else if (!a.type) [size, signed] = [r.size, r.signed];
        } catch (e) {
          if (e instanceof KernscopeError) throw e;
          bad(`args.${n}: ${(e as Error).message}`);
        }
      }
      if (isStr) slots[i] = { kind: K.strUser, arg: a.arg!, size: size!, signed: false, offset: offset ?? 0 };
      else slots[i] = { kind: offset === undefined ? K.arg : K.deref, arg: a.arg!, size: size!, signed: !!signed, offset: offset ?? 0 };
    }
    if (isStr) {
      if (strArg) bad(`args.${n}: one string per probe (${strArg} is one)`);
      strArg = n;
    }
  });

  if (p.until && w.kind !== 'usdt' && !tp) bad('until goes with usdt or tracepoint');
  if (p.pairBy && !(tp && p.until)) bad('pairBy goes with a tracepoint and its until');
  const noReturn = w.kind === 'usdt' ? 'a USDT probe has no return' : tp ? 'a tracepoint has no return' : '';
  const S = L.src;
  const src = (m: ProbeMetric, s: string | undefined, role: 'value' | 'label' | 'filter'): number => {
    if (!s) return 0;
    if (s === 'ret') return noReturn ? bad(`metric "${m.name}": ret needs a uprobe (${noReturn})`) : S.ret;
    if (s === 'duration') {
      if (noReturn && !p.until) bad(`metric "${m.name}": duration needs "until", the ${tp ? 'tracepoint' : 'probe'} that ends it`);
      return S.duration;
    }
    const i = names.indexOf(s);
    if (i < 0) bad(`metric "${m.name}": "${s}" is not ret, duration or one of args (${names.join(', ') || 'none'})`);
    if (s === strArg) return role === 'label' ? S.str : bad(`metric "${m.name}": ${s} is a string: it can only be a label`);
    return S.slot0 + i;
  };

  const what = w.symbol ?? (w.offset !== undefined ? `0x${w.offset.toString(16)}` : `${w.provider}:${w.name}`);
  let hasReturn = false;
  const metrics = p.metrics.map((m): MetricPlan => {
    if (m.type !== 'counter' && !m.value) bad(`metric "${m.name}": a ${m.type} needs value`);
    if (m.type !== 'histogram' && m.buckets) bad(`metric "${m.name}": buckets go with a histogram`);
    const value = src(m, m.value, 'value');
    const labelSpecs = m.labels ?? (m.label ? [m.label] : []);
    if (m.label && m.labels) bad(`metric "${m.name}": give label or labels, not both`);
    const labels = labelSpecs.map((l) => ({ spec: l, src: src(m, l.from, 'label') }));
    const numeric = labels.filter((l) => l.src !== S.str);
    if (numeric.length > 2) bad(`metric "${m.name}": at most two labels from numbers (and one from the string arg)`);
    if (labels.length - numeric.length > 1) bad(`metric "${m.name}": two labels from the same string`);
    const label = numeric[0]?.src ?? 0;
    const label2 = numeric[1]?.src ?? 0;
    const filter = src(m, m.filter?.from, 'filter');
    const needsReturn = w.kind === 'uretprobe' || [value, label, label2, filter].some((x) => x === S.ret || x === S.duration);
    hasReturn ||= needsReturn;
    const unit = m.value === 'duration' ? 1e9 : 1; // durations: seconds out, ns in the kernel
    const explicit = Array.isArray(m.buckets) ? m.buckets : [];
    if (explicit.length > L.maxBounds) bad(`metric "${m.name}": at most ${L.maxBounds} buckets`);
    return {
      metric: m,
      kernel: {
        valueSrc: value,
        labelSrc: label,
        label2Src: label2,
        filterSrc: filter,
        filterOp: m.filter ? L.ops[m.filter.op] : 0,
        bucketMode: m.type === 'histogram' ? (m.buckets === 'log2' ? L.buckets.log2 : L.buckets.explicit) : 0,
        needsReturn,
        labelStr: labels.length > numeric.length,
        filterValue: BigInt(m.filter?.value ?? 0),
        bounds: explicit.map((b) => BigInt(Math.round(b * unit))),
      },
      unit,
      sums: m.type === 'counter' && !!m.value,
      labels: labels.map((l) => ({ spec: l.spec, string: l.src === S.str, slot: numeric.indexOf(l) })),
      what,
    };
  });

  if (hasReturn && w.symbol && w.offset) bad("a return (ret, duration, uretprobe) is hooked at the function's entry: give the symbol without +offset");
  // Tracepoint pairs: the same fields read at the end find the start.
  const pairSlots: number[] = [];
  const endSlots: SlotSpec[] = [];
  if (p.pairBy && hasReturn) {
    const [category, name] = p.until!.split(':') as [string, string];
    const endFields = fieldsOf(category, name);
    p.pairBy.forEach((n, j) => {
      const i = names.indexOf(n);
      if (i < 0 || n === strArg) bad(`pairBy: "${n}" is not one of the numeric args (${names.filter((x) => x !== strArg).join(', ') || 'none'})`);
      const field = p.args![n]!.field!;
      const f = endFields.find((x) => x.name === field && x.kind === 'int') ?? bad(`pairBy: ${p.until} has no integer field ${field} (it has: ${endFields.map((x) => x.name).join(', ')})`);
      const [size, signed] = p.args![n]!.type ? TYPES[p.args![n]!.type!]! : [f.size, f.signed];
      pairSlots[j] = i + 1;
      endSlots[j] = { kind: K.field, arg: 0, size: size!, signed: !!signed, offset: f.offset };
    });
  }
  const [first, end] = PROGRAMS[w.kind];
  return { probe: p, where: w, slots, metrics, hasReturn, pairSlots, endSlots, first, end };
}
