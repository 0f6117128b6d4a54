// The flight recorder's price on a busy node (`npm run bench:recorder`;
// never run by tests). A node kept busy on CPU 0: an exec storm (a shell
// running /bin/true as fast as it can) and a Node HTTP service under wrk
// with a new connection per request (connection churn, HTTP RED, TCP). The
// agent, on CPU 1, runs with its defaults, rounds alternating recorder off
// and on. Reports the agent's CPU, the records, bytes and syncs a second
// the recorder writes, and what the workload got done.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { ROOT } from '../src/paths.js';
import { cpuSeconds, sleep, startAgent, sum, tmpDir } from '../test/helpers.js';
import { fixtureCopy, startPeer } from '../test/peers.js';
import { median } from './speed.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

interface Round {
  recorder: boolean;
  agentCpuPct: number;
  recordsPerSec: number;
  bytesPerSec: number;
  syncsPerSec: number;
  execsPerSec: number;
  reqPerSec: number;
  dropped: number;
}

async function round(recorder: boolean, url: string): Promise<Round> {
  const dir = tmpDir('ks-bench-rec');
  const agent = await startAgent(`recorder: { enabled: ${recorder}, path: ${dir}/j }\nsecurity: { output: { stdout: false } }\n`);
  try {
    spawnSync('taskset', ['-a', '-pc', '1', String(agent.child.pid)], { stdio: 'ignore' });
    await sleep(3000);
    const before = await agent.scrape();
    const c0 = cpuSeconds(agent.child.pid!);
    // Bounded: the storm and wrk stop after SECONDS.
    const storm = spawn('taskset', ['-c', '0', 'timeout', String(SECONDS), 'sh', '-c', 'while :; do /bin/true; done'], { stdio: 'ignore' });
    const wrk = spawnSync('taskset', ['-c', '1', 'wrk', '-t1', '-c8', `-d${SECONDS}s`, '-H', 'Connection: close', url], { encoding: 'utf8' });
    await new Promise((r) => (storm.exitCode !== null ? r(null) : storm.once('exit', r)));
    const c1 = cpuSeconds(agent.child.pid!);
    const after = await agent.scrape();
    const d = (name: string, labels: Record<string, string> = {}): number => (sum(after, name, labels) - sum(before, name, labels)) / SECONDS;
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(wrk.stdout)?.[1] ?? 0);
    return {
      recorder,
      agentCpuPct: ((c1 - c0) / SECONDS) * 100,
      recordsPerSec: d('kernscope_recorder_records_total'),
      bytesPerSec: d('kernscope_recorder_written_bytes_total'),
      syncsPerSec: d('kernscope_recorder_syncs_total'),
      execsPerSec: d('kernscope_process_execs_total'),
      reqPerSec: rps,
      dropped: d('kernscope_recorder_records_dropped_total') * SECONDS,
    };
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const f = fixtureCopy('http-server.mjs', 'recbench');
  const server = startPeer(f.script, []);
  const rounds: Round[] = [];
  try {
    const port = Number((await server.line(/^\d+$/)).trim());
    spawnSync('taskset', ['-a', '-pc', '0', String(server.child.pid)], { stdio: 'ignore' });
    const url = `http://127.0.0.1:${port}/users/1`;
    for (let i = 0; i < ROUNDS; i++) for (const on of [false, true]) rounds.push(await round(on, url));
  } finally {
    await server.end();
    f.cleanup();
  }
  const col = (on: boolean, k: keyof Round): number => median(rounds.filter((r) => r.recorder === on).map((r) => r[k] as number));
  const fmt = (n: number, d = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const lines = [
    `# Flight recorder on a busy node, ${new Date().toISOString()}`,
    '',
    `CPU 0: an exec storm (sh running /bin/true in a loop) and a Node HTTP service under wrk -t1 -c8 with a new connection per request; the agent (defaults) and wrk on CPU 1. ${ROUNDS} rounds of ${SECONDS} s, recorder off and on alternating; medians.`,
    '',
    '| recorder | agent CPU (% of a core) | execs/s | HTTP req/s | records/s | journal bytes/s | syncs/s | records dropped |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...[false, true].map((on) => `| ${on ? 'on' : 'off'} | ${fmt(col(on, 'agentCpuPct'), 1)} | ${fmt(col(on, 'execsPerSec'))} | ${fmt(col(on, 'reqPerSec'))} | ${fmt(col(on, 'recordsPerSec'))} | ${fmt(col(on, 'bytesPerSec'))} | ${fmt(col(on, 'syncsPerSec'), 1)} | ${fmt(col(on, 'dropped'))} |`),
    '',
    `Added by the recorder: ${fmt(col(true, 'agentCpuPct') - col(false, 'agentCpuPct'), 1)} % of a core, ${fmt(col(true, 'bytesPerSec') / 1024, 0)} KiB/s of journal.`,
    '',
  ];
  const out = process.argv.indexOf('--out');
  const file = out > 0 ? process.argv[out + 1]! : path.join(ROOT, 'bench', 'results', `${new Date().toISOString().slice(0, 10)}-recorder.md`);
  fs.writeFileSync(file, lines.join('\n'));
  process.stdout.write(`${lines.join('\n')}written: ${file}\n`);
}

await main();
