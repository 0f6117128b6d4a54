import type http from 'node:http';
import type { Config } from './config/schema.js';
import { MetricsRegistry } from './metrics/registry.js';
import { ServiceNamer } from './process/names.js';
import { Liveness } from './process/liveness.js';
import { ProgramStatsSampler } from './bpf/stats.js';
import { detectFeatures, ensureTracefs, withoutFeatures, type KernelFeatures } from './capabilities/features.js';
import { TcpCollector } from './collectors/tcp/index.js';
import { HttpCollector } from './collectors/http/index.js';
import { ResourcesCollector } from './collectors/resources/index.js';
import { ProcessCollector } from './collectors/process/index.js';
import { CustomCollector } from './collectors/custom/index.js';
import { ObjectsCollector } from './collectors/objects/index.js';
import { RecorderCollector } from './collectors/recorder/index.js';
import type { Collector, CollectorPlan } from './collectors/types.js';
import { OverheadBudget } from './overhead.js';
import { parseCgroup } from './process/containers.js';
import { KubeMetadata, kubeSource } from './process/kubernetes.js';
import { metadataOn, type MetaResolver } from './process/names.js';
import { registerSelfMetrics } from './self-metrics.js';
import { EventStream, parseListen, serve } from './server.js';
import { loadWebConfig } from './web.js';
import { addon } from './bpf/addon.js';
import { KernscopeError } from './errors.js';
import { Recorder } from './recorder/recorder.js';
import type { RecorderSink } from './collectors/types.js';

const RECORDER_OFF: RecorderSink = { on: false, note: () => undefined, summary: () => undefined, at: () => Date.now() };

export function allCollectors(): Collector[] {
  // Custom probes first: a mistake in them stops the agent before the
  // others have loaded anything.
  const proc = new ProcessCollector();
  const resources = new ResourcesCollector();
  // What a process used after the last walk of /proc comes with its exit.
  proc.onExit((e) => resources.exited(e));
  return [new CustomCollector(), new ObjectsCollector(), new TcpCollector(), new HttpCollector(), proc, resources, new RecorderCollector()];
}

export type Log = (msg: string) => void;

export class Agent {
  readonly metrics = new MetricsRegistry();
  private server: http.Server | undefined;
  private reloadWeb = (): void => {};
  private collectors: Collector[] = [];
  private stats: ProgramStatsSampler;
  private timer: NodeJS.Timeout | undefined;
  private trimTimer: NodeJS.Timeout | undefined;
  private events: EventStream | undefined;
  private budget: OverheadBudget | undefined;
  private kubeTimer: NodeJS.Timeout | undefined;
  private recorder: Recorder | undefined;
  features!: KernelFeatures;
  plans: CollectorPlan[] = [];

  constructor(
    readonly config: Config,
    private readonly log: Log = (m) => process.stderr.write(`kernscope: ${m}\n`),
  ) {
    // Under a budget, the programs' CPU is measured every 5 s at least.
    const interval = config.overhead.maxCpuPercent > 0 ? Math.min(config.bpfStats.intervalSeconds, 5) : config.bpfStats.intervalSeconds;
    this.stats = new ProgramStatsSampler({
      intervalMs: interval * 1000,
      windowMs: config.bpfStats.windowSeconds * 1000,
    });
  }

  async start(): Promise<string> {
    // Bind first: a port in use fails before anything is loaded into the kernel.
    const addr = parseListen(this.config.listen);
    const streamLoss = this.metrics.counter('kernscope_event_stream_dropped_total', 'Live events not sent to a /events reader that fell behind.');
    this.events = new EventStream(() => streamLoss.inc());
    const web = this.config.web.configFile ? loadWebConfig(this.config.web.configFile) : undefined;
    const served = await serve(this.metrics, addr, this.events, web, this.log);
    this.server = served.server;
    this.reloadWeb = served.reload;
    const tracefs = ensureTracefs();
    if (!tracefs.ok) this.log(`tracefs: ${tracefs.detail}; classic tracepoints unavailable`);
    this.features = withoutFeatures(detectFeatures(), this.config.kernel.without);
    if (this.config.kernel.without.length) this.log(`kernel features turned off by kernel.without: ${this.config.kernel.without.join(', ')}`);
    const m = this.metrics;
    const drops = m.counter('kernscope_events_dropped_total', 'Events, table entries or label sets lost to a bound, by where and why.', ['source', 'reason']);
    const up = m.gauge('kernscope_collector_up', '1 if the collector is running, 0 if it could not start.', ['collector']);
    const info = m.gauge('kernscope_build_info', 'Agent version, libbpf version and kernel release.', ['version', 'libbpf', 'kernel']);
    info.set({ version: '0.1.0', libbpf: addon().libbpfVersion, kernel: this.features.kernel }, 1);
    const sink = this.startRecorder(drops);
    const owner = new Map<string, string>();
    registerSelfMetrics(m, this.stats, (p) => owner.get(p) ?? 'unknown');

    const namer = new ServiceNamer(this.config.services, 16384, this.config.scope.cgroup, await this.metadata());
    const procs = new Liveness();
    const summarized = new Set<string>();
    procs.whenGone((tgid) => namer.forget(tgid));
    for (const c of allCollectors()) {
      const plan = c.plan(this.features, this.config);
      this.plans.push(plan);
      if (!plan.runnable) {
        up.set({ collector: c.name }, 0);
        this.log(`collector ${c.name}: not started: ${plan.reason}`);
        continue;
      }
      try {
        // A collector that adds to the recorder's summary is folded each second for it.
        const recorder: RecorderSink = {
          get on() {
            return sink.on;
          },
          note: (kind, fields, severe) => sink.note(kind, fields, severe),
          at: (ns) => sink.at(ns),
          summary: (name, part) => {
            summarized.add(c.name);
            sink.summary(name, part);
          },
        };
        c.start({ config: this.config, metrics: m, namer, procs, drops, features: this.features, log: this.log, publish: (e) => this.events?.publish(e), recorder });
      } catch (e) {
        // A mistake in the config (a probe on a missing symbol) stops the agent, named.
        if (e instanceof KernscopeError && e.code === 'ERR_KERNSCOPE_CONFIG') throw e;
        up.set({ collector: c.name }, 0);
        this.log(`collector ${c.name}: failed to start: ${(e as Error).message}`);
        continue;
      }
      up.set({ collector: c.name }, 1);
      this.collectors.push(c);
      for (const p of c.programs()) owner.set(p.name, c.name);
      this.stats.add(c.programs());
      const hooks = plan.hooks.map((h) => `${h.event}=${h.kind ?? `none (${h.reason})`}`).join(', ');
      this.log(`collector ${c.name}: running (${hooks})`);
    }
    // One round: every collector reads its tables, then the processes any of
    // them found gone are forgotten.
    const collectAll = (): void => {
      for (const c of this.collectors) c.collect();
      procs.endRound();
    };
    m.onScrape(collectAll);
    // The recorder's summary a second reads counters folded that second: only
    // the collectors it summarizes fold then, and only what it reads (the
    // /proc walk of resources, up to 2 % of a core, and TCP's walk of every
    // open socket wait for the scrape or the interval).
    this.recorder?.onTick(() => {
      for (const c of this.collectors) if (summarized.has(c.name)) c.collect(true);
      procs.endRound();
    });
    this.stats.start();
    const sampled = this.collectors.find((c) => c.sampled)?.sampled;
    this.budget = new OverheadBudget(this.config.overhead.maxCpuPercent, this.config.overhead.maxSampleEvery, this.stats, sampled, m);
    this.budget.start();
    // Folding between scrapes names short-lived processes while /proc still has them.
    this.timer = setInterval(() => {
      collectAll();
    }, this.config.collectIntervalSeconds * 1000);
    this.timer.unref();
    // The kernel's BTF (~6 MB parsed) served the collectors' plans; it and
    // what libbpf freed after loading their objects go back now.
    addon().vmlinuxRelease();
    addon().trimHeap();
    // The pages malloc holds free after bursts (reads of /proc, map dumps)
    // go back once a minute: RSS follows use, not its high-water mark.
    this.trimTimer = setInterval(() => addon().trimHeap(), 60_000);
    this.trimTimer.unref();

    const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
    return `${web?.tls ? 'https' : 'http'}://${host}:${addr.port}/metrics${web?.users.size ? ' (basic auth)' : ''}`;
  }

  /**
   * The flight recorder, when config `recorder` has it on: a journal that
   * cannot be opened (a read-only disk, another agent) leaves it off, logged.
   * The agent's own losses are in its summary, by source and reason.
   */
  private startRecorder(drops: import('prom-client').Counter<string>): RecorderSink {
    const rc = this.config.recorder;
    if (!rc.enabled) return RECORDER_OFF;
    const r = new Recorder(rc, this.metrics, this.log);
    if (!r.start({ version: '0.1.0', kernel: this.features.kernel })) return RECORDER_OFF;
    this.recorder = r;
    this.log(`recorder: journal at ${rc.path} (at most ${Math.round(rc.maxBytes / 1048576)} MiB)`);
    let lost = new Map<string, number>();
    const inc = drops.inc.bind(drops) as (labels: Record<string, string>, n?: number) => void;
    drops.inc = ((labels: Record<string, string>, n: number = 1) => {
      if (!n) return inc(labels, n); // a series made at 0 is no loss
      const k = `${labels.source}/${labels.reason}`;
      lost.set(k, (lost.get(k) ?? 0) + n);
      inc(labels, n);
    }) as typeof drops.inc;
    r.summary('drops', () => {
      if (!lost.size) return undefined;
      const out = Object.fromEntries(lost);
      lost = new Map();
      return out;
    });
    return r;
  }

  /**
   * Container and Kubernetes labels, when config `metadata` asks: from the
   * cgroup path always, from the API server when one answers. Without it the
   * agent says so once and keeps the container id and systemd unit.
   */
  private async metadata(): Promise<MetaResolver | undefined> {
    const md = this.config.metadata;
    if (!metadataOn(this.config)) return undefined;
    let kube: KubeMetadata | undefined;
    if (md.kubernetes !== 'off') {
      const src = kubeSource(md.url, md.tokenFile, md.kubelet);
      if (!src) this.log('metadata: no Kubernetes API here (not in a cluster, no metadata.url): labels are container_id and systemd_unit only');
      else {
        kube = new KubeMetadata(src);
        await kube.refresh();
        if (kube.ok) this.log(`metadata: pods from ${src.url}`);
        else this.log(`metadata: Kubernetes API at ${src.url}: ${kube.lastError}; labels are container_id and systemd_unit until it answers`);
        this.kubeTimer = setInterval(() => void kube!.refresh(), md.refreshSeconds * 1000);
        this.kubeTimer.unref();
      }
    }
    return (cgroup: string) => {
      const id = parseCgroup(cgroup);
      const labels: Record<string, string> = { container_id: id.containerId ?? '', systemd_unit: id.systemdUnit ?? '', k8s_namespace_name: '', k8s_pod_name: '', k8s_container_name: '', k8s_deployment_name: '' };
      let complete = true;
      if (kube && (id.containerId || id.podUid)) {
        const p = kube.lookup(id.containerId, id.podUid);
        if (p) {
          labels.k8s_namespace_name = p.namespace ?? '';
          labels.k8s_pod_name = p.pod ?? '';
          labels.k8s_container_name = p.container ?? '';
          labels.k8s_deployment_name = p.deployment ?? '';
        } else complete = false;
      }
      return { labels, complete };
    };
  }

  /** SIGHUP: every file the agent reads while it runs is read again (rules, the web config). */
  reload(): void {
    this.log('SIGHUP: reading rules and the web config again');
    for (const c of this.collectors) c.reload?.();
    this.reloadWeb();
  }

  async stop(reason = 'stopped'): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.trimTimer);
    clearInterval(this.kubeTimer);
    this.budget?.stop();
    this.stats.stop();
    // Out of the list first: a recorder tick or a scrape while a stop is
    // awaited must not fold a collector whose maps are closed.
    const stopping = this.collectors;
    this.collectors = [];
    await Promise.all(stopping.map((c) => c.stop()));
    this.recorder?.stop(reason);
    this.recorder = undefined;
    this.events?.close();
    const s = this.server;
    this.server = undefined;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }
}
