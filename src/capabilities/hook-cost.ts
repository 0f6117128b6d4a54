import { addon } from '../bpf/addon.js';
import type { AttachSpec } from '../bpf/addon.js';
import { BpfObject } from '../bpf/object.js';
import { ADDON_PATH, bpfObjectPath } from '../paths.js';

export interface HookCost {
  hook: string;
  /** Added ns per hit, or null when the hook is unavailable. */
  ns: number | null;
  detail?: string;
}

type Target = 'getppid' | 'emulated' | 'stepped';

/** Best of `rounds` timings of n calls, in ns per call: the minimum resists noise. */
function perCall(kind: Target, n: number, rounds = 5): number {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) best = Math.min(best, addon().benchCall(kind, n) / n);
  return best;
}

interface Case {
  hook: string;
  program: string;
  spec: AttachSpec;
  target: Target;
  n: number;
}

const CASES: Case[] = [
  { hook: 'syscall tracepoint (traced syscall)', program: 'probe_syscall_tp', spec: { kind: 'tracepoint', category: 'syscalls', name: 'sys_enter_getppid' }, target: 'getppid', n: 4000 },
  { hook: 'syscall tracepoint (other syscalls)', program: 'probe_syscall_tp', spec: { kind: 'tracepoint', category: 'syscalls', name: 'sys_enter_getpid' }, target: 'getppid', n: 4000 },
  { hook: 'raw_tp sys_enter (every syscall)', program: 'probe_raw_tp', spec: { kind: 'raw_tp', name: 'sys_enter' }, target: 'getppid', n: 4000 },
  { hook: 'tp_btf sys_enter (every syscall)', program: 'probe_tp_btf', spec: { kind: 'tp_btf' }, target: 'getppid', n: 4000 },
  { hook: 'uprobe, emulated first instruction', program: 'probe_uprobe', spec: { kind: 'uprobe', binary: ADDON_PATH, symbol: 'kernscope_probe_emulated' }, target: 'emulated', n: 2000 },
  { hook: 'uprobe, single-stepped first instruction', program: 'probe_uprobe', spec: { kind: 'uprobe', binary: ADDON_PATH, symbol: 'kernscope_probe_stepped' }, target: 'stepped', n: 500 },
  { hook: 'uretprobe', program: 'probe_uretprobe', spec: { kind: 'uretprobe', binary: ADDON_PATH, symbol: 'kernscope_probe_emulated' }, target: 'emulated', n: 1000 },
];

/**
 * Measures what each kind of hook adds per hit on this machine: the same call
 * timed without and with a program that returns at once. Takes ~100 ms.
 * Costs here differ a hundredfold between machines and decide what a
 * collector can afford to hook.
 */
export function measureHookCosts(): HookCost[] {
  const out: HookCost[] = [];
  const programs = ['probe_syscall_tp', 'probe_raw_tp', 'probe_tp_btf', 'probe_uprobe', 'probe_uretprobe'];
  for (const c of CASES) {
    let obj: BpfObject | undefined;
    try {
      obj = BpfObject.load(bpfObjectPath('probe.bpf.o'), { skipPrograms: programs.filter((p) => p !== c.program) });
      perCall(c.target, c.n, 2); // warm caches and the CPU's clock
      const base = perCall(c.target, c.n);
      const link = obj.attach(c.program, c.spec);
      const hooked = perCall(c.target, c.n);
      link.detach();
      const after = perCall(c.target, c.n);
      out.push({ hook: c.hook, ns: Math.max(0, hooked - Math.min(base, after)) });
    } catch (e) {
      out.push({ hook: c.hook, ns: null, detail: (e as Error).message.split('\n')[0] });
    } finally {
      obj?.close();
    }
  }
  return out;
}
