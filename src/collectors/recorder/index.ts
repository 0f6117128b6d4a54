/**
 * The flight recorder's own kernel side (bpf/recorder.bpf.c): OOM kills, one
 * record each, noted in the journal. It runs only while the recorder is on;
 * the other notable events come from their collectors (execs, exits and
 * alerts from process, resets and retransmit bursts from tcp, socket errors
 * from http).
 *
 * Stages: kernel (load, attach: RecorderCollector), fold (decodeRecord:
 * records to notes), export (the journal; its only metric is the drops
 * counter).
 */
import fs from 'node:fs';
import { BpfObject, u64, type BpfProgram, type RingBuffer } from '../../bpf/object.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { NO_RINGBUF, type HookChoice } from '../hooks.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { KernelDrops } from '../drops.js';

const OBJECT = 'recorder.bpf.o';

const OOM_EVENT = 'mark_victim';

/** The object's record layouts, from its BTF. */
class RecorderLayout {
  readonly head;
  readonly oom;
  readonly kinds: Record<number, 'oom_kill'>;
  readonly dropReasons: string[];

  constructor(obj: BpfObject) {
    this.head = obj.struct('ks_rec_head', ['ts_ns', 'kind', 'pid', 'comm'] as const);
    this.oom = obj.struct('ks_rec_oom', ['h', 'victim', 'uid', 'total_vm_kb', 'anon_rss_kb', 'file_rss_kb', 'oom_score_adj', 'victim_comm'] as const);
    const k = obj.enumValues('ks_rec_kind', ['REC_OOM_KILL'] as const);
    this.kinds = { [k.REC_OOM_KILL]: 'oom_kill' };
    this.dropReasons = obj.enumLabels('ks_rec_drop_reason', { REC_DROP_RINGBUF_FULL: 'ringbuf_full' });
  }
}

function cstr(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? s.length : z).toString('utf8');
}

/** A record as the journal's fields; undefined for one that is not ours. */
export function decodeRecord(L: RecorderLayout, rec: Buffer): { kind: string; ts: number; fields: Record<string, unknown> } | undefined {
  if (rec.length < L.head.size) return undefined;
  const kind = L.kinds[rec.readUInt32LE(L.head.kind)];
  if (!kind) return undefined;
  const ts = u64(rec, L.head.ts_ns);
  const pid = rec.readUInt32LE(L.head.pid);
  if (rec.length < L.oom.size) return undefined;
  const O = L.oom;
  const victim = rec.readUInt32LE(O.victim);
  let comm = cstr(rec, O.victim_comm, 16);
  // Older kernels' tracepoint has no name: the victim is still dying.
  if (!comm) comm = readComm(victim);
  const kb = (o: number): number | undefined => u64(rec, o) || undefined;
  return {
    kind,
    ts,
    fields: { victim, victim_comm: comm, uid: rec.readUInt32LE(O.uid), total_vm_kb: kb(O.total_vm_kb), anon_rss_kb: kb(O.anon_rss_kb), file_rss_kb: kb(O.file_rss_kb), oom_score_adj: rec.readInt32LE(O.oom_score_adj), trigger_pid: pid, trigger_comm: cstr(rec, L.head.comm, 16) },
  };
}

function readComm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export class RecorderCollector implements Collector {
  readonly name = 'recorder';
  private obj: BpfObject | undefined;
  private rb: RingBuffer | undefined;
  private drain: NodeJS.Timeout | undefined;
  private drops: KernelDrops | undefined;

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    const event = `oom:${OOM_EVENT}`;
    const oom = f.tracepoint && f.hasTracepoint(OOM_EVENT);
    const hooks: HookChoice[] = [oom ? { event, kind: 'tracepoint', program: 'rec_oom' } : { event, kind: null, reason: f.tracepoint ? 'tracepoint oom:mark_victim not in this kernel' : 'classic tracepoints unavailable (no tracefs)' }];
    if (!config.recorder.enabled) return { collector: this.name, runnable: false, reason: 'recorder disabled in config', hooks };
    if (!f.ringbuf) return { collector: this.name, runnable: false, reason: NO_RINGBUF, hooks };
    if (!oom) return { collector: this.name, runnable: false, reason: `${event}: ${hooks[0]!.reason}`, hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    if (!ctx.recorder.on) throw new Error('the journal is not open (the recorder line above says why)');
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`recorder collector cannot run: ${plan.reason}`);
    const obj = BpfObject.load(bpfObjectPath(OBJECT));
    try {
      const L = new RecorderLayout(obj);
      this.drops = new KernelDrops(obj.map('drops'), 'recorder', L.dropReasons, ctx.drops);
      this.rb = obj.ringBuffer('rec_events', (rec) => {
        const r = decodeRecord(L, rec);
        if (r) ctx.recorder.note(r.kind, { t: ctx.recorder.at(r.ts), ...r.fields }, true);
      });
      // The kernel wakes the agent for each kill; this is the backstop.
      this.drain = setInterval(() => this.rb?.consume(), 200);
      this.drain.unref();
      obj.attach('rec_oom', { kind: 'auto' });
    } catch (e) {
      clearInterval(this.drain);
      this.rb?.close();
      obj.close();
      throw e;
    }
    this.obj = obj;
  }

  programs(): BpfProgram[] {
    return this.obj ? [...this.obj.programs.values()] : [];
  }

  collect(): void {
    this.rb?.consume();
    this.drops?.fold();
  }

  stop(): void {
    clearInterval(this.drain);
    this.rb?.close();
    this.rb = undefined;
    this.obj?.close();
    this.obj = undefined;
  }
}
