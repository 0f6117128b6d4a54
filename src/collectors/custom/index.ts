import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type client from 'prom-client';
import { BpfObject, type BpfProgram } from '../../bpf/object.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config, ProbeConfig, ProbeLabel, ProbeMetric } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { BucketHistogram, type Series } from '../../metrics/bucket-histogram.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import { KernscopeError } from '../../errors.js';
import { tracepointFields, type TpField } from './tracefs.js';
import { CustomLayout } from './layout.js';
import { Cumulative } from '../cumulative.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';

const OBJECT = 'custom.bpf.o';
const TYPES: Record<string, [number, boolean]> = { u8: [1, false], u16: [2, false], u32: [4, false], u64: [8, false], s8: [1, true], s16: [2, true], s32: [4, true], s64: [8, true] };
// Array lengths of bpf/custom.h (CUSTOM_SLOTS, CUSTOM_METRICS): the load
// checks each packed array against its .rodata variable's size. Every
// offset, size and enum value comes from the object's BTF (layout.ts).
const MAX_SLOTS = 4;
const MAX_METRICS = 8;

interface Where {
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
function where(p: ProbeConfig): Where {
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

/** The file offset of a virtual address, through the ELF LOAD segment holding it (readelf -lW). */
function fileOffset(binary: string, vaddr: number): number {
  const out = execFileSync('readelf', ['-lW', binary], { encoding: 'utf8' });
  for (const l of out.split('\n')) {
    const c = l.trim().split(/\s+/);
    if (c[0] !== 'LOAD') continue;
    const [off, va, , , memsz] = [Number(c[1]), Number(c[2]), Number(c[3]), Number(c[4]), Number(c[5])];
    if (vaddr >= va && vaddr < va + memsz) return vaddr - va + off;
  }
  throw new Error(`address 0x${vaddr.toString(16)} is in no loadable segment of ${binary}`);
}

/** Symbol names of an ELF file nearest to `want`, for "no such symbol" errors. */
function nearestSymbols(binary: string, want: string): string[] {
  let out = '';
  try {
    out = execFileSync('readelf', ['-Ws', '--dyn-syms', binary], { encoding: 'utf8', maxBuffer: 256 << 20 });
  } catch {
    return [];
  }
  const names = new Set<string>();
  for (const l of out.split('\n')) {
    const c = l.trim().split(/\s+/);
    if (c[3] === 'FUNC' && c[7]) names.add(c[7].replace(/@.*$/, ''));
  }
  const w = want.toLowerCase();
  const score = (n: string): number => {
    const s = n.toLowerCase();
    if (s.includes(w) || w.includes(s)) return 0;
    let common = 0;
    while (common < s.length && common < w.length && s[common] === w[common]) common++;
    return 100 - common;
  };
  return [...names].sort((a, b) => score(a) - score(b) || a.localeCompare(b)).slice(0, 3);
}

/** Integer C types by the names DWARF gives them: [bytes, signed]. */
const C_TYPES: Record<string, [number, boolean]> = {
  uint8_t: [1, false], 'unsigned char': [1, false], int8_t: [1, true], char: [1, true], 'signed char': [1, true], _Bool: [1, false], bool: [1, false],
  uint16_t: [2, false], 'unsigned short': [2, false], 'short unsigned int': [2, false], int16_t: [2, true], short: [2, true], 'short int': [2, true],
  uint32_t: [4, false], 'unsigned int': [4, false], unsigned: [4, false], int32_t: [4, true], int: [4, true],
  uint64_t: [8, false], 'unsigned long': [8, false], 'long unsigned int': [8, false], 'long long unsigned int': [8, false], size_t: [8, false], uintptr_t: [8, false],
  int64_t: [8, true], long: [8, true], 'long int': [8, true], 'long long int': [8, true], ssize_t: [8, true], intptr_t: [8, true], off_t: [8, true],
};

/**
 * Offset, size and signedness of `struct.member` from a binary's DWARF, by
 * llvm-dwarfdump. Errors say what is missing: no debug info at all (a
 * stripped binary), no such struct, no such member (with those there are).
 */
function resolveMember(binary: string, spec: string, strBytes: number): { offset: number; size: number; signed: boolean; string: boolean } {
  const [struct, member] = spec.split('.') as [string, string];
  let out = '';
  try {
    out = execFileSync('llvm-dwarfdump', ['--name', struct, '--show-children', binary], { encoding: 'utf8', maxBuffer: 256 << 20 });
  } catch (e) {
    throw new Error(`cannot read DWARF of ${binary}: ${(e as Error).message.split('\n')[0]}`);
  }
  const blocks = out.split(/\n(?=0x[0-9a-f]+:)/);
  const start = blocks.findIndex((b) => /DW_TAG_structure_type/.test(b) && b.includes(`DW_AT_name\t("${struct}")`) && /DW_AT_byte_size/.test(b));
  if (start < 0) {
    const debug = execFileSync('llvm-dwarfdump', ['--debug-info', binary], { encoding: 'utf8', maxBuffer: 256 << 20 }).includes('DW_TAG_compile_unit');
    throw new Error(debug ? `no struct ${struct} in the debug info of ${binary}` : `${binary} has no debug info (stripped?): give offset and type instead of member`);
  }
  const members: Array<{ name: string; offset: number; type: string }> = [];
  for (const b of blocks.slice(start + 1)) {
    if (!/DW_TAG_member/.test(b)) break;
    const name = /DW_AT_name\t\("([^"]+)"\)/.exec(b)?.[1];
    const loc = /DW_AT_data_member_location\t\((0x[0-9a-f]+|\d+)\)/.exec(b)?.[1];
    const type = /DW_AT_type\t\(0x[0-9a-f]+ "([^"]+)"\)/.exec(b)?.[1];
    if (name && loc !== undefined && type) members.push({ name, offset: Number(loc), type });
  }
  const m = members.find((x) => x.name === member);
  if (!m) throw new Error(`struct ${struct} has no member ${member} (it has: ${members.map((x) => x.name).join(', ')})`);
  const chars = /^(?:const )?char\[(\d+)\]$/.exec(m.type);
  if (chars) return { offset: m.offset, size: Math.min(Number(chars[1]), strBytes - 1), signed: false, string: true };
  const t = C_TYPES[m.type];
  if (!t) throw new Error(`${spec} is a ${m.type}: only integer and char array members can be read`);
  return { offset: m.offset, size: t[0], signed: t[1], string: false };
}

/** USDT probes a binary has, for "no such probe" errors. */
function usdtProbes(binary: string): string[] {
  try {
    const out = execFileSync('readelf', ['-n', binary], { encoding: 'utf8', maxBuffer: 256 << 20 });
    const list: string[] = [];
    let provider = '';
    for (const l of out.split('\n')) {
      const p = /Provider: (\S+)/.exec(l);
      if (p) provider = p[1]!;
      const n = /Name: (\S+)/.exec(l);
      if (n && provider) list.push(`${provider}:${n[1]}`);
    }
    return [...new Set(list)];
  } catch {
    return [];
  }
}

interface MetricState {
  metric: ProbeMetric;
  counter?: client.Counter<string>;
  gauge?: client.Gauge<string>;
  hist?: BucketHistogram;
  /** Durations are counted in ns and exported in seconds. */
  unit: number;
  /** A counter that adds its value instead of counting calls. */
  sums: boolean;
  /** slot: which number of the key (0 or 1) a numeric label reads. */
  labels: Array<{ spec: ProbeLabel; string: boolean; slot: number }>;
  limiter: LabelLimiter;
}

interface Instance {
  obj: BpfObject;
  layout: CustomLayout;
  metrics: MetricState[];
  /** Count and sum per kernel key at the last collect. */
  last: Cumulative;
}

/** How a label's raw value reads. */
function formatNumber(v: bigint, l: ProbeLabel): string {
  if (l.format === 'hex') return `0x${BigInt.asUintN(64, v).toString(16)}`;
  if (l.format === 'dev') return `${Number(v >> 20n) & 0xfff}:${Number(v & 0xfffffn)}`; // the kernel's dev_t: 12 bits major, 20 minor
  return v.toString();
}

/** The labels a kernel key stands for: a string read in the kernel and up to two numbers, each named by `values`. */
function labelsOf(L: CustomLayout, st: MetricState, key: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const { spec, string, slot } of st.labels) {
    let v: string;
    if (string) {
      const s = key.subarray(L.key.str, L.key.str + L.strBytes);
      const end = s.indexOf(0);
      v = s.subarray(0, end < 0 ? s.length : end).toString('utf8');
    } else v = formatNumber(key.readBigInt64LE(slot ? L.key.label2 : L.key.label), spec);
    out[spec.name] = spec.values?.[v] ?? spec.other ?? v;
  }
  return out;
}

/**
 * User-declared metrics on uprobes, uretprobes, USDT probes and kernel
 * tracepoints (config `probes`): one generic, precompiled BPF object per
 * probe, set up by read-only constants, its metrics sharing its hooks;
 * nothing is compiled on the user's machine.
 */
export class CustomCollector implements Collector {
  readonly name = 'custom';
  private instances: Instance[] = [];
  private ctx!: CollectorContext;

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    if (!config.probes.length) return { collector: this.name, runnable: false, reason: 'no probes in the config', hooks: [] };
    const needsUprobe = config.probes.some((p) => !p.tracepoint);
    if (needsUprobe && !f.uprobe.ok) return { collector: this.name, runnable: false, reason: `uprobes: ${f.uprobe.detail}`, hooks: [] };
    return {
      collector: this.name,
      runnable: true,
      hooks: config.probes.map((p) => ({ event: p.name, kind: p.tracepoint ? ('tracepoint' as const) : ('uprobe' as const) })),
    };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    try {
      for (const p of ctx.config.probes) this.instances.push(this.load(p));
    } catch (e) {
      for (const i of this.instances) i.obj.close();
      this.instances = [];
      throw e;
    }
  }

  private load(p: ProbeConfig): Instance {
    const w = where(p);
    const bad = (msg: string): never => {
      throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `probe "${p.name}": ${msg}`);
    };
    const tp = w.kind === 'tracepoint';
    if (!tp && !fs.existsSync(w.binary)) bad(`no such binary ${w.binary}`);
    const fieldsOf = (category: string, name: string): TpField[] => {
      try {
        return tracepointFields(category, name);
      } catch (e) {
        return bad((e as Error).message);
      }
    };
    const fields = tp ? fieldsOf(w.provider!, w.name!) : [];
    const names = Object.keys(p.args ?? {});
    const L = CustomLayout.of(bpfObjectPath(OBJECT));
    const SLOT = L.slotKind;
    const STR_BYTES = L.strBytes;
    const slots = Buffer.alloc(MAX_SLOTS * L.slotSize);
    const put = (i: number, kind: number, arg: number, size: number, signed: boolean, offset: number): void =>
      L.writeSlot(slots, i, { kind, arg, size, signed, offset });
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
          put(i, f.kind === 'chars' ? SLOT.strField : SLOT.strDataloc, 0, size, false, f.offset);
        } else if (f.kind === 'int') {
          if (isStr) bad(`args.${n}: field ${f.name} is not a string`);
          const [size, signed] = a.type ? TYPES[a.type]! : [f.size, f.signed];
          put(i, SLOT.field, 0, size, signed, f.offset);
        } else bad(`args.${n}: field ${f.name} is neither an integer nor a string`);
      } else {
        if (a.field) bad(`args.${n}: field goes with tracepoint; give arg`);
        if (a.arg === undefined) bad(`args.${n}: give arg, the argument's index`);
        let offset = a.offset;
        let [size, signed] = isStr ? [a.size ?? STR_BYTES - 1, false] : TYPES[a.type ?? 'u64']!;
        if (a.member) {
          if (a.offset !== undefined) bad(`args.${n}: give offset or member, not both`);
          try {
            const r = resolveMember(w.binary, a.member, STR_BYTES);
            offset = r.offset;
            if (r.string) [isStr, size, signed] = [true, Math.min(a.size ?? r.size, r.size), false];
            else if (isStr) bad(`args.${n}: ${a.member} is not a char array`);
            else if (!a.type) [size, signed] = [r.size, r.signed];
          } catch (e) {
            if (e instanceof KernscopeError) throw e;
            bad(`args.${n}: ${(e as Error).message}`);
          }
        }
        if (isStr) put(i, SLOT.strUser, a.arg!, size!, false, offset ?? 0);
        else put(i, offset === undefined ? SLOT.arg : SLOT.deref, a.arg!, size!, signed!, offset ?? 0);
      }
      if (isStr) {
        if (strArg) bad(`args.${n}: one string per probe (${strArg} is one)`);
        strArg = n;
      }
    });

    if (p.until && w.kind !== 'usdt' && !tp) bad('until goes with usdt or tracepoint');
    if (p.pairBy && !(tp && p.until)) bad('pairBy goes with a tracepoint and its until');
    const noReturn = w.kind === 'usdt' ? 'a USDT probe has no return' : tp ? 'a tracepoint has no return' : '';
    const { slot0: SRC_SLOT0, ret: SRC_RET, duration: SRC_DURATION, str: SRC_STR } = L.src;
    const src = (m: ProbeMetric, s: string | undefined, role: 'value' | 'label' | 'filter'): number => {
      if (!s) return 0;
      if (s === 'ret') return noReturn ? bad(`metric "${m.name}": ret needs a uprobe (${noReturn})`) : SRC_RET;
      if (s === 'duration') {
        if (noReturn && !p.until) bad(`metric "${m.name}": duration needs "until", the ${tp ? 'tracepoint' : 'probe'} that ends it`);
        return SRC_DURATION;
      }
      const i = names.indexOf(s);
      if (i < 0) bad(`metric "${m.name}": "${s}" is not ret, duration or one of args (${names.join(', ') || 'none'})`);
      if (s === strArg) return role === 'label' ? SRC_STR : bad(`metric "${m.name}": ${s} is a string: it can only be a label`);
      return SRC_SLOT0 + i;
    };

    const metricsBuf = Buffer.alloc(MAX_METRICS * L.metricSize);
    const states: MetricState[] = [];
    let hasReturn = false;
    p.metrics.forEach((m, i) => {
      if (m.type !== 'counter' && !m.value) bad(`metric "${m.name}": a ${m.type} needs value`);
      if (m.type !== 'histogram' && m.buckets) bad(`metric "${m.name}": buckets go with a histogram`);
      const value = src(m, m.value, 'value');
      const labelSpecs = m.labels ?? (m.label ? [m.label] : []);
      if (m.label && m.labels) bad(`metric "${m.name}": give label or labels, not both`);
      const labels = labelSpecs.map((l) => ({ spec: l, src: src(m, l.from, 'label') }));
      const numeric = labels.filter((l) => l.src !== SRC_STR);
      if (numeric.length > 2) bad(`metric "${m.name}": at most two labels from numbers (and one from the string arg)`);
      if (labels.length - numeric.length > 1) bad(`metric "${m.name}": two labels from the same string`);
      const label = numeric[0]?.src ?? 0;
      const label2 = numeric[1]?.src ?? 0;
      const labelStr = labels.length > numeric.length;
      const filter = src(m, m.filter?.from, 'filter');
      const needsReturn = w.kind === 'uretprobe' || [value, label, label2, filter].some((x) => x === SRC_RET || x === SRC_DURATION);
      hasReturn ||= needsReturn;
      const unit = m.value === 'duration' ? 1e9 : 1; // durations: seconds out, ns in the kernel
      const explicit = Array.isArray(m.buckets) ? m.buckets : [];
      L.writeMetric(metricsBuf, i, {
        valueSrc: value,
        labelSrc: label,
        label2Src: label2,
        filterSrc: filter,
        filterOp: m.filter ? L.ops[m.filter.op as keyof CustomLayout['ops']] : 0,
        bucketMode: m.type === 'histogram' ? (m.buckets === 'log2' ? L.buckets.log2 : L.buckets.explicit) : 0,
        needsReturn,
        labelStr,
        filterValue: BigInt(m.filter?.value ?? 0),
        bounds: explicit.map((b) => BigInt(Math.round(b * unit))),
      });
      const labelNames = labelSpecs.map((l) => l.name);
      const what = w.symbol ?? (w.offset !== undefined ? `0x${w.offset.toString(16)}` : `${w.provider}:${w.name}`);
      const st: MetricState = {
        metric: m,
        unit,
        sums: m.type === 'counter' && !!m.value,
        labels: labels.map((l) => ({ spec: l.spec, string: l.src === SRC_STR, slot: numeric.indexOf(l) })),
        limiter: new LabelLimiter(p.maxSeries ?? 100, () => this.ctx.drops.inc({ source: 'custom', reason: 'label_overflow' })),
      };
      if (m.type === 'counter') st.counter = this.ctx.metrics.counter(m.name, m.help ?? `Calls of ${what} (probe ${p.name}).`, labelNames);
      else if (m.type === 'gauge') st.gauge = this.ctx.metrics.gauge(m.name, m.help ?? `Last ${m.value} at ${what} (probe ${p.name}).`, labelNames);
      else {
        const b = explicit.length ? explicit : Array.from({ length: 40 }, (_, j) => 2 ** (j + 1) / unit);
        st.hist = new BucketHistogram(m.name, m.help ?? `${m.value} at ${what} (probe ${p.name}).`, b);
        this.ctx.metrics.register(st.hist);
      }
      states.push(st);
    });

    if (hasReturn && w.symbol && w.offset) bad('a return (ret, duration, uretprobe) is hooked at the function\'s entry: give the symbol without +offset');
    // Tracepoint pairs: the same fields read at the end find the start.
    const pairSlots = Buffer.alloc(2);
    const endSlots = Buffer.alloc(2 * L.slotSize);
    if (p.pairBy && hasReturn) {
      const [category, name] = p.until!.split(':') as [string, string];
      const endFields = fieldsOf(category, name);
      p.pairBy.forEach((n, j) => {
        const i = names.indexOf(n);
        if (i < 0 || n === strArg) bad(`pairBy: "${n}" is not one of the numeric args (${names.filter((x) => x !== strArg).join(', ') || 'none'})`);
        const field = p.args![n]!.field!;
        const f = endFields.find((x) => x.name === field && x.kind === 'int') ?? bad(`pairBy: ${p.until} has no integer field ${field} (it has: ${endFields.map((x) => x.name).join(', ')})`);
        const [size, signed] = p.args![n]!.type ? TYPES[p.args![n]!.type!]! : [f.size, f.signed];
        pairSlots.writeUInt8(i + 1, j);
        L.writeSlot(endSlots, j, { kind: SLOT.field, arg: 0, size: size!, signed: !!signed, offset: f.offset });
      });
    }
    const programs: Record<Where['kind'], [string, string]> = {
      uprobe: ['custom_entry', 'custom_return'],
      uretprobe: ['custom_entry', 'custom_return'],
      usdt: ['custom_usdt', 'custom_usdt_done'],
      tracepoint: ['custom_tp', 'custom_tp_done'],
    };
    const [first, end] = programs[w.kind];
    const all = ['custom_entry', 'custom_return', 'custom_usdt', 'custom_usdt_done', 'custom_tp', 'custom_tp_done'];
    const obj = BpfObject.load(bpfObjectPath(OBJECT), {
      rodata: {
        slots,
        nmetrics: p.metrics.length,
        metrics: metricsBuf,
        has_return: hasReturn ? 1 : 0,
        target_tgid: p.pid ?? 0,
        pair_slots: pairSlots,
        end_slots: endSlots,
      },
      skipPrograms: all.filter((x) => x !== first && (x !== end || !hasReturn)),
    });
    try {
      this.attach(obj, p, w, first, hasReturn ? end : undefined, bad);
    } catch (e) {
      obj.close();
      throw e;
    }
    this.ctx.drops.inc({ source: 'custom', reason: 'label_overflow' }, 0);
    return { obj, layout: L, metrics: states, last: new Cumulative() };
  }

  private attach(obj: BpfObject, p: ProbeConfig, w: Where, first: string, end: string | undefined, bad: (m: string) => never): void {
    const pid = p.pid ?? -1;
    if (w.kind === 'tracepoint') {
      const pairs: Array<[string, string]> = [[first, p.tracepoint!]];
      if (end) pairs.push([end, p.until!]);
      for (const [program, tpName] of pairs) {
        const [category, name] = tpName.split(':') as [string, string];
        try {
          obj.attach(program, { kind: 'tracepoint', category, name });
        } catch (e) {
          bad(`cannot attach to tracepoint ${tpName}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    } else if (w.kind === 'usdt') {
      const pairs: Array<[string, string, string]> = [[first, w.provider!, w.name!]];
      if (end) {
        const [provider, name] = p.until!.split(':');
        pairs.push([end, provider!, name!]);
      }
      for (const [program, provider, name] of pairs) {
        try {
          obj.attach(program, { kind: 'usdt', binary: w.binary, provider, name, pid });
        } catch (e) {
          const have = usdtProbes(w.binary);
          bad(`no USDT probe ${provider}:${name} in ${w.binary}${have.length ? ` (it has: ${have.slice(0, 20).join(', ')})` : ' (it has none)'}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    } else {
      if (!w.symbol) {
        // A bare address: as nm prints it, turned into the file offset uprobes take.
        let offset = 0;
        try {
          offset = fileOffset(w.binary, w.offset!);
        } catch (e) {
          bad((e as Error).message);
        }
        try {
          obj.attach(first, { kind: 'uprobe', binary: w.binary, offset, pid });
          if (end) obj.attach(end, { kind: 'uretprobe', binary: w.binary, offset, pid });
        } catch (e) {
          bad(`cannot attach at 0x${w.offset!.toString(16)} in ${w.binary}: ${(e as Error).message.split('\n')[0]}`);
        }
        return;
      }
      const at = { binary: w.binary, symbol: w.symbol, ...(w.offset ? { offset: w.offset } : {}), pid };
      try {
        obj.attach(first, { kind: 'uprobe', ...at });
        if (end) obj.attach(end, { kind: 'uretprobe', ...at });
      } catch (e) {
        const near = nearestSymbols(w.binary, w.symbol);
        bad(`no symbol ${w.symbol} in ${w.binary}${near.length ? ` (nearest: ${near.join(', ')})` : ''}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
  }

  programs(): BpfProgram[] {
    return this.instances.flatMap((i) => [...i.obj.programs.values()]);
  }

  collect(): void {
    for (const inst of this.instances) {
      const L = inst.layout;
      const seen = new Set<string>();
      for (const { key, value } of inst.obj.map('agg').entries()) {
        const st = inst.metrics[key.readUInt32LE(L.key.metric)];
        if (!st) continue;
        const hex = key.toString('hex');
        seen.add(hex);
        const count = Number(value.readBigUInt64LE(L.value.count));
        const sum = Number(value.readBigInt64LE(L.value.sum));
        // The sum is signed: it may fall while the count grows.
        const [dc, ds] = inst.last.deltaCounted(hex, [count, sum]);
        if (!dc) continue;
        const labels = st.limiter.admit(key.toString('hex', 0, L.key.bucket) + key.toString('hex', L.key.str), labelsOf(L, st, key));
        if (st.counter) st.counter.inc(labels, st.sums ? Math.max(0, ds!) / st.unit : dc);
        else if (st.gauge) st.gauge.set(labels, Number(value.readBigInt64LE(L.value.last)) / st.unit);
        else if (st.hist) {
          const s: Series = st.hist.series(Object.values(labels).join('\0'), labels);
          const b = key.readUInt32LE(L.key.bucket);
          if (b < s.counts.length) s.counts[b]! += dc!;
          s.count += dc!;
          s.sum += ds! / st.unit;
        }
      }
      inst.last.prune(seen);
    }
  }

  stop(): void {
    for (const i of this.instances) i.obj.close();
    this.instances = [];
  }
}
