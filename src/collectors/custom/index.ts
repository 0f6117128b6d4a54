import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type client from 'prom-client';
import { BpfObject, type BpfProgram } from '../../bpf/object.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config, ProbeConfig, ProbeMetric } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { BucketHistogram, type Series } from '../../metrics/bucket-histogram.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import { KernscopeError } from '../../errors.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';

const OBJECT = 'custom.bpf.o';
const TYPES: Record<string, [number, boolean]> = { u8: [1, false], u16: [2, false], u32: [4, false], u64: [8, false], s8: [1, true], s16: [2, true], s32: [4, true], s64: [8, true] };
const OPS: Record<string, number> = { '==': 1, '!=': 2, '<': 3, '<=': 4, '>': 5, '>=': 6 };
const SRC_SLOT0 = 1;
const SRC_RET = 5;
const SRC_DURATION = 6;

interface Where {
  kind: 'uprobe' | 'usdt';
  binary: string;
  symbol?: string;
  provider?: string;
  name?: string;
}

/** "/bin/x:symbol" or "/bin/x:provider:name". */
function where(p: ProbeConfig): Where {
  if (p.uprobe) {
    const i = p.uprobe.lastIndexOf(':');
    return { kind: 'uprobe', binary: p.uprobe.slice(0, i), symbol: p.uprobe.slice(i + 1) };
  }
  const [binary, provider, name] = p.usdt!.split(':');
  return { kind: 'usdt', binary: binary!, provider: provider!, name: name! };
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
function resolveMember(binary: string, spec: string): { offset: number; size: number; signed: boolean } {
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
  const t = C_TYPES[m.type];
  if (!t) throw new Error(`${spec} is a ${m.type}: only integer members can be read`);
  return { offset: m.offset, size: t[0], signed: t[1] };
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

interface Instance {
  probe: string;
  metric: ProbeMetric;
  obj: BpfObject;
  counter?: client.Counter<string>;
  hist?: BucketHistogram;
  limiter: LabelLimiter;
  last: Map<string, [number, number]>;
  unit: number;
}

/**
 * User-declared metrics on uprobes, uretprobes and USDT probes (config
 * `probes`): one generic, precompiled BPF program instance per metric,
 * set up by read-only constants; nothing is compiled on the user's machine.
 */
export class CustomCollector implements Collector {
  readonly name = 'custom';
  private instances: Instance[] = [];
  private ctx!: CollectorContext;

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    if (!config.probes.length) return { collector: this.name, runnable: false, reason: 'no probes in the config', hooks: [] };
    if (!f.uprobe.ok) return { collector: this.name, runnable: false, reason: `uprobes: ${f.uprobe.detail}`, hooks: [] };
    return { collector: this.name, runnable: true, hooks: config.probes.map((p) => ({ event: p.name, kind: 'uprobe' as const })) };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    try {
      for (const p of ctx.config.probes) for (const m of p.metrics) this.instances.push(this.load(p, m));
    } catch (e) {
      for (const i of this.instances) i.obj.close();
      this.instances = [];
      throw e;
    }
  }

  private load(p: ProbeConfig, m: ProbeMetric): Instance {
    const w = where(p);
    const bad = (msg: string): never => {
      throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `probe "${p.name}": ${msg}`);
    };
    if (!fs.existsSync(w.binary)) bad(`no such binary ${w.binary}`);
    const names = Object.keys(p.args ?? {});
    const slots = Buffer.alloc(32);
    names.forEach((n, i) => {
      const a = p.args![n]!;
      let [size, signed] = TYPES[a.type ?? 'u64']!;
      let offset = a.offset;
      if (a.member) {
        if (a.offset !== undefined) bad(`args.${n}: give offset or member, not both`);
        try {
          const r = resolveMember(w.binary, a.member);
          offset = r.offset;
          if (!a.type) [size, signed] = [r.size, r.signed];
        } catch (e) {
          bad(`args.${n}: ${(e as Error).message}`);
        }
      }
      slots.writeUInt8(offset === undefined ? 1 : 2, i * 8);
      slots.writeUInt8(a.arg, i * 8 + 1);
      slots.writeUInt8(size!, i * 8 + 2);
      slots.writeUInt8(signed ? 1 : 0, i * 8 + 3);
      slots.writeUInt32LE(offset ?? 0, i * 8 + 4);
    });
    const src = (s: string | undefined): number => {
      if (!s) return 0;
      if (s === 'ret') return SRC_RET;
      if (s === 'duration') return SRC_DURATION;
      const i = names.indexOf(s);
      if (i < 0) bad(`metric "${m.name}": "${s}" is not ret, duration or one of args (${names.join(', ') || 'none'})`);
      return SRC_SLOT0 + i;
    };
    const value = src(m.value);
    const label = src(m.label?.from);
    const filter = src(m.filter?.from);
    const usesReturn = [value, label, filter].some((x) => x === SRC_RET || x === SRC_DURATION);
    if (w.kind === 'usdt' && [value, label, filter].includes(SRC_RET)) bad(`metric "${m.name}": ret needs a uprobe (a USDT probe has no return)`);
    if (w.kind === 'usdt' && usesReturn && !p.until) bad(`metric "${m.name}": duration at a USDT probe needs "until", the probe that ends it`);
    if (p.until && w.kind !== 'usdt') bad('until goes with usdt');
    const unit = m.value === 'duration' ? 1e9 : 1; // durations: buckets in seconds, the kernel counts ns
    const bounds = Buffer.alloc(256);
    const explicit = Array.isArray(m.buckets) ? m.buckets : [];
    explicit.forEach((b, i) => bounds.writeBigInt64LE(BigInt(Math.round(b * unit)), i * 8));
    const filterVal = Buffer.alloc(8);
    filterVal.writeBigInt64LE(BigInt(m.filter?.value ?? 0));
    const rodata = {
      slots,
      value_src: value,
      label_src: label,
      filter_src: filter,
      filter_op: m.filter ? OPS[m.filter.op]! : 0,
      filter_val: filterVal,
      bucket_mode: m.type === 'counter' ? 0 : m.buckets === 'log2' ? 2 : 1,
      nbounds: explicit.length,
      bounds,
      has_return: usesReturn ? 1 : 0,
      target_tgid: p.pid ?? 0,
    };
    const obj = BpfObject.load(bpfObjectPath(OBJECT), {
      rodata,
      skipPrograms:
        w.kind === 'usdt'
          ? ['custom_entry', 'custom_return', ...(usesReturn ? [] : ['custom_usdt_done'])]
          : ['custom_usdt', 'custom_usdt_done', ...(usesReturn ? [] : ['custom_return'])],
    });
    try {
      const pid = p.pid ?? -1;
      if (w.kind === 'usdt') {
        const pairs: Array<[string, string, string]> = [['custom_usdt', w.provider!, w.name!]];
        if (usesReturn) {
          const [provider, name] = p.until!.split(':');
          pairs.push(['custom_usdt_done', provider!, name!]);
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
        try {
          obj.attach('custom_entry', { kind: 'uprobe', binary: w.binary, symbol: w.symbol!, pid });
          if (usesReturn) obj.attach('custom_return', { kind: 'uretprobe', binary: w.binary, symbol: w.symbol!, pid });
        } catch (e) {
          const near = nearestSymbols(w.binary, w.symbol!);
          bad(`no symbol ${w.symbol} in ${w.binary}${near.length ? ` (nearest: ${near.join(', ')})` : ''}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    } catch (e) {
      obj.close();
      throw e;
    }
    const labelNames = m.label ? [m.label.name] : [];
    const inst: Instance = {
      probe: p.name,
      metric: m,
      obj,
      limiter: new LabelLimiter(p.maxSeries ?? 100, () => this.ctx.drops.inc({ source: 'custom', reason: 'label_overflow' })),
      last: new Map(),
      unit,
    };
    if (m.type === 'counter') inst.counter = this.ctx.metrics.counter(m.name, m.help ?? `Calls of ${w.symbol ?? w.name} (probe ${p.name}).`, labelNames);
    else {
      const b = explicit.length ? explicit : Array.from({ length: 40 }, (_, i) => 2 ** (i + 1) / unit);
      inst.hist = new BucketHistogram(m.name, m.help ?? `${m.value} at ${w.symbol ?? w.name} (probe ${p.name}).`, b);
      this.ctx.metrics.register(inst.hist);
    }
    this.ctx.drops.inc({ source: 'custom', reason: 'label_overflow' }, 0);
    return inst;
  }

  private labelOf(m: ProbeMetric, raw: bigint): Record<string, string> {
    if (!m.label) return {};
    const v = raw.toString();
    return { [m.label.name]: m.label.values?.[v] ?? m.label.other ?? v };
  }

  programs(): BpfProgram[] {
    return this.instances.flatMap((i) => [...i.obj.programs.values()]);
  }

  collect(): void {
    for (const inst of this.instances) {
      for (const { key, value } of inst.obj.map('agg').entries()) {
        const hex = key.toString('hex');
        const count = Number(value.readBigUInt64LE(0));
        const sum = Number(value.readBigInt64LE(8));
        const [lc, ls] = inst.last.get(hex) ?? [0, 0];
        inst.last.set(hex, [count, sum]);
        const dc = count - lc;
        if (dc <= 0) continue;
        const raw = inst.limiter.admit(key.subarray(0, 8).toString('hex'), this.labelOf(inst.metric, key.readBigInt64LE(0)));
        if (inst.counter) inst.counter.inc(raw, dc);
        if (inst.hist) {
          const s: Series = inst.hist.series(Object.values(raw).join('\0'), raw);
          const b = key.readUInt32LE(8);
          if (b < s.counts.length) s.counts[b]! += dc;
          s.count += dc;
          s.sum += (sum - ls) / inst.unit;
        }
      }
    }
  }

  stop(): void {
    for (const i of this.instances) i.obj.close();
    this.instances = [];
  }
}
