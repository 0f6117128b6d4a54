/** Decoders for bpf/proc.h; offsets pinned by a test. */

export const KIND_EXEC = 1;
export const KIND_FORK = 2;
export const KIND_EXIT = 3;
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
  };
  if (e.kind === KIND_EXEC) {
    if (b.length < EXEC_SIZE) return undefined;
    const argsLen = Math.min(b.readUInt16LE(56), 1024);
    e.argsTruncated = b.readUInt8(58) !== 0;
    e.filename = cstr(b, 64, 320);
    e.fileName = cstr(b, 320, 384);
    const raw = b.toString('utf8', 384, 384 + argsLen);
    const args = raw.split('\0');
    if (args.at(-1) === '') args.pop();
    e.args = args;
  }
  return e;
}
