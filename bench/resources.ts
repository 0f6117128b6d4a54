// The resources collector on a crowded node (`npm run bench:resources`;
// never run by tests): 10,000 sleeping processes, the agent with its
// defaults (a walk at each 5 s collection) for 60 s, idle otherwise.
// Reports the walk's time and files, and the agent's CPU, against the same
// node without the crowd.
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { cpuSeconds, sleep, startAgent, sum } from '../test/helpers.js';
import { fixtureCopy, startPeer } from '../test/peers.js';

const N = Number(process.env.BENCH_PROCESSES ?? 10_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 60);

async function measure(crowd: number): Promise<{ walk: number; files: number; cpuPct: number }> {
  const f = fixtureCopy('sleepers.py', 'crowd');
  const sleepers = crowd ? startPeer('/usr/bin/python3', [f.script, String(crowd)], undefined, true) : undefined;
  try {
    if (sleepers) await sleepers.line(new RegExp(`^ready ${crowd}`));
    const agent = await startAgent('collectIntervalSeconds: 5\n');
    try {
      await sleep(15_000); // the first walks name every process once
      const c0 = cpuSeconds(agent.child.pid!);
      await sleep(SECONDS * 1000);
      const c1 = cpuSeconds(agent.child.pid!);
      const m = await agent.scrape();
      return { walk: sum(m, 'kernscope_resources_collection_seconds'), files: sum(m, 'kernscope_resources_collection_files'), cpuPct: ((c1 - c0) / SECONDS) * 100 };
    } finally {
      await agent.stop();
    }
  } finally {
    await sleepers?.end();
    f.cleanup();
  }
}

async function main(): Promise<void> {
  const quiet = await measure(0);
  const crowded = await measure(N);
  const lines = [
    `# Resources collector at ${N} processes, ${new Date().toISOString()}`,
    '',
    `Agent with its defaults (a walk over /proc and cgroupfs at each 5 s collection), ${SECONDS} s after a 15 s warm-up, no scrapes.`,
    '',
    '| node | walk seconds | files per walk | agent CPU (% of a core) |',
    '| --- | ---: | ---: | ---: |',
    `| as it is | ${quiet.walk.toFixed(3)} | ${quiet.files} | ${quiet.cpuPct.toFixed(2)} |`,
    `| + ${N} sleeping processes | ${crowded.walk.toFixed(3)} | ${crowded.files} | ${crowded.cpuPct.toFixed(2)} |`,
    '',
  ];
  const out = process.argv.indexOf('--out');
  const file = out > 0 ? process.argv[out + 1]! : path.join(ROOT, 'bench', 'results', `${new Date().toISOString().slice(0, 10)}-resources.md`);
  fs.writeFileSync(file, lines.join('\n'));
  process.stdout.write(`${lines.join('\n')}written: ${file}\n`);
}

await main();
