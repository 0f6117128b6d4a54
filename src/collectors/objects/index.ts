import fs from 'node:fs';
import type client from 'prom-client';
import { BpfObject, type BpfMap, type BpfProgram } from '../../bpf/object.js';
import type { Config, ObjectConfig, ObjectMetric } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { BucketHistogram } from '../../metrics/bucket-histogram.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import { KernscopeError } from '../../errors.js';
import type { Labels } from '../../metrics/registry.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { decode, DECODER_SIZES, type Decoder } from './decode.js';
import { Cumulative } from '../cumulative.js';

interface Field {
  name: string;
  offset: number;
  size: number;
  decoder: Decoder;
  values?: Record<string, string>;
}

interface Exported {
  metric: ObjectMetric;
  map: BpfMap;
  fields: Field[];
  bucket?: { offset: number; size: number };
  counter?: client.Counter<string>;
  gauge?: client.Gauge<string>;
  hist?: BucketHistogram;
  /** Histograms: each bucket's lower bound, for the estimated _sum. */
  lower: number[];
  limiter: LabelLimiter;
  /** Last cumulative value per key, for counters and histograms. */
  last: Cumulative;
}

interface Loaded {
  config: ObjectConfig;
  obj: BpfObject;
  exported: Exported[];
}

/**
 * A user's own BPF objects (config `objects`), in the spirit of
 * ebpf_exporter: programs attach by their SEC() names, and the maps named in
 * the config become metrics, key fields decoded into labels.
 */
export class ObjectsCollector implements Collector {
  readonly name = 'objects';
  private loaded: Loaded[] = [];
  private ctx!: CollectorContext;

  plan(_f: KernelFeatures, config: Config): CollectorPlan {
    if (!config.objects.length) return { collector: this.name, runnable: false, reason: 'no objects in the config', hooks: [] };
    return { collector: this.name, runnable: true, hooks: config.objects.map((o) => ({ event: o.name, kind: null, reason: o.path })) };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    try {
      for (const o of ctx.config.objects) this.loaded.push(this.load(o));
    } catch (e) {
      this.stop();
      throw e;
    }
  }

  private load(o: ObjectConfig): Loaded {
    const bad = (msg: string): never => {
      throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `object "${o.name}": ${msg}`);
    };
    if (!fs.existsSync(o.path)) bad(`no such file ${o.path}`);
    let obj: BpfObject;
    try {
      obj = BpfObject.load(o.path, o.programs ? { onlyPrograms: o.programs } : {});
    } catch (e) {
      const err = e as Error & { log?: string };
      return bad(`cannot load ${o.path}: ${err.message.split('\n')[0]}${err.log ? `\n${err.log.split('\n').slice(-8).join('\n')}` : ''}`);
    }
    try {
      const exported = o.metrics.map((m) => this.export(o, obj, m, bad));
      for (const name of obj.programs.keys()) {
        try {
          obj.attach(name, { kind: 'auto' });
        } catch (e) {
          bad(`program ${name}: cannot attach by its section name: ${(e as Error).message.split('\n')[0]}`);
        }
      }
      return { config: o, obj, exported };
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  private export(o: ObjectConfig, obj: BpfObject, m: ObjectMetric, bad: (msg: string) => never): Exported {
    const map = obj.maps.get(m.map) ?? bad(`metric "${m.name}": no map ${m.map} (it has: ${[...obj.maps.keys()].filter((n) => !n.includes('.')).join(', ')})`);
    const fields: Field[] = [];
    let at = 0;
    for (const l of m.labels ?? []) {
      const sizes = DECODER_SIZES[l.decoder];
      if (sizes && !sizes.includes(l.size)) bad(`metric "${m.name}": label ${l.name}: decoder ${l.decoder} reads ${sizes.join(' or ')} bytes, not ${l.size}`);
      const offset = l.offset ?? at;
      fields.push({ name: l.name, offset, size: l.size, decoder: l.decoder, ...(l.values ? { values: l.values } : {}) });
      at = offset + l.size;
    }
    let bucket: Exported['bucket'];
    if (m.type === 'histogram') {
      if (!m.bucket) bad(`metric "${m.name}": a histogram needs bucket, the key field holding the bucket index`);
      bucket = { offset: m.bucket!.offset ?? at, size: m.bucket!.size };
      at = bucket.offset + bucket.size;
    } else if (m.bucket) bad(`metric "${m.name}": bucket goes with a histogram`);
    const keySize = map.info.keySize;
    const end = Math.max(at, ...fields.map((f) => f.offset + f.size));
    if (end > keySize) bad(`metric "${m.name}": the labels${bucket ? ' and bucket' : ''} take ${end} bytes, the key of map ${m.map} has ${keySize}`);
    const valueOffset = m.valueOffset ?? 0;
    if (valueOffset + 8 > map.info.valueSize) bad(`metric "${m.name}": no u64 at valueOffset ${valueOffset}: the values of map ${m.map} have ${map.info.valueSize} bytes`);
    const names = fields.map((f) => f.name);
    const help = m.help ?? `From map ${m.map} of ${o.path}.`;
    const ex: Exported = {
      metric: m,
      map,
      fields,
      ...(bucket ? { bucket } : {}),
      lower: [],
      limiter: new LabelLimiter(o.maxSeries ?? 1000, () => this.ctx.drops.inc({ source: 'objects', reason: 'label_overflow' })),
      last: new Cumulative(),
    };
    if (m.type === 'counter') ex.counter = this.ctx.metrics.counter(m.name, help, names);
    else if (m.type === 'gauge') ex.gauge = this.ctx.metrics.gauge(m.name, help, names);
    else {
      const b = m.bucket!;
      const mult = b.multiplier ?? 1;
      const n = b.count ?? (b.type === 'log2' ? 32 : 20);
      // log2: index k holds [2^k, 2^(k+1)); linear: [k*width, (k+1)*width).
      const upper = Array.from({ length: n }, (_, k) => (b.type === 'log2' ? 2 ** (k + 1) : (k + 1) * (b.width ?? 1)) * mult);
      ex.lower = Array.from({ length: n }, (_, k) => (b.type === 'log2' ? (k === 0 ? 0 : 2 ** k) : k * (b.width ?? 1)) * mult);
      ex.hist = new BucketHistogram(m.name, m.help ? help : `${help} _sum is estimated from bucket lower bounds.`, upper);
      this.ctx.metrics.register(ex.hist);
    }
    this.ctx.drops.inc({ source: 'objects', reason: 'label_overflow' }, 0);
    this.ctx.drops.inc({ source: 'objects', reason: 'bucket_out_of_range' }, 0);
    return ex;
  }

  programs(): BpfProgram[] {
    return this.loaded.flatMap((l) => [...l.obj.programs.values()]);
  }

  collect(): void {
    for (const l of this.loaded) for (const ex of l.exported) this.collectOne(ex);
  }

  private collectOne(ex: Exported): void {
    const field = (ex.metric.valueOffset ?? 0) / 8;
    const seen = new Set<string>();
    for (const { key, value } of ex.map.entries()) {
      const v = ex.map.field(value, field);
      const raw: Labels = {};
      for (const f of ex.fields) {
        const d = decode(f.decoder, key.subarray(f.offset, f.offset + f.size));
        raw[f.name] = f.values?.[d] ?? d;
      }
      const labelKey = ex.fields.map((f) => key.toString('hex', f.offset, f.offset + f.size)).join('');
      if (ex.gauge) {
        ex.gauge.set(ex.limiter.admit(labelKey, raw), v);
        continue;
      }
      const hex = key.toString('hex');
      seen.add(hex);
      // A value that fell: the program deleted its key and made it again.
      const [delta] = ex.last.delta(hex, [v]);
      if (!delta) continue;
      const labels = ex.limiter.admit(labelKey, raw);
      if (ex.counter) ex.counter.inc(labels, delta);
      else if (ex.hist && ex.bucket) {
        const b = Number(decodeBucket(key, ex.bucket));
        const s = ex.hist.series(Object.values(labels).join('\0'), labels);
        if (b >= s.counts.length) {
          this.ctx.drops.inc({ source: 'objects', reason: 'bucket_out_of_range' }, delta);
          continue;
        }
        s.counts[b]! += delta;
        s.count += delta;
        s.sum += delta * ex.lower[b]!;
      }
    }
    if (!ex.gauge) ex.last.prune(seen);
  }

  stop(): void {
    for (const l of this.loaded) l.obj.close();
    this.loaded = [];
  }
}

function decodeBucket(key: Buffer, b: { offset: number; size: number }): bigint {
  const s = key.subarray(b.offset, b.offset + b.size);
  return BigInt(decode('uint', s));
}
