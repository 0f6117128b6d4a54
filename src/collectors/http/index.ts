/**
 * HTTP RED metrics for every HTTP/1.x server and client on the node, in
 * stages:
 *   kernel.ts   hooks, load, seed, verdicts, TLS, table reads (bpf/http.bpf.c)
 *   fold.ts     kernel tables to series (pure)
 *   records.ts  the slow path: ring buffer records and the live stream
 *   export.ts   metric families and series
 * This file wires them and owns the policy of which processes are watched.
 */
import fs from 'node:fs';
import type { BpfProgram } from '../../bpf/object.js';
import { ProcessFilter } from '../../process/names.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import type { Collector, CollectorContext, CollectorPlan, RecorderSink } from '../types.js';
import { KernelDrops } from '../drops.js';
import { HttpExport } from './export.js';
import { Tally } from '../../recorder/tally.js';
import { HttpFold, type KernelProc } from './fold.js';
import { HttpKernel, planHooks } from './kernel.js';
import { NO_RINGBUF } from '../hooks.js';
import { HttpRecords } from './records.js';
import { SocketErrors } from './sockerr.js';
import { META_LABELS, metadataOn } from '../../process/names.js';

/** How often the connection table is swept of processes gone. */
const SWEEP_MS = 30_000;

export class HttpCollector implements Collector {
  readonly name = 'http';
  private kernel: HttpKernel | undefined;
  private out!: HttpExport;
  private fold!: HttpFold;
  private records!: HttpRecords;
  private drops!: KernelDrops;
  private sockErrors!: SocketErrors;
  private drain: NodeJS.Timeout | undefined;
  private lastSweep = Date.now();
  private alive: (tgid: number) => boolean = () => true;
  private filter!: ProcessFilter;
  /** What each route or host key stands for, once read from http_names. */
  private names = new Map<string, { kind: number; complete: boolean; text: string }>();
  /** Per fold: each process as the kernel saw it. */
  private procs = new Map<number, KernelProc>();
  /** Processes whose verdict the kernel has, and those judged not watched. */
  private judged = new Set<number>();
  private ignored = new Set<number>();
  sampleEvery = 1;
  /** The live stream of per-request records is what the budget turns. */
  readonly sampled = this;

  /** Binaries whose SSL_read/SSL_write are probed. */
  get tlsBinaries(): string[] {
    return this.kernel?.tlsBinaries ?? [];
  }

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    const { hooks, missing } = planHooks(f, config);
    if (!config.collectors.http.enabled) return { collector: this.name, runnable: false, reason: 'disabled in config', hooks };
    if (!f.tracepoint) return { collector: this.name, runnable: false, reason: 'tracepoint programs cannot be loaded', hooks };
    if (missing) return { collector: this.name, runnable: false, reason: `${missing.event}: ${missing.reason}`, hooks };
    if (!f.ringbuf) return { collector: this.name, runnable: false, reason: NO_RINGBUF, hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    const cfg = ctx.config.collectors.http;
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`http collector cannot run: ${plan.reason}`);
    const kernel = new HttpKernel(ctx.config, plan.hooks, ctx.log);
    this.alive = (tgid) => ctx.procs.alive(tgid);
    try {
      // A scope (config scope.cgroup) narrows every watch rule to its cgroup.
      const scope = ctx.config.scope.cgroup;
      const rules = scope ? (cfg.watch.length ? cfg.watch : [{}]).map((r) => ({ ...r, cgroup: r.cgroup ?? scope })) : cfg.watch;
      this.filter = new ProcessFilter(rules);
      kernel.watchPorts(this.filter.portsAlone());
      const durations = [...cfg.durationBuckets].sort((a, b) => a - b);
      this.out = new HttpExport(ctx.metrics, ctx.config, durations, () => ctx.drops.inc({ source: 'http', reason: 'label_overflow' }));
      const accepts = this.filter.all ? undefined : (tgid: number, comm: string, port: number | undefined): boolean => this.filter.accepts(tgid, comm, port);
      this.fold = new HttpFold(kernel.layout, {
        proc: (tgid) => this.procOf(tgid),
        name: (hex) => this.nameOf(hex),
        forget: (key, overflow) => kernel.forget(key, overflow),
      }, this.out, {
        namer: ctx.namer,
        accepts,
        routes: cfg.routes,
        maxRoutesPerService: cfg.maxRoutesPerService,
        drop: (reason, n) => ctx.drops.inc({ source: 'http', reason }, n),
      });
      this.records = new HttpRecords(kernel.layout, this.out, this.fold.routes, {
        namer: ctx.namer,
        accepts,
        judge: (tgid, comm, asked) => {
          if (asked) this.judged.delete(tgid); // asked by the kernel: its verdict was not there
          if (asked || (!this.filter.all && !this.judged.has(tgid))) this.judge(tgid, comm);
        },
        publish: ctx.publish,
        sampleEvery: () => this.sampleEvery,
      });
      this.drops = new KernelDrops(kernel.obj.map('drops'), 'http', kernel.layout.dropReasons, ctx.drops, ['label_overflow', 'route_overflow', 'name_lost']);
      this.sockErrors = new SocketErrors(kernel.obj, ctx.metrics, metadataOn(ctx.config) ? META_LABELS : [], cfg.maxSeries, () => ctx.drops.inc({ source: 'http', reason: 'label_overflow' }), ctx.namer);
      this.kernel = kernel;
      if (ctx.recorder.on) this.record(ctx.recorder);
      this.setSampleEvery(cfg.sampleEvery);
      if (!this.filter.all) this.judgeRunning();
      kernel.seedConnections((tgid) => this.ignored.has(tgid));
      kernel.openRecords((rec) => this.records.onRecord(rec));
      // The kernel wakes the agent only once records pile up; the rest are
      // drained here, so a record waits at most this long.
      this.drain = setInterval(() => this.kernel?.consume(), cfg.flushIntervalMs);
      this.drain.unref();
      kernel.attach();
    } catch (e) {
      clearInterval(this.drain);
      this.kernel = undefined;
      void kernel.close();
      throw e;
    }
  }

  /**
   * For the flight recorder: RED per service in its summary, and socket
   * errors as they are folded. A send that fails with EPIPE or ENOTCONN is
   * a send on a socket that is not established (closed, shut down for
   * writing, never connected): a record of its own.
   */
  private record(r: RecorderSink): void {
    const tally = new Tally();
    this.out.tally = tally;
    r.summary('http', () => {
      const t = tally.take('server_req');
      if (!t) return undefined;
      for (const row of Object.values(t)) {
        for (const side of ['server', 'client']) {
          const n = row[`${side}_dur_n`];
          if (n) row[`${side}_avg_ms`] = Math.round((row[`${side}_dur_s`]! / n) * 1e5) / 100;
          delete row[`${side}_dur_n`];
          delete row[`${side}_dur_s`];
        }
      }
      return t;
    });
    this.sockErrors.onError = (service, pid, op, error, count) => {
      const closed = op === 'send' && (error === 'EPIPE' || error === 'ENOTCONN');
      r.note(closed ? 'send_not_established' : 'socket_error', { service, pid, op, error, count });
    };
  }

  programs(): BpfProgram[] {
    return this.kernel?.programs() ?? [];
  }

  /** Sends records for 1 request in `n` (1: every one); counts stay exact in the kernel. */
  setSampleEvery(n: number): void {
    if (!this.kernel) return;
    this.sampleEvery = Math.max(1, Math.min(65535, Math.round(n)));
    this.kernel.setSampleEvery(this.sampleEvery);
    this.out.sampleGauge.set(this.sampleEvery);
  }

  /**
   * Tells the kernel whether a process may be watched, so that connections
   * of the others are never tracked. Until a process is judged its
   * connections are tracked, and filtered in user space.
   */
  private judge(tgid: number, comm: string): void {
    if (this.judged.has(tgid) || !this.kernel) return;
    if (this.judged.size >= 65536) {
      // the kernel map is an LRU of that size
      this.judged.clear();
      this.ignored.clear();
    }
    this.judged.add(tgid);
    const watch = this.filter.mayWatchProcess(tgid, comm);
    this.kernel.setVerdict(tgid, watch);
    if (!watch) this.ignored.add(tgid);
    // A process that started after the agent may have connections already.
    if (!watch && comm) this.kernel.untrack(tgid);
  }

  private judgeRunning(): void {
    for (const d of fs.readdirSync('/proc')) {
      const tgid = Number(d);
      if (Number.isInteger(tgid) && tgid > 0 && tgid !== process.pid) this.judge(tgid, '');
    }
  }

  private nameOf(hex: string): { kind: number; complete: boolean; text: string } | undefined {
    let n = this.names.get(hex);
    if (!n) {
      n = this.kernel!.name(hex);
      if (!n) return undefined;
      if (this.names.size >= 65536) this.names.clear(); // a cache: read again when needed
      this.names.set(hex, n);
    }
    return n;
  }

  private procOf(tgid: number): KernelProc {
    let p = this.procs.get(tgid);
    if (!p) this.procs.set(tgid, (p = this.kernel!.proc(tgid, this.alive(tgid))));
    return p;
  }

  collect(): void {
    const k = this.kernel;
    if (!k) return;
    k.consume(); // a scrape sees every request made before it
    this.procs.clear();
    this.fold.fold(k.table(false), false);
    this.fold.fold(k.table(true), true);
    this.sockErrors.fold(k.socketErrors(), (tgid) => this.procOf(tgid), (key) => k.forgetSocketError(key));
    // Processes gone: their tables were read a last time, their names go too.
    for (const [tgid, p] of this.procs) if (!p.live) k.forgetProc(tgid);
    const now = Date.now();
    if (now - this.lastSweep >= SWEEP_MS) {
      this.lastSweep = now;
      k.sweepConnections(this.alive);
    }
    this.drops.fold();
  }

  async stop(): Promise<void> {
    clearInterval(this.drain);
    const k = this.kernel;
    this.kernel = undefined;
    await k?.close();
  }
}

