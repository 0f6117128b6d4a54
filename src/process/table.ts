import fs from 'node:fs';
import path from 'node:path';
import type { ProcEvent } from '../collectors/process/decode.js';

export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** Name of the executable (basename of exe, or comm). */
  name: string;
  /**
   * The program run, as the kernel found it: the file's own path built from
   * its dentries (`./x`, `../x`, a symlink or /proc/self/fd/N all give the
   * real one), `memfd:NAME` for a memory file, the script's absolute path
   * for a script. Starts with `…` when the path was deeper than the kernel
   * walks (its top is missing).
   */
  exe: string;
  args: string[];
  argsTruncated: boolean;
  uid: number;
  cgroup: string;
  /** exec: the path as execve was given it */
  requested?: string;
  /** exec: the working directory */
  cwd?: string;
  /** exec of a script: the interpreter the kernel ran */
  interpreter?: string;
  /** exec: the file had been unlinked when it ran */
  deleted?: boolean;
  /** exec: fds 0-2 that were TCP/UDP sockets, as a bit set */
  stdioSockets?: number;
  /** exec in a container (its own pid namespace): the file run was written after the container started */
  exeNew?: boolean;
  /** Set when the process has exited, with its wait(2) status. */
  exitCode?: number;
  exitedAt?: number;
}

/**
 * Every process on the node, seeded from /proc at start and kept current by
 * exec, fork and exit events, so each event carries its ancestry even when
 * its parents are gone. Exited processes stay a while for their children's
 * sake; the table is bounded and says how many it forgot.
 */
export class ProcessTable {
  private readonly procs = new Map<number, ProcessInfo>();
  /** Processes forgotten because the table was full (their children lose that ancestor). */
  lost = 0;

  constructor(
    private readonly max = 65536,
    private readonly keepExitedMs = 60_000,
    /** Called for each process forgotten because the table was full. */
    private readonly onLost: () => void = () => {},
  ) {}

  get size(): number {
    return this.procs.size;
  }

  get(pid: number): ProcessInfo | undefined {
    return this.procs.get(pid);
  }

  seedFromProc(): void {
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      const p = readProc(Number(d));
      if (p) this.put(p);
    }
  }

  apply(e: ProcEvent): ProcessInfo | undefined {
    if (e.kind === 'exec') {
      const { exe, name, interpreter } = executable(e);
      const p: ProcessInfo = {
        pid: e.pid,
        ppid: e.ppid,
        name: name || e.comm,
        exe,
        args: e.args ?? [],
        argsTruncated: e.argsTruncated ?? false,
        uid: e.uid,
        // Read again at exec: a process may change cgroups between fork and exec.
        cgroup: readCgroup(e.pid) ?? this.get(e.pid)?.cgroup ?? '',
        requested: e.filename ?? '',
        ...(e.cwd ? { cwd: e.cwd } : {}),
        ...(interpreter ? { interpreter } : {}),
        ...(e.exeFlags?.deleted ? { deleted: true } : {}),
        ...(e.stdioSockets ? { stdioSockets: e.stdioSockets } : {}),
        ...(writtenSinceStart(e) ? { exeNew: true } : {}),
      };
      this.put(p);
      return p;
    }
    if (e.kind === 'fork') {
      const parent = this.get(e.ppid);
      const p: ProcessInfo = parent
        ? { ...parent, pid: e.pid, ppid: e.ppid, exitCode: undefined, exitedAt: undefined }
        : { pid: e.pid, ppid: e.ppid, name: e.comm, exe: '', args: [], argsTruncated: false, uid: e.uid, cgroup: '' };
      delete p.exitCode;
      delete p.exitedAt;
      this.put(p);
      return p;
    }
    if (e.kind === 'exit') {
      const p = this.get(e.pid);
      if (p) {
        p.exitCode = e.exitCode;
        p.exitedAt = Date.now();
      }
      return p;
    }
    return undefined;
  }

  /** The process and its parents, nearest first, at most `depth` of them. */
  ancestry(pid: number, depth = 16): ProcessInfo[] {
    const out: ProcessInfo[] = [];
    const seen = new Set<number>();
    let p = this.get(pid);
    while (p && out.length < depth && !seen.has(p.pid)) {
      out.push(p);
      seen.add(p.pid);
      if (p.ppid === 0 || p.ppid === p.pid) break;
      p = this.get(p.ppid);
    }
    return out;
  }

  private put(p: ProcessInfo): void {
    if (this.procs.size >= this.max && !this.procs.has(p.pid)) this.evict();
    this.procs.set(p.pid, p);
  }

  /**
   * Full (exited processes past their grace go at each sweep): the oldest
   * entry goes, in constant time, so that a storm into a full table costs
   * no more per event.
   */
  private evict(): void {
    const victim = this.procs.keys().next().value;
    if (victim === undefined) return;
    this.procs.delete(victim);
    this.lost++;
    this.onLost();
  }

  /** Drops exited processes past their grace period. */
  sweep(): void {
    const now = Date.now();
    for (const [pid, p] of this.procs) if (p.exitedAt !== undefined && now - p.exitedAt > this.keepExitedMs) this.procs.delete(pid);
  }
}

function readCgroup(pid: number): string | undefined {
  try {
    const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
    // cgroup v2's line is "0::/path"; else the first controller's path.
    const v2 = lines.find((l) => l.startsWith('0::'));
    return (v2 ?? lines[0] ?? '').split(':').slice(2).join(':');
  } catch {
    return undefined;
  }
}

/** Wall-clock milliseconds at which the boot clock read 0 (no suspend on a server). */
const BOOT_WALL_MS = Date.now() - Number(process.hrtime.bigint() / 1_000_000n);

/** The file run changed after the init of the process's pid namespace (a container) started. */
function writtenSinceStart(e: ProcEvent): boolean {
  if (!e.pidnsStartNs || !e.exeCtimeNs) return false;
  return e.exeCtimeNs / 1e6 > BOOT_WALL_MS + e.pidnsStartNs / 1e6;
}

/** A path the kernel built, `…`-marked when its top is missing. */
function kernelPath(p: string | undefined, deep: boolean | undefined): string | undefined {
  if (!p) return undefined;
  return deep ? `…${p}` : p;
}

/**
 * What an exec ran. The name is the one it was called by (`sh`, not the
 * `dash` a symlink leads to), as ps and the rules' `name` expect; the path
 * is the file's own, from the kernel.
 */
export function executable(e: ProcEvent): { exe: string; name: string; interpreter?: string } {
  const requested = e.filename ?? '';
  if (e.fileName?.startsWith('memfd:')) return { exe: e.fileName, name: e.fileName };
  const kernel = kernelPath(e.exePath, e.exeFlags?.deep);
  // /proc/self/fd/N, /dev/fd/N: named after the file, not the number.
  const byFd = /^\/(proc\/(self|\d+)|dev)\/fd\/\d+$/.test(requested);
  if (e.exeFlags?.script) {
    // The kernel holds the interpreter by then; the script is the program.
    const script = e.cwd && !e.cwdFlags?.truncated && !e.cwdFlags?.deep ? path.resolve(e.cwd, requested) : requested;
    return { exe: script, name: path.basename(script), ...(kernel ? { interpreter: kernel } : {}) };
  }
  const exe = kernel ?? (requested.startsWith('/') ? requested : resolveExe(e.pid, requested));
  return { exe, name: path.basename(byFd || !requested ? exe : requested) };
}

function resolveExe(pid: number, filename: string): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return filename;
  }
}

function readProc(pid: number): ProcessInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    let exe = '';
    try {
      exe = fs.readlinkSync(`/proc/${pid}/exe`);
    } catch {
      // kernel threads have none
    }
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (args.at(-1) === '') args.pop();
    const uid = Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    return { pid, ppid, name: exe ? path.basename(exe.replace(/ \(deleted\)$/, '')) : comm, exe, args, argsTruncated: false, uid, cgroup: readCgroup(pid) ?? '' };
  } catch {
    return undefined;
  }
}
