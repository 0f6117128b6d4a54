// Cost of syscalls the agent does not trace (`npm run bench:syscalls`; never
// run by tests): 1-byte read/write on a pipe, and on a loopback TCP
// connection of a process the watch list excludes (skipped in the kernel at
// connect/accept) or includes (tracked: its bytes are looked at, and are not
// HTTP). Without the agent, with it, alternating; pinned to CPU 0.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { report, runBench } from './report.js';
import { startAgent, tmpDir } from '../test/helpers.js';

const N = Number(process.env.BENCH_CALLS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const EXECS = Number(process.env.BENCH_EXECS ?? 2000);

async function main(): Promise<void> {
  const dir = tmpDir('ks-bench-sys');
  const bin = path.join(dir, 'syscalls');
  execFileSync('gcc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'native', 'syscalls.c')]);
  const run = (mode: string): number => Number(execFileSync('taskset', ['-c', '0', bin, mode, String(N)], { encoding: 'utf8' }).trim());
  const configs: Array<[string, string | undefined]> = [
    ['no agent', undefined],
    ['agent, all watched', ''],
    // Port 1 alone: nothing of this bench is watched, so its connection is skipped in the kernel.
    ['agent, watch list excludes it', 'collectors:\n  http:\n    watch:\n      - { port: 1 }\n'],
  ];
  const rows: Record<string, { pipe: number[]; tcp: number[]; openAbs: number[]; openRel: number[]; exec: number[] }> = {};
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, cfg] of configs) {
      const agent = cfg === undefined ? undefined : await startAgent(cfg);
      // The agent on the other CPU: what the calls pay is the kernel's part.
      if (agent) execFileSync('taskset', ['-a', '-pc', '1', String(agent.child.pid)], { stdio: 'ignore' });
      try {
        const row = (rows[name] ??= { pipe: [], tcp: [], openAbs: [], openRel: [], exec: [] });
        row.pipe.push(run('pipe'));
        row.tcp.push(run('tcp'));
        row.openAbs.push(run('open-abs'));
        row.openRel.push(run('open-rel'));
        row.exec.push(Number(execFileSync('taskset', ['-c', '0', bin, 'exec', String(EXECS)], { encoding: 'utf8' }).trim()));
      } finally {
        await agent?.stop();
      }
    }
  }
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const base = rows['no agent']!;
  const lines = [
    `# Untraced syscalls, ${new Date().toISOString()}`,
    '',
    `\`npm run bench:syscalls\`: ${N} 1-byte write+read pairs on a pipe, and ${N} ping-pongs (4 syscalls) on a loopback TCP connection, on CPU 0; ${ROUNDS} rounds, alternating. ns per syscall (mean of rounds); "added" against no agent.`,
    '',
    '| configuration | pipe ns | added | TCP ns | added |',
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  for (const [name] of configs) {
    const x = rows[name]!;
    lines.push(`| ${name} | ${mean(x.pipe).toFixed(0)} | ${name === 'no agent' ? '' : (mean(x.pipe) - mean(base.pipe)).toFixed(0)} | ${mean(x.tcp).toFixed(0)} | ${name === 'no agent' ? '' : (mean(x.tcp) - mean(base.tcp)).toFixed(0)} |`);
  }
  lines.push(
    '',
    `The security collector's paths: open+close of /etc/hostname (no rule watches it; every open is compared with the watched prefixes) by its absolute path and by a relative name from /etc (the kernel then builds the working directory from dentries and joins it), ${N} each; fork+exec+wait of /bin/true, ${EXECS} (the exec record: the file's path and the working directory built from dentries, argv, sockets on fd 0-2).`,
    '',
    '| configuration | open abs ns | added | open rel ns | added | exec µs | added |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  const add = (name: string, xs: number[], b: number[], scale = 1): string => (name === 'no agent' ? '' : ((mean(xs) - mean(b)) / scale).toFixed(scale === 1 ? 0 : 1));
  for (const [name] of configs.slice(0, 2)) {
    const x = rows[name]!;
    lines.push(`| ${name} | ${mean(x.openAbs).toFixed(0)} | ${add(name, x.openAbs, base.openAbs)} | ${mean(x.openRel).toFixed(0)} | ${add(name, x.openRel, base.openRel)} | ${(mean(x.exec) / 1000).toFixed(1)} | ${add(name, x.exec, base.exec, 1000)} |`);
  }
  lines.push('');
  report(lines.join('\n'));
  fs.rmSync(dir, { recursive: true, force: true });
}

runBench(main);
