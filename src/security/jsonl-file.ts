import fs from 'node:fs';

/**
 * JSON lines appended to a file, rotated by size: file -> file.1 -> ... ->
 * file.N, the oldest dropped. Writes never block the caller; a backlog past
 * `maxPending` bytes is refused (the caller counts it).
 */
export class JsonlFile {
  private stream: fs.WriteStream;
  private size: number;

  constructor(
    private readonly file: string,
    private readonly maxBytes: number,
    private readonly keep: number,
    private readonly maxPending = 4 << 20,
  ) {
    this.stream = this.open();
    this.size = fs.statSync(file).size;
  }

  /** False if the line was refused because the disk is not keeping up. */
  write(line: string): boolean {
    if (this.stream.writableLength > this.maxPending) return false;
    const n = Buffer.byteLength(line);
    if (this.size > 0 && this.size + n > this.maxBytes) this.rotate();
    this.stream.write(line);
    this.size += n;
    return true;
  }

  private rotate(): void {
    this.stream.end();
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
    this.stream = this.open();
    this.size = 0;
  }

  /** Opened now, not when the stream gets round to it: a rename must move
   * the file these writes go to. */
  private open(): fs.WriteStream {
    return fs.createWriteStream('', { fd: fs.openSync(this.file, 'a') });
  }

  close(): Promise<void> {
    return new Promise((r) => this.stream.end(() => r()));
  }
}
