import { addon, type AttachSpec, type BtfType, type MapInfo, type ProgramInfo } from './addon.js';
import { KernscopeError } from '../errors.js';

/** Map types whose values are one slot per possible CPU. */
const PERCPU_TYPES = new Set([5 /* PERCPU_HASH */, 6 /* PERCPU_ARRAY */, 10 /* LRU_PERCPU_HASH */]);

export const MapUpdate = { ANY: 0, NOEXIST: 1, EXIST: 2 } as const;

/**
 * Sums field `field` (u64) of a per-CPU value laid out as `ncpus` slots of
 * `slot` bytes. Numbers stay exact below 2^53, far above any counter here.
 */
export function sumField(value: Buffer, slot: number, ncpus: number, field: number): number {
  let s = 0;
  for (let c = 0; c < ncpus; c++) s += value.readUInt32LE(c * slot + field * 8) + value.readUInt32LE(c * slot + field * 8 + 4) * 4294967296;
  return s;
}

/** A u64 as a Number, without a BigInt per field (exact below 2^53). */
export function u64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 4294967296;
}

/** A u32 key or value, as the kernel lays it out (little-endian here). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export interface MapEntry {
  key: Buffer;
  /** For per-CPU maps: one Buffer per possible CPU. */
  value: Buffer;
}

export class BpfMap {
  readonly percpu: boolean;
  /** Bytes one lookup returns: per-CPU values are 8-byte aligned per CPU. */
  readonly valueBytes: number;
  readonly slotSize: number;

  constructor(
    readonly info: MapInfo,
    private readonly ncpus: number,
  ) {
    this.percpu = PERCPU_TYPES.has(info.type);
    this.slotSize = this.percpu ? Math.ceil(info.valueSize / 8) * 8 : info.valueSize;
    this.valueBytes = this.percpu ? this.slotSize * ncpus : info.valueSize;
  }

  get name(): string {
    return this.info.name;
  }

  /** u64 field `field` of a value this map returned, summed over CPUs for a per-CPU map. */
  field(value: Buffer, field: number): number {
    return sumField(value, this.slotSize, this.percpu ? this.ncpus : 1, field);
  }

  lookup(key: Buffer): Buffer | null {
    return addon().mapLookup(this.info.fd, key, this.valueBytes);
  }

  update(key: Buffer, value: Buffer, flags: number = MapUpdate.ANY): void {
    addon().mapUpdate(this.info.fd, key, value, flags);
  }

  delete(key: Buffer): boolean {
    return addon().mapDelete(this.info.fd, key);
  }

  /** Every entry, in one batch syscall where the kernel allows. */
  entries(): MapEntry[] {
    const { keySize, maxEntries } = this.info;
    const d = addon().mapDump(this.info.fd, keySize, this.valueBytes, maxEntries);
    const out: MapEntry[] = new Array(d.count);
    for (let i = 0; i < d.count; i++) {
      out[i] = {
        key: d.keys.subarray(i * keySize, (i + 1) * keySize),
        value: d.values.subarray(i * this.valueBytes, (i + 1) * this.valueBytes),
      };
    }
    return out;
  }

  /**
   * Every entry with its per-CPU value summed in the addon (u64 words): one
   * value per entry. The same as entries() for other maps.
   */
  summedEntries(): MapEntry[] {
    if (!this.percpu) return this.entries();
    const { keySize, maxEntries } = this.info;
    const d = addon().mapDump(this.info.fd, keySize, this.valueBytes, maxEntries, this.slotSize);
    const out: MapEntry[] = new Array(d.count);
    for (let i = 0; i < d.count; i++) {
      out[i] = {
        key: d.keys.subarray(i * keySize, (i + 1) * keySize),
        value: d.values.subarray(i * this.slotSize, (i + 1) * this.slotSize),
      };
    }
    return out;
  }

  /** Sums a per-CPU value's u64 fields into one Buffer of the value's size. */
  sumPerCpu(value: Buffer): Buffer {
    if (!this.percpu) return value;
    const fields = this.info.valueSize / 8;
    const out = Buffer.alloc(this.info.valueSize);
    for (let f = 0; f < fields; f++) {
      let s = 0n;
      for (let c = 0; c < this.ncpus; c++) s += value.readBigUInt64LE(c * this.slotSize + f * 8);
      out.writeBigUInt64LE(BigInt.asUintN(64, s), f * 8);
    }
    return out;
  }
}

export interface LoadOptions {
  /** `const volatile` globals to set before load, by name: Buffer or number (sized by BTF). */
  rodata?: Record<string, Buffer | number | bigint>;
  /** Programs not to load (for instance the fallback variant of a hook). */
  skipPrograms?: string[];
  /** Only these programs load; a name the object lacks is an error naming those it has. */
  onlyPrograms?: string[];
  /** Map sizes from the config. */
  maxEntries?: Record<string, number>;
}

export class BpfProgram {
  constructor(
    private readonly obj: BpfObject,
    readonly info: ProgramInfo,
  ) {}

  get name(): string {
    return this.info.name;
  }

  attach(spec: AttachSpec): Link {
    return this.obj.attach(this.info.name, spec);
  }
}

export class Link {
  private live = true;
  constructor(
    private readonly id: number,
    readonly program: string,
    readonly spec: AttachSpec,
  ) {}

  detach(): void {
    if (!this.live) return;
    this.live = false;
    addon().detach(this.id);
  }

  /** Detaches in the thread pool: perf-event links wait for an RCU grace period. */
  async detachAsync(): Promise<void> {
    if (!this.live) return;
    this.live = false;
    await addon().detachAsync(this.id);
  }

  /** An iterator link: runs its program over every object once; the bytes it printed. */
  run(): number {
    if (!this.live) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.program}: link detached`);
    return addon().iterRun(this.id);
  }

  /** The object was closed, which detached this link in the addon. */
  forget(): void {
    this.live = false;
  }
}

export interface RingBuffer {
  close(): void;
  /** Delivers waiting records now (those the kernel submitted without a wakeup). */
  consume(): void;
  /** Lets the process exit while the ring buffer is open. */
  unref(): void;
}

/** A loaded BPF object: programs, maps, links and ring buffers, closed together. */
export class BpfObject {
  private handle: number;
  private closed = false;
  readonly programs = new Map<string, BpfProgram>();
  readonly maps = new Map<string, BpfMap>();
  private readonly links: Link[] = [];

  private constructor(
    readonly path: string,
    handle: number,
  ) {
    this.handle = handle;
  }

  /**
   * Opens, configures and loads an object. The verifier log is on the error.
   * The verifier gives up with EAGAIN when a signal is pending (a profiler's
   * SIGPROF, a child's SIGCHLD): the load is then tried again, a few times.
   */
  static load(path: string, opts: LoadOptions = {}): BpfObject {
    for (let attempt = 1; ; attempt++) {
      try {
        return BpfObject.loadOnce(path, opts);
      } catch (e) {
        if (attempt >= 5 || (e as { errno?: number }).errno !== 11) throw e;
      }
    }
  }

  /**
   * Opens an object without loading it: its BTF (the C headers' layouts)
   * can be read, and nothing reaches the kernel, so no privilege is needed.
   */
  static openUnloaded(path: string): BpfObject {
    return new BpfObject(path, addon().openObject(path));
  }

  private static loadOnce(path: string, opts: LoadOptions): BpfObject {
    const a = addon();
    const h = a.openObject(path);
    try {
      const info = a.objectInfo(h);
      for (const name of opts.skipPrograms ?? []) a.setAutoload(h, name, false);
      if (opts.onlyPrograms) {
        const have = info.programs.map((p) => p.name);
        const missing = opts.onlyPrograms.filter((n) => !have.includes(n));
        if (missing.length) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${path}: no program ${missing.join(', ')} (it has: ${have.join(', ')})`);
        for (const n of have) if (!opts.onlyPrograms.includes(n)) a.setAutoload(h, n, false);
      }
      for (const [name, n] of Object.entries(opts.maxEntries ?? {})) a.setMaxEntries(h, name, n);
      for (const [name, value] of Object.entries(opts.rodata ?? {})) {
        const v = info.rodata.find((r) => r.name === name);
        if (!v) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${path}: no read-only variable "${name}"`);
        a.setRodata(h, v.offset, encodeScalar(value, v.size, name));
      }
      a.loadObject(h);
    } catch (e) {
      a.closeObject(h);
      throw e;
    }
    const obj = new BpfObject(path, h);
    const loaded = a.objectInfo(h);
    const ncpus = a.numPossibleCpus();
    for (const p of loaded.programs) if (p.autoload) obj.programs.set(p.name, new BpfProgram(obj, p));
    for (const m of loaded.maps) obj.maps.set(m.name, new BpfMap(m, ncpus));
    return obj;
  }

  /** Bytes of a read-only (.rodata) variable: an array's length comes from the C side. */
  rodataSize(name: string): number {
    const v = addon().objectInfo(this.handle).rodata.find((r) => r.name === name);
    if (!v) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: no read-only variable "${name}"`);
    return v.size;
  }

  program(name: string): BpfProgram {
    const p = this.programs.get(name);
    if (!p) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: no loaded program "${name}"`);
    return p;
  }

  /** A struct or enum of the object's BTF: the C headers' layout, as compiled. */
  btfType(name: string): BtfType | null {
    return addon().btfType(this.handle, name);
  }

  /** A struct's size and members (offset and size each), checked: every name asked for must be there. */
  members(name: string, need: readonly string[]): { size: number; members: Record<string, { offset: number; size: number }> } {
    const t = this.btfType(name);
    if (!t || t.kind !== 'struct') throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: no struct ${name} in its BTF`);
    for (const m of need) {
      if (!t.members[m]) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: struct ${name} has no member ${m} (it has ${Object.keys(t.members).join(', ')})`);
    }
    return t;
  }

  /** A struct's member offsets, checked: every name asked for must be there. */
  struct<K extends string>(name: string, members: readonly K[]): { size: number } & Record<K, number> {
    const t = this.members(name, members);
    const out: Record<string, number> = { size: t.size };
    for (const m of members) out[m] = t.members[m]!.offset;
    return out as { size: number } & Record<K, number>;
  }

  /**
   * Labels of an enum's values, by value: every enumerator must have a label
   * in `labels` and every label an enumerator, so the kernel never counts
   * under a name user space would not export (drop reasons, mainly).
   */
  enumLabels(name: string, labels: Record<string, string>): string[] {
    const t = this.btfType(name);
    if (t?.kind !== 'enum') throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: no enum ${name} in its BTF`);
    const out: string[] = [];
    for (const [k, v] of Object.entries(t.values)) {
      const label = labels[k];
      if (!label) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: ${name} ${k} has no label in user space`);
      out[v] = label;
    }
    for (const k of Object.keys(labels)) if (t.values[k] === undefined) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: enum ${name} lacks ${k}`);
    return out;
  }

  /** An enum's values, checked: every name asked for must be there. */
  enumValues<K extends string>(name: string, names: readonly K[]): Record<K, number> {
    const t = this.btfType(name);
    if (!t || t.kind !== 'enum') throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: no enum ${name} in its BTF`);
    const out: Record<string, number> = {};
    for (const n of names) {
      const v = t.values[n];
      if (v === undefined) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: enum ${name} has no ${n} (it has ${Object.keys(t.values).join(', ')})`);
      out[n] = v;
    }
    return out as Record<K, number>;
  }

  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (!m) throw new KernscopeError('ERR_KERNSCOPE_BPF', `${this.path}: no map "${name}"`);
    return m;
  }

  attach(program: string, spec: AttachSpec): Link {
    const link = new Link(addon().attach(this.handle, program, spec), program, spec);
    this.links.push(link);
    return link;
  }

  /** Calls `onBatch` from the event loop with every record of one wakeup. */
  ringBuffer(mapName: string, onRecord: (rec: Buffer) => void): RingBuffer {
    const m = this.map(mapName);
    const a = addon();
    const id = a.ringbufOpen(this.handle, m.info.fd, (batch, count) => {
      let off = 0;
      for (let i = 0; i < count; i++) {
        const len = batch.readUInt32LE(off);
        onRecord(batch.subarray(off + 8, off + 8 + len));
        off += 8 + Math.ceil(len / 8) * 8;
      }
    });
    let open = true;
    return {
      close: () => {
        if (open && !this.closed) a.ringbufClose(id);
        open = false;
      },
      unref: () => a.ringbufUnref(id),
      consume: () => {
        if (open && !this.closed) a.ringbufConsume(id);
      },
    };
  }

  /** Like close(), with the links detached in parallel off the main thread. */
  async closeAsync(): Promise<void> {
    if (this.closed) return;
    await Promise.all(this.links.map((l) => l.detachAsync()));
    this.close();
  }

  /** Detaches every link and frees the object; safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.links) l.forget();
    addon().closeObject(this.handle);
  }
}

function encodeScalar(v: Buffer | number | bigint, size: number, name: string): Buffer {
  if (Buffer.isBuffer(v)) {
    if (v.length !== size) {
      throw new KernscopeError('ERR_KERNSCOPE_BPF', `rodata "${name}": expected ${size} bytes, got ${v.length}`);
    }
    return v;
  }
  const b = Buffer.alloc(size);
  const n = BigInt(v);
  if (size === 8) b.writeBigUInt64LE(BigInt.asUintN(64, n));
  else if (size === 4) b.writeUInt32LE(Number(BigInt.asUintN(32, n)));
  else if (size === 2) b.writeUInt16LE(Number(BigInt.asUintN(16, n)));
  else if (size === 1) b.writeUInt8(Number(BigInt.asUintN(8, n)));
  else throw new KernscopeError('ERR_KERNSCOPE_BPF', `rodata "${name}": cannot encode a number in ${size} bytes`);
  return b;
}
