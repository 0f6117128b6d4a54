/**
 * The TCP collector's fold stage: its kernel tables into the export's
 * series. Counters and histogram slots are cumulative in the kernel; each
 * read adds their growth (Cumulative), and a dead process's entries are
 * read a last time and deleted. Open connections are counted afresh by
 * each walk of the socket iterator.
 */
import type { BpfMap, Link } from '../../bpf/object.js';
import type { Tally } from '../../recorder/tally.js';
import { Cumulative } from '../cumulative.js';
import { COUNTER_FIELDS, type TcpLayout } from './decode.js';
import type { TcpExport } from './export.js';

export class TcpFold {
  private readonly lastStats = new Cumulative();
  private readonly lastHist = new Cumulative();

  constructor(
    private readonly layout: TcpLayout,
    private readonly out: TcpExport,
    private readonly alive: (tgid: number) => boolean,
    /** The flight recorder's per-service summary, when it is on. */
    private readonly tally?: Tally,
  ) {}

  /** Walks open sockets into `open` (emptied first) and sets the gauge from it. */
  openConnections(open: BpfMap, live: Link): void {
    for (const { key } of open.entries()) open.delete(key);
    live.run();
    this.out.open.reset();
    for (const { key, value } of open.entries()) {
      const named = this.out.labels(key);
      if (named) this.out.open.inc(named.labels, open.field(value, 0));
    }
  }

  stats(map: BpfMap): void {
    for (const { key, value } of map.entries()) {
      const tgid = key.readUInt32LE(this.layout.key.tgid);
      // Checked before folding: a dead process's counts are final once read.
      const dead = !this.alive(tgid);
      const d = this.lastStats.delta(key.toString('hex'), COUNTER_FIELDS.map((f) => map.field(value, this.layout.counterSlots[f])), dead);
      const named = this.out.labels(key);
      // Every counter of a label set exists, at 0 until it happens:
      // queries over failures and resets find a series to read.
      if (named) COUNTER_FIELDS.forEach((f, i) => this.out.counters.get(f)!.inc(named.labels, d[i]!));
      if (named && this.tally) COUNTER_FIELDS.forEach((f, i) => this.tally!.add(named.labels.service!, f, d[i]!));
      if (dead) map.delete(key);
    }
  }

  histograms(map: BpfMap): void {
    for (const { key, value } of map.entries()) {
      const hk = this.layout.decodeHistKey(key);
      const dead = !this.alive(hk.key.readUInt32LE(this.layout.key.tgid));
      const hist = hk.kind && this.out.histograms.get(hk.kind);
      const count = map.field(value, this.layout.histValue.count);
      const sumNs = map.field(value, this.layout.histValue.sum);
      const [dc, ds] = this.lastHist.delta(key.toString('hex'), [count, sumNs], dead) as [number, number];
      const named = hist && dc > 0 ? this.out.labels(hk.key) : undefined;
      if (named) hist!.add(named.id, named.labels, hk.slot, dc, ds / 1e9);
      if (dead) map.delete(key);
    }
  }
}
