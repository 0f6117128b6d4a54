/**
 * `kernscope recorder show|tail`: the journal as a timeline, merged with the
 * kernel's own panic log when pstore kept one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HEADER, MAGIC, listSegments } from './journal.js';
import { boots, parseSegment, readJournal, type JournalRecord } from './read.js';
import { bootId } from './journal.js';

export interface KernelLine {
  /** Seconds since boot, as printk stamped it. */
  uptime: number;
  msg: string;
  file: string;
}

/** Lines of the kernel logs pstore kept (dmesg-*: the log at a panic or oops). */
export function readPstore(dir = '/sys/fs/pstore'): KernelLine[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.startsWith('dmesg-')).sort();
  } catch {
    return [];
  }
  const out: KernelLine[] = [];
  for (const n of names) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, n), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const m = /^(?:<\d+>)?\[\s*(\d+\.\d+)\]\s?(.*)$/.exec(line);
      if (m) out.push({ uptime: Number(m[1]), msg: m[2]!, file: n });
    }
  }
  // ramoops splits one dump in parts, newest part first: order by time.
  return out.sort((a, b) => a.uptime - b.uptime);
}

export interface TimelineEntry extends JournalRecord {
  /** Seconds before the boot's end (its last record); negative. */
  rel: number;
}

export interface Timeline {
  boot: string;
  current: boolean;
  start: number;
  end: number;
  entries: TimelineEntry[];
  kernelLines: number;
  journal: { segments: number; corrupt: number; skippedBytes: number; torn: number; files: string[] };
}

export interface ShowOptions {
  dir: string;
  lastBoot?: boolean;
  boot?: string;
  seconds?: number;
  pstore?: string;
}

/**
 * The timeline of one boot: the current one by default, the one before it
 * with `lastBoot`. The boot's end is its last record; pstore's lines are
 * merged for the last boot only (they describe the crash that ended it),
 * placed by the boot's start time the agent recorded.
 */
export function timeline(o: ShowOptions): Timeline | string {
  const c = readJournal(o.dir);
  const all = boots(c);
  if (!all.length) return `no records in ${o.dir}`;
  const now = bootId();
  let b: (typeof all)[number] | undefined;
  if (o.boot) b = all.find((x) => x.boot.startsWith(o.boot!));
  else if (o.lastBoot) b = all.filter((x) => x.boot !== now).at(-1);
  else b = all.find((x) => x.boot === now) ?? all.at(-1);
  if (!b) return o.boot ? `no boot ${o.boot} in ${o.dir}` : `no earlier boot in ${o.dir} (this boot is ${now})`;
  const from = o.seconds !== undefined ? b.last - o.seconds * 1000 : -Infinity;
  const recs = c.records.filter((r) => r.boot === b.boot && r.t >= from);
  const entries: TimelineEntry[] = recs.map(({ boot: _b, ...r }) => ({ ...r, rel: 0 }));
  let kernelLines = 0;
  if (b.boot !== now && (o.lastBoot || o.boot)) {
    const start = c.records.find((r) => r.boot === b.boot && r.k === 'agent' && typeof r.boot_ms === 'number')?.boot_ms as number | undefined;
    if (start !== undefined) {
      // A pstore dump of an earlier crash would land outside this boot.
      for (const l of readPstore(o.pstore)) {
        const t = start + l.uptime * 1000;
        if (t < b.first - 60_000 || t > b.last + 60_000 || t < from) continue;
        entries.push({ t, k: 'kernel', msg: l.msg, rel: 0 });
        kernelLines++;
      }
    }
  }
  entries.sort((x, y) => x.t - y.t);
  const end = Math.max(b.last, ...entries.map((e) => e.t));
  for (const e of entries) e.rel = Math.round(e.t - b.last) / 1000;
  const bad = c.segments.filter((s) => s.corrupt || s.torn);
  return {
    boot: b.boot,
    current: b.boot === now,
    start: b.first,
    end,
    entries,
    kernelLines,
    journal: {
      segments: c.segments.length,
      corrupt: c.segments.reduce((a, s) => a + s.corrupt, 0),
      skippedBytes: c.segments.reduce((a, s) => a + s.skippedBytes, 0),
      torn: c.segments.filter((s) => s.torn).length,
      files: bad.map((s) => path.basename(s.file)),
    },
  };
}

function stamp(t: number): string {
  return new Date(t).toISOString().replace('T', ' ').replace('Z', '');
}

function value(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return /[\s"=]/.test(s) || s === '' ? JSON.stringify(s) : s;
}

/** Fields as key=value, nested objects flattened with dots. */
export function fields(r: object, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(r)) {
    if (!prefix && (k === 't' || k === 'k' || k === 'rel' || k === 'boot')) continue;
    if (v === undefined || v === null) continue;
    if (typeof v === 'object' && !Array.isArray(v)) out.push(...fields(v, `${prefix}${k}.`));
    else out.push(`${prefix}${k}=${value(Array.isArray(v) ? v.join(' ') : v)}`);
  }
  return out;
}

export function formatEntry(e: JournalRecord, rel?: number): string {
  const r = rel === undefined ? '' : `${rel.toFixed(3).padStart(9)}s  `;
  const body = e.k === 'kernel' ? String(e.msg) : fields(e).join(' ');
  return `${stamp(e.t)}  ${r}${e.k.padEnd(12)} ${body}`;
}

export function formatTimeline(t: Timeline, seconds?: number): string {
  const lines = [
    `boot ${t.boot}${t.current ? ' (this boot)' : ''}: ${stamp(t.start)} .. ${stamp(t.end)}, ${t.entries.length} entries${seconds !== undefined ? ` in the last ${seconds} s` : ''}${t.kernelLines ? `, ${t.kernelLines} from the kernel's pstore log` : ''}`,
    ...t.entries.map((e) => formatEntry(e, e.rel)),
  ];
  const j = t.journal;
  if (j.corrupt || j.torn) lines.push(`journal: skipped ${j.corrupt} corrupt record(s) (${j.skippedBytes} bytes) and ${j.torn} torn segment end(s), in ${j.files.join(', ')}`);
  return lines.join('\n');
}

/**
 * Follows the journal: the last `lines` records, then each new one as it is
 * written, across segments. Polls: the journal is synced once a second.
 */
export function tail(dir: string, lines: number, write: (s: string) => void): () => void {
  const c = readJournal(dir);
  for (const r of c.records.slice(-lines)) write(`${formatEntry(r)}\n`);
  let seg = listSegments(dir).at(-1);
  let off = seg?.bytes ?? 0;
  let rest: Buffer = Buffer.alloc(0);
  const poll = (): void => {
    const segs = listSegments(dir);
    const last = segs.at(-1);
    if (!last) return;
    for (const s of segs) {
      if (seg && s.seq < seg.seq) continue;
      if (!seg || s.seq > seg.seq) {
        seg = s;
        off = 0;
        rest = Buffer.alloc(0);
      }
      let buf: Buffer;
      try {
        const fd = fs.openSync(s.file, 'r');
        const size = fs.fstatSync(fd).size;
        buf = Buffer.alloc(Math.max(0, size - off));
        if (buf.length) fs.readSync(fd, buf, 0, buf.length, off);
        fs.closeSync(fd);
      } catch {
        continue;
      }
      off += buf.length;
      const data = rest.length ? Buffer.concat([rest, buf]) : buf;
      // Only whole records: the rest waits for the next poll.
      const whole = wholeRecords(data);
      rest = data.subarray(whole);
      for (const r of parseSegment(data.subarray(0, whole)).records) if (r.k !== 'segment') write(`${formatEntry(r)}\n`);
    }
  };
  const timer = setInterval(poll, 250);
  return () => clearInterval(timer);
}

function wholeRecords(b: Buffer): number {
  let off = 0;
  while (b.length - off >= HEADER) {
    if (!b.subarray(off, off + 4).equals(MAGIC)) {
      // Garbage goes to the parser, which counts and skips it.
      const next = b.indexOf(MAGIC, off + 1);
      if (next < 0) return b.length;
      off = next;
      continue;
    }
    const len = b.readUInt32LE(off + 4);
    if (off + HEADER + len > b.length) break;
    off += HEADER + len;
  }
  return off;
}
