import type client from 'prom-client';
import { BpfObject, MapUpdate, type BpfMap, type BpfProgram, type Link, type RingBuffer } from '../../bpf/object.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { KernelHistogram } from '../../metrics/kernel-histogram.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { Labels } from '../../metrics/registry.js';
import { NO_RINGBUF, attachSpec, chooseHook, unchosenPrograms, type HookSpec } from '../hooks.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { KernelDrops } from '../drops.js';
import { Cumulative } from '../cumulative.js';
import { COUNTER_FIELDS, TcpLayout, portLabel, type CounterField, type HistKind } from './decode.js';
import { scanSockets } from '../../process/sockets.js';
import { META_LABELS, metadataOn } from '../../process/names.js';
import { Tally } from '../../recorder/tally.js';

const OBJECT = 'tcp.bpf.o';
const LABELS = ['service', 'process', 'direction', 'port'] as const;

export const TCP_HOOKS: HookSpec[] = [
  { event: 'inet_sock_set_state', required: true, programs: { tp_btf: 'tcp_state_btf', raw_tp: 'tcp_state_raw' } },
  { event: 'tcp_probe', required: false, programs: { tp_btf: 'tcp_probe_btf', raw_tp: 'tcp_probe_raw' } },
  { event: 'tcp_retransmit_skb', required: false, programs: { tp_btf: 'tcp_retransmit_btf', raw_tp: 'tcp_retransmit_raw' } },
  { event: 'tcp_send_reset', required: false, programs: { tp_btf: 'tcp_send_reset_btf', raw_tp: 'tcp_send_reset_raw' } },
  { event: 'tcp_receive_reset', required: false, programs: { tp_btf: 'tcp_receive_reset_btf', raw_tp: 'tcp_receive_reset_raw' } },
  { event: 'tcp_destroy_sock', required: false, programs: { tp_btf: 'tcp_destroy_btf', raw_tp: 'tcp_destroy_raw' } },
];

const COUNTERS: Record<CounterField, [string, string]> = {
  opened: ['kernscope_tcp_connections_opened_total', 'TCP connections established (outbound: connect completed; inbound: handshake completed on a listener).'],
  closed: ['kernscope_tcp_connections_closed_total', 'Established TCP connections that closed.'],
  sentBytes: ['kernscope_tcp_sent_bytes_total', 'Bytes sent and acknowledged on TCP connections, counted when each connection closes.'],
  receivedBytes: ['kernscope_tcp_received_bytes_total', 'Bytes received on TCP connections, counted when each connection closes.'],
  retransmits: ['kernscope_tcp_retransmits_total', 'TCP segments retransmitted.'],
  resetsSent: ['kernscope_tcp_resets_sent_total', 'TCP resets sent (service "unknown" when no socket owned the segment).'],
  resetsReceived: ['kernscope_tcp_resets_received_total', 'TCP resets received.'],
  connectFailed: ['kernscope_tcp_connect_failures_total', 'Outbound TCP connections that closed before the handshake completed (refused, reset, timed out).'],
};

/** Kernel slots are µs (slot i: [2^i, 2^(i+1)) µs); each histogram keeps a useful range. */
const HISTOGRAMS: ReadonlyArray<{ kind: HistKind; name: string; help: string; min: number; max: number }> = [
  { kind: 'connect', name: 'kernscope_tcp_connect_duration_seconds', help: 'Time from SYN sent to connection established.', min: 3, max: 24 },
  { kind: 'rtt', name: 'kernscope_tcp_rtt_seconds', help: 'Smoothed round-trip time: one sample per connection at close, or per socket and interval from incoming segments (collectors.tcp.rtt).', min: 3, max: 21 },
  { kind: 'lifetime', name: 'kernscope_tcp_connection_duration_seconds', help: 'Lifetime of closed connections, from establishment to close.', min: 9, max: 31 },
];

export class TcpCollector implements Collector {
  private tally: Tally | undefined;
  private events: RingBuffer | undefined;
  private drain: NodeJS.Timeout | undefined;
  readonly name = 'tcp';
  private obj: BpfObject | undefined;
  /** The TCP socket iterator that counts open connections' bytes at each collection. */
  private live: Link | undefined;
  private openGauge!: client.Gauge<string>;
  private ctx!: CollectorContext;
  private counters = new Map<CounterField, client.Counter<string>>();
  private histograms = new Map<HistKind, KernelHistogram>();
  private layout!: TcpLayout;
  private limiter!: LabelLimiter;
  /** Last value read per kernel key, so cumulative kernel counts become deltas. */
  private lastStats = new Cumulative();
  private lastHist = new Cumulative();
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
    this.ctx = ctx;
    const cfg = ctx.config.collectors.tcp;
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`tcp collector cannot run: ${plan.reason}`);
    const chosen = plan.hooks.filter((h) => h.kind);
    // Open connections' bytes at each collection, where the kernel has the
    // TCP socket iterator; elsewhere bytes count at close only.
    const iter = ctx.features.hasBtfType('bpf_iter__tcp');
    this.obj = BpfObject.load(bpfObjectPath(OBJECT), {
      skipPrograms: [...unchosenPrograms(TCP_HOOKS, chosen), ...(iter ? [] : ['tcp_live_bytes'])],
      rodata: {
        keep_until_destroy: chosen.some((h) => h.event === 'tcp_destroy_sock') ? 1 : 0,
        rtt_mode: { off: 0, close: 1, segments: 2 }[cfg.rtt],
        rtt_interval_ns: BigInt(cfg.rttIntervalMs) * 1_000_000n,
        record_events: ctx.recorder.on ? 1 : 0,
        burst_count: ctx.config.recorder.retransmitBurst,
      },
      maxEntries: {
        socks: cfg.maps.sockets,
        tcp_stats: cfg.maps.stats,
        tcp_hist: cfg.maps.histograms,
        listeners: cfg.maps.listeners,
        // Records only while the flight recorder is on.
        tcp_events: ctx.recorder.on ? 256 << 10 : 4096,
      },
    });
    try {
      this.layout = new TcpLayout(this.obj);
      this.seedListeners();
      for (const h of chosen) this.obj.attach(h.program!, attachSpec(h));
      if (iter) this.live = this.obj.attach('tcp_live_bytes', { kind: 'iter' });
    } catch (e) {
      this.obj.close();
      this.obj = undefined;
      throw e;
    }

    const m = ctx.metrics;
    const labelNames = metadataOn(ctx.config) ? [...LABELS, ...META_LABELS] : [...LABELS];
    for (const f of COUNTER_FIELDS) this.counters.set(f, m.counter(COUNTERS[f][0], COUNTERS[f][1], labelNames));
    this.openGauge = m.gauge('kernscope_tcp_connections_open', 'TCP connections open now (established, or closed by the peer only), as of the last collection; where the kernel has the TCP socket iterator.', labelNames);
    for (const h of HISTOGRAMS) {
      const hist = new KernelHistogram(h.name, h.help, labelNames, h.min, h.max, 1e-6);
      m.register(hist);
      this.histograms.set(h.kind, hist);
    }
    this.limiter = new LabelLimiter(cfg.maxSeries, () => ctx.drops.inc({ source: 'tcp', reason: 'label_overflow' }));
    if (ctx.recorder.on) this.record(ctx);
    this.drops = new KernelDrops(this.obj.map('drops'), 'tcp', this.layout.dropReasons, ctx.drops, ['label_overflow']);
  }

  /**
   * For the flight recorder: connections opened, closed, reset and
   * retransmitted per service in its summary, and each reset and burst of
   * retransmits as a record, named by its owner as the counters are.
   */
  private record(ctx: CollectorContext): void {
    const tally = (this.tally = new Tally());
    ctx.recorder.summary('tcp', () => tally.take('opened'));
    const L = this.layout;
    this.events = this.obj!.ringBuffer('tcp_events', (rec) => {
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

  private seedListeners(): void {
    const map = this.obj!.map('listeners');
    for (const l of scanSockets()) {
      if (l.state !== 'listen') continue;
      try {
        map.update(this.layout.encodeListenerKey(l.netns, l.localPort), this.layout.encodeOwner(l.tgid, l.comm), MapUpdate.NOEXIST);
      } catch {
        // EEXIST: a listen() seen by the kernel meanwhile is fresher
      }
    }
  }

  private labels(keyBuf: Buffer): { id: string; labels: Labels } | undefined {
    const k = this.layout.decodeKey(keyBuf);
    const names = this.ctx.namer.names(k.tgid, k.comm, k.port);
    if (!names.inScope) return undefined;
    const labels: Labels = {
      service: names.service,
      process: names.process,
      direction: k.dir,
      port: portLabel(k.port),
      ...names.meta,
    };
    const id = (l: Labels): string => Object.values(l).join('\0');
    const admitted = this.limiter.admit(id(labels), labels);
    return { id: id(admitted), labels: admitted };
  }

  collect(): void {
    if (!this.obj) return;
    this.events?.consume();
    if (this.live) {
      // Open connections' bytes into the tables, then read as usual; the
      // walk counts open connections afresh.
      const open = this.obj.map('tcp_open');
      for (const { key } of open.entries()) open.delete(key);
      this.live.run();
      this.openGauge.reset();
      for (const { key, value } of open.entries()) {
        const named = this.labels(key);
        if (named) this.openGauge.inc(named.labels, open.field(value, 0));
      }
    }
    const isAlive = (tgid: number): boolean => this.ctx.procs.alive(tgid);
    this.foldStats(this.obj.map('tcp_stats'), isAlive);
    this.foldHist(this.obj.map('tcp_hist'), isAlive);
    this.drops.fold();
  }

  private foldStats(map: BpfMap, isAlive: (t: number) => boolean): void {
    for (const { key, value } of map.entries()) {
      const tgid = key.readUInt32LE(this.layout.key.tgid);
      // Checked before folding: a dead process's counts are final once read.
      const dead = !isAlive(tgid);
      const hex = key.toString('hex');
      const d = this.lastStats.delta(hex, COUNTER_FIELDS.map((f) => map.field(value, this.layout.counterSlots[f])), dead);
      const named = this.labels(key);
      // Every counter of a label set exists, at 0 until it happens:
      // queries over failures and resets find a series to read.
      if (named) COUNTER_FIELDS.forEach((f, i) => this.counters.get(f)!.inc(named.labels, d[i]!));
      if (named && this.tally) COUNTER_FIELDS.forEach((f, i) => this.tally!.add(named.labels.service!, f, d[i]!));
      if (dead) map.delete(key);
    }
  }

  private foldHist(map: BpfMap, isAlive: (t: number) => boolean): void {
    for (const { key, value } of map.entries()) {
      const hk = this.layout.decodeHistKey(key);
      const tgid = hk.key.readUInt32LE(this.layout.key.tgid);
      const dead = !isAlive(tgid);
      const hex = key.toString('hex');
      const slot = hk.slot;
      const hist = hk.kind && this.histograms.get(hk.kind);
      const count = map.field(value, this.layout.histValue.count);
      const sumNs = map.field(value, this.layout.histValue.sum);
      const [dc, ds] = this.lastHist.delta(hex, [count, sumNs], dead) as [number, number];
      const named = hist && dc > 0 ? this.labels(hk.key) : undefined;
      if (named) hist!.add(named.id, named.labels, slot, dc, ds / 1e9);
      if (dead) map.delete(key);
    }
  }

  stop(): void {
    clearInterval(this.drain);
    this.events?.close();
    this.events = undefined;
    this.obj?.close();
    this.obj = undefined;
  }
}
