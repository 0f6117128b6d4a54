import type client from 'prom-client';
import type { BpfMap } from '../bpf/object.js';
import { Cumulative } from './cumulative.js';

/**
 * Folds an object's `drops` per-CPU array (KS_DECLARE_DROPS in
 * bpf/common.bpf.h) into kernscope_events_dropped_total{source,reason}.
 * Every reason has a series from the start, so an alert can watch it at 0.
 */
export class KernelDrops {
  private readonly last = new Cumulative();

  constructor(
    private readonly map: BpfMap,
    private readonly source: string,
    /** Names of the kernel's reasons, by index. */
    private readonly reasons: readonly string[],
    private readonly counter: client.Counter<string>,
    /** Reasons counted in user space, declared here so they start at 0 too. */
    userReasons: readonly string[] = [],
  ) {
    for (const reason of [...reasons, ...userReasons]) counter.inc({ source, reason }, 0);
  }

  fold(): void {
    for (const { key, value } of this.map.entries()) {
      const i = key.readUInt32LE(0);
      const reason = this.reasons[i];
      if (!reason) continue;
      const [d] = this.last.delta(String(i), [this.map.field(value, 0)]);
      if (d! > 0) this.counter.inc({ source: this.source, reason }, d);
    }
  }
}
