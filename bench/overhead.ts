// Kernscope against in-process APM agents, side by side in one run
// (`npm run bench:overhead`; never run by tests). One Node service
// (bench/overhead/service.cjs) pinned to CPU 0; the load and every other
// process on CPU 1. Configurations alternate, round after round:
// no agent, Kernscope with its default collectors, dd-trace, the
// OpenTelemetry Node SDK (auto-instrumentations, OTLP traces, Prometheus
// metrics), elastic-apm-node. The APM agents export to a local receiver
// that discards what they send and counts it, to show they instrumented
// every request. Two passes: saturated (wrk for a fixed time, as fast as the
// service goes: wrk does not saturate before the service) and a fixed rate
// where nobody is saturated (autocannon, which holds a rate; at 2k req/s it
// is far from its own limit).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { cpuSeconds, freePort, parseMetrics, sleep, startAgent, sum, type RunningAgent, type Sample } from '../test/helpers.js';

const DIR = path.join(ROOT, 'bench', 'overhead');
const SAT_SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const RATE = Number(process.env.BENCH_RATE ?? 2000);
const RATE_SECONDS = Number(process.env.BENCH_RATE_SECONDS ?? 10);
const CONNECTIONS = 16;
const FLUSH_MS = 6000; // the APM agents export in batches: their cost includes the flush
const ELASTIC_FLUSH_MS = 11_000; // elastic-apm-node sends every 10 s: wait that long before counting what arrived
const CONFIGS = ['none', 'kernscope', 'kernscope, service only', 'kernscope, 1% budget', 'opentelemetry', 'dd-trace', 'elastic'] as const;
type Cfg = (typeof CONFIGS)[number];

/** The APM agents live in bench/overhead's own node_modules, not the agent's. */
function install(): void {
  if (!fs.existsSync(path.join(DIR, 'node_modules', '.package-lock.json'))) {
    process.stderr.write('bench: installing the APM agents (npm install in bench/overhead)\n');
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: DIR, stdio: 'inherit' });
  }
  if (!fs.existsSync('/usr/share/fonts/truetype/dejavu')) {
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'fonts-dejavu-core'], { stdio: 'inherit' });
  }
}


function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

function waitLine(child: ChildProcess, re: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${out}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (re.test(out)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (c) => reject(new Error(`${what} exited ${c}: ${out}`)));
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  process.kill(child.pid!, 'SIGTERM');
  const t = setTimeout(() => child.exitCode === null && process.kill(child.pid!, 'SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

interface Load {
  requests: number;
  ok: number;
  failed: number;
  errors: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
}

/** wrk's time with its unit ("1.23ms", "830.00us", "1.02s") in ms. */
function wrkMs(s: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(s);
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'us' ? 1e-3 : m[2] === 's' ? 1e3 : 1);
}

/** As fast as the service answers, for `seconds`: wrk, one thread, on CPU 1. */
function saturate(port: number, seconds: number): Load {
  const out = execFileSync('taskset', ['-c', '1', 'wrk', '-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '-s', path.join(DIR, 'users.lua'), `http://127.0.0.1:${port}`], { encoding: 'utf8' });
  const requests = Number(/(\d+) requests in ([\d.]+)(m?s)/.exec(out)?.[1] ?? NaN);
  const failed = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = sock ? sock.slice(1).reduce((a, x) => a + Number(x), 0) : 0;
  return {
    requests,
    ok: requests - failed,
    failed,
    errors,
    seconds,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50: wrkMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ''),
    p99: wrkMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ''),
  };
}

function load(port: number, amount: number, rate = 0): Load {
  const out = execFileSync('taskset', ['-c', '1', process.execPath, 'load.mjs', `http://127.0.0.1:${port}`, String(amount), String(CONNECTIONS), String(rate)], {
    cwd: DIR,
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Load;
}

async function receiverCounts(port: number): Promise<Record<string, number>> {
  return (await (await fetch(`http://127.0.0.1:${port}/__counts`)).json()) as Record<string, number>;
}

async function scrape(port: number): Promise<Sample[]> {
  return parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
}

interface Row {
  pass: 'saturated' | 'fixed rate';
  config: Cfg;
  load: Load;
  serverUs: number;
  agentUs: number;
  bpfUs: number;
  serverRss: number;
  agentRss: number;
  /** Requests the configuration's own telemetry shows, over requests sent. */
  seen: number;
  /** Kernscope: 1 record per this many requests at the end of the run. */
  sampleEvery: number;
}

async function runOne(pass: Row['pass'], cfg: Cfg, receiver: number): Promise<Row> {
  const port = await freePort();
  const promPort = await freePort();
  let agent: RunningAgent | undefined;
  if (cfg.startsWith('kernscope')) {
    // Statistics on 90 % of the time in the fixed-rate pass, for the BPF run time.
    const stats = pass === 'fixed rate' ? 'bpfStats:\n  intervalSeconds: 1\n  windowSeconds: 0.9\n' : '';
    // "service only" watches what an in-process agent sees: the service, not the load generator.
    const extra = cfg === 'kernscope, 1% budget' ? 'overhead:\n  maxCpuPercent: 1\n' : cfg === 'kernscope, service only' ? 'collectors:\n  http:\n    watch:\n      - { cmdline: "service\\\\.cjs" }\n' : '';
    agent = await startAgent(stats + extra);
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(agent.child.pid)], { stdio: 'ignore' });
  }
  const env: NodeJS.ProcessEnv = { ...process.env, BENCH_RECEIVER: `http://127.0.0.1:${receiver}`, BENCH_OTEL_PROM_PORT: String(promPort) };
  const pre: string[] = [];
  if (cfg === 'dd-trace') {
    pre.push('-r', 'dd-trace/init');
    Object.assign(env, { DD_SERVICE: 'bench', DD_TRACE_AGENT_URL: `http://127.0.0.1:${receiver}`, DD_TRACE_STARTUP_LOGS: 'false', DD_INSTRUMENTATION_TELEMETRY_ENABLED: 'false', DD_REMOTE_CONFIGURATION_ENABLED: 'false' });
  } else if (cfg === 'opentelemetry') {
    pre.push('-r', './otel.cjs');
  } else if (cfg === 'elastic') {
    pre.push('-r', 'elastic-apm-node/start');
    Object.assign(env, { ELASTIC_APM_SERVICE_NAME: 'bench', ELASTIC_APM_SERVER_URL: `http://127.0.0.1:${receiver}`, ELASTIC_APM_CENTRAL_CONFIG: 'false', ELASTIC_APM_CLOUD_PROVIDER: 'none', ELASTIC_APM_LOG_LEVEL: 'off' });
  }
  const service = spawn('taskset', ['-c', '0', process.execPath, ...pre, 'service.cjs', String(port)], { cwd: DIR, env, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await waitLine(service, /ready/, `service (${cfg})`);
    const pid = service.pid!; // taskset execs the service: same pid
    const recv0 = await receiverCounts(receiver);
    const metrics0 = agent ? await agent.scrape() : [];
    const warm = load(port, 2000); // warm-up: JIT, connection pools, the agents' first exports
    await sleep(1000);
    const before = { server: cpuSeconds(pid), agent: agent ? cpuSeconds(agent.child.pid!) : 0, recv: await receiverCounts(receiver), metrics: agent ? await agent.scrape() : cfg === 'opentelemetry' ? await scrape(promPort) : [] };
    const l = pass === 'saturated' ? saturate(port, SAT_SECONDS) : load(port, RATE * RATE_SECONDS, RATE);
    await sleep(FLUSH_MS);
    const after = { server: cpuSeconds(pid), agent: agent ? cpuSeconds(agent.child.pid!) : 0, recv: await receiverCounts(receiver), metrics: agent ? await agent.scrape() : cfg === 'opentelemetry' ? await scrape(promPort) : [] };
    // What each configuration's telemetry shows of everything sent (warm-up
    // included: exports lag), once its last batch is in.
    let seen = NaN;
    const delta = (name: string, m: Record<string, string> = {}): number => sum(after.metrics, name, m) - sum(before.metrics, name, m);
    const sent = warm.requests + l.requests;
    if (!cfg.startsWith('kernscope') && cfg !== 'none') await sleep(ELASTIC_FLUSH_MS - FLUSH_MS);
    const recv = await receiverCounts(receiver);
    // Kernscope's exact in-kernel count (its histograms are estimates under a budget).
    const mine = { service_name: 'service', direction: 'server' };
    if (cfg.startsWith('kernscope')) seen = sum(after.metrics, 'kernscope_http_requests_total', mine) - sum(metrics0, 'kernscope_http_requests_total', mine);
    if (cfg === 'opentelemetry') {
      const name = after.metrics.find((s) => /^http_server_(request_)?duration(_seconds|_milliseconds)?_count$/.test(s.name))?.name;
      seen = Math.min(name ? sum(after.metrics, name) : 0, recv.otlp! - recv0.otlp!);
    }
    if (cfg === 'dd-trace') seen = recv.datadog! - recv0.datadog!;
    if (cfg === 'elastic') seen = recv.elastic! - recv0.elastic!;
    let bpfUs = 0;
    let sampleEvery = 1;
    if (agent && pass === 'fixed rate') {
      sampleEvery = sum(after.metrics, 'kernscope_http_sample_every');
      // Statistics cover 90 % of each second.
      bpfUs = (delta('kernscope_bpf_program_run_seconds_total') / 0.9) * 1e6;
    }
    return {
      pass,
      config: cfg,
      load: l,
      serverUs: ((after.server - before.server) * 1e6) / l.requests,
      agentUs: ((after.agent - before.agent) * 1e6) / l.requests,
      bpfUs: bpfUs / l.requests,
      serverRss: rssMiB(pid),
      agentRss: agent ? rssMiB(agent.child.pid!) : 0,
      seen: seen / sent,
      sampleEvery,
    };
  } finally {
    await stopChild(service);
    if (agent) await agent.stop();
  }
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

interface Summary {
  config: Cfg;
  rps: number;
  serverUs: number;
  agentUs: number;
  bpfUs: number;
  addedUs: number;
  p50: number;
  p99: number;
  serverRss: number;
  agentRss: number;
  seen: number;
}

function summarize(rows: Row[], pass: Row['pass']): Summary[] {
  const base = rows.filter((r) => r.pass === pass && r.config === 'none');
  const baseUs = mean(base.map((r) => r.serverUs));
  return CONFIGS.map((config) => {
    const rs = rows.filter((r) => r.pass === pass && r.config === config);
    const serverUs = mean(rs.map((r) => r.serverUs));
    const agentUs = mean(rs.map((r) => r.agentUs));
    return {
      config,
      rps: mean(rs.map((r) => r.load.rps)),
      serverUs,
      agentUs,
      bpfUs: mean(rs.map((r) => r.bpfUs)),
      addedUs: serverUs - baseUs + agentUs,
      p50: mean(rs.map((r) => r.load.p50)),
      p99: mean(rs.map((r) => r.load.p99)),
      serverRss: mean(rs.map((r) => r.serverRss)),
      agentRss: mean(rs.map((r) => r.agentRss)),
      seen: mean(rs.map((r) => r.seen)),
    };
  });
}

function table(s: Summary[], pass: Row['pass']): string[] {
  const b = s.find((x) => x.config === 'none')!;
  const lines = [
    '| configuration | req/s | ratio | server CPU µs/req | ratio | agent process µs/req | added CPU µs/req | p50 ms | p99 ms | server RSS MiB | agent RSS MiB | requests seen |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const x of s) {
    const seen = Number.isNaN(x.seen) ? '' : `${(x.seen * 100).toFixed(1)} %`;
    lines.push(
      `| ${x.config} | ${x.rps.toFixed(0)} | ${(x.rps / b.rps).toFixed(2)} | ${x.serverUs.toFixed(1)} | ${(x.serverUs / b.serverUs).toFixed(2)} | ${x.agentUs.toFixed(1)} | ${x.config === 'none' ? '' : x.addedUs.toFixed(1)} | ${x.p50.toFixed(2)} | ${x.p99.toFixed(2)} | ${x.serverRss.toFixed(0)} | ${x.agentRss ? x.agentRss.toFixed(0) : ''} | ${seen} |`,
    );
  }
  if (pass === 'fixed rate') {
    for (const k of s.filter((x) => x.config.startsWith('kernscope'))) {
      lines.push('', `${k.config}: its BPF programs ran ${k.bpfUs.toFixed(2)} µs per request (inside the server's CPU time above, from run-time statistics).`);
    }
  }
  return lines;
}

function chart(sat: Summary[], fixed: Summary[]): string {
  const rows = CONFIGS.filter((c) => c !== 'none');
  const W = 900;
  const barH = 26;
  const left = 200;
  const maxUs = Math.max(...fixed.map((x) => x.addedUs), 1);
  const y0 = 70;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y0 + rows.length * barH * 2 + 140}" font-family="DejaVu Sans" font-size="14">`,
    '<rect width="100%" height="100%" fill="white"/>',
    `<text x="20" y="30" font-size="18" font-weight="bold">Added CPU per request at ${RATE} req/s (µs, lower is better)</text>`,
  ];
  rows.forEach((c, i) => {
    const x = fixed.find((s) => s.config === c)!;
    const w = Math.max(2, ((W - left - 120) * Math.max(0, x.addedUs)) / maxUs);
    const y = y0 + i * barH;
    parts.push(`<text x="20" y="${y + 18}">${c}</text>`);
    parts.push(`<rect x="${left}" y="${y + 4}" width="${w}" height="${barH - 8}" fill="${c.startsWith('kernscope') ? '#2a9d8f' : '#e76f51'}"/>`);
    parts.push(`<text x="${left + w + 8}" y="${y + 18}">${x.addedUs.toFixed(1)}</text>`);
  });
  const y1 = y0 + rows.length * barH + 50;
  parts.push(`<text x="20" y="${y1 - 14}" font-size="18" font-weight="bold">Requests/s at saturation, relative to no agent (higher is better)</text>`);
  const base = sat.find((s) => s.config === 'none')!.rps;
  rows.forEach((c, i) => {
    const x = sat.find((s) => s.config === c)!;
    const r = x.rps / base;
    const w = Math.max(2, (W - left - 120) * Math.min(1.2, r));
    const y = y1 + i * barH;
    parts.push(`<text x="20" y="${y + 18}">${c}</text>`);
    parts.push(`<rect x="${left}" y="${y + 4}" width="${w}" height="${barH - 8}" fill="${c.startsWith('kernscope') ? '#2a9d8f' : '#e76f51'}"/>`);
    parts.push(`<text x="${left + w + 8}" y="${y + 18}">${r.toFixed(2)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

async function main(): Promise<void> {
  install();
  const receiverPort = await freePort();
  const receiver = spawn('taskset', ['-c', '1', process.execPath, 'receiver.mjs', String(receiverPort)], { cwd: DIR, stdio: ['ignore', 'pipe', 'inherit'] });
  const rows: Row[] = [];
  try {
    await waitLine(receiver, /ready/, 'receiver');
    for (let r = 0; r < ROUNDS; r++) {
      for (const pass of ['saturated', 'fixed rate'] as const) {
        for (const cfg of CONFIGS) {
          const row = await runOne(pass, cfg, receiverPort);
          rows.push(row);
          process.stderr.write(`round ${r + 1} ${pass} ${cfg}: ${row.load.rps.toFixed(0)} req/s, server ${row.serverUs.toFixed(1)} µs/req, agent ${row.agentUs.toFixed(1)} µs/req, seen ${(row.seen * 100).toFixed(1)} %\n`);
        }
      }
    }
  } finally {
    await stopChild(receiver);
  }
  const sat = summarize(rows, 'saturated');
  const fixed = summarize(rows, 'fixed rate');
  const k = fixed.find((x) => x.config === 'kernscope')!;
  const kb = fixed.find((x) => x.config === 'kernscope, 1% budget')!;
  const lightest = fixed.filter((x) => !x.config.startsWith('kernscope') && x.config !== 'none').sort((a, b) => a.addedUs - b.addedUs)[0]!;
  const date = new Date().toISOString();
  const lines = [
    `# Overhead against in-process APM agents, ${date}`,
    '',
    `\`npm run bench:overhead\`: bench/overhead/service.cjs (JSON, /users/{id}, 1 in 20 a 500) on CPU 0; the load (${CONNECTIONS} keep-alive connections: wrk when saturated, autocannon at a fixed rate), the receiver and Kernscope on CPU 1; ${ROUNDS} rounds, configurations alternating. CPU from /proc (user + system), counted from the start of the load to ${FLUSH_MS / 1000} s after it, so the agents' exports are in. "added CPU" = server CPU over the no-agent run's + the agent's own process. "requests seen" = what the configuration's telemetry reports (Kernscope's and OpenTelemetry's request counters, spans or transactions received) over requests sent.`,
    '',
    `## Saturated: wrk for ${SAT_SECONDS} s, as fast as the service answers`,
    '',
    ...table(sat, 'saturated'),
    '',
    `## Fixed rate: ${RATE} req/s for ${RATE_SECONDS} s (nobody saturated)`,
    '',
    ...table(fixed, 'fixed rate'),
    '',
    `Kernscope adds ${k.addedUs.toFixed(1)} µs of CPU per request at ${RATE} req/s with its defaults (every request aggregated in the kernel), ${kb.addedUs.toFixed(1)} µs with a 1 % budget; the lightest in-process agent here, ${lightest.config}, adds ${lightest.addedUs.toFixed(1)} µs: ${(lightest.addedUs / Math.max(k.addedUs, 0.01)).toFixed(1)}x and ${(lightest.addedUs / Math.max(kb.addedUs, 0.01)).toFixed(1)}x more.`,
    '',
    '## Every run',
    '',
    '| pass | configuration | req/s | server µs/req | agent µs/req | p99 ms | seen |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.pass} | ${r.config} | ${r.load.rps.toFixed(0)} | ${r.serverUs.toFixed(1)} | ${r.agentUs.toFixed(1)} | ${r.load.p99.toFixed(2)} | ${Number.isNaN(r.seen) ? '' : (r.seen * 100).toFixed(1)} |`),
    '',
  ];
  const out = process.argv.indexOf('--out');
  const base = out > 0 ? process.argv[out + 1]! : path.join(ROOT, 'bench', 'results', `${date.slice(0, 10)}-overhead`);
  fs.writeFileSync(`${base}.md`, `${lines.join('\n')}\n![chart](${path.basename(base)}.png)\n`);
  const req = createRequire(path.join(DIR, 'package.json'));
  const { Resvg } = req('@resvg/resvg-js') as { Resvg: new (svg: string, o: object) => { render(): { asPng(): Buffer } } };
  fs.writeFileSync(`${base}.png`, new Resvg(chart(sat, fixed), { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng());
  process.stdout.write(`${lines.join('\n')}\nwritten: ${base}.md, ${base}.png\n`);
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack}\n`);
  process.exit(1);
});
