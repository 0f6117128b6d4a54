/**
 * TCP connections, bytes, retransmits, resets, connect latency, RTT and
 * lifetimes per service, aggregated in the kernel. Stages: kernel.ts loads
 * and attaches, fold.ts reads the tables, export.ts names the series.
 */
import type { BpfObject, BpfProgram, Link, RingBuffer } from '../../bpf/object.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import type { Config } from '../../config/schema.js';
import { Tally } from '../../recorder/tally.js';
import { KernelDrops } from '../drops.js';
import { NO_RINGBUF, chooseHook } from '../hooks.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { TcpExport } from './export.js';
import { TcpFold } from './fold.js';
import { TCP_HOOKS, loadTcp } from './kernel.js';
import type { TcpLayout } from './decode.js';

export class TcpCollector implements Collector {
  readonly name = 'tcp';
  private obj: BpfObject | undefined;
  private live: Link | undefined;
  private events: RingBuffer | undefined;
  private drain: NodeJS.Timeout | undefined;
  private fold!: TcpFold;
  private drops!: KernelDrops;

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    const hooks = TCP_HOOKS.filter((h) => h.event !== 'tcp_probe' || config.collectors.tcp.rtt === 'segments').map((h) => chooseHook(h, f));
    const missing = hooks.find((h, i) => !h.kind && TCP_HOOKS[i]!.required);
    if (!config.collectors.tcp.enabled) return { collector: this.name, runnable: false, reason: 'disabled in config', hooks };
    if (missing) return { collector: this.name, runnable: false, reason: `${missing.event}: ${missing.reason}`, hooks };
    if (!f.ringbuf) return { collector: this.name, runnable: false, reason: NO_RINGBUF, hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`tcp collector cannot run: ${plan.reason}`);
    const k = loadTcp(ctx.config, plan.hooks.filter((h) => h.kind), ctx.features.hasBtfType('bpf_iter__tcp'), ctx.recorder.on);
    this.obj = k.obj;
    this.live = k.live;
    const out = new TcpExport(ctx.config, ctx.metrics, k.layout, ctx.namer, () => ctx.drops.inc({ source: 'tcp', reason: 'label_overflow' }));
    const tally = ctx.recorder.on ? new Tally() : undefined;
    this.fold = new TcpFold(k.layout, out, (tgid) => ctx.procs.alive(tgid), tally);
    if (tally) this.record(ctx, k.obj, k.layout, tally);
    this.drops = new KernelDrops(k.obj.map('drops'), 'tcp', k.layout.dropReasons, ctx.drops, ['label_overflow']);
  }

  /**
   * For the flight recorder: connections opened, closed, reset and
   * retransmitted per service in its summary, and each reset and burst of
   * retransmits as a record, named by its owner as the counters are.
   */
  private record(ctx: CollectorContext, obj: BpfObject, L: TcpLayout, tally: Tally): void {
    ctx.recorder.summary('tcp', () => tally.take('opened'));
    this.events = obj.ringBuffer('tcp_events', (rec) => {
      const e = L.decodeEvent(rec);
      if (!e) return;
      const owner = e.key.tgid ? { service: ctx.namer.names(e.key.tgid, e.key.comm, e.key.port).service, pid: e.key.tgid, comm: e.key.comm } : {};
      ctx.recorder.note(e.kind, { t: ctx.recorder.at(e.tsNs), ...owner, local: e.local, remote: e.remote, state: e.state, ...(e.kind === 'tcp_retransmit_burst' ? { retransmits: e.count } : {}) });
    });
    // Records wake nobody: drained here, well within the journal's second.
    this.drain = setInterval(() => this.events?.consume(), 200);
    this.drain.unref();
  }

  programs(): BpfProgram[] {
    return this.obj ? [...this.obj.programs.values()] : [];
  }

  collect(forSummary = false): void {
    if (!this.obj) return;
    this.events?.consume();
    // The summary reads the counts of tcp_stats: open connections' bytes and
    // the RTT histograms wait for the scrape or the interval.
    if (this.live && !forSummary) this.fold.openConnections(this.obj.map('tcp_open'), this.live);
    this.fold.stats(this.obj.map('tcp_stats'));
    if (!forSummary) this.fold.histograms(this.obj.map('tcp_hist'));
    this.drops.fold();
  }


  stop(): void {
    clearInterval(this.drain);
    this.events?.close();
    this.events = undefined;
    this.obj?.close();
    this.obj = undefined;
  }
}
