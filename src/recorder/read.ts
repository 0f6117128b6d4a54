/**
 * Reading the journal back: records by boot, with what could not be read
 * (torn tails, corrupt records) counted, never thrown.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { HEADER, MAGIC, MAX_RECORD, listSegments } from './journal.js';

export interface JournalRecord {
  /** Wall-clock milliseconds. */
  t: number;
  /** Kind: exec, exit, alert, tcp_reset, oom_kill, summary, agent... */
  k: string;
  [field: string]: unknown;
}

export interface SegmentReport {
  file: string;
  seq: number;
  boot: string;
  records: number;
  /** Records whose checksum or length was wrong, and the bytes skipped to find the next one. */
  corrupt: number;
  skippedBytes: number;
  /** A record cut short at the segment's end (a crash or a full disk mid-write). */
  torn: boolean;
}

export interface JournalContents {
  records: Array<JournalRecord & { boot: string }>;
  segments: SegmentReport[];
}

/** Parses one segment's bytes. */
export function parseSegment(buf: Buffer): { records: JournalRecord[]; corrupt: number; skippedBytes: number; torn: boolean } {
  const records: JournalRecord[] = [];
  let corrupt = 0;
  let skippedBytes = 0;
  let torn = false;
  let off = 0;
  // Past a bad record, the next magic is where reading resumes.
  const resync = (from: number): number => {
    const next = buf.indexOf(MAGIC, from);
    const to = next < 0 ? buf.length : next;
    skippedBytes += to - (from - 1);
    return to;
  };
  while (off < buf.length) {
    if (buf.length - off < HEADER) {
      torn = !isZeros(buf, off);
      break;
    }
    if (!buf.subarray(off, off + 4).equals(MAGIC)) {
      if (isZeros(buf, off)) break; // preallocated or zero-filled after a crash
      corrupt++;
      off = resync(off + 1);
      continue;
    }
    const len = buf.readUInt32LE(off + 4);
    const crc = buf.readUInt32LE(off + 8);
    if (len > MAX_RECORD) {
      corrupt++;
      off = resync(off + 1);
      continue;
    }
    if (off + HEADER + len > buf.length) {
      // Cut short: at the end a torn write, unless a whole record follows.
      if (buf.indexOf(MAGIC, off + 1) < 0) {
        torn = true;
        break;
      }
      corrupt++;
      off = resync(off + 1);
      continue;
    }
    const payload = buf.subarray(off + HEADER, off + HEADER + len);
    if (zlib.crc32(payload) !== crc) {
      corrupt++;
      off = resync(off + 1);
      continue;
    }
    try {
      const rec = JSON.parse(payload.toString('utf8')) as JournalRecord;
      if (rec && typeof rec === 'object' && typeof rec.t === 'number' && typeof rec.k === 'string') records.push(rec);
      else corrupt++;
    } catch {
      corrupt++;
    }
    off += HEADER + len;
  }
  return { records, corrupt, skippedBytes, torn };
}

function isZeros(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Every record of the journal in `dir`, in order, each with its boot. */
export function readJournal(dir: string): JournalContents {
  const out: JournalContents = { records: [], segments: [] };
  let boot = 'unknown';
  for (const s of listSegments(dir)) {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(s.file);
    } catch {
      continue; // rotated away while reading
    }
    const p = parseSegment(buf);
    // A segment's boot is in its first record; one whose header was lost
    // belongs, most likely, to the boot of the segment before it.
    const head = p.records[0];
    if (head?.k === 'segment' && typeof head.boot === 'string') boot = head.boot;
    out.segments.push({ file: s.file, seq: s.seq, boot, records: p.records.length, corrupt: p.corrupt, skippedBytes: p.skippedBytes, torn: p.torn });
    for (const r of p.records) if (r.k !== 'segment') out.records.push({ ...r, boot });
  }
  return out;
}

/** Boots in the journal, in the order they were recorded, with their first and last record times. */
export function boots(c: JournalContents): Array<{ boot: string; first: number; last: number; records: number }> {
  const m = new Map<string, { boot: string; first: number; last: number; records: number }>();
  for (const r of c.records) {
    const b = m.get(r.boot);
    if (!b) m.set(r.boot, { boot: r.boot, first: r.t, last: r.t, records: 1 });
    else {
      b.first = Math.min(b.first, r.t);
      b.last = Math.max(b.last, r.t);
      b.records++;
    }
  }
  return [...m.values()];
}
