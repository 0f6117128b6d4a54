import type { Config, KernelFeatureName } from './config/schema.js';
import { SOCKET_EVENTS, detectFeatures, ensureTracefs, withoutFeatures, type Feature, type KernelFeatures } from './capabilities/features.js';
import { measureHookCosts, type HookCost } from './capabilities/hook-cost.js';
import { allCollectors } from './agent.js';
import type { CollectorPlan } from './collectors/types.js';
import { addon } from './bpf/addon.js';
import { CAPABILITIES, capabilityReport, type CapabilityState } from './privileges.js';

export interface DoctorReport {
  kernel: string;
  libbpf: string;
  features: Record<string, Feature>;
  hookCosts: HookCost[];
  /** Wall time of the hook cost measurement, loads and detaches included. */
  measureMs: number;
  collectors: Array<CollectorPlan & { capabilities: string[] }>;
  /** The capabilities the agent uses, and whether this process has them. */
  capabilities: CapabilityState[];
}

function flag(ok: boolean, detail?: string): Feature {
  return detail ? { ok, detail } : { ok };
}

export async function doctor(config: Config, opts: { measure: boolean }): Promise<DoctorReport> {
  const tracefs = ensureTracefs();
  const f: KernelFeatures = withoutFeatures(detectFeatures(), config.kernel.without);
  const off = (name: KernelFeatureName): string | undefined => (config.kernel.without.includes(name) ? 'turned off by kernel.without' : undefined);
  const features: Record<string, Feature> = {
    btf: f.btf,
    tracefs,
    bpffs: f.bpffs,
    'cgroup v2': f.cgroup2,
    tracepoint: flag(f.tracepoint),
    raw_tp: flag(f.rawTp, off('raw_tp')),
    tp_btf: flag(f.tpBtf, off('tp_btf')),
    kprobe: f.kprobe,
    fentry: f.fentry,
    uprobe: f.uprobe,
    'ring buffer': flag(f.ringbuf, off('ring_buffer')),
    'socket tracepoints': flag(SOCKET_EVENTS.every((e) => f.hasBtfType(`btf_trace_${e}`)), off('socket_tracepoints') ?? 'sock_recv_length, sock_send_length (Linux 6.3+)'),
    'tcp iterator': flag(f.hasBtfType('bpf_iter__tcp'), off('tcp_iterator') ?? 'iter/tcp (Linux 5.9+)'),
    perf_event: f.perfEvent,
    cgroup_skb: flag(f.cgroupSkb),
    sockops: flag(f.sockops),
    lockdown: flag(true, f.lockdown),
  };
  const t0 = performance.now();
  const hookCosts = opts.measure ? await measureHookCosts() : [];
  return {
    kernel: f.kernel,
    libbpf: addon().libbpfVersion,
    features,
    hookCosts,
    measureMs: Math.round(performance.now() - t0),
    collectors: allCollectors().map((c) => ({ ...c.plan(f, config), capabilities: CAPABILITIES.filter((k) => (k.collectors as readonly string[]).includes(c.name)).map((k) => k.name) })),
    capabilities: capabilityReport(),
  };
}

export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = [`kernel ${r.kernel}, libbpf ${r.libbpf}`, '', 'kernel features:'];
  const w = Math.max(...Object.keys(r.features).map((k) => k.length));
  for (const [k, v] of Object.entries(r.features)) {
    const state = k === 'lockdown' ? v.detail : v.ok ? 'yes' : 'NO';
    const detail = k === 'lockdown' ? '' : v.detail ? `  ${v.detail}` : '';
    lines.push(`  ${k.padEnd(w)}  ${state}${detail}`);
  }
  lines.push('', 'capabilities:');
  const cw = Math.max(...r.capabilities.map((c) => c.name.length));
  for (const c of r.capabilities) lines.push(`  ${c.name.padEnd(cw)}  ${c.ok ? 'yes' : 'NO '}  ${c.for}`);
  if (r.hookCosts.length) {
    lines.push('', `hook cost on this machine (added ns per hit, best of 5 runs; measured in ${r.measureMs} ms):`);
    const hw = Math.max(...r.hookCosts.map((c) => c.hook.length));
    for (const c of r.hookCosts) {
      lines.push(`  ${c.hook.padEnd(hw)}  ${c.ns === null ? `unavailable: ${c.detail}` : `${Math.round(c.ns)} ns`}`);
    }
  }
  lines.push('', 'collectors:');
  for (const p of r.collectors) {
    lines.push(`  ${p.collector}: ${p.runnable ? 'will run' : `cannot run: ${p.reason}`}`);
    for (const h of p.hooks) lines.push(`    ${h.event}: ${h.kind ?? `none (${h.reason})`}`);
    const has = new Map(r.capabilities.map((c) => [c.name, c.ok]));
    if (p.capabilities.length) lines.push(`    needs ${p.capabilities.map((c) => `${c}${has.get(c) ? '' : ' (MISSING)'}`).join(', ')}`);
  }
  return lines.join('\n');
}
