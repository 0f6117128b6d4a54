/**
 * Counts per service for the flight recorder's summary line: collectors add
 * what they folded, the summary takes the second's counts and starts again.
 */
export class Tally {
  private by = new Map<string, Record<string, number>>();

  constructor(private readonly top = 20) {}

  add(service: string, field: string, n: number): void {
    if (!n) return;
    let r = this.by.get(service);
    if (!r) this.by.set(service, (r = {}));
    r[field] = (r[field] ?? 0) + n;
  }

  /** The counts since the last take, the busiest services first (at most `top`, the rest summed as `_other`); undefined when nothing happened. */
  take(rank: string): Record<string, Record<string, number>> | undefined {
    if (!this.by.size) return undefined;
    const rows = [...this.by].sort((a, b) => (b[1][rank] ?? 0) - (a[1][rank] ?? 0));
    this.by = new Map();
    const out: Record<string, Record<string, number>> = {};
    for (const [s, r] of rows.slice(0, this.top)) out[s] = r;
    if (rows.length > this.top) {
      const other: Record<string, number> = {};
      for (const [, r] of rows.slice(this.top)) for (const [k, v] of Object.entries(r)) other[k] = (other[k] ?? 0) + v;
      out._other = other;
    }
    return out;
  }
}
