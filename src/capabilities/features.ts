import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { addon } from '../bpf/addon.js';
import { BpfObject } from '../bpf/object.js';
import { isBpfError } from '../errors.js';
import { HOOK_TARGETS_PATH, bpfObjectPath } from '../paths.js';
import type { KernelFeatureName } from '../config/schema.js';

export const TRACEFS = '/sys/kernel/tracing';

export interface Feature {
  ok: boolean;
  /** Why not, or a detail such as a mount point. */
  detail?: string;
}

export interface KernelFeatures {
  kernel: string;
  btf: Feature;
  tracefs: Feature;
  bpffs: Feature;
  cgroup2: Feature;
  lockdown: string;
  tracepoint: boolean;
  rawTp: boolean;
  tpBtf: boolean;
  ringbuf: boolean;
  kprobe: Feature;
  fentry: Feature;
  uprobe: Feature;
  perfEvent: Feature;
  cgroupSkb: boolean;
  sockops: boolean;
  hasBtfType(name: string): boolean;
  hasTracepoint(event: string): boolean;
}

// enum bpf_prog_type / bpf_map_type values (uapi/linux/bpf.h)
const PROG = { TRACEPOINT: 5, PERF_EVENT: 7, CGROUP_SKB: 8, SOCK_OPS: 13, RAW_TRACEPOINT: 17 };
const MAP_RINGBUF = 27;

function mounts(): string[][] {
  try {
    return fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  } catch {
    return [];
  }
}

/** Mounts tracefs where real agents expect it, if it is not there yet. */
export function ensureTracefs(): Feature {
  if (fs.existsSync(`${TRACEFS}/events`)) return { ok: true, detail: TRACEFS };
  try {
    execFileSync('mount', ['-t', 'tracefs', 'tracefs', TRACEFS], { stdio: 'pipe' });
    return { ok: true, detail: `${TRACEFS} (mounted by kernscope)` };
  } catch (e) {
    const msg = String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim();
    return { ok: false, detail: `not mounted and mount failed: ${msg}` };
  }
}

function lockdownMode(): string {
  try {
    const s = fs.readFileSync('/sys/kernel/security/lockdown', 'utf8');
    return /\[(\w+)\]/.exec(s)?.[1] ?? 'unknown';
  } catch {
    return 'unknown (securityfs not mounted)';
  }
}

/** Tries to load (and optionally attach) one program of a probe object. */
function tryProbe(object: string, program: string, attach?: Parameters<BpfObject['attach']>[1]): Feature {
  let obj: BpfObject | undefined;
  try {
    const all = probePrograms(object);
    obj = BpfObject.load(bpfObjectPath(object), { skipPrograms: all.filter((p) => p !== program) });
    if (attach) obj.attach(program, attach);
    return { ok: true };
  } catch (e) {
    const why = isBpfError(e) ? e.message : (e as Error).message;
    return { ok: false, detail: why };
  } finally {
    obj?.close();
  }
}

const programLists = new Map<string, string[]>();
function probePrograms(object: string): string[] {
  let l = programLists.get(object);
  if (!l) {
    const a = addon();
    const h = a.openObject(bpfObjectPath(object));
    try {
      l = a.objectInfo(h).programs.map((p) => p.name);
    } finally {
      a.closeObject(h);
    }
    programLists.set(object, l);
  }
  return l;
}

/**
 * What this kernel offers, asked of the kernel itself: each program type is
 * loaded, each attach kind that can be refused late (kprobe, fentry) is tried.
 */
export function detectFeatures(): KernelFeatures {
  const a = addon();
  const m = mounts();
  const kernel = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  const btfOk = fs.existsSync('/sys/kernel/btf/vmlinux');
  const tracefsOk = fs.existsSync(`${TRACEFS}/events`);
  const bpffs = m.find((x) => x[2] === 'bpf');
  const cg2 = m.find((x) => x[2] === 'cgroup2');

  let events: Set<string> | undefined;
  const hasTracepoint = (event: string): boolean => {
    if (!events) {
      events = new Set();
      try {
        for (const l of fs.readFileSync(`${TRACEFS}/available_events`, 'utf8').split('\n')) {
          const name = l.split(':')[1];
          if (name) events.add(name);
        }
      } catch {
        // tracefs absent: only BTF can tell
      }
    }
    return events.has(event);
  };
  // Answers are kept: the agent frees the kernel's BTF once its collectors
  // are planned, and a later question (doctor, a reload) must not parse it again.
  const btfTypes = new Map<string, boolean>();
  const hasBtfType = (name: string): boolean => {
    let yes = btfTypes.get(name);
    if (yes === undefined) {
      try {
        yes = btfOk && a.vmlinuxHasType(name);
      } catch {
        yes = false;
      }
      btfTypes.set(name, yes);
    }
    return yes;
  };

  const tpBtf = btfOk && tryProbe('probe.bpf.o', 'probe_tp_btf').ok;
  const uprobe = tryProbe('probe.bpf.o', 'probe_uprobe', {
    kind: 'uprobe',
    binary: HOOK_TARGETS_PATH,
    symbol: 'kernscope_probe_emulated',
  });
  const perfEvent = tryProbe('probe.bpf.o', 'probe_perf_event', { kind: 'perf_event', cpu: 0, frequency: 1 });
  const kprobe = tryProbe('probe_kprobe.bpf.o', 'probe_kprobe', { kind: 'auto' });
  const fentry = btfOk ? tryProbe('probe_fentry.bpf.o', 'probe_fentry', { kind: 'auto' }) : { ok: false, detail: 'no kernel BTF' };

  return {
    kernel,
    btf: btfOk ? { ok: true, detail: '/sys/kernel/btf/vmlinux' } : { ok: false, detail: '/sys/kernel/btf/vmlinux missing (CONFIG_DEBUG_INFO_BTF off)' },
    tracefs: tracefsOk ? { ok: true, detail: TRACEFS } : { ok: false, detail: `not mounted at ${TRACEFS}` },
    bpffs: bpffs ? { ok: true, detail: bpffs[1] } : { ok: false, detail: 'not mounted (only needed for pinning)' },
    cgroup2: cg2 ? { ok: true, detail: cg2[1] } : { ok: false, detail: 'no cgroup v2 mount' },
    lockdown: lockdownMode(),
    tracepoint: a.probeProgType(PROG.TRACEPOINT),
    rawTp: a.probeProgType(PROG.RAW_TRACEPOINT),
    tpBtf,
    ringbuf: a.probeMapType(MAP_RINGBUF),
    kprobe,
    fentry,
    uprobe,
    perfEvent,
    cgroupSkb: a.probeProgType(PROG.CGROUP_SKB),
    sockops: a.probeProgType(PROG.SOCK_OPS),
    hasBtfType,
    hasTracepoint,
  };
}

/** The socket tracepoints HTTP reads and writes are seen by (Linux 6.3+). */
export const SOCKET_EVENTS = ['sock_recv_length', 'sock_send_length'] as const;
const SOCKET_TRACEPOINTS: ReadonlySet<string> = new Set(SOCKET_EVENTS);

/**
 * The features a kernel would have without those named (config
 * `kernel.without`): an older kernel simulated on this one, so that each
 * fallback hook, and each collector's refusal to start, can be chosen and
 * tested here.
 */
export function withoutFeatures(f: KernelFeatures, without: readonly KernelFeatureName[]): KernelFeatures {
  if (without.length === 0) return f;
  const off = new Set(without);
  const gone: Feature = { ok: false, detail: 'turned off by kernel.without' };
  const tpGone = (event: string): boolean => off.has('socket_tracepoints') && SOCKET_TRACEPOINTS.has(event);
  return {
    ...f,
    tpBtf: f.tpBtf && !off.has('tp_btf'),
    rawTp: f.rawTp && !off.has('raw_tp'),
    ringbuf: f.ringbuf && !off.has('ring_buffer'),
    uprobe: off.has('uprobe') ? gone : f.uprobe,
    kprobe: off.has('kprobe') ? gone : f.kprobe,
    fentry: off.has('fentry') ? gone : f.fentry,
    hasBtfType: (name) => {
      if (off.has('tcp_iterator') && name === 'bpf_iter__tcp') return false;
      if (name.startsWith('btf_trace_') && tpGone(name.slice('btf_trace_'.length))) return false;
      return f.hasBtfType(name);
    },
    hasTracepoint: (event) => !tpGone(event) && f.hasTracepoint(event),
  };
}
