/**
 * A probe's metric families, and the fold of its kernel table into them:
 * each aggregation entry's growth since the last read (Cumulative), its
 * labels decoded from the key and capped per probe.
 */
import type client from 'prom-client';
import type { ProbeLabel } from '../../config/schema.js';
import { BucketHistogram, type Series } from '../../metrics/bucket-histogram.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { MetricsRegistry } from '../../metrics/registry.js';
import { Cumulative } from '../cumulative.js';
import type { CustomLayout } from './layout.js';
import type { MetricPlan, ProbeSpec } from './spec.js';

interface MetricState {
  plan: MetricPlan;
  counter?: client.Counter<string>;
  gauge?: client.Gauge<string>;
  hist?: BucketHistogram;
  limiter: LabelLimiter;
}

/** How a label's raw value reads. */
export function formatNumber(v: bigint, l: ProbeLabel): string {
  if (l.format === 'hex') return `0x${BigInt.asUintN(64, v).toString(16)}`;
  if (l.format === 'dev') return `${Number(v >> 20n) & 0xfff}:${Number(v & 0xfffffn)}`; // the kernel's dev_t: 12 bits major, 20 minor
  return v.toString();
}

/** The labels a kernel key stands for: a string read in the kernel and up to two numbers, each named by `values`. */
function labelsOf(L: CustomLayout, plan: MetricPlan, key: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const { spec, string, slot } of plan.labels) {
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

export class ProbeExport {
  private readonly states: MetricState[];
  private readonly last = new Cumulative();

  /** Registers the probe's families; `overflow` counts a label set past the probe's cap. */
  constructor(private readonly L: CustomLayout, spec: ProbeSpec, metrics: MetricsRegistry, overflow: () => void) {
    const p = spec.probe;
    this.states = spec.metrics.map((plan) => {
      const m = plan.metric;
      const labelNames = plan.labels.map((l) => l.spec.name);
      const st: MetricState = { plan, limiter: new LabelLimiter(p.maxSeries ?? 100, overflow) };
      if (m.type === 'counter') st.counter = metrics.counter(m.name, m.help ?? `Calls of ${plan.what} (probe ${p.name}).`, labelNames);
      else if (m.type === 'gauge') st.gauge = metrics.gauge(m.name, m.help ?? `Last ${m.value} at ${plan.what} (probe ${p.name}).`, labelNames);
      else {
        const explicit = Array.isArray(m.buckets) ? m.buckets : [];
        const b = explicit.length ? explicit : Array.from({ length: 40 }, (_, j) => 2 ** (j + 1) / plan.unit);
        st.hist = new BucketHistogram(m.name, m.help ?? `${m.value} at ${plan.what} (probe ${p.name}).`, b);
        metrics.register(st.hist);
      }
      return st;
    });
  }

  /** Folds the probe's aggregation table (key, value pairs) into its series. */
  fold(entries: Iterable<{ key: Buffer; value: Buffer }>): void {
    const L = this.L;
    const seen = new Set<string>();
    for (const { key, value } of entries) {
      const st = this.states[key.readUInt32LE(L.key.metric)];
      if (!st) continue;
      const hex = key.toString('hex');
      seen.add(hex);
      const count = Number(value.readBigUInt64LE(L.value.count));
      const sum = Number(value.readBigInt64LE(L.value.sum));
      // The sum is signed: it may fall while the count grows.
      const [dc, ds] = this.last.deltaCounted(hex, [count, sum]);
      if (!dc) continue;
      const { plan } = st;
      const labels = st.limiter.admit(key.toString('hex', 0, L.key.bucket) + key.toString('hex', L.key.str), labelsOf(L, plan, key));
      if (st.counter) st.counter.inc(labels, plan.sums ? Math.max(0, ds!) / plan.unit : dc);
      else if (st.gauge) st.gauge.set(labels, Number(value.readBigInt64LE(L.value.last)) / plan.unit);
      else if (st.hist) {
        const s: Series = st.hist.series(Object.values(labels).join('\0'), labels);
        const b = key.readUInt32LE(L.key.bucket);
        if (b < s.counts.length) s.counts[b]! += dc!;
        s.count += dc!;
        s.sum += ds! / plan.unit;
      }
    }
    this.last.prune(seen);
  }
}
