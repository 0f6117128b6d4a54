import fs from 'node:fs';

/**
 * JSON lines appended to a file, rotated by size: file -> file.1 -> ... ->
 * file.N, the oldest dropped. Writes never block the caller: lines queue and
 * go out in one write at a time. A backlog past `maxPending` bytes is
 * refused (write() returns false; the caller counts it). A write the disk
 * refuses (full, or failing) loses its lines, each counted through
 * `onLost`, and whatever part of them reached the file is cut off again, so
 * the file holds whole lines only; later lines are tried as they come.
 */
export class JsonlFile {
  private fd: number;
  /** Bytes in the file after the last write. */
  private size: number;
  private queue: string[] = [];
  private pending = 0;
  private writing = false;
  private closed = false;
  private idle: Array<() => void> = [];

  constructor(
    private readonly file: string,
    private readonly maxBytes: number,
    private readonly keep: number,
    private readonly onLost: (lines: number, why: string) => void = () => {},
    private readonly maxPending = 4 << 20,
  ) {
    this.fd = fs.openSync(file, 'a');
    this.size = fs.fstatSync(this.fd).size;
  }

  /** False if the line was refused because the disk is not keeping up. */
  write(line: string): boolean {
    if (this.closed || this.pending > this.maxPending) return false;
    this.queue.push(line);
    this.pending += line.length;
    this.flush();
    return true;
  }

  private flush(): void {
    if (this.writing || this.queue.length === 0) return;
    try {
      if (this.fd < 0) this.reopen();
      // A file past its bound moves aside before the line that would cross it.
      if (this.size > 0 && this.size + Buffer.byteLength(this.queue[0]!) > this.maxBytes) this.rotate();
    } catch (e) {
      const lost = this.queue.splice(0);
      this.pending -= lost.reduce((n, l) => n + l.length, 0);
      this.onLost(lost.length, (e as NodeJS.ErrnoException).code ?? 'open_failed');
      return;
    }
    // As many lines as fit under the bound (at least one) in one write.
    let take = 0;
    let bytes = 0;
    while (take < this.queue.length) {
      const n = Buffer.byteLength(this.queue[take]!);
      if (take > 0 && this.size + bytes + n > this.maxBytes) break;
      bytes += n;
      take++;
    }
    const lines = this.queue.splice(0, take);
    const chars = lines.reduce((n, l) => n + l.length, 0);
    const buf = Buffer.from(lines.join(''));
    this.writing = true;
    const fd = this.fd;
    // The file's own size, not ours: someone may have emptied it.
    let before = this.size;
    try {
      before = fs.fstatSync(fd).size;
    } catch {
      // the write below says what is wrong
    }
    const done = (err: NodeJS.ErrnoException | null, written: number): void => {
      this.writing = false;
      this.pending -= chars;
      if (err || written < buf.length) {
        // A short write or an error: cut the torn part, count every line.
        try {
          fs.ftruncateSync(fd, before);
        } catch {
          // the disk fails: the next write tries again
        }
        this.size = before;
        this.onLost(lines.length, err?.code ?? 'short_write');
      } else {
        this.size = before + buf.length;
      }
      if (this.queue.length) this.flush();
      else for (const r of this.idle.splice(0)) r();
    };
    fs.write(fd, buf, 0, buf.length, null, (err, n) => done(err, n));
  }

  private reopen(): void {
    this.fd = fs.openSync(this.file, 'a');
    this.size = fs.fstatSync(this.fd).size;
  }

  private rotate(): void {
    fs.closeSync(this.fd);
    this.fd = -1;
    for (let i = this.keep - 1; i >= 1; i--) {
      try {
        fs.renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
      } catch {
        // not there yet
      }
    }
    try {
      fs.renameSync(this.file, `${this.file}.1`);
    } catch {
      // removed by someone else: start afresh
    }
    this.reopen();
  }

  /** Resolves once every queued line is written or counted lost. */
  close(): Promise<void> {
    this.closed = true;
    return new Promise((r) => {
      const end = (): void => {
        if (this.fd < 0) r();
        else fs.close(this.fd, () => r());
      };
      if (!this.writing && this.queue.length === 0) end();
      else this.idle.push(end);
    });
  }
}
