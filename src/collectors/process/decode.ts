/**
 * The process collector's kernel layouts (bpf/proc.h), read from the loaded
 * object's BTF: offsets, sizes and enum values come from the compiled C, and
 * a member or value this file needs and the object lacks fails the load.
 */
import type { BpfObject } from '../../bpf/object.js';

export type ProcKind = 'exec' | 'fork' | 'exit' | 'open' | 'connect' | 'ptrace' | 'setuid';

/** enum ks_proc_kind's enumerators, by the name user space gives each. */
const KIND_NAMES: Record<string, ProcKind> = {
  PROC_EXEC: 'exec', PROC_FORK: 'fork', PROC_EXIT: 'exit', PROC_OPEN: 'open',
  PROC_CONNECT: 'connect', PROC_PTRACE: 'ptrace', PROC_SETUID: 'setuid',
};
/** Metric reason labels of enum ks_proc_drop_reason, by enumerator. */
const DROP_NAMES: Record<string, string> = {
  PROC_DROP_EXEC_LOST: 'exec_ringbuf_full', PROC_DROP_FORK_LOST: 'fork_ringbuf_full', PROC_DROP_EXIT_LOST: 'exit_ringbuf_full',
  PROC_DROP_OPEN_LOST: 'open_ringbuf_full', PROC_DROP_CONNECT_LOST: 'connect_ringbuf_full', PROC_DROP_PRIV_LOST: 'privilege_ringbuf_full',
};

export interface ProcEvent {
  kind: ProcKind;
  tsNs: number;
  cgroupId: bigint;
  pid: number;
  ppid: number;
  uid: number;
  /** wait(2) status of an exit: code << 8 | signal. */
  exitCode: number;
  comm: string;
  /** The kernel killed the process (a rule with action kill). */
  killed: boolean;
  /** open: the path as passed, and the O_* flags */
  path?: string;
  flags?: number;
  /** connect: destination */
  port?: number;
  address?: string;
  /** ptrace: request and target pid */
  request?: number;
  target?: number;
  /** exec only */
  filename?: string;
  fileName?: string;
  args?: string[];
  argsTruncated?: boolean;
}

function cstr(b: Buffer, start: number, end: number): string {
  const z = b.indexOf(0, start);
  return b.toString('utf8', start, z < 0 || z > end ? end : z);
}

export class ProcLayout {
  private readonly head;
  private readonly exec;
  private readonly io;
  private readonly priv;
  readonly exit;
  private readonly sizes: { comm: number; filename: number; fileName: number; args: number; path: number };
  private readonly kinds: ProcKind[] = [];
  /** Drop reason labels, by the kernel's index. */
  readonly dropReasons: string[];

  constructor(obj: BpfObject) {
    this.head = obj.struct('ks_proc_head', ['ts_ns', 'cgroup_id', 'kind', 'pid', 'ppid', 'uid', 'exit_code', 'pad', 'comm'] as const);
    this.exec = obj.struct('ks_proc_exec', ['args_len', 'args_truncated', 'filename', 'file_name', 'args'] as const);
    this.io = obj.struct('ks_proc_io', ['flags', 'port', 'family', 'killed', 'addr', 'path'] as const);
    this.priv = obj.struct('ks_proc_priv', ['a', 'b'] as const);
    this.exit = obj.struct('ks_proc_exit', ['utime_ns', 'stime_ns', 'read_bytes', 'write_bytes'] as const);
    const size = (s: string, m: string): number => {
      const t = obj.btfType(s);
      if (t?.kind !== 'struct' || !t.members[m]) throw new Error(`${obj.path}: struct ${s} has no member ${m}`);
      return t.members[m]!.size;
    };
    this.sizes = {
      comm: size('ks_proc_head', 'comm'),
      filename: size('ks_proc_exec', 'filename'),
      fileName: size('ks_proc_exec', 'file_name'),
      args: size('ks_proc_exec', 'args'),
      path: size('ks_proc_io', 'path'),
    };
    for (const [k, v] of Object.entries(obj.enumValues('ks_proc_kind', Object.keys(KIND_NAMES)))) this.kinds[v] = KIND_NAMES[k]!;
    this.dropReasons = obj.enumLabels('ks_proc_drop_reason', DROP_NAMES);
  }

  decode(b: Buffer): ProcEvent | undefined {
    const H = this.head;
    if (b.length < H.size) return undefined;
    const kind = this.kinds[b.readUInt32LE(H.kind)];
    if (!kind) return undefined;
    const e: ProcEvent = {
      tsNs: Number(b.readBigUInt64LE(H.ts_ns)),
      cgroupId: b.readBigUInt64LE(H.cgroup_id),
      kind,
      pid: b.readUInt32LE(H.pid),
      ppid: b.readUInt32LE(H.ppid),
      uid: b.readUInt32LE(H.uid),
      exitCode: b.readUInt32LE(H.exit_code),
      comm: cstr(b, H.comm, H.comm + this.sizes.comm),
      killed: false,
    };
    if (kind === 'ptrace' || kind === 'setuid') {
      if (b.length < this.priv.size) return undefined;
      if (kind === 'ptrace') {
        e.request = b.readUInt32LE(this.priv.a);
        e.target = b.readUInt32LE(this.priv.b);
      }
      return e;
    }
    if (kind === 'open' || kind === 'connect') {
      const O = this.io;
      if (b.length < O.size) return undefined;
      e.killed = b.readUInt8(O.killed) !== 0;
      if (kind === 'open') {
        e.flags = b.readUInt32LE(O.flags);
        e.path = cstr(b, O.path, O.path + this.sizes.path);
      } else {
        e.port = b.readUInt16LE(O.port);
        const family = b.readUInt8(O.family);
        const a = b.subarray(O.addr, O.addr + 16);
        e.address = family === 2 ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : Array.from({ length: 8 }, (_, i) => a.readUInt16BE(i * 2).toString(16)).join(':');
      }
      return e;
    }
    if (kind === 'exec') {
      const X = this.exec;
      if (b.length < X.size) return undefined;
      const argsLen = Math.min(b.readUInt16LE(X.args_len), this.sizes.args);
      e.argsTruncated = b.readUInt8(X.args_truncated) !== 0;
      e.killed = b.readUInt32LE(H.pad) === 1; // the head's pad marks an exec the kernel killed
      e.filename = cstr(b, X.filename, X.filename + this.sizes.filename);
      e.fileName = cstr(b, X.file_name, X.file_name + this.sizes.fileName);
      const args = b.toString('utf8', X.args, X.args + argsLen).split('\0');
      if (args.at(-1) === '') args.pop();
      e.args = args;
    }
    return e;
  }
}
