// Cost of a user-declared probe (`npm run bench:custom`; never run by tests):
// the payment example's process_payment() called in a tight loop, without
// the agent, with one counter at entry (one uprobe), and with the example's
// two metrics (entry + return, shared by both), alternating.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { report, runBench } from './report.js';
import { startAgent, sum, tmpDir } from '../test/helpers.js';

const CALLS = Number(process.env.BENCH_CALLS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

async function main(): Promise<void> {
  const dir = tmpDir('ks-bench-custom');
  const bin = path.join(dir, 'payment');
  execFileSync('gcc', ['-O2', '-g', '-o', bin, path.join(ROOT, 'examples', 'payment', 'payment.c')]);
  const quiet = 'collectors: { tcp: { enabled: false }, http: { enabled: false }, process: { enabled: false } }\nsecurity: { enabled: false }\n';
  const example = quiet + fs.readFileSync(path.join(ROOT, 'examples', 'payment', 'kernscope.yaml'), 'utf8').replace('PAYMENT_BINARY', bin);
  const entry = `${quiet}probes:\n  - name: calls\n    uprobe: ${bin}:process_payment\n    metrics: [{ name: payment_calls_total, type: counter }]\n`;
  const configs: Array<[string, string, string]> = [
    ['entry counter', entry, 'payment_calls_total'],
    ['example', example, 'payment_amount_dollars_count'],
  ];
  const call = (): number => Number(execFileSync('taskset', ['-c', '0', bin, '--bench', String(CALLS)], { encoding: 'utf8' }).trim());
  call(); // warm up
  const rows: Array<{ config: string; ns: number; counted?: number }> = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, cfg, metric] of configs) {
      rows.push({ config: 'baseline', ns: call() });
      const agent = await startAgent(cfg);
      const before = sum(await agent.scrape(), metric);
      const ns = call();
      await new Promise((res) => setTimeout(res, 500));
      const counted = sum(await agent.scrape(), metric) - before;
      await agent.stop();
      rows.push({ config: name, ns, counted });
    }
  }
  const mean = (c: string): number => {
    const xs = rows.filter((x) => x.config === c);
    return xs.reduce((s, x) => s + x.ns, 0) / xs.length;
  };
  const lines = [`# Custom probe cost, ${new Date().toISOString()}`, '', `process_payment() x ${CALLS} on CPU 0, ${ROUNDS} alternating rounds; entry counter = one metric on one uprobe; example = its 2 metrics sharing one uprobe and one uretprobe.`, '', '| config | ns per call | calls counted |', '| --- | ---: | ---: |'];
  for (const x of rows) lines.push(`| ${x.config} | ${x.ns.toFixed(1)} | ${x.counted ?? ''} |`);
  lines.push('', ...configs.map(([name]) => `Added per call, ${name}: ${(mean(name) - mean('baseline')).toFixed(0)} ns.`), '');
  report(lines.join('\n'));
  fs.rmSync(dir, { recursive: true, force: true });
}

runBench(main);
