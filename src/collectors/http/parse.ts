/**
 * HTTP/1.x heads from the first bytes of a socket read or write, as the
 * kernel copies them. Nothing here trusts the bytes: anything that is not a
 * well-formed request or status line is rejected, never guessed at.
 * Each head is turned into a string once and read with anchored regular
 * expressions: this runs once per request at full load.
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
// Method, then the target's visible ASCII (RFC 9112), then what ends it.
const REQUEST_LINE = /^(GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS|CONNECT|TRACE) ([\x21-\x7e]{0,8192})([\s\S]?)/;
const VERSION = /^HTTP\/1\.[01](?:\r|$)/;
const STATUS_LINE = /^HTTP\/1\.[01] ([1-5]\d\d)(?:[ \r]|$)/;
const CONTENT_LENGTH = /\r\ncontent-length:[ \t]*(\d{1,15})[ \t]*(?=\r\n)/i;
const CHUNKED = /\r\ntransfer-encoding:[^\r\n]*\bchunked[ \t]*(?=\r\n)/i;
const HOST = /\r\nhost:[ \t]*([\w.:[\]-]{1,255})[ \t]*(?=\r\n)/i;

interface Headers {
  contentLength?: number;
  chunked: boolean;
  host?: string;
}

/** Header fields wholly inside `s`, from `from` (the start line's CRLF) to the head's end. */
function headers(s: string, from: number, withHost: boolean): Headers {
  const end = s.indexOf('\r\n\r\n', from);
  // Up to and with the CRLF ending the last complete line.
  const h = end >= 0 ? s.slice(from, end + 2) : s.slice(from, s.lastIndexOf('\r\n') + 2);
  const out: Headers = { chunked: CHUNKED.test(h) };
  const cl = CONTENT_LENGTH.exec(h);
  if (cl) out.contentLength = Number(cl[1]);
  if (withHost) {
    const host = HOST.exec(h);
    if (host) out.host = host[1]!;
  }
  return out;
}

function requestFromString(s: string): RequestHead | undefined {
  const m = REQUEST_LINE.exec(s);
  if (!m) return undefined;
  const method = m[1] as Method;
  const target = m[2]!;
  const next = m[3]!;
  // Ended by the copy, or by our own bound: a partial target, not an error.
  const complete = next !== '' && !(target.length === MAX_TARGET && next !== ' ');
  if (complete && next !== ' ') return undefined; // a control byte inside the target
  if (complete && target === '') return undefined;
  const afterTarget = method.length + 1 + target.length + 1;
  if (complete && s.length >= afterTarget + 8 && !VERSION.test(s.slice(afterTarget, afterTarget + 9))) return undefined;
  let path = target;
  if (method === 'CONNECT' || (method === 'OPTIONS' && target === '*')) path = '';
  else if (/^https?:\/\//i.test(target)) path = target.replace(/^https?:\/\/[^/]*/i, '') || '/';
  const q = path.search(/[?#]/);
  if (q >= 0) path = path.slice(0, q);
  if (path && path[0] !== '/') return undefined;
  const eol = s.indexOf('\r\n', afterTarget);
  const h: Headers = eol > 0 ? headers(s, eol, true) : { chunked: false };
  const out: RequestHead = { method, path, pathComplete: complete || q >= 0, chunked: h.chunked };
  if (h.contentLength !== undefined) out.contentLength = h.contentLength;
  if (h.host) out.host = h.host;
  return out;
}

export function parseRequestHead(b: Buffer): RequestHead | undefined {
  return requestFromString(b.toString('latin1'));
}

export function parseResponseHead(b: Buffer): ResponseHead | undefined {
  const s = b.toString('latin1');
  const m = STATUS_LINE.exec(s);
  if (!m) return undefined;
  const eol = s.indexOf('\r\n', 12);
  const h: Headers = eol > 0 ? headers(s, eol, false) : { chunked: false };
  const out: ResponseHead = { status: Number(m[1]), chunked: h.chunked };
  if (h.contentLength !== undefined) out.contentLength = h.contentLength;
  return out;
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
  const s = b.toString('latin1');
  const out: RequestHead[] = [];
  let off = 0;
  while (off < s.length && out.length < max) {
    const rest = off ? s.slice(off) : s;
    const head = requestFromString(rest);
    if (!head) break;
    out.push(head);
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0 || head.chunked) break;
    off += end + 4 + (head.contentLength ?? 0);
  }
  return out;
}
