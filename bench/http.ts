// HTTP overhead, side by side in one run (`npm run bench:http`; never run by tests).
// A small Node service pinned to CPU 0, wrk pinned to CPU 1, keep-alive, fixed
// duration; runs alternate without the agent and with it. Reports req/s,
// server CPU per request, the agent's own CPU, the share of requests the
// agent counted, and the BPF run time per program.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { cpuSeconds, sleep, startAgent, sum, type RunningAgent } from '../test/helpers.js';
import { startPeer } from '../test/peers.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);


function wrk(port: number): { requests: number; rps: number } {
  const out = execFileSync('taskset', ['-c', '1', 'wrk', '-t1', '-c16', `-d${SECONDS}s`, `http://127.0.0.1:${port}/users/42`], { encoding: 'utf8' });
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  return { requests, rps };
}

interface Row {
  config: string;
  rps: number;
  serverUsPerReq: number;
  agentUsPerReq: number;
  captured: number;
}

async function main(): Promise<void> {
  const script = path.join(fs.mkdtempSync('/tmp/ks-bench-'), 'benchsvc.mjs');
  fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', 'http-server.mjs'), script);
  const server = startPeer(script, []);
  const port = Number((await server.line(/^\d+$/)).trim());
  const pid = server.child.pid!;
  execFileSync('taskset', ['-apc', '0', String(pid)]); // the service on CPU 0, alone
  wrk(port); // warm up the service's JIT
  const rows: Row[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const config of ['baseline', 'kernscope']) {
      let agent: RunningAgent | undefined;
      if (config === 'kernscope') {
        agent = await startAgent('collectIntervalSeconds: 5\n');
        execFileSync('taskset', ['-apc', '1', String(agent.child.pid)]);
        await sleep(1000);
      }
      const before = agent ? sum(await agent.scrape(), 'http_server_request_duration_seconds_count', { service_name: 'benchsvc' }) : 0;
      const c0 = cpuSeconds(pid);
      const a0 = agent ? cpuSeconds(agent.child.pid!) : 0;
      const w = wrk(port);
      const serverCpu = cpuSeconds(pid) - c0;
      const agentCpu = agent ? cpuSeconds(agent.child.pid!) - a0 : 0;
      let captured = NaN;
      if (agent) {
        await sleep(500);
        captured = (sum(await agent.scrape(), 'http_server_request_duration_seconds_count', { service_name: 'benchsvc' }) - before) / w.requests;
        await agent.stop();
      }
      rows.push({ config, rps: w.rps, serverUsPerReq: (serverCpu * 1e6) / w.requests, agentUsPerReq: (agentCpu * 1e6) / w.requests, captured });
    }
  }

  // BPF run time per program, statistics on for 0.9 s of each second.
  const agent = await startAgent('bpfStats:\n  intervalSeconds: 1\n  windowSeconds: 0.9\n');
  execFileSync('taskset', ['-apc', '1', String(agent.child.pid)]);
  await sleep(1200);
  const b = await agent.scrape();
  const w = wrk(port);
  await sleep(1200);
  const a = await agent.scrape();
  await agent.stop();
  await server.end();

  const avg = (config: string, k: keyof Row): number => {
    const xs = rows.filter((x) => x.config === config).map((x) => x[k] as number);
    return xs.reduce((s, x) => s + x, 0) / xs.length;
  };
  const lines = [`# HTTP overhead, ${new Date().toISOString()}`, '', `Node service on CPU 0, wrk -t1 -c16 -d${SECONDS}s on CPU 1, keep-alive, ${ROUNDS} alternating rounds.`, ''];
  lines.push('| config | req/s | server CPU µs/req | agent CPU µs/req | requests counted |', '| --- | ---: | ---: | ---: | ---: |');
  for (const x of rows) lines.push(`| ${x.config} | ${x.rps.toFixed(0)} | ${x.serverUsPerReq.toFixed(1)} | ${x.agentUsPerReq.toFixed(2)} | ${Number.isNaN(x.captured) ? '' : `${(x.captured * 100).toFixed(2)} %`} |`);
  const rps = avg('kernscope', 'rps') / avg('baseline', 'rps');
  const cpu = avg('kernscope', 'serverUsPerReq') / avg('baseline', 'serverUsPerReq');
  lines.push('', `Ratios to the baseline (means): req/s ${rps.toFixed(3)}, server CPU per request ${cpu.toFixed(3)}; agent CPU ${avg('kernscope', 'agentUsPerReq').toFixed(2)} µs per request.`, '');
  lines.push(`BPF run time per program (${w.requests} requests, statistics on 90 % of the time):`, '', '| program | runs | runs/request | ns/run | ns/request |', '| --- | ---: | ---: | ---: | ---: |');
  let total = 0;
  for (const p of [...new Set(a.filter((s) => s.name === 'kernscope_bpf_program_runs_total').map((s) => s.labels.program!))].sort()) {
    const runs = sum(a, 'kernscope_bpf_program_runs_total', { program: p }) - sum(b, 'kernscope_bpf_program_runs_total', { program: p });
    const ns = (sum(a, 'kernscope_bpf_program_run_seconds_total', { program: p }) - sum(b, 'kernscope_bpf_program_run_seconds_total', { program: p })) * 1e9;
    if (!runs) continue;
    total += ns;
    lines.push(`| ${p} | ${runs} | ${(runs / w.requests).toFixed(2)} | ${(ns / runs).toFixed(0)} | ${(ns / w.requests).toFixed(0)} |`);
  }
  lines.push('', `Kernel time in programs per request (stats-on estimate): ${(total / w.requests / 0.9).toFixed(0)} ns.`, '');
  const report = lines.join('\n');
  process.stdout.write(report);
  const out = process.argv.indexOf('--out');
  if (out > 0) fs.writeFileSync(process.argv[out + 1]!, report);
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack}\n`);
  process.exit(1);
});
