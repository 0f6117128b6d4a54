// Runs every compiled test file with Node's test runner, one file at a time:
// BPF tests share one kernel and two cores, so they must not overlap.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

const only = process.argv.slice(2);
// test/vm/ drives the VM runner from this machine (minutes under emulation):
// it runs by `npm run test:kernels`, not by default.
const files = find('dist/test').filter((f) => (only.length === 0 ? !f.includes('/vm/') : only.some((o) => f.includes(o))));
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
