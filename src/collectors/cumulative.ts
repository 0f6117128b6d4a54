/**
 * The one fold of a cumulative kernel value: its growth since the last read
 * of the same key. A value below the last read means the kernel entry was
 * deleted and made again (a process's entry recreated, a table emptied):
 * it then counts whole. A key whose process is gone is read a last time and
 * forgotten, so the table and this memory stay bounded together.
 */
export class Cumulative {
  private readonly last = new Map<string, number[]>();

  /**
   * Growth of each of `cur`'s values since the last read of `key`;
   * `final`: its process is gone, nothing more will come for this key.
   */
  delta(key: string, cur: number[], final = false): number[] {
    const prev = this.last.get(key);
    const d = cur.map((v, i) => {
      const p = prev?.[i] ?? 0;
      return v >= p ? v - p : v;
    });
    if (final) this.last.delete(key);
    else this.last.set(key, cur);
    return d;
  }

  /**
   * Growth of a count (`cur[0]`, which only grows) and of sums that may
   * also fall (signed values): the count tells a recreated entry, whose
   * values then count whole; otherwise each sum's difference, negative or
   * not.
   */
  deltaCounted(key: string, cur: number[], final = false): number[] {
    const prev = this.last.get(key);
    const reset = !prev || cur[0]! < prev[0]!;
    const d = cur.map((v, i) => (reset ? v : v - prev[i]!));
    if (final) this.last.delete(key);
    else this.last.set(key, cur);
    return d;
  }

  /** Forgets every key not in `seen`: their kernel entries are gone. */
  prune(seen: ReadonlySet<string>): void {
    for (const k of this.last.keys()) if (!seen.has(k)) this.last.delete(k);
  }

  get size(): number {
    return this.last.size;
  }
}
