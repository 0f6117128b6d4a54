import { BucketHistogram } from './bucket-histogram.js';
import type { Labels } from './registry.js';

/**
 * A Prometheus histogram filled from the kernel's log2 slots.
 *
 * Slot i counts values in [2^i, 2^(i+1)) of the kernel's unit; its upper bound
 * is 2^(i+1) × `unitSeconds`. Buckets run from slot `minSlot` to `maxSlot`:
 * lower slots fold into the first bucket, higher ones only into +Inf, so
 * every series has the same `le` set and `_count` equals the kernel's count.
 */
export class KernelHistogram extends BucketHistogram {
  constructor(
    name: string,
    help: string,
    readonly labelNames: readonly string[],
    readonly minSlot: number,
    readonly maxSlot: number,
    readonly unitSeconds: number,
  ) {
    const bounds: number[] = [];
    for (let s = minSlot; s <= maxSlot; s++) bounds.push(2 ** (s + 1) * unitSeconds);
    super(name, help, bounds);
  }

  /** Adds `count` observations in kernel slot `slot`, with their sum in seconds. */
  add(key: string, labels: Labels, slot: number, count: number, sumSeconds: number): void {
    const s = this.series(key, labels);
    const i = Math.max(slot, this.minSlot) - this.minSlot;
    if (i < s.counts.length) s.counts[i]! += count;
    s.count += count;
    s.sum += sumSeconds;
  }
}
