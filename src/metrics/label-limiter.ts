import type { Labels } from './registry.js';

/**
 * Bounds the distinct label sets a collector exports. Past the cap, new sets
 * fold into one whose every label reads "_overflow", and each refused set is
 * counted once,
 * so a flood of short-lived services can neither exhaust memory nor vanish.
 */
export class LabelLimiter {
  private readonly seen = new Set<string>();
  /** Refused sets, so each is counted once (bounded: past it, every fold counts). */
  private readonly refused = new Set<string>();
  overflowed = 0;

  constructor(
    readonly max: number,
    private readonly onOverflow: () => void,
  ) {}

  admit(key: string, labels: Labels): Labels {
    if (this.seen.has(key)) return labels;
    if (this.seen.size < this.max) {
      this.seen.add(key);
      return labels;
    }
    if (!this.refused.has(key)) {
      if (this.refused.size < this.max * 10) this.refused.add(key);
      this.overflowed++;
      this.onOverflow();
    }
    const folded: Labels = {};
    for (const k of Object.keys(labels)) folded[k] = '_overflow';
    return folded;
  }
}
