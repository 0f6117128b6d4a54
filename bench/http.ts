// HTTP overhead, side by side in one run (`npm run bench:http`; never run by tests).
// nginx (one worker, a small static file) and a small Node service, each
// pinned to CPU 0, wrk and the agent on CPU 1, keep-alive, fixed duration;
// runs alternate without the agent and with it. Reports req/s, server CPU
// per request, the agent's own CPU, the share of requests the agent
// counted, and the BPF run time per request.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { cpuSeconds, sleep, startAgent, sum, type RunningAgent } from '../test/helpers.js';
import { startPeer } from '../test/peers.js';
import { calibrate, median } from './speed.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);


/** wrk on CPU 1; its own CPU time too (the client side of each request),
 * from its shell's waited-for children's time. */
function wrk(url: string): { requests: number; rps: number; cpu: number } {
  const out = execFileSync('taskset', ['-c', '1', 'sh', '-c', 'wrk "$@"; cat /proc/$$/stat', 'sh', '-t1', '-c32', `-d${SECONDS}s`, url], { encoding: 'utf8' });
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const stat = out.trim().split('\n').at(-1)!;
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { requests, rps, cpu: (Number(f[13]) + Number(f[14])) / 100 };
}

interface Row {
  target: string;
  config: string;
  round: number;
  /** The machine's speed on the server's CPU just before the run: ms of CPU for a fixed loop. */
  calibMs: number;
  clientUsPerReq: number;
  rps: number;
  serverUsPerReq: number;
  agentUsPerReq: number;
  captured: number;
  /** The agent's resident memory before the run (1 s after start) and its peak by the end, MiB. */
  idleRssMiB: number;
  peakRssMiB: number;
}

function statusKiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

interface Target {
  name: string;
  /** service_name the agent gives it. */
  service: string;
  url: string;
  /** The process that serves (nginx's worker), pinned to CPU 0. */
  pid: number;
  stop: () => Promise<void>;
}

/** nginx from Debian's package: one worker, a small static file, no access log. */
async function nginx(): Promise<Target> {
  const dir = fs.mkdtempSync('/tmp/ks-bench-nginx-');
  fs.mkdirSync(path.join(dir, 'www'));
  fs.writeFileSync(path.join(dir, 'www', 'index.html'), '<h1>hello</h1>\n');
  const port = 18000 + Math.floor(Math.random() * 1000);
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `user root;\ndaemon off;\nworker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 1024; }\nhttp {\n  sendfile on;\n  keepalive_requests 1000000;\n  access_log off;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n  server { listen 127.0.0.1:${port}; root ${dir}/www; }\n}\n`);
  const child = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}/index.html`;
  for (let i = 0; i < 50 && !(await fetch(url).then((r) => r.ok, () => false)); i++) await sleep(100);
  const worker = Number(execFileSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).trim().split('\n')[0]);
  execFileSync('taskset', ['-apc', '0', String(child.pid)]);
  execFileSync('taskset', ['-apc', '0', String(worker)]);
  return {
    name: 'nginx', service: 'nginx', url, pid: worker,
    stop: async () => {
      process.kill(child.pid!, 'SIGQUIT');
      await new Promise<void>((r) => child.once('exit', () => r()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The small Node service of the tests. */
async function node(): Promise<Target> {
  const script = path.join(fs.mkdtempSync('/tmp/ks-bench-'), 'benchsvc.mjs');
  fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', 'http-server.mjs'), script);
  const server = startPeer(script, []);
  const port = Number((await server.line(/^\d+$/)).trim());
  execFileSync('taskset', ['-apc', '0', String(server.child.pid)]);
  return { name: 'node', service: 'benchsvc', url: `http://127.0.0.1:${port}/users/42`, pid: server.child.pid!, stop: () => server.end() };
}

// `--against DIR`: another checkout (built), run as a third configuration
// in the same alternation: two commits compared side by side.
const AGAINST = process.argv.includes('--against') ? process.argv[process.argv.indexOf('--against') + 1]! : '';
const againstName = (): string => {
  try {
    return `kernscope@${execFileSync('git', ['-C', AGAINST, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()}`;
  } catch {
    return `kernscope@${AGAINST}`;
  }
};
// 'http only': every other collector off, to tell the HTTP collector's own
// cost from the rest (the security collector's syscall tracepoints put every
// syscall on the kernel's slow path). BENCH_HTTP_ONLY=0 leaves it out.
const HTTP_ONLY = 'kernscope, http only';
const HTTP_ONLY_YAML = 'collectors:\n  tcp: { enabled: false }\n  process: { enabled: false }\n  resources: { enabled: false }\nsecurity: { enabled: false }\nrecorder: { enabled: false }\n';
const CONFIGS = ['baseline', 'kernscope', ...(process.env.BENCH_HTTP_ONLY === '0' ? [] : [HTTP_ONLY]), ...(AGAINST ? [againstName()] : [])];

async function measure(t: Target, rows: Row[]): Promise<void> {
  wrk(t.url); // warm up
  for (let r = 0; r < ROUNDS; r++) {
    // The agents' order flips each round: neither always runs right after the baseline.
    const agents = CONFIGS.slice(1);
    for (const config of ['baseline', ...(r % 2 ? agents.reverse() : agents)]) {
      let agent: RunningAgent | undefined;
      if (config !== 'baseline') {
        const yaml = `collectIntervalSeconds: 5\n${config === HTTP_ONLY ? HTTP_ONLY_YAML : ''}`;
        agent = await startAgent(yaml, [], [], config === 'kernscope' || config === HTTP_ONLY ? undefined : path.join(AGAINST, 'bin', 'kernscope'));
        execFileSync('taskset', ['-apc', '1', String(agent.child.pid)]);
        await sleep(1000);
      }
      const counted = async (): Promise<number> => sum(await agent!.scrape(), 'http_server_request_duration_seconds_count', { service_name: t.service });
      const before = agent ? await counted() : 0;
      const idleRss = agent ? statusKiB(agent.child.pid!, 'VmRSS') / 1024 : NaN;
      const calibMs = calibrate(0);
      const c0 = cpuSeconds(t.pid);
      const a0 = agent ? cpuSeconds(agent.child.pid!) : 0;
      const w = wrk(t.url);
      const serverCpu = cpuSeconds(t.pid) - c0;
      const agentCpu = agent ? cpuSeconds(agent.child.pid!) - a0 : 0;
      let captured = NaN;
      let peakRss = NaN;
      if (agent) {
        peakRss = statusKiB(agent.child.pid!, 'VmHWM') / 1024;
        await sleep(500);
        captured = ((await counted()) - before) / w.requests;
        await agent.stop();
      }
      rows.push({ target: t.name, config, round: r, calibMs, clientUsPerReq: (w.cpu * 1e6) / w.requests, rps: w.rps, serverUsPerReq: (serverCpu * 1e6) / w.requests, agentUsPerReq: (agentCpu * 1e6) / w.requests, captured, idleRssMiB: idleRss, peakRssMiB: peakRss });
    }
  }
}

/** BPF run time per request, statistics on for 0.9 s of each second. */
async function bpfTime(t: Target): Promise<{ lines: string[]; nsPerReq: number }> {
  const agent = await startAgent('bpfStats:\n  intervalSeconds: 1\n  windowSeconds: 0.9\n');
  execFileSync('taskset', ['-apc', '1', String(agent.child.pid)]);
  await sleep(1200);
  const b = await agent.scrape();
  const w = wrk(t.url);
  await sleep(1200);
  const a = await agent.scrape();
  await agent.stop();
  const lines = ['| program | runs/request | ns/run | ns/request |', '| --- | ---: | ---: | ---: |'];
  let total = 0;
  for (const p of [...new Set(a.filter((s) => s.name === 'kernscope_bpf_program_runs_total').map((s) => s.labels.program!))].sort()) {
    const runs = sum(a, 'kernscope_bpf_program_runs_total', { program: p }) - sum(b, 'kernscope_bpf_program_runs_total', { program: p });
    const ns = (sum(a, 'kernscope_bpf_program_run_seconds_total', { program: p }) - sum(b, 'kernscope_bpf_program_run_seconds_total', { program: p })) * 1e9;
    if (!runs) continue;
    total += ns;
    lines.push(`| ${p} | ${(runs / w.requests).toFixed(2)} | ${(ns / runs).toFixed(0)} | ${(ns / w.requests).toFixed(0)} |`);
  }
  return { lines, nsPerReq: total / w.requests / 0.9 };
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const out = [`# HTTP overhead, ${new Date().toISOString()}`, '', `Server on CPU 0 (nginx's one worker; the Node service), wrk -t1 -c32 -d${SECONDS}s and the agent on CPU 1, keep-alive, ${ROUNDS} alternating rounds, all collectors on (\"http only\": the others off).`, ''];
  // Each agent run is paired with its round's baseline, a few seconds
  // apart: medians of the pairs, so the machine's slow spells (minutes
  // long) cancel within a pair instead of between rounds. 'at median
  // speed': each run's CPU scaled by the fixed loop's time on the server's
  // CPU just before it, to the run's median.
  const summary = ['| server | req/s ratio (median, range) | server µs/req without → with | added server µs/req (at median speed) | added client µs/req (wrk) | agent CPU µs/req | BPF ns/req (both ends) | requests counted (lowest round) | agent RSS peak MiB |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'];
  // BENCH_ONLY=nginx (or node): one server only.
  for (const make of [nginx, node].filter((f) => !process.env.BENCH_ONLY || f.name === process.env.BENCH_ONLY)) {
    const t = await make();
    try {
      await measure(t, rows);
      const bpf = await bpfTime(t);
      const mine = rows.filter((x) => x.target === t.name);
      const speed = median(mine.map((x) => x.calibMs));
      const base = (x: Row): Row => mine.find((y) => y.config === 'baseline' && y.round === x.round)!;
      out.push(`## ${t.name}`, '', '| round | config | req/s | server CPU µs/req | client CPU µs/req | agent CPU µs/req | fixed loop ms | requests counted | agent RSS MiB (before → peak) |', '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
      for (const x of mine) out.push(`| ${x.round + 1} | ${x.config} | ${x.rps.toFixed(0)} | ${x.serverUsPerReq.toFixed(2)} | ${x.clientUsPerReq.toFixed(2)} | ${x.agentUsPerReq.toFixed(2)} | ${x.calibMs.toFixed(0)} | ${Number.isNaN(x.captured) ? '' : `${(x.captured * 100).toFixed(2)} %`} | ${Number.isNaN(x.idleRssMiB) ? '' : `${x.idleRssMiB.toFixed(0)} → ${x.peakRssMiB.toFixed(0)}`} |`);
      out.push('', 'BPF run time (statistics on 90 % of the time):', '', ...bpf.lines, '');
      for (const config of CONFIGS.slice(1)) {
        const runs = mine.filter((x) => x.config === config);
        const ratios = runs.map((x) => x.rps / base(x).rps);
        const added = (k: 'serverUsPerReq' | 'clientUsPerReq', scaled: boolean): number =>
          median(runs.map((x) => (scaled ? (x[k] * speed) / x.calibMs - (base(x)[k] * speed) / base(x).calibMs : x[k] - base(x)[k])));
        summary.push(`| ${t.name}${config === 'kernscope' ? '' : `, ${config}`} | ${median(ratios).toFixed(3)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) | ${median(runs.map((x) => base(x).serverUsPerReq)).toFixed(2)} → ${median(runs.map((x) => x.serverUsPerReq)).toFixed(2)} | ${added('serverUsPerReq', false).toFixed(2)} (${added('serverUsPerReq', true).toFixed(2)}) | ${added('clientUsPerReq', false).toFixed(2)} | ${median(runs.map((x) => x.agentUsPerReq)).toFixed(2)} | ${config === 'kernscope' ? bpf.nsPerReq.toFixed(0) : ''} | ${(Math.min(...runs.map((x) => x.captured)) * 100).toFixed(2)} % | ${Math.max(...runs.map((x) => x.peakRssMiB)).toFixed(0)} |`);
      }
    } finally {
      await t.stop();
    }
  }
  const report = [...out.slice(0, 4), '## Summary (medians of the rounds, each agent run against its round\'s baseline)', '', ...summary, '', ...out.slice(4)].join('\n');
  process.stdout.write(report);
  const o = process.argv.indexOf('--out');
  if (o > 0) fs.writeFileSync(process.argv[o + 1]!, report);
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack}\n`);
  process.exit(1);
});
