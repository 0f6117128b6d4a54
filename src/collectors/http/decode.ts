/** Decoder for struct ks_http_event (bpf/http.h); offsets pinned by a test. */

export const HTTP_REQ_HEAD = 160;
export const HTTP_RESP_HEAD = 160;
/** u64 x3, u32 x2, u8 x4, u16 x5, 16-byte address, comm[16], then the heads. */
const HEADS = 80;
export const EVENT_SIZE = HEADS + HTTP_REQ_HEAD + HTTP_RESP_HEAD;

export const ROLE_SERVER = 1;
export const ROLE_CLIENT = 2;
export const END_RESPONSE = 0;
export const END_CLOSED = 1;
export const END_EXTRA = 2;
export const END_CONNECT_FAILED = 3;
/** Not a request: the kernel asks user space to judge a process (watch list). */
export const END_JUDGE = 4;

/** enum ks_http_drop_reason, in order. */
export const DROP_REASONS = ['ringbuf_full', 'connection_table_full'];

export interface HttpEvent {
  durationNs: number;
  requestBytes: number;
  responseBytes: number;
  tgid: number;
  fd: number;
  role: number;
  end: number;
  family: number;
  /** errno of a failed connect. */
  error: number;
  peerPort: number;
  /** The connection's local port (a server's listening port); 0 if unknown. */
  localPort: number;
  /** Requests this record stands for: 1, or N when the kernel sends 1 in N. */
  weight: number;
  /** The peer's address ("" for a server's connection: accept does not record it). */
  peerAddr: string;
  comm: string;
  reqHead: Buffer;
  respHead: Buffer;
}

function addr(b: Buffer, family: number): string {
  if (family === 2) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (family !== 10) return '';
  // An IPv4-mapped IPv6 address is shown as IPv4, as clients wrote it.
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  return parts.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::');
}

/** A u64 as a Number, without a BigInt per field (exact below 2^53). */
function u64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 4294967296;
}

export function decodeEvent(b: Buffer): HttpEvent | undefined {
  if (b.length < EVENT_SIZE) return undefined;
  const family = b.readUInt8(34);
  const reqLen = Math.min(b.readUInt16LE(38), HTTP_REQ_HEAD);
  const respLen = Math.min(b.readUInt16LE(40), HTTP_RESP_HEAD);
  const commEnd = b.indexOf(0, 64);
  return {
    durationNs: u64(b, 0),
    requestBytes: u64(b, 8),
    responseBytes: u64(b, 16),
    tgid: b.readUInt32LE(24),
    fd: b.readUInt32LE(28),
    role: b.readUInt8(32),
    end: b.readUInt8(33),
    family,
    error: b.readUInt8(35),
    peerPort: b.readUInt16LE(36),
    localPort: b.readUInt16LE(42),
    weight: b.readUInt16LE(44) || 1,
    peerAddr: family ? addr(b.subarray(48, 64), family) : '',
    comm: b.toString('latin1', 64, commEnd < 0 || commEnd > 80 ? 80 : commEnd),
    // Views, not copies: the batch Buffer lives as long as this record is
    // looked at, and nothing keeps a head (parsed requests are kept instead).
    reqHead: b.subarray(HEADS, HEADS + reqLen),
    respHead: b.subarray(HEADS + HTTP_REQ_HEAD, HEADS + HTTP_REQ_HEAD + respLen),
  };
}
