/**
 * A compiled probe into the kernel: its slots and metrics packed into the
 * generic object's .rodata (layout from the object's BTF), the object
 * loaded with only the programs the probe uses, and attached. Attach
 * failures become config errors that say what the target does have.
 */
import { BpfObject } from '../../bpf/object.js';
import { KernscopeError } from '../../errors.js';
import { fileOffset, nearestSymbols, usdtProbes } from './binary.js';
import type { CustomLayout } from './layout.js';
import { ALL_PROGRAMS, type ProbeSpec } from './spec.js';

export function loadProbe(path: string, L: CustomLayout, spec: ProbeSpec): BpfObject {
  const slots = Buffer.alloc(L.maxSlots * L.slotSize);
  spec.slots.forEach((s, i) => L.writeSlot(slots, i, s));
  const metrics = Buffer.alloc(L.maxMetrics * L.metricSize);
  spec.metrics.forEach((m, i) => L.writeMetric(metrics, i, m.kernel));
  const pairSlots = Buffer.alloc(L.maxPairs);
  spec.pairSlots.forEach((s, j) => pairSlots.writeUInt8(s, j));
  const endSlots = Buffer.alloc(L.maxPairs * L.slotSize);
  spec.endSlots.forEach((s, j) => L.writeSlot(endSlots, j, s));
  const obj = BpfObject.load(path, {
    rodata: {
      slots,
      nmetrics: spec.metrics.length,
      metrics,
      has_return: spec.hasReturn ? 1 : 0,
      target_tgid: spec.probe.pid ?? 0,
      pair_slots: pairSlots,
      end_slots: endSlots,
    },
    skipPrograms: ALL_PROGRAMS.filter((x) => x !== spec.first && (x !== spec.end || !spec.hasReturn)),
  });
  try {
    attach(obj, spec);
  } catch (e) {
    obj.close();
    throw e;
  }
  return obj;
}

function attach(obj: BpfObject, spec: ProbeSpec): void {
  const { probe: p, where: w, first } = spec;
  const end = spec.hasReturn ? spec.end : undefined;
  const bad = (msg: string): never => {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `probe "${p.name}": ${msg}`);
  };
  const why = (e: unknown): string => (e as Error).message.split('\n')[0]!;
  const pid = p.pid ?? -1;
  if (w.kind === 'tracepoint') {
    const pairs: Array<[string, string]> = [[first, p.tracepoint!]];
    if (end) pairs.push([end, p.until!]);
    for (const [program, tpName] of pairs) {
      const [category, name] = tpName.split(':') as [string, string];
      try {
        obj.attach(program, { kind: 'tracepoint', category, name });
      } catch (e) {
        bad(`cannot attach to tracepoint ${tpName}: ${why(e)}`);
      }
    }
  } else if (w.kind === 'usdt') {
    const pairs: Array<[string, string, string]> = [[first, w.provider!, w.name!]];
    if (end) {
      const [provider, name] = p.until!.split(':');
      pairs.push([end, provider!, name!]);
    }
    for (const [program, provider, name] of pairs) {
      try {
        obj.attach(program, { kind: 'usdt', binary: w.binary, provider, name, pid });
      } catch (e) {
        const have = usdtProbes(w.binary);
        bad(`no USDT probe ${provider}:${name} in ${w.binary}${have.length ? ` (it has: ${have.slice(0, 20).join(', ')})` : ' (it has none)'}: ${why(e)}`);
      }
    }
  } else if (!w.symbol) {
    // A bare address: as nm prints it, turned into the file offset uprobes take.
    let offset = 0;
    try {
      offset = fileOffset(w.binary, w.offset!);
    } catch (e) {
      bad((e as Error).message);
    }
    try {
      obj.attach(first, { kind: 'uprobe', binary: w.binary, offset, pid });
      if (end) obj.attach(end, { kind: 'uretprobe', binary: w.binary, offset, pid });
    } catch (e) {
      bad(`cannot attach at 0x${w.offset!.toString(16)} in ${w.binary}: ${why(e)}`);
    }
  } else {
    const at = { binary: w.binary, symbol: w.symbol, ...(w.offset ? { offset: w.offset } : {}), pid };
    try {
      obj.attach(first, { kind: 'uprobe', ...at });
      if (end) obj.attach(end, { kind: 'uretprobe', ...at });
    } catch (e) {
      const near = nearestSymbols(w.binary, w.symbol);
      bad(`no symbol ${w.symbol} in ${w.binary}${near.length ? ` (nearest: ${near.join(', ')})` : ''}: ${why(e)}`);
    }
  }
}
