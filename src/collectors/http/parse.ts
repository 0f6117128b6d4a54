/**
 * HTTP/1.x heads from the first bytes of a socket read or write, as the
 * kernel copies them. Nothing here trusts the bytes: anything that is not a
 * well-formed request or status line is rejected, never guessed at.
 */

export const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE'] as const;
export type Method = (typeof METHODS)[number];

export interface RequestHead {
  /** `_OTHER` (OpenTelemetry's word) when the request was not seen. */
  method: Method | '_OTHER';
  /** The request target's path, without query or fragment; "" if not visible. */
  path: string;
  /** False when the copied bytes ended inside the target. */
  pathComplete: boolean;
  contentLength?: number;
  chunked: boolean;
  host?: string;
}

export interface ResponseHead {
  status: number;
  contentLength?: number;
  chunked: boolean;
}

const MAX_TARGET = 8192;

/** Visible ASCII, as RFC 9112 allows in a request target. */
function isTargetByte(c: number): boolean {
  return c > 0x20 && c < 0x7f;
}

interface Headers {
  contentLength?: number;
  chunked: boolean;
  host?: string;
}

/** Header fields that are wholly inside `b`, from offset `off` (after the start line). */
function headers(b: Buffer, off: number): Headers {
  const out: Headers = { chunked: false };
  while (off < b.length) {
    const eol = b.indexOf('\r\n', off, 'latin1');
    if (eol < 0 || eol === off) break; // cut off, or the blank line ending the head
    const line = b.toString('latin1', off, eol);
    off = eol + 2;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length') {
      if (/^\d{1,15}$/.test(value)) out.contentLength = Number(value);
    } else if (name === 'transfer-encoding') {
      out.chunked = /(^|,)\s*chunked\s*$/i.test(value);
    } else if (name === 'host' && /^[\w.:[\]-]{1,255}$/.test(value)) {
      out.host = value;
    }
  }
  return out;
}

export function parseRequestHead(b: Buffer): RequestHead | undefined {
  const sp = b.indexOf(0x20);
  if (sp < 3 || sp > 7) return undefined;
  const method = b.toString('latin1', 0, sp) as Method;
  if (!METHODS.includes(method)) return undefined;
  let end = sp + 1;
  const limit = Math.min(b.length, sp + 1 + MAX_TARGET);
  while (end < limit && isTargetByte(b[end]!)) end++;
  // Ended by the copy or by our own bound: a partial target, not an error.
  const complete = end < limit;
  if (complete && b[end] !== 0x20) return undefined; // a control byte inside the target
  const target = b.toString('latin1', sp + 1, end);
  if (target.length === 0 && complete) return undefined;
  if (complete) {
    const v = b.toString('latin1', end + 1, Math.min(b.length, end + 9));
    if (v.length === 8 && v !== 'HTTP/1.1' && v !== 'HTTP/1.0') return undefined;
  }
  let path = target;
  if (method === 'CONNECT' || method === 'OPTIONS' && target === '*') path = '';
  else if (/^https?:\/\//i.test(target)) path = target.replace(/^https?:\/\/[^/]*/i, '') || '/';
  const q = path.search(/[?#]/);
  if (q >= 0) path = path.slice(0, q);
  if (path && !path.startsWith('/')) return undefined;
  const eol = b.indexOf('\r\n', end, 'latin1');
  const h = eol > 0 ? headers(b, eol + 2) : { chunked: false };
  return { method, path, pathComplete: complete || q >= 0, chunked: h.chunked, ...(h.contentLength !== undefined ? { contentLength: h.contentLength } : {}), ...(h.host ? { host: h.host } : {}) };
}

export function parseResponseHead(b: Buffer): ResponseHead | undefined {
  if (b.length < 12) return undefined;
  const start = b.toString('latin1', 0, 9);
  if (start !== 'HTTP/1.1 ' && start !== 'HTTP/1.0 ') return undefined;
  const code = b.toString('latin1', 9, 12);
  if (!/^[1-5]\d\d$/.test(code)) return undefined;
  if (b.length > 12 && b[12] !== 0x20 && b[12] !== 0x0d) return undefined;
  const eol = b.indexOf('\r\n', 12, 'latin1');
  const h = eol > 0 ? headers(b, eol + 2) : { chunked: false };
  return { status: Number(code), chunked: h.chunked, ...(h.contentLength !== undefined ? { contentLength: h.contentLength } : {}) };
}

/** Offset just past a head's blank line, or -1 if it is not within `b`. */
export function headEnd(b: Buffer, from = 0): number {
  const i = b.indexOf('\r\n\r\n', from, 'latin1');
  return i < 0 ? -1 : i + 4;
}

/**
 * Every request head in `b`, in order: pipelined requests arrive back to
 * back, each head followed by its Content-Length of body. Stops at the first
 * bytes that are not a whole, parseable request start.
 */
export function splitRequests(b: Buffer, max = 32): RequestHead[] {
  const out: RequestHead[] = [];
  let off = 0;
  while (off < b.length && out.length < max) {
    const rest = b.subarray(off);
    const head = parseRequestHead(rest);
    if (!head) break;
    out.push(head);
    const end = headEnd(rest);
    if (end < 0 || head.chunked) break;
    off += end + (head.contentLength ?? 0);
  }
  return out;
}
