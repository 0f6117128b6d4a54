/**
 * What each service costs the node, from /proc and cgroupfs (no BPF: files
 * are cheaper here than any hook). At each collection, at most once a
 * second, every process's stat, io and schedstat are read once into
 * one reused buffer; counters grow by each process's delta since the last
 * walk and are summed per service (no pid in any label). Processes that
 * were running when the agent started count from then on; one that starts
 * later counts whole. The cgroups of those processes give memory in use,
 * the limit, OOM kills and CPU throttling, on cgroup v2 or v1 alike.
 * What a process used after the last walk comes with its exit record (the
 * process collector's sched_process_exit hook), so a process shorter than
 * the interval is counted too. Names follow OpenTelemetry's process
 * conventions, as Beyla's do.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type client from 'prom-client';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { META_LABELS, metadataOn } from '../../process/names.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import type { ProcessExit } from '../process/index.js';
import { FileReader, parseKeyValues, parseSchedstat, parseStat } from './procfs.js';
import { cgroupOf, controllers, walkCgroups, type Cgroup } from './cgroups.js';

/** What the last walk saw of one process (CPU in seconds). */
interface Proc {
  start: number;
  utime: number;
  stime: number;
  /** When a walk first missed it: kept a while for its exit record. */
  gone?: number;
  /** Its exit record has been counted: nothing more to add. */
  ended?: boolean;
  readBytes: number;
  writeBytes: number;
  waitNs: number;
  /** Its memory and cpu cgroup paths (read once per process). */
  memCg: string | undefined;
  cpuCg: string | undefined;
}

function getconf(name: string, fallback: number): number {
  try {
    return Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim()) || fallback;
  } catch {
    return fallback;
  }
}

export class ResourcesCollector implements Collector {
  readonly name = 'resources';
  private ctx!: CollectorContext;
  private reader = new FileReader();
  private procs = new Map<number, Proc>();
  private cgroups = new Map<string, Cgroup>();
  private first = true;
  private lastWalk = 0;
  private gapMs = 1000;
  private tick = 100;
  private page = 4096;
  private ctl: ReturnType<typeof controllers> = { v1Names: new Map() };
  private limiter!: LabelLimiter;
  private m!: {
    cpu: client.Counter<string>;
    memory: client.Gauge<string>;
    disk: client.Counter<string>;
    threads: client.Gauge<string>;
    processes: client.Gauge<string>;
    wait: client.Counter<string>;
    cgMemory: client.Gauge<string>;
    cgLimit: client.Gauge<string>;
    cgOom: client.Counter<string>;
    cgThrottledPeriods: client.Counter<string>;
    cgThrottled: client.Counter<string>;
    walkSeconds: client.Gauge<string>;
    walkFiles: client.Gauge<string>;
  };

  plan(_f: KernelFeatures, config: Config): CollectorPlan {
    const hooks: CollectorPlan['hooks'] = []; // files only: /proc and cgroupfs
    if (!config.collectors.resources.enabled) return { collector: this.name, runnable: false, reason: 'disabled in config', hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    this.tick = getconf('CLK_TCK', 100);
    this.page = getconf('PAGESIZE', 4096);
    this.ctl = controllers();
    this.limiter = new LabelLimiter(ctx.config.collectors.resources.maxSeries, () => ctx.drops.inc({ source: 'resources', reason: 'label_overflow' }));
    ctx.drops.inc({ source: 'resources', reason: 'label_overflow' }, 0);
    const meta = metadataOn(ctx.config) ? META_LABELS : [];
    const svc = ['service_name', ...meta];
    const cg = ['cgroup', 'service_name', ...meta];
    const M = ctx.metrics;
    this.m = {
      cpu: M.counter('process_cpu_time_seconds_total', 'CPU time of the service\'s processes, by mode (user, system).', [...svc, 'cpu_mode']),
      memory: M.gauge('process_memory_usage_bytes', 'Resident memory of the service\'s processes (RSS, summed).', svc),
      disk: M.counter('process_disk_io_bytes_total', 'Bytes the service\'s processes read from and wrote to storage (write: as they are dirtied in the page cache).', [...svc, 'disk_io_direction']),
      threads: M.gauge('process_thread_count', 'Threads of the service\'s processes.', svc),
      processes: M.gauge('kernscope_service_processes', 'Processes of the service.', svc),
      wait: M.counter('kernscope_process_cpu_wait_seconds_total', 'Time the service\'s threads waited on a run queue for a CPU (schedstat).', svc),
      cgMemory: M.gauge('kernscope_cgroup_memory_usage_bytes', 'Memory charged to the cgroup (v2 memory.current, v1 memory.usage_in_bytes).', cg),
      cgLimit: M.gauge('kernscope_cgroup_memory_limit_bytes', 'The cgroup\'s memory limit (memory.max, memory.limit_in_bytes); absent when unlimited.', cg),
      cgOom: M.counter('kernscope_cgroup_oom_kills_total', 'Processes the OOM killer killed in the cgroup.', cg),
      cgThrottledPeriods: M.counter('kernscope_cgroup_cpu_throttled_periods_total', 'CFS periods in which the cgroup was throttled (cpu.stat nr_throttled).', cg),
      cgThrottled: M.counter('kernscope_cgroup_cpu_throttled_seconds_total', 'Time the cgroup\'s tasks were throttled by its CPU quota.', cg),
      walkSeconds: M.gauge('kernscope_resources_collection_seconds', 'How long the last walk over /proc and cgroupfs took.'),
      walkFiles: M.gauge('kernscope_resources_collection_files', 'Files the last walk read.'),
    };
    this.collect();
  }

  programs(): [] {
    return [];
  }

  collect(): void {
    const now = Date.now();
    // Scrapes and the interval share one walk a second at most, and a walk
    // that costs more is spaced so that walking takes at most 2 % of a core.
    if (now - this.lastWalk < this.gapMs) return;
    this.lastWalk = now;
    const t0 = process.hrtime.bigint();
    this.reader.files = 0;
    this.walk();
    walkCgroups(this.reader, this.ctl, this.cgroups, this.m);
    this.first = false;
    const took = Number(process.hrtime.bigint() - t0) / 1e9;
    this.gapMs = Math.max(1000, took * 50 * 1000);
    this.m.walkSeconds.set(took);
    this.m.walkFiles.set(this.reader.files);
  }

  private walk(): void {
    const r = this.reader;
    // Per service: its gauges and its counters' growth, added once per walk.
    const services = new Map<string, { labels: Record<string, string>; rss: number; threads: number; procs: number; user: number; system: number; read: number; write: number; wait: number }>();
    const cgCount = new Map<string, Map<string, { n: number; meta: Record<string, string> }>>();
    const seen = new Set<number>();
    let entries: string[];
    try {
      entries = fs.readdirSync('/proc');
    } catch {
      return;
    }
    for (const d of entries) {
      const c0 = d.charCodeAt(0);
      if (c0 < 48 || c0 > 57) continue;
      const pid = Number(d);
      if (pid === 2) continue;
      const statText = r.read(`/proc/${pid}/stat`);
      const st = statText && parseStat(statText);
      if (!st) continue;
      // Kernel threads (children of kthreadd) belong to no service; a
      // zombie's last figures come with its exit record.
      const [state, ppid] = statText.slice(statText.lastIndexOf(')') + 2).split(' ', 2);
      if (ppid === '2' || state === 'Z' || state === 'X') continue;
      const n = this.ctx.namer.names(pid, st.comm);
      if (!n.inScope) continue;
      seen.add(pid);
      const io = parseKeyValues(r.read(`/proc/${pid}/io`) ?? '');
      const sched = parseSchedstat(r.read(`/proc/${pid}/schedstat`) ?? '');
      const rss = Number.isFinite(st.rss) ? st.rss : 0;
      let p = this.procs.get(pid);
      if (p?.ended && p.start === st.start) continue;
      const fresh = !p || p.start !== st.start;
      const cur: Proc = {
        start: st.start,
        utime: st.utime / this.tick,
        stime: st.stime / this.tick,
        readBytes: io.get('read_bytes') ?? 0,
        writeBytes: io.get('write_bytes') ?? 0,
        waitNs: sched?.waitNs ?? 0,
        memCg: p && !fresh ? p.memCg : undefined,
        cpuCg: p && !fresh ? p.cpuCg : undefined,
      };
      if (fresh) {
        const cgText = r.read(`/proc/${pid}/cgroup`) ?? '';
        cur.memCg = cgroupOf(cgText, this.ctl.memory, this.ctl.v1Names.get('memory'));
        cur.cpuCg = cgroupOf(cgText, this.ctl.cpu, this.ctl.v1Names.get('cpu'));
      }
      // Running when the agent started: counted from now on. Started since: whole.
      const base: Proc | undefined = !fresh ? p : this.first ? cur : undefined;
      this.procs.set(pid, cur);
      p = base;
      const key = `${n.service}\0${Object.values(n.meta).join('\0')}`;
      let g = services.get(key);
      if (!g) services.set(key, (g = { labels: this.limiter.admit(key, { service_name: n.service, ...n.meta }), rss: 0, threads: 0, procs: 0, user: 0, system: 0, read: 0, write: 0, wait: 0 }));
      const pos = (v: number): number => (v > 0 ? v : 0);
      g.user += pos(cur.utime - (p?.utime ?? 0));
      g.system += pos(cur.stime - (p?.stime ?? 0));
      g.read += pos(cur.readBytes - (p?.readBytes ?? 0));
      g.write += pos(cur.writeBytes - (p?.writeBytes ?? 0));
      g.wait += pos((cur.waitNs - (p?.waitNs ?? 0)) / 1e9);
      g.rss += rss * this.page;
      g.threads += st.threads;
      g.procs++;
      for (const path of new Set([cur.memCg, cur.cpuCg])) {
        if (!path || path === '/') continue;
        let m = cgCount.get(path);
        if (!m) cgCount.set(path, (m = new Map()));
        const e = m.get(n.service);
        if (e) e.n++;
        else m.set(n.service, { n: 1, meta: n.meta });
      }
    }
    // Missed: its exit record may still be on its way; forgotten after 10 s.
    const now = Date.now();
    for (const [pid, p] of this.procs) {
      if (seen.has(pid)) continue;
      p.gone ??= now;
      if (now - p.gone > 10_000) this.procs.delete(pid);
    }
    // Gauges are what is now: services gone since the last walk vanish.
    this.m.memory.reset();
    this.m.threads.reset();
    this.m.processes.reset();
    // Every counter of a service exists, at 0 until it moves: queries over
    // disk writes or waits find a series to read.
    for (const g of services.values()) {
      this.m.memory.set(g.labels, g.rss);
      this.m.threads.set(g.labels, g.threads);
      this.m.processes.set(g.labels, g.procs);
      this.m.cpu.inc({ ...g.labels, cpu_mode: 'user' }, g.user);
      this.m.cpu.inc({ ...g.labels, cpu_mode: 'system' }, g.system);
      this.m.disk.inc({ ...g.labels, disk_io_direction: 'read' }, g.read);
      this.m.disk.inc({ ...g.labels, disk_io_direction: 'write' }, g.write);
      this.m.wait.inc(g.labels, g.wait);
    }
    // A cgroup is named once, after the service with most processes in it.
    for (const [path, services] of cgCount) {
      if (this.cgroups.has(path)) continue;
      if (this.cgroups.size >= this.ctx.config.collectors.resources.maxSeries) {
        this.ctx.drops.inc({ source: 'resources', reason: 'label_overflow' });
        continue;
      }
      const [service, e] = [...services.entries()].sort((a, b) => b[1].n - a[1].n)[0]!;
      this.cgroups.set(path, { service, meta: e.meta });
    }
  }

  /** A process has ended: what it used since the last walk (all of it, if no walk saw it). */
  exited(x: ProcessExit): void {
    if (!this.m) return;
    const p = this.procs.get(x.pid);
    if (p?.ended) return;
    const n = this.ctx.namer.names(x.pid, x.comm, undefined, x.argv);
    this.procs.set(x.pid, { start: p?.start ?? -1, utime: x.utimeSeconds, stime: x.stimeSeconds, readBytes: x.readBytes, writeBytes: x.writeBytes, waitNs: p?.waitNs ?? 0, memCg: undefined, cpuCg: undefined, ended: true, gone: p?.gone ?? Date.now() });
    if (!n.inScope) return;
    const labels = this.limiter.admit(`${n.service}\0${Object.values(n.meta).join('\0')}`, { service_name: n.service, ...n.meta });
    const add = (c: client.Counter<string>, extra: Record<string, string>, v: number): void => {
      if (v > 0) c.inc({ ...labels, ...extra }, v);
    };
    add(this.m.cpu, { cpu_mode: 'user' }, x.utimeSeconds - (p?.utime ?? 0));
    add(this.m.cpu, { cpu_mode: 'system' }, x.stimeSeconds - (p?.stime ?? 0));
    add(this.m.disk, { disk_io_direction: 'read' }, x.readBytes - (p?.readBytes ?? 0));
    add(this.m.disk, { disk_io_direction: 'write' }, x.writeBytes - (p?.writeBytes ?? 0));
  }

  stop(): void {
    this.procs.clear();
    this.cgroups.clear();
  }
}
