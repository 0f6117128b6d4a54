/**
 * The process collector's kernel layouts (bpf/proc.h), read from the loaded
 * object's BTF: offsets, sizes and enum values come from the compiled C, and
 * a member or value this file needs and the object lacks fails the load.
 */
import type { BpfObject } from '../../bpf/object.js';
import { addr } from '../inet.js';

export type ProcKind = 'exec' | 'fork' | 'exit' | 'open' | 'connect' | 'ptrace' | 'setuid' | 'stdio_socket' | 'module' | 'unlink' | 'rename' | 'truncate' | 'link';

/** enum ks_proc_kind's enumerators, by the name user space gives each. */
const KIND_NAMES: Record<string, ProcKind> = {
  PROC_EXEC: 'exec', PROC_FORK: 'fork', PROC_EXIT: 'exit', PROC_OPEN: 'open',
  PROC_CONNECT: 'connect', PROC_PTRACE: 'ptrace', PROC_SETUID: 'setuid', PROC_STDIO_SOCKET: 'stdio_socket', PROC_MODULE: 'module',
  PROC_UNLINK: 'unlink', PROC_RENAME: 'rename', PROC_TRUNCATE: 'truncate', PROC_LINK: 'link',
};

/** Kinds whose record is a watched path (struct ks_proc_io's path). */
export const PATH_KINDS: ReadonlySet<ProcKind> = new Set(['open', 'unlink', 'rename', 'truncate', 'link']);

/** enum ks_proc_path_flag: how a path the kernel built from dentries came out. */
export interface PathFlags {
  truncated: boolean;
  deleted: boolean;
  /** A pseudo file (memfd) or a detached mount: no path under the task's root. */
  detached: boolean;
  /** The file run is the interpreter of a script. */
  script: boolean;
  /** Deeper than the kernel walks: the path's top is missing. */
  deep: boolean;
}
/** Metric reason labels of enum ks_proc_drop_reason, by enumerator. */
const DROP_NAMES: Record<string, string> = {
  PROC_DROP_EXEC_LOST: 'exec_ringbuf_full', PROC_DROP_FORK_LOST: 'fork_ringbuf_full', PROC_DROP_EXIT_LOST: 'exit_ringbuf_full',
  PROC_DROP_OPEN_LOST: 'open_ringbuf_full', PROC_DROP_CONNECT_LOST: 'connect_ringbuf_full', PROC_DROP_PRIV_LOST: 'privilege_ringbuf_full',
  PROC_DROP_STDIO_LOST: 'stdio_socket_ringbuf_full', PROC_DROP_MODULE_LOST: 'module_ringbuf_full',
  PROC_DROP_FILE_LOST: 'file_ringbuf_full',
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
  /** connect: destination; stdio_socket: the peer */
  port?: number;
  address?: string;
  /** stdio_socket: the standard stream (0-2) the socket was put on, and the socket's inode */
  fd?: number;
  socketIno?: number;
  /** module: finit_module (from a file descriptor) rather than init_module */
  fromFd?: boolean;
  /** ptrace: request and target pid */
  request?: number;
  target?: number;
  /** exec only */
  filename?: string;
  fileName?: string;
  args?: string[];
  argsTruncated?: boolean;
  /** exec: the file run and the working directory, built by the kernel from dentries */
  exePath?: string;
  exeFlags?: PathFlags;
  cwd?: string;
  cwdFlags?: PathFlags;
  /** exec: which of fds 0, 1, 2 are TCP/UDP sockets (bit i) */
  stdioSockets?: number;
  /** exec: the file's last change (wall clock), and its pid namespace's start (boot clock; 0 on the node's own) */
  exeCtimeNs?: number;
  pidnsStartNs?: number;
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
  /** struct ks_prefix_bucket: the watched-prefix index by a path's first four bytes. */
  readonly bucket;
  private readonly sizes: { comm: number; filename: number; fileName: number; args: number; path: number; exePath: number; cwd: number };
  private readonly pathFlags: Record<'PROC_PATH_TRUNCATED' | 'PROC_PATH_DELETED' | 'PROC_PATH_DETACHED' | 'PROC_PATH_SCRIPT' | 'PROC_PATH_DEEP', number>;
  private readonly kinds: ProcKind[] = [];
  /** Drop reason labels, by the kernel's index. */
  readonly dropReasons: string[];

  constructor(obj: BpfObject) {
    this.head = obj.struct('ks_proc_head', ['ts_ns', 'cgroup_id', 'kind', 'pid', 'ppid', 'uid', 'exit_code', 'pad', 'comm'] as const);
    this.exec = obj.struct('ks_proc_exec', ['args_len', 'args_truncated', 'exe_flags', 'cwd_flags', 'stdio_sockets', 'exe_ctime_ns', 'pidns_start_ns', 'filename', 'file_name', 'exe_path', 'cwd', 'args'] as const);
    this.pathFlags = obj.enumValues('ks_proc_path_flag', ['PROC_PATH_TRUNCATED', 'PROC_PATH_DELETED', 'PROC_PATH_DETACHED', 'PROC_PATH_SCRIPT', 'PROC_PATH_DEEP'] as const);
    this.io = obj.struct('ks_proc_io', ['flags', 'port', 'family', 'killed', 'addr', 'ino', 'path'] as const);
    this.priv = obj.struct('ks_proc_priv', ['a', 'b'] as const);
    this.exit = obj.struct('ks_proc_exit', ['utime_ns', 'stime_ns', 'read_bytes', 'write_bytes'] as const);
    this.bucket = obj.struct('ks_prefix_bucket', ['any', 'reads'] as const);
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
      exePath: size('ks_proc_exec', 'exe_path'),
      cwd: size('ks_proc_exec', 'cwd'),
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
    if (kind === 'ptrace' || kind === 'setuid' || kind === 'module') {
      if (b.length < this.priv.size) return undefined;
      if (kind === 'ptrace') {
        e.request = b.readUInt32LE(this.priv.a);
        e.target = b.readUInt32LE(this.priv.b);
      } else if (kind === 'module') {
        e.fromFd = b.readUInt32LE(this.priv.a) === 1;
        if (e.fromFd) e.target = b.readUInt32LE(this.priv.b);
      }
      return e;
    }
    if (PATH_KINDS.has(kind) || kind === 'connect' || kind === 'stdio_socket') {
      const O = this.io;
      if (b.length < O.size) return undefined;
      e.killed = b.readUInt8(O.killed) !== 0;
      if (PATH_KINDS.has(kind)) {
        e.flags = b.readUInt32LE(O.flags);
        e.path = cstr(b, O.path, O.path + this.sizes.path);
      } else {
        e.port = b.readUInt16LE(O.port);
        e.address = addr(b.subarray(O.addr, O.addr + 16), b.readUInt8(O.family));
        if (kind === 'stdio_socket') {
          e.fd = b.readUInt32LE(O.flags);
          e.socketIno = Number(b.readBigUInt64LE(O.ino));
        }
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
      e.exePath = cstr(b, X.exe_path, X.exe_path + this.sizes.exePath);
      e.exeFlags = this.flags(b.readUInt8(X.exe_flags));
      e.cwd = cstr(b, X.cwd, X.cwd + this.sizes.cwd);
      e.cwdFlags = this.flags(b.readUInt8(X.cwd_flags));
      e.stdioSockets = b.readUInt8(X.stdio_sockets);
      e.exeCtimeNs = Number(b.readBigUInt64LE(X.exe_ctime_ns));
      e.pidnsStartNs = Number(b.readBigUInt64LE(X.pidns_start_ns));
      const args = b.toString('utf8', X.args, X.args + argsLen).split('\0');
      if (args.at(-1) === '') args.pop();
      e.args = args;
    }
    return e;
  }

  private flags(v: number): PathFlags {
    const F = this.pathFlags;
    return { truncated: (v & F.PROC_PATH_TRUNCATED) !== 0, deleted: (v & F.PROC_PATH_DELETED) !== 0, detached: (v & F.PROC_PATH_DETACHED) !== 0, script: (v & F.PROC_PATH_SCRIPT) !== 0, deep: (v & F.PROC_PATH_DEEP) !== 0 };
  }
}
