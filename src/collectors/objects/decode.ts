import fs from 'node:fs';

/** How the bytes of one key field read as a label value. */
export type Decoder = 'uint' | 'int' | 'hex' | 'string' | 'ksym' | 'inet' | 'port' | 'dev';

export const DECODERS: readonly Decoder[] = ['uint', 'int', 'hex', 'string', 'ksym', 'inet', 'port', 'dev'];

/** Field sizes each decoder accepts (undefined: any). */
export const DECODER_SIZES: Partial<Record<Decoder, number[]>> = {
  uint: [1, 2, 4, 8],
  int: [1, 2, 4, 8],
  ksym: [8],
  inet: [4, 16],
  port: [2],
  dev: [4, 8],
};

function readUint(b: Buffer): bigint {
  switch (b.length) {
    case 1: return BigInt(b.readUInt8(0));
    case 2: return BigInt(b.readUInt16LE(0));
    case 4: return BigInt(b.readUInt32LE(0));
    default: return b.readBigUInt64LE(0);
  }
}

function readInt(b: Buffer): bigint {
  switch (b.length) {
    case 1: return BigInt(b.readInt8(0));
    case 2: return BigInt(b.readInt16LE(0));
    case 4: return BigInt(b.readInt32LE(0));
    default: return b.readBigInt64LE(0);
  }
}

/** IPv6 text with the longest run of zero groups as "::" and IPv4-mapped addresses dotted. */
export function formatIPv6(b: Buffer): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) return `::ffff:${[...b.subarray(12)].join('.')}`;
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Kernel symbols by address, read once from /proc/kallsyms (needs root to see addresses). */
export class Ksyms {
  private addrs: bigint[] = [];
  private names: string[] = [];

  constructor(text?: string) {
    if (text === undefined) {
      try {
        text = fs.readFileSync('/proc/kallsyms', 'utf8');
      } catch {
        text = '';
      }
    }
    const rows: Array<[bigint, string]> = [];
    for (const line of text.split('\n')) {
      const [a, type, name] = line.split(/\s+/);
      if (!a || !name || !/[tTwW]/.test(type ?? '')) continue;
      const addr = BigInt(`0x${a}`);
      if (addr !== 0n) rows.push([addr, name]);
    }
    rows.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    this.addrs = rows.map((r) => r[0]);
    this.names = rows.map((r) => r[1]);
  }

  /** The function containing `addr`, or its hex when none does. */
  name(addr: bigint): string {
    let lo = 0;
    let hi = this.addrs.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.addrs[mid]! <= addr) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return at >= 0 ? this.names[at]! : `0x${addr.toString(16)}`;
  }
}

let ksyms: Ksyms | undefined;

/** A label value from the bytes of a key field. */
export function decode(d: Decoder, b: Buffer): string {
  switch (d) {
    case 'uint': return readUint(b).toString();
    case 'int': return readInt(b).toString();
    case 'hex': return b.toString('hex');
    case 'string': {
      const end = b.indexOf(0);
      return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
    }
    case 'ksym':
      ksyms ??= new Ksyms();
      return ksyms.name(b.readBigUInt64LE(0));
    case 'inet': return b.length === 4 ? [...b].join('.') : formatIPv6(b);
    case 'port': return String(b.readUInt16BE(0));
    case 'dev': {
      const v = Number(readUint(b));
      return `${Math.floor(v / 2 ** 20) & 0xfff}:${v & 0xfffff}`;
    }
  }
}
