import type { MetricsRegistry } from './metrics/registry.js';
import type { ProgramStatsSampler } from './bpf/stats.js';

/** What the budget turns: the HTTP collector's per-request record sampling. */
export interface Sampled {
  sampleEvery: number;
  setSampleEvery(n: number): void;
}

/**
 * Holds the agent under a CPU budget (config `overhead.maxCpuPercent`):
 * every second it adds its own process CPU to its BPF programs' kernel time
 * (from the last run-time statistics window) and, above the budget, sends
 * per-request records for fewer requests (in one step sized by how far
 * over it is); well below it, for twice as many again. Counts stay exact in the kernel whatever the
 * rate; only the per-route histograms become estimates.
 */
export class OverheadBudget {
  private timer: NodeJS.Timeout | undefined;
  private lastCpu = process.cpuUsage();
  private lastAt = process.hrtime.bigint();
  /** Agent CPU % of the last few seconds: one second is too noisy to steer by. */
  private recent: number[] = [];
  private calmSince = 0;
  private readonly gauge;
  private readonly steps;

  constructor(
    private readonly budget: number,
    private readonly maxEvery: number,
    private readonly stats: ProgramStatsSampler,
    private readonly target: Sampled | undefined,
    metrics: MetricsRegistry,
  ) {
    this.gauge = metrics.gauge('kernscope_overhead_cpu_percent', 'CPU the agent costs, in % of one core: its own process (part="agent", last 3 s) and its BPF programs (part="bpf", last statistics window).', ['part']);
    metrics.gauge('kernscope_overhead_budget_cpu_percent', 'The CPU budget set by overhead.maxCpuPercent (0: none).').set(budget);
    this.steps = metrics.counter('kernscope_overhead_sampling_changes_total', 'Times the budget changed the HTTP record sampling, by direction.', ['direction']);
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One step of the controller; public for tests of the policy. */
  tick(): void {
    const now = process.hrtime.bigint();
    const cpu = process.cpuUsage(this.lastCpu);
    const wallUs = Number(now - this.lastAt) / 1000;
    this.lastCpu = process.cpuUsage();
    this.lastAt = now;
    if (wallUs <= 0) return;
    this.recent.push(((cpu.user + cpu.system) / wallUs) * 100);
    if (this.recent.length > 3) this.recent.shift();
    const agent = this.recent.reduce((a, b) => a + b, 0) / this.recent.length;
    const bpf = this.stats.lastCpuPercent;
    this.gauge.set({ part: 'agent' }, agent);
    this.gauge.set({ part: 'bpf' }, bpf);
    const t = this.target;
    if (!t || this.budget <= 0) return;
    const total = agent + bpf;
    if (total > this.budget && t.sampleEvery < this.maxEvery) {
      // The agent's share scales with the records it gets, the programs'
      // does not: aim the agent at what the programs leave of the budget,
      // in one step (a power of two), at least doubling.
      const room = Math.max(this.budget - bpf, this.budget * 0.1);
      const want = t.sampleEvery * Math.max(2, agent / room);
      t.setSampleEvery(Math.min(this.maxEvery, 2 ** Math.ceil(Math.log2(want))));
      this.steps.inc({ direction: 'fewer_records' });
      this.recent = []; // judge the new rate on its own seconds
      this.calmSince = 0;
    } else if (total < this.budget / 2 && t.sampleEvery > 1) {
      // Back towards every record only after 5 calm seconds: no flapping.
      if (++this.calmSince >= 5) {
        t.setSampleEvery(Math.max(1, Math.floor(t.sampleEvery / 2)));
        this.steps.inc({ direction: 'more_records' });
        this.calmSince = 0;
      }
    } else this.calmSince = 0;
  }
}
