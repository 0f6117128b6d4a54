/**
 * The flight recorder's journal: a bounded set of append-only segment files
 * on local disk that outlive a crash of the node.
 *
 * A segment is a sequence of records, each framed as
 *
 *     magic "KSRJ" | u32 LE payload length | u32 LE CRC-32 of the payload | payload (JSON)
 *
 * The magic lets a reader find the next record after a torn or corrupt one
 * (a crash mid-write, a flipped bit, a partial write on a full disk); the
 * checksum says a record is whole. Every segment starts with a `segment`
 * record naming its boot, so a record's boot is its segment's. A new agent
 * always starts a new segment: the previous one may end in a torn record,
 * and appending after it would be harmless but confusing to read.
 *
 * Durability: records are written at `flush` (the recorder calls it once a
 * second, and at once after a severe event) and fdatasync'ed; what the
 * kernel had not written when the node died is lost, at most a second's.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

export const MAGIC = Buffer.from('KSRJ', 'latin1');
export const HEADER = 12;
/** A record larger than this is not ours: a reader treats its length as corrupt. */
export const MAX_RECORD = 256 * 1024;
const SEGMENT_RE = /^journal-(\d{10})\.ksj$/;

export function segmentName(seq: number): string {
  return `journal-${String(seq).padStart(10, '0')}.ksj`;
}

export function segmentSeq(name: string): number | undefined {
  const m = SEGMENT_RE.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The journal's segment files, oldest first. */
export function listSegments(dir: string): Array<{ seq: number; file: string; bytes: number }> {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const out: Array<{ seq: number; file: string; bytes: number }> = [];
  for (const n of names) {
    const seq = segmentSeq(n);
    if (seq === undefined) continue;
    const file = path.join(dir, n);
    try {
      out.push({ seq, file, bytes: fs.statSync(file).size });
    } catch {
      /* removed meanwhile */
    }
  }
  return out.sort((a, b) => a.seq - b.seq);
}

export function frame(payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(HEADER + payload.length);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(payload.length, 4);
  b.writeUInt32LE(zlib.crc32(payload), 8);
  payload.copy(b, HEADER);
  return b;
}

export function bootId(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

export interface JournalOptions {
  dir: string;
  /** The cap on all segments together. */
  maxBytes: number;
  /** A segment is closed and the next one opened past this size. */
  segmentBytes: number;
  boot: string;
  /** Records waiting for a write are bounded too: past this, new ones are dropped. */
  maxPendingBytes?: number;
  /** A failed write, by errno code ("ENOSPC"), and records given up (`n`, by reason). */
  onError?: (code: string) => void;
  onDrop?: (reason: string, n: number) => void;
  /** Bytes written and fsyncs done. */
  onWrite?: (bytes: number) => void;
  onSync?: () => void;
}

/** Thrown when another live agent on this boot holds the journal's folder. */
export class JournalBusy extends Error {}

export class Journal {
  private fd = -1;
  private seq = 0;
  private size = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly maxPending: number;
  private lockFile: string;
  private opened = false;
  /** Sizes of the closed segments still on disk, oldest first. */
  private closed: Array<{ seq: number; file: string; bytes: number }> = [];

  constructor(private readonly o: JournalOptions) {
    this.maxPending = o.maxPendingBytes ?? 4 << 20;
    this.lockFile = path.join(o.dir, 'lock');
  }

  get segments(): number {
    return this.closed.length + (this.fd >= 0 ? 1 : 0);
  }

  get bytes(): number {
    return this.closed.reduce((a, s) => a + s.bytes, 0) + this.size;
  }

  get currentFile(): string {
    return path.join(this.o.dir, segmentName(this.seq));
  }

  open(): void {
    fs.mkdirSync(this.o.dir, { recursive: true, mode: 0o750 });
    this.lock();
    this.closed = listSegments(this.o.dir);
    this.seq = (this.closed.at(-1)?.seq ?? 0) + 1;
    this.startSegment();
    this.opened = true;
  }

  /**
   * One agent per journal. A lock left by an agent that died, or by one of
   * an earlier boot (its pid may name another process now), is taken over.
   */
  private lock(): void {
    try {
      const [pid, boot] = fs.readFileSync(this.lockFile, 'utf8').trim().split(/\s+/);
      const n = Number(pid);
      if (boot === this.o.boot && n !== process.pid && n > 0 && fs.existsSync(`/proc/${n}`)) {
        throw new JournalBusy(`${this.o.dir} is in use by the agent with pid ${n}`);
      }
    } catch (e) {
      if (e instanceof JournalBusy) throw e;
    }
    fs.writeFileSync(this.lockFile, `${process.pid} ${this.o.boot}\n`);
  }

  private startSegment(): void {
    const file = path.join(this.o.dir, segmentName(this.seq));
    this.fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_APPEND, 0o640);
    this.size = 0;
    // The header goes first, ahead of anything already waiting.
    const head = frame(Buffer.from(JSON.stringify({ t: Date.now(), k: 'segment', boot: this.o.boot, seq: this.seq, pid: process.pid })));
    this.pending.unshift(head);
    this.pendingBytes += head.length;
    this.enforceCap();
    // The directory entry must survive a crash too.
    try {
      const d = fs.openSync(this.o.dir, 'r');
      fs.fsyncSync(d);
      fs.closeSync(d);
    } catch {
      /* not every filesystem syncs directories */
    }
  }

  /**
   * Oldest segments go until the closed ones and a full current one fit the
   * cap, and the disk: a disk smaller than the cap holds what fits.
   */
  private enforceCap(): void {
    let total = this.closed.reduce((a, s) => a + s.bytes, 0);
    let free = Infinity;
    try {
      const st = fs.statfsSync(this.o.dir);
      free = st.bavail * st.bsize;
    } catch {
      /* no statfs: the cap alone */
    }
    while (this.closed.length && (total + this.o.segmentBytes > this.o.maxBytes || this.o.segmentBytes > free)) {
      const s = this.closed.shift()!;
      total -= s.bytes;
      free += s.bytes;
      try {
        fs.unlinkSync(s.file);
      } catch {
        /* gone already */
      }
    }
  }

  /** Queues one record; written at the next flush. */
  append(rec: object): boolean {
    const b = frame(Buffer.from(JSON.stringify(rec)));
    if (b.length > MAX_RECORD) {
      this.o.onDrop?.('too_large', 1);
      return false;
    }
    if (this.pendingBytes + b.length > this.maxPending) {
      this.o.onDrop?.('queue_full', 1);
      return false;
    }
    this.pending.push(b);
    this.pendingBytes += b.length;
    return true;
  }

  /**
   * Writes what is queued, then syncs when asked. Never throws: a failed
   * write is counted and its records wait for the next flush (within the
   * queue's bound). On a full disk the oldest closed segment makes room:
   * the newest records are the ones a flight recorder is for.
   */
  flush(sync: boolean): void {
    if (this.fd < 0) {
      if (!this.opened) return;
      try {
        this.startSegment(); // a segment that could not be created at the last rotation
      } catch (e) {
        this.o.onError?.((e as NodeJS.ErrnoException).code ?? 'EIO');
        return;
      }
    }
    // Records go in runs that fit the open segment, which rotates when
    // full: a burst never makes one segment bigger than the cap allows.
    while (this.pending.length && this.fd >= 0) {
      let n = 0;
      let bytes = 0;
      const room = Math.max(0, this.o.segmentBytes - this.size);
      while (n < this.pending.length && (n === 0 || bytes + this.pending[n]!.length <= room)) bytes += this.pending[n++]!.length;
      const run = this.pending.slice(0, n);
      const buf = n === 1 ? run[0]! : Buffer.concat(run, bytes);
      const written = this.write(buf);
      if (written !== buf.length) {
        // A partial record is on disk now; the whole run is written again
        // at the next flush and a reader skips the torn copy by its checksum.
        if (written > 0) this.pending.splice(0, n, buf);
        // The disk is full: the newest records are worth the room, not
        // the backlog. What is more than a segment's worth goes, oldest first.
        this.shed(this.o.segmentBytes);
        break;
      }
      this.pending.splice(0, n);
      this.pendingBytes -= bytes;
      if (this.size >= this.o.segmentBytes) this.rotate();
    }
    if (sync && this.fd >= 0) {
      try {
        fs.fdatasyncSync(this.fd);
        this.o.onSync?.();
      } catch (e) {
        this.o.onError?.((e as NodeJS.ErrnoException).code ?? 'EIO');
      }
    }
  }

  private write(buf: Buffer): number {
    for (let attempt = 0; attempt < 2; attempt++) {
      let off = 0;
      try {
        while (off < buf.length) off += fs.writeSync(this.fd, buf, off);
        this.size += off;
        this.o.onWrite?.(off);
        return off;
      } catch (e) {
        this.size += off;
        if (off) this.o.onWrite?.(off);
        const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
        this.o.onError?.(code);
        if (code === 'ENOSPC' && this.closed.length) {
          const s = this.closed.shift()!;
          try {
            fs.unlinkSync(s.file);
          } catch {
            /* gone already */
          }
          if (off === 0) continue;
        }
        return off;
      }
    }
    return 0;
  }

  private shed(keep: number): void {
    let dropped = 0;
    while (this.pending.length > 1 && this.pendingBytes > keep) {
      const b = this.pending.shift()!;
      this.pendingBytes -= b.length;
      dropped++;
    }
    if (dropped) this.o.onDrop?.('write_failed', dropped);
  }

  private rotate(): void {
    try {
      fs.fdatasyncSync(this.fd); // a closed segment is whole on disk
      this.o.onSync?.();
      fs.closeSync(this.fd);
    } catch {
      /* closed */
    }
    this.closed.push({ seq: this.seq, file: path.join(this.o.dir, segmentName(this.seq)), bytes: this.size });
    this.seq++;
    try {
      this.startSegment();
    } catch (e) {
      this.fd = -1;
      this.o.onError?.((e as NodeJS.ErrnoException).code ?? 'EIO');
    }
  }

  close(): void {
    this.flush(true);
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
    this.opened = false;
    try {
      const [pid] = fs.readFileSync(this.lockFile, 'utf8').split(/\s+/);
      if (Number(pid) === process.pid) fs.unlinkSync(this.lockFile);
    } catch {
      /* none */
    }
  }
}
