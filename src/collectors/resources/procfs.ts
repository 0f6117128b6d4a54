/**
 * Readers for /proc and cgroupfs files, one reused buffer for all: a walk
 * over 10,000 processes allocates no buffer per file. Parsers are pure and
 * unit-tested (test/unit/resources.test.ts).
 */
import fs from 'node:fs';

export class FileReader {
  private buf = Buffer.allocUnsafe(16384);
  /** Files read since the counter was last reset (for the collection's cost metric). */
  files = 0;

  /** A small file's contents; undefined when it cannot be read (a process gone, no permission). */
  read(path: string): string | undefined {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch {
      return undefined;
    }
    this.files++;
    try {
      let n = 0;
      for (;;) {
        const got = fs.readSync(fd, this.buf, n, this.buf.length - n, null);
        if (got === 0) break;
        n += got;
        if (n === this.buf.length) {
          const bigger = Buffer.allocUnsafe(this.buf.length * 2);
          this.buf.copy(bigger);
          this.buf = bigger;
        }
      }
      return this.buf.toString('latin1', 0, n);
    } catch {
      return undefined;
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** What /proc/PID/stat says of a process (times in clock ticks). */
export interface ProcStat {
  comm: string;
  utime: number;
  stime: number;
  threads: number;
  /** Resident pages. */
  rss: number;
  /** Clock ticks after boot at which it started: with the pid, it names one process. */
  start: number;
}

/** /proc/PID/stat: comm may hold spaces and parentheses, so fields count from its last ')'. */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // Fields after comm, from field 3 (state): utime is 14, stime 15, num_threads 20, starttime 22, rss 24.
  const f = text.slice(close + 2).split(' ');
  const num = (i: number): number => Number(f[i - 3]);
  const s = { comm: text.slice(open + 1, close), utime: num(14), stime: num(15), threads: num(20), start: num(22), rss: num(24) };
  return Number.isFinite(s.utime) && Number.isFinite(s.stime) && Number.isFinite(s.start) ? s : undefined;
}

/** "key value" lines (/proc/PID/io, memory.events, cpu.stat, memory.stat). */
export function parseKeyValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+):?\s+(\d+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** /proc/PID/schedstat: ns on a CPU, ns waiting on a run queue, timeslices. */
export function parseSchedstat(text: string): { runNs: number; waitNs: number } | undefined {
  const [run, wait] = text.trim().split(' ').map(Number);
  return Number.isFinite(run) && Number.isFinite(wait) ? { runNs: run!, waitNs: wait! } : undefined;
}

/** The cgroup v2 path of a process from /proc/PID/cgroup ("0::/path"); undefined on a v1-only host. */
export function parseCgroupV2(text: string): string | undefined {
  for (const line of text.split('\n')) if (line.startsWith('0::')) return line.slice(3);
  return undefined;
}

/** memory.max and the like: "max" is no limit. */
export function parseLimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t === 'max') return Infinity;
  const v = Number(t);
  return Number.isFinite(v) ? v : undefined;
}
