// Measures the agent's own cost; run by hand (`npm run bench`), never by tests.
//   1. idle CPU and RSS of `kernscope run`
//   2. /metrics render time with 10,000 series
//   3. kernel run time per event of each BPF program under TCP load
// Prints a Markdown report; `--out FILE` writes it too.
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { MetricsRegistry } from '../src/metrics/registry.js';
import { KernelHistogram } from '../src/metrics/kernel-histogram.js';
import { freePort, parseMetrics, sleep, startAgent, sum, type RunningAgent } from '../test/helpers.js';

const TICK = 100; // USER_HZ: /proc/PID/stat counts CPU time in 1/100 s

function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const after = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(after[11]) + Number(after[12]); // utime + stime
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

async function idle(agent: RunningAgent, seconds: number): Promise<{ cpuPercent: number; rssMiB: number }> {
  const pid = agent.child.pid!;
  // Start-up work is not idle work: V8 keeps collecting garbage from loading
  // for some 30 s after start.
  await sleep(Number(process.env.BENCH_WARMUP_SECONDS ?? 40) * 1000);
  const t0 = cpuTicks(pid);
  const w0 = performance.now();
  // One scrape every 15 s, as a Prometheus would.
  for (let t = 0; t < seconds; t += 15) {
    await agent.scrapeText();
    await sleep(Math.min(15, seconds - t) * 1000);
  }
  const cpu = (cpuTicks(pid) - t0) / TICK;
  const wall = (performance.now() - w0) / 1000;
  return { cpuPercent: (100 * cpu) / wall, rssMiB: rssBytes(pid) / 2 ** 20 };
}

async function scrapeCost(): Promise<{ series: number; textMs: number; openMetricsMs: number; bytes: number }> {
  const m = new MetricsRegistry();
  const labels = ['service', 'process', 'direction', 'port'];
  const counters = ['a_total', 'b_total', 'c_total', 'd_total'].map((n) => m.counter(`bench_${n}`, 'bench', labels));
  const hist = new KernelHistogram('bench_seconds', 'bench', labels, 3, 24, 1e-6);
  m.register(hist);
  // 4 counters + one 22-bucket histogram (25 series) per label set: 29 series.
  const sets = Math.round(10_000 / 29);
  for (let i = 0; i < sets; i++) {
    const l = { service: `svc${i % 100}`, process: 'node', direction: i % 2 ? 'inbound' : 'outbound', port: String(1000 + i) };
    for (const c of counters) c.inc(l, i);
    hist.add(String(i), l, 5 + (i % 10), 3, 0.001);
  }
  const text = await m.render(false);
  const series = parseMetrics(text.body).length;
  const time = async (om: boolean): Promise<number> => {
    for (let i = 0; i < 5; i++) await m.render(om);
    const runs = 30;
    const t = performance.now();
    for (let i = 0; i < runs; i++) await m.render(om);
    return (performance.now() - t) / runs;
  };
  return { series, textMs: await time(false), openMetricsMs: await time(true), bytes: Buffer.byteLength(text.body) };
}

/** Opens `n` loopback connections, each sending and receiving a little. */
async function tcpLoad(n: number): Promise<void> {
  const server = net.createServer((s) => {
    s.on('data', () => {});
    s.on('end', () => s.end('pong'));
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => c.end('ping'));
      c.on('data', () => {});
      c.on('close', () => resolve());
      c.on('error', () => resolve());
    });
  }
  server.close();
}

async function perEvent(connections: number, rtt: string): Promise<Array<{ program: string; runs: number; nsPerRun: number }>> {
  // Statistics on for 0.9 s of every second, so nearly every run is counted.
  const agent = await startAgent(`bpfStats:\n  intervalSeconds: 1\n  windowSeconds: 0.9\ncollectors:\n  tcp:\n    rtt: ${rtt}\n`);
  try {
    const before = await agent.scrape();
    await tcpLoad(connections);
    await sleep(1500);
    const after = await agent.scrape();
    const progs = [...new Set(after.filter((s) => s.name === 'kernscope_bpf_program_runs_total').map((s) => s.labels.program!))];
    return progs.map((program) => {
      const runs = sum(after, 'kernscope_bpf_program_runs_total', { program }) - sum(before, 'kernscope_bpf_program_runs_total', { program });
      const secs = sum(after, 'kernscope_bpf_program_run_seconds_total', { program }) - sum(before, 'kernscope_bpf_program_run_seconds_total', { program });
      return { program, runs, nsPerRun: runs ? (secs * 1e9) / runs : 0 };
    });
  } finally {
    await agent.stop();
  }
}

async function main(): Promise<void> {
  const outIdx = process.argv.indexOf('--out');
  const idleSeconds = Number(process.env.BENCH_IDLE_SECONDS ?? 60);
  const lines: string[] = [`# Kernscope bench, ${new Date().toISOString()}`, '', `kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, ${(await import('node:os')).cpus().length} CPUs`, ''];

  const agent = await startAgent();
  const i = await idle(agent, idleSeconds);
  await agent.stop();
  lines.push(`## Idle agent (${idleSeconds} s, one scrape every 15 s)`, '', '| CPU | RSS |', '| --- | --- |', `| ${i.cpuPercent.toFixed(2)} % of one core | ${i.rssMiB.toFixed(1)} MiB |`, '');

  const s = await scrapeCost();
  lines.push(`## /metrics with ${s.series} series (${(s.bytes / 1024).toFixed(0)} KiB)`, '', '| format | render time |', '| --- | --- |', `| Prometheus text | ${s.textMs.toFixed(1)} ms |`, `| OpenMetrics | ${s.openMetricsMs.toFixed(1)} ms |`, '');

  const conns = 2000;
  for (const rtt of ['close', 'segments']) {
    const p = await perEvent(conns, rtt);
    lines.push(`## BPF run time per event, rtt: ${rtt} (${conns} loopback connections, both ends traced)`, '', '| program | runs | ns per run |', '| --- | ---: | ---: |');
    for (const x of p) lines.push(`| ${x.program} | ${x.runs} | ${x.nsPerRun.toFixed(0)} |`);
    const totalNs = p.reduce((a, x) => a + x.runs * x.nsPerRun, 0);
    lines.push('', `Kernel time per connection (both ends, all programs): ${(totalNs / conns / 1000).toFixed(2)} µs.`, '');
  }

  const report = lines.join('\n');
  process.stdout.write(report);
  if (outIdx > 0) fs.writeFileSync(process.argv[outIdx + 1]!, report);
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack}\n`);
  process.exit(1);
});
