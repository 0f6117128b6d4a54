// The machine's speed, for benches that run for minutes on machines whose
// neighbours slow them down by up to five times for minutes at a time.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** CPU time in ms (not wall time, so time stolen by other guests does not
 * count) of a fixed amount of work. `cpu`: run it on that CPU (the one the
 * measured server runs on), then go back to the CPUs it had. */
export function calibrate(cpu?: number): number {
  const had = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
  if (cpu !== undefined) execFileSync('taskset', ['-pc', String(cpu), String(process.pid)], { stdio: 'ignore' });
  try {
    const c0 = process.cpuUsage();
    let h = 0x811c9dc5;
    for (let i = 0; i < 20_000_000; i++) h = Math.imul(h ^ i, 16777619);
    const c = process.cpuUsage(c0);
    if (h === 42) process.stderr.write(''); // keeps the loop from being dropped
    return (c.user + c.system) / 1000;
  } finally {
    if (cpu !== undefined && had) execFileSync('taskset', ['-pc', had, String(process.pid)], { stdio: 'ignore' });
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
