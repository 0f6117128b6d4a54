import { createRequire } from 'node:module';
import type { AttachSpec } from '../bpf/addon.js';
import { BpfObject, type Link } from '../bpf/object.js';
import { HOOK_TARGETS_PATH, bpfObjectPath } from '../paths.js';

export interface HookCost {
  hook: string;
  /** Added ns per hit, or null when the hook is unavailable. */
  ns: number | null;
  detail?: string;
}

type Target = 'getppid' | 'emulated' | 'stepped' | 'ret';

/** addon/hook-targets.c: probe targets and the loop that times them. */
interface HookTargets {
  /** ns for n calls of getppid(2) or of a probe target. */
  benchCall(kind: Target, n: number): number;
}

let targets: HookTargets | undefined;
export function hookTargets(): HookTargets {
  return (targets ??= createRequire(import.meta.url)(HOOK_TARGETS_PATH) as HookTargets);
}

/** Best of `rounds` timings of n calls, in ns per call: the minimum resists noise. */
function perCall(kind: Target, n: number, rounds = 5): number {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) best = Math.min(best, hookTargets().benchCall(kind, n) / n);
  return best;
}

interface Step {
  hook: string;
  program: string;
  spec: AttachSpec;
  target: Target;
  n: number;
  /** raw_tp and tp_btf detach at once (no perf event): measure each alone. */
  detachAfter?: boolean;
}

// Syscall hooks are added one on top of the other and each is charged the
// increase it causes: a detach waits for an RCU grace period (~80 ms), so
// nothing is detached until the end, and then all at once in parallel.
const SYSCALL_STEPS: Step[] = [
  { hook: 'syscall tracepoint (other syscalls)', program: 'probe_syscall_tp', spec: { kind: 'tracepoint', category: 'syscalls', name: 'sys_enter_getpid' }, target: 'getppid', n: 4000 },
  { hook: 'syscall tracepoint (traced syscall)', program: 'probe_syscall_tp', spec: { kind: 'tracepoint', category: 'syscalls', name: 'sys_enter_getppid' }, target: 'getppid', n: 4000 },
  { hook: 'raw_tp sys_enter (every syscall)', program: 'probe_raw_tp', spec: { kind: 'raw_tp', name: 'sys_enter' }, target: 'getppid', n: 4000, detachAfter: true },
  { hook: 'tp_btf sys_enter (every syscall)', program: 'probe_tp_btf', spec: { kind: 'tp_btf' }, target: 'getppid', n: 4000 },
];
// Each uprobe has a function of its own, so all can be on at once.
const UPROBE_STEPS: Step[] = [
  { hook: 'uprobe, emulated first instruction', program: 'probe_uprobe', spec: { kind: 'uprobe', binary: HOOK_TARGETS_PATH, symbol: 'kernscope_probe_emulated' }, target: 'emulated', n: 2000 },
  { hook: 'uprobe, single-stepped first instruction', program: 'probe_uprobe', spec: { kind: 'uprobe', binary: HOOK_TARGETS_PATH, symbol: 'kernscope_probe_stepped' }, target: 'stepped', n: 500 },
  { hook: 'uretprobe', program: 'probe_uretprobe', spec: { kind: 'uretprobe', binary: HOOK_TARGETS_PATH, symbol: 'kernscope_probe_ret' }, target: 'ret', n: 1000 },
];

/**
 * Measures what each kind of hook adds per hit on this machine: the same call
 * timed before and after a program that returns at once is attached. These
 * costs differ a hundredfold between machines and decide what a collector
 * can afford to hook. Programs each load separately so a kernel that refuses
 * one kind still measures the others.
 */
export async function measureHookCosts(): Promise<HookCost[]> {
  const names = ['probe_syscall_tp', 'probe_raw_tp', 'probe_tp_btf', 'probe_uprobe', 'probe_uretprobe', 'probe_perf_event'];
  const objects = new Map<string, BpfObject | Error>();
  const objectFor = (program: string): BpfObject => {
    let o = objects.get(program);
    if (!o) {
      try {
        o = BpfObject.load(bpfObjectPath('probe.bpf.o'), { skipPrograms: names.filter((p) => p !== program) });
      } catch (e) {
        o = e as Error;
      }
      objects.set(program, o);
    }
    if (o instanceof Error) throw o;
    return o;
  };
  const links: Link[] = [];
  const results = new Map<string, HookCost>();
  try {
    for (const group of [SYSCALL_STEPS, UPROBE_STEPS]) {
      const base = new Map<Target, number>();
      for (const s of group) {
        if (!base.has(s.target)) {
          perCall(s.target, s.n, 2); // warm caches and the CPU's clock
          base.set(s.target, perCall(s.target, s.n));
        }
      }
      for (const s of group) {
        try {
          const link = objectFor(s.program).attach(s.program, s.spec);
          const now = perCall(s.target, s.n);
          results.set(s.hook, { hook: s.hook, ns: Math.max(0, now - base.get(s.target)!) });
          if (s.detachAfter) link.detach();
          else links.push(link);
          // The next syscall step is charged only what it adds on top.
          if (group === SYSCALL_STEPS && !s.detachAfter) base.set(s.target, now);
        } catch (e) {
          results.set(s.hook, { hook: s.hook, ns: null, detail: (e as Error).message.split('\n')[0] });
        }
      }
    }
  } finally {
    await Promise.all(links.map((l) => l.detachAsync()));
    for (const o of objects.values()) if (o instanceof BpfObject) o.close();
  }
  // The traced syscall pays the slow path too: report its full cost.
  const other = results.get(SYSCALL_STEPS[0]!.hook);
  const traced = results.get(SYSCALL_STEPS[1]!.hook);
  if (other?.ns != null && traced?.ns != null) traced.ns += other.ns;
  const order = [SYSCALL_STEPS[1]!, SYSCALL_STEPS[0]!, ...SYSCALL_STEPS.slice(2), ...UPROBE_STEPS];
  return order.map((s) => results.get(s.hook)!);
}
