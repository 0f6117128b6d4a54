/**
 * The kernel's index of watched path prefixes (bpf/proc.h, struct
 * ks_prefix_bucket): a path is compared only with the prefixes whose first
 * four bytes are its own, plus the prefixes shorter than four bytes, and a
 * read-only open only with the prefixes watched for reads.
 */

export interface WatchedPrefix {
  prefix: string;
  writesOnly: boolean;
}

export interface PrefixBucket {
  /** Bit i: prefix i can match a path of this bucket. */
  any: number;
  /** The subset watched for reads too. */
  reads: number;
}

/** proc_prefix_bucket() of bpf/proc.h, for a little-endian u32 of a path's first four bytes. */
export function prefixBucket(word: number, buckets: number): number {
  const w = word >>> 0;
  return (Math.imul((w ^ (w >>> 15)) >>> 0, 0x9e3779b1) >>> (32 - Math.log2(buckets))) & (buckets - 1);
}

/** The first four bytes of a path as the kernel reads them (a shorter path's are its own, then NUL). */
export function firstWord(bytes: Uint8Array): number {
  return ((bytes[0] ?? 0) | ((bytes[1] ?? 0) << 8) | ((bytes[2] ?? 0) << 16) | ((bytes[3] ?? 0) << 24)) >>> 0;
}

/** Each bucket's masks for a list of prefixes (at most 32, the order of the kernel's slots). */
export function prefixBuckets(prefixes: readonly WatchedPrefix[], buckets: number): PrefixBucket[] {
  if (prefixes.length > 32) throw new Error(`${prefixes.length} watched path prefixes; the kernel's index holds 32`);
  if (!Number.isInteger(Math.log2(buckets)) || buckets < 2) throw new Error(`the kernel's prefix index has ${buckets} buckets, not a power of two`);
  const out = Array.from({ length: buckets }, () => ({ any: 0, reads: 0 }));
  prefixes.forEach((p, i) => {
    const bit = (1 << i) >>> 0;
    const bytes = Buffer.from(p.prefix, 'utf8');
    const into = bytes.length >= 4 ? [out[prefixBucket(firstWord(bytes), buckets)]!] : out;
    for (const b of into) {
      b.any = (b.any | bit) >>> 0;
      if (!p.writesOnly) b.reads = (b.reads | bit) >>> 0;
    }
  });
  return out;
}
