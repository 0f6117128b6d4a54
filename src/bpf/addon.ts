import { createRequire } from 'node:module';
import { ADDON_PATH } from '../paths.js';

/** The native addon's surface, exactly as addon/kernscope.c exports it.
 * Only src/bpf/ uses it; collectors go through BpfObject. */
export interface ProgramInfo {
  name: string;
  section: string;
  type: number;
  autoload: boolean;
  fd: number;
}

export interface MapInfo {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  fd: number;
}

export interface RodataVar {
  name: string;
  offset: number;
  size: number;
}

export interface KernelProgInfo {
  id: number;
  name: string;
  type: number;
  runCount: number;
  runTimeNs: number;
  recursionMisses: number;
  verifiedInsns: number;
}

export type AttachSpec =
  | { kind: 'auto' }
  | { kind: 'tracepoint'; category: string; name: string }
  | { kind: 'raw_tp'; name: string }
  | { kind: 'tp_btf' }
  | { kind: 'uprobe' | 'uretprobe'; binary: string; symbol?: string; offset?: number; pid?: number }
  | { kind: 'usdt'; binary: string; provider: string; name: string; pid?: number }
  | { kind: 'cgroup'; path: string }
  | { kind: 'perf_event'; cpu: number; frequency?: number }
  | { kind: 'iter' };

export type BtfType =
  | { kind: 'struct'; size: number; members: Record<string, { offset: number; size: number }> }
  | { kind: 'enum'; size: number; values: Record<string, number> };

export interface Addon {
  btfType(h: number, name: string): BtfType | null;
  libbpfVersion: string;
  openObject(path: string): number;
  objectInfo(h: number): { programs: ProgramInfo[]; maps: MapInfo[]; rodata: RodataVar[] };
  setAutoload(h: number, program: string, on: boolean): void;
  setRodata(h: number, offset: number, bytes: Buffer): void;
  setMaxEntries(h: number, map: string, n: number): void;
  loadObject(h: number): void;
  closeObject(h: number): void;
  attach(h: number, program: string, spec: AttachSpec): number;
  detach(link: number): void;
  /** Runs an iterator link once; the bytes its program printed. */
  iterRun(link: number): number;
  detachAsync(link: number): Promise<void>;
  mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapDump(
    fd: number,
    keySize: number,
    valueSize: number,
    maxEntries: number,
    /** Per-CPU values: sum each entry's slots of this many bytes (u64 words) into one. */
    sumSlot?: number,
  ): { keys: Buffer; values: Buffer; count: number; batched: boolean };
  ringbufOpen(h: number, mapFd: number, cb: (batch: Buffer, count: number) => void): number;
  ringbufClose(rb: number): void;
  ringbufUnref(rb: number): void;
  ringbufConsume(rb: number): void;
  progInfo(fd: number): KernelProgInfo;
  enableStats(): number;
  closeFd(fd: number): void;
  probeProgType(type: number): boolean;
  probeMapType(type: number): boolean;
  vmlinuxHasType(name: string): boolean;
  /** Frees the kernel's BTF that vmlinuxHasType parsed (asked again, it is parsed again). */
  vmlinuxRelease(): void;
  numPossibleCpus(): number;
  /** malloc_trim(0): free pages in malloc's heap back to the kernel. */
  trimHeap(): boolean;
}

let cached: Addon | undefined;

export function addon(): Addon {
  if (!cached) {
    const require = createRequire(import.meta.url);
    cached = require(ADDON_PATH) as Addon;
  }
  return cached;
}
