import type { AttachSpec } from '../bpf/addon.js';
import type { KernelFeatures } from '../capabilities/features.js';

/** One kernel event a collector listens to, with a program per hook kind. */
export interface HookSpec {
  event: string;
  /** Program names in the object, by hook kind, cheapest first. */
  programs: { tp_btf?: string; raw_tp?: string };
  required: boolean;
}

export interface HookChoice {
  event: string;
  kind: 'tp_btf' | 'raw_tp' | 'tracepoint' | 'uprobe' | null;
  program?: string;
  reason?: string;
}

/**
 * Picks the cheapest usable hook for an event: tp_btf (typed, no tracefs)
 * when the kernel's BTF describes the tracepoint, else raw_tp.
 */
export function chooseHook(spec: HookSpec, f: KernelFeatures): HookChoice {
  const hasTracepoint = f.hasBtfType(`btf_trace_${spec.event}`);
  if (spec.programs.tp_btf && f.tpBtf && hasTracepoint) {
    return { event: spec.event, kind: 'tp_btf', program: spec.programs.tp_btf };
  }
  if (spec.programs.raw_tp && f.rawTp && (hasTracepoint || f.hasTracepoint(spec.event))) {
    return { event: spec.event, kind: 'raw_tp', program: spec.programs.raw_tp };
  }
  const why = !hasTracepoint && !f.hasTracepoint(spec.event)
    ? `tracepoint ${spec.event} not in this kernel`
    : 'neither tp_btf nor raw_tp programs can be loaded';
  return { event: spec.event, kind: null, reason: why };
}

/** Why a collector that sends records through a ring buffer cannot start. */
export const NO_RINGBUF = 'no BPF ring buffer (Linux 5.8+)';

export function attachSpec(c: HookChoice): AttachSpec {
  return c.kind === 'tp_btf' ? { kind: 'tp_btf' } : { kind: 'raw_tp', name: c.event };
}

/** Programs of the variants not chosen, so they are not loaded. */
export function unchosenPrograms(specs: HookSpec[], choices: HookChoice[]): string[] {
  const chosen = new Set(choices.map((c) => c.program).filter(Boolean));
  const all = specs.flatMap((s) => Object.values(s.programs));
  return all.filter((p): p is string => !!p && !chosen.has(p));
}
