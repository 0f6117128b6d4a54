/** Decoders for bpf/proc.h; offsets pinned by a test. */

export const KIND_EXEC = 1;
export const KIND_FORK = 2;
export const KIND_EXIT = 3;
export const KIND_OPEN = 4;
export const KIND_CONNECT = 5;
export const KIND_PTRACE = 6;
export const KIND_SETUID = 7;
export const IO_SIZE = 336;
export const HEAD_SIZE = 56;
export const EXEC_SIZE = 1408;
export const DROP_REASONS = ['ringbuf_full'];

export interface ProcEvent {
  kind: number;
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

export function decodeProcEvent(b: Buffer): ProcEvent | undefined {
  if (b.length < HEAD_SIZE) return undefined;
  const e: ProcEvent = {
    tsNs: Number(b.readBigUInt64LE(0)),
    cgroupId: b.readBigUInt64LE(8),
    kind: b.readUInt32LE(16),
    pid: b.readUInt32LE(20),
    ppid: b.readUInt32LE(24),
    uid: b.readUInt32LE(28),
    exitCode: b.readUInt32LE(32),
    comm: cstr(b, 40, 56),
    killed: false,
  };
  if (e.kind === KIND_PTRACE || e.kind === KIND_SETUID) {
    if (b.length < 64) return undefined;
    if (e.kind === KIND_PTRACE) {
      e.request = b.readUInt32LE(56);
      e.target = b.readUInt32LE(60);
    }
    return e;
  }
  if (e.kind === KIND_OPEN || e.kind === KIND_CONNECT) {
    if (b.length < IO_SIZE) return undefined;
    e.killed = b.readUInt8(63) !== 0;
    if (e.kind === KIND_OPEN) {
      e.flags = b.readUInt32LE(56);
      e.path = cstr(b, 80, 336);
    } else {
      e.port = b.readUInt16LE(60);
      const family = b.readUInt8(62);
      const a = b.subarray(64, 80);
      e.address = family === 2 ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : Array.from({ length: 8 }, (_, i) => a.readUInt16BE(i * 2).toString(16)).join(':');
    }
    return e;
  }
  if (e.kind === KIND_EXEC) {
    if (b.length < EXEC_SIZE) return undefined;
    const argsLen = Math.min(b.readUInt16LE(56), 1024);
    e.argsTruncated = b.readUInt8(58) !== 0;
    e.killed = b.readUInt32LE(36) === 1;
    e.filename = cstr(b, 64, 320);
    e.fileName = cstr(b, 320, 384);
    const raw = b.toString('utf8', 384, 384 + argsLen);
    const args = raw.split('\0');
    if (args.at(-1) === '') args.pop();
    e.args = args;
  }
  return e;
}
