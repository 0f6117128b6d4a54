import type { Labels, MetricLike, MetricSnapshot } from './registry.js';

/**
 * A Prometheus histogram filled from the kernel's log2 slots.
 *
 * Slot i counts values in [2^i, 2^(i+1)) of the kernel's unit; its upper bound
 * is 2^(i+1) × `unitSeconds`. Buckets run from slot `minSlot` to `maxSlot`:
 * lower slots fold into the first bucket, higher ones only into +Inf, so
 * every series has the same `le` set and `_count` equals the kernel's count.
 */
export class KernelHistogram implements MetricLike {
  readonly type = 'histogram';
  private readonly series = new Map<string, { labels: Labels; counts: Float64Array; sum: number; count: number }>();
  readonly bounds: number[];

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly minSlot: number,
    readonly maxSlot: number,
    readonly unitSeconds: number,
  ) {
    this.bounds = [];
    for (let s = minSlot; s <= maxSlot; s++) this.bounds.push(2 ** (s + 1) * unitSeconds);
  }

  /** Adds `count` observations in kernel slot `slot`, with their sum in seconds. */
  add(key: string, labels: Labels, slot: number, count: number, sumSeconds: number): void {
    let s = this.series.get(key);
    if (!s) {
      s = { labels, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    const i = Math.max(slot, this.minSlot) - this.minSlot;
    if (i < s.counts.length) s.counts[i]! += count;
    s.count += count;
    s.sum += sumSeconds;
  }

  get seriesCount(): number {
    return this.series.size;
  }

  get(): MetricSnapshot {
    const values: MetricSnapshot['values'] = [];
    for (const s of this.series.values()) {
      let cum = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cum += s.counts[i]!;
        values.push({ labels: { ...s.labels, le: this.bounds[i]! }, value: cum, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}
