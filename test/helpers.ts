import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { ROOT } from '../src/paths.js';

export const isRoot = process.getuid?.() === 0;
export const KERNSCOPE = path.join(ROOT, 'bin', 'kernscope');

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (enough for tests: no escapes in values we assert). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of a metric's samples whose labels include `match`. */
export function sum(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  let s = 0;
  for (const x of samples) {
    if (x.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => x.labels[k] === v)) s += x.value;
  }
  return s;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
}

export interface RunningAgent {
  child: ChildProcess;
  port: number;
  stderr: () => string;
  /** Resolves with the exit code when the agent exits, whatever stopped it. */
  exited: Promise<number | null>;
  scrape(accept?: string): Promise<Sample[]>;
  scrapeText(accept?: string): Promise<string>;
  /** SIGTERM by pid; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `kernscope run` as a child and waits until it serves metrics. */
/**
 * A suite re-run on a fallback sets KS_TEST_HTTP_HOOKS (see
 * test/e2e/http-syscalls.test.ts): every agent it starts is forced onto it.
 */
/**
 * A test's config as the agent gets it: the flight recorder's journal in the
 * agent's own folder (not the node's /var/lib/kernscope) unless the test
 * sets `recorder`, and HTTP forced onto the hooks KS_TEST_HTTP_HOOKS names.
 */
function testConfig(configYaml: string, dir: string): string {
  const hooks = process.env.KS_TEST_HTTP_HOOKS;
  let doc: { collectors?: { http?: Record<string, unknown> }; recorder?: unknown };
  try {
    doc = (YAML.parse(configYaml) ?? {}) as typeof doc;
  } catch {
    return configYaml; // a test of bad YAML
  }
  if (typeof doc !== 'object' || Array.isArray(doc)) return configYaml;
  doc.recorder ??= { path: path.join(dir, 'journal') };
  if (hooks) {
    doc.collectors ??= {};
    doc.collectors.http = { ...doc.collectors.http, hooks };
  }
  return YAML.stringify(doc);
}

/**
 * How much longer waits are in a VM under software emulation
 * (scripts/vm.sh sets KS_VM): everything runs 10-30 times slower there.
 * Only waits stretch; what is asserted stays the same.
 */
export const SLOW = process.env.KS_VM ? 20 : 1;

/**
 * `prefix`: a command that execs the agent (setpriv, unshare), so its pid is
 * the agent's. `bin`: another checkout's bin/kernscope (benchmarks compare
 * two commits side by side).
 */
export async function startAgent(configYaml = '', extraArgs: string[] = [], prefix: string[] = [], bin = KERNSCOPE): Promise<RunningAgent> {
  const port = await freePort();
  const dir = tmpDir('ks-agent');
  const cfg = path.join(dir, 'config.yaml');
  fs.writeFileSync(cfg, testConfig(configYaml, dir));
  // bin itself, as users run it: its first line holds the agent's node flags.
  const argv = [bin, 'run', '--listen', `127.0.0.1:${port}`, '--config', cfg, ...extraArgs];
  const child = spawn(prefix[0] ?? argv[0]!, [...prefix.slice(1), ...(prefix.length ? argv : argv.slice(1))], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 20_000 * SLOW;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${err.trim()}`);
    if (err.includes('serving metrics at') && /collector tcp: (running|not started)/.test(err)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`agent did not start: ${err}`);
    }
    await sleep(50);
  }
  const scrapeText = async (accept?: string): Promise<string> => {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`, accept ? { headers: { accept } } : {});
    if (!r.ok) throw new Error(`scrape: HTTP ${r.status}`);
    return r.text();
  };
  return {
    child,
    port,
    stderr: () => err,
    exited,
    scrapeText,
    scrape: async (accept?: string) => parseMetrics(await scrapeText(accept)),
    stop: async () => {
      if (child.exitCode === null) process.kill(child.pid!, 'SIGTERM');
      const t = setTimeout(() => child.exitCode === null && process.kill(child.pid!, 'SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns true or `ms` pass; returns the last result. */
export async function eventually(fn: () => Promise<boolean>, ms = 10_000, step = 100): Promise<boolean> {
  const end = Date.now() + ms * SLOW;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() > end) return false;
    await sleep(step);
  }
}

/** Runs the CLI to completion; for the error-path tests. */
export function runCli(args: string[], opts: { timeoutMs?: number; prefix?: string[] } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const cmd = opts.prefix ? opts.prefix[0]! : process.execPath;
    const argv = opts.prefix ? [...opts.prefix.slice(1), process.execPath, KERNSCOPE, ...args] : [KERNSCOPE, ...args];
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), opts.timeoutMs ?? 20_000);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** BPF program ids a process holds, from the kernel's fdinfo of its fds. */
/** Ids of the BPF objects of one kind (`prog_id`, `map_id`) that process `pid` holds fds of. */
function fdinfoIds(pid: number, field: 'prog_id' | 'map_id'): number[] {
  const ids = new Set<number>();
  const re = new RegExp(`^${field}:\\s+(\\d+)$`, 'm');
  for (const fd of fs.readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = re.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) ids.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return [...ids].sort((a, b) => a - b);
}

/** Ids of the BPF programs process `pid` holds. */
export function programsOf(pid: number): number[] {
  return fdinfoIds(pid, 'prog_id');
}

/** Every BPF program loaded in the kernel, from bpftool. */
export function allProgramIds(): Set<number> {
  const out = execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' });
  return new Set((JSON.parse(out) as Array<{ id: number }>).map((p) => p.id));
}

/** Keys of a map the process `pid` holds, by the map's name, from bpftool (hex bytes per key). */
export function mapKeysOf(pid: number, name: string): Buffer[] {
  const out: Buffer[] = [];
  for (const id of fdinfoIds(pid, 'map_id')) {
    const info = JSON.parse(execFileSync('bpftool', ['map', 'show', 'id', String(id), '--json'], { encoding: 'utf8' })) as { name?: string };
    if (info.name !== name) continue;
    const dump = JSON.parse(execFileSync('bpftool', ['map', 'dump', 'id', String(id), '--json'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as Array<{ key: string[] }>;
    for (const e of dump) out.push(Buffer.from(e.key.map((b) => parseInt(b, 16))));
  }
  return out;
}

/** User plus system CPU seconds a process has used, from /proc. */
/** Resolves once a child has exited, whether or not its exit came already. */
export function exited(child: ChildProcess): Promise<void> {
  return new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
}

export function cpuSeconds(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const a = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(a[11]) + Number(a[12])) / 100;
}

/** Where cgroup v2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts. */
export function cgroup2Mount(): string {
  const m = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((x) => x[2] === 'cgroup2');
  if (!m) throw new Error('no cgroup v2 mount');
  return m[1]!;
}

/** Runs `kernscope run` on each bad config: each must exit 2 with a stderr matching its pattern. */
export async function expectConfigErrors(dir: string, cases: Array<[string, RegExp]>): Promise<void> {
  const f = path.join(dir, 'bad.yaml');
  for (const [yaml, re] of cases) {
    fs.writeFileSync(f, yaml);
    const r = await runCli(['run', '--listen', '127.0.0.1:0', '--config', f], { timeoutMs: 30_000 });
    assert.equal(r.code, 2, `${yaml}\n${r.stderr}`);
    assert.match(r.stderr, re);
  }
}

/** Reads an agent's live stream (GET /events): each event, parsed, lands in `seen`. */
export function subscribeEvents<T>(port: number): { seen: T[]; close: () => void } {
  const seen: T[] = [];
  const req = http.get(`http://127.0.0.1:${port}/events`, (res) => {
    let buf = '';
    res.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (ev.startsWith('data: ')) seen.push(JSON.parse(ev.slice(6)) as T);
      }
    });
  });
  req.on('error', () => {});
  return { seen, close: () => req.destroy() };
}
