import client from 'prom-client';
import type { MetricsRegistry } from './metrics/registry.js';
import type { ProgramStatsSampler } from './bpf/stats.js';

/**
 * The agent's own cost: process CPU and memory from prom-client, and each BPF
 * program's kernel run time as sampled by ProgramStatsSampler.
 */
export function registerSelfMetrics(m: MetricsRegistry, stats: ProgramStatsSampler, collectorOf: (program: string) => string): void {
  // The event-loop delay monitor samples every 10 ms by default: 100 wakeups a
  // second would be most of an idle agent's CPU.
  client.collectDefaultMetrics({ register: m.registry, eventLoopMonitoringPrecision: 1000 });
  const runs = m.counter('kernscope_bpf_program_runs_total', 'BPF program runs counted while kernel run-time statistics were on (see kernscope_bpf_stats_sampled_seconds_total).', ['collector', 'program']);
  const secs = m.counter('kernscope_bpf_program_run_seconds_total', 'Kernel time spent in BPF programs while run-time statistics were on.', ['collector', 'program']);
  const perRun = m.gauge('kernscope_bpf_program_run_duration_seconds', 'Average run time of one program run in the last sampling window.', ['collector', 'program']);
  const sampled = m.counter('kernscope_bpf_stats_sampled_seconds_total', 'Time during which BPF run-time statistics were on; runs / this = runs per second.');
  const last = new Map<string, { runs: number; ns: number }>();
  let lastSampled = 0;
  m.onScrape(() => {
    for (const t of stats.snapshot()) {
      const labels = { collector: collectorOf(t.program), program: t.program };
      const prev = last.get(t.program) ?? { runs: 0, ns: 0 };
      if (t.runs > prev.runs) runs.inc(labels, t.runs - prev.runs);
      else runs.inc(labels, 0); // the series exists from the first scrape
      if (t.runTimeNs > prev.ns) secs.inc(labels, (t.runTimeNs - prev.ns) / 1e9);
      else secs.inc(labels, 0);
      perRun.set(labels, t.lastNsPerRun / 1e9);
      last.set(t.program, { runs: t.runs, ns: t.runTimeNs });
    }
    const s = stats.sampledSeconds;
    sampled.inc(Math.max(0, s - lastSampled));
    lastSampled = s;
  });
}
