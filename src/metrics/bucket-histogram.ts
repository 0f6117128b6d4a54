import type { Labels, MetricLike, MetricSnapshot } from './registry.js';

export interface Series {
  labels: Labels;
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A Prometheus histogram whose series are found by a key the caller already
 * has, so an observation costs a Map lookup and a bucket search, not a label
 * hash (prom-client hashes the labels on every observe, too slow for one
 * call per HTTP request). Rendering is prom-client's: cumulative `le`
 * buckets, +Inf, _sum and _count.
 */
export class BucketHistogram implements MetricLike {
  readonly type = 'histogram';
  private readonly byKey = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    /** Upper bounds, ascending. */
    readonly bounds: readonly number[],
  ) {}

  /** The series for `key`, created with `labels` the first time. */
  series(key: string, labels: Labels): Series {
    let s = this.byKey.get(key);
    if (!s) {
      s = { labels, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.byKey.set(key, s);
    }
    return s;
  }

  /** One observation of `value`, or `n` of them (a sampled record stands for n). */
  observe(s: Series, value: number, n = 1): void {
    const b = this.bounds;
    let lo = 0;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (value <= b[mid]!) hi = mid;
      else lo = mid + 1;
    }
    if (lo < b.length) s.counts[lo]! += n;
    s.count += n;
    s.sum += value * n;
  }

  /**
   * Adds counts already bucketed elsewhere (the kernel's tables): `buckets[i]`
   * observations at or below bounds[i] and above the bound before it; any
   * past the last bound are in `count` only (+Inf).
   */
  addBuckets(s: Series, buckets: ArrayLike<number>, count: number, sum: number): void {
    const n = Math.min(buckets.length, this.bounds.length);
    for (let i = 0; i < n; i++) s.counts[i]! += buckets[i]!;
    s.count += count;
    s.sum += sum;
  }

  get seriesCount(): number {
    return this.byKey.size;
  }

  get(): MetricSnapshot {
    const values: MetricSnapshot['values'] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.byKey.values()) {
      let cum = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cum += s.counts[i]!;
        values.push({ labels: { ...s.labels, le: this.bounds[i]! }, value: cum, metricName: bucket });
      }
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: bucket });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}
