/**
 * User-declared metrics on uprobes, uretprobes, USDT probes and kernel
 * tracepoints (config `probes`): one generic, precompiled BPF object per
 * probe, set up by read-only constants, its metrics sharing its hooks;
 * nothing is compiled on the user's machine. Stages: spec.ts checks a
 * probe and puts it in the kernel's terms, kernel.ts packs, loads and
 * attaches it, export.ts registers its families and folds its table.
 */
import type { BpfObject, BpfProgram } from '../../bpf/object.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import type { Config } from '../../config/schema.js';
import { bpfObjectPath } from '../../paths.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { ProbeExport } from './export.js';
import { loadProbe } from './kernel.js';
import { CustomLayout } from './layout.js';
import { compileProbe } from './spec.js';

const OBJECT = 'custom.bpf.o';

interface Instance {
  obj: BpfObject;
  out: ProbeExport;
}

export class CustomCollector implements Collector {
  readonly name = 'custom';
  private instances: Instance[] = [];

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    if (!config.probes.length) return { collector: this.name, runnable: false, reason: 'no probes in the config', hooks: [] };
    const needsUprobe = config.probes.some((p) => !p.tracepoint);
    if (needsUprobe && !f.uprobe.ok) return { collector: this.name, runnable: false, reason: `uprobes: ${f.uprobe.detail}`, hooks: [] };
    return {
      collector: this.name,
      runnable: true,
      hooks: config.probes.map((p) => ({ event: p.name, kind: p.tracepoint ? ('tracepoint' as const) : ('uprobe' as const) })),
    };
  }

  start(ctx: CollectorContext): void {
    const path = bpfObjectPath(OBJECT);
    const L = CustomLayout.of(path);
    // Every probe is checked before any is loaded: one mistake, nothing attached.
    const specs = ctx.config.probes.map((p) => compileProbe(p, L));
    try {
      for (const spec of specs) {
        const obj = loadProbe(path, L, spec);
        this.instances.push({ obj, out: new ProbeExport(L, spec, ctx.metrics, () => ctx.drops.inc({ source: 'custom', reason: 'label_overflow' })) });
      }
    } catch (e) {
      this.stop();
      throw e;
    }
    ctx.drops.inc({ source: 'custom', reason: 'label_overflow' }, 0);
  }

  programs(): BpfProgram[] {
    return this.instances.flatMap((i) => [...i.obj.programs.values()]);
  }

  collect(): void {
    for (const i of this.instances) i.out.fold(i.obj.map('agg').entries());
  }

  stop(): void {
    for (const i of this.instances) i.obj.close();
    this.instances = [];
  }
}
