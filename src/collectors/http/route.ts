/**
 * Route templating: `/users/42/orders/7` becomes `/users/*\/orders/*`, so a
 * label holds a route, not an id. A segment is an id when it is a number, a
 * UUID, a hex string of 8 or more, or a long token mixing letters and digits.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HEX = /^(0x)?[0-9a-f]{8,}$/i;
const NUMBER = /^[+-]?\d+([.,]\d+)?$/;
const SAFE = /^[\w.~-]*$/;
const MAX_SEGMENTS = 12;
const MAX_SEGMENT = 64;

export function isIdSegment(s: string): boolean {
  if (NUMBER.test(s) || UUID.test(s)) return true;
  if (HEX.test(s) && /\d/.test(s)) return true;
  // Tokens, base64 ids, hashes: long, and letters mixed with digits.
  if (s.length >= 16 && /\d/.test(s) && /[a-z]/i.test(s)) return true;
  if (s.length > MAX_SEGMENT) return true;
  return false;
}

/**
 * Templates a path. `complete` false means the kernel's copy ended inside the
 * path: its last, partial segment is replaced by `*`.
 */
export function templatePath(path: string, complete = true): string {
  if (!path) return '/';
  const parts = path.split('/').slice(1);
  if (!complete && parts.length) parts[parts.length - 1] = '*';
  const out: string[] = [];
  for (const raw of parts) {
    if (out.length >= MAX_SEGMENTS) {
      out.push('**');
      break;
    }
    let seg = raw;
    if (raw.includes('%')) {
      try {
        seg = decodeURIComponent(raw);
      } catch {
        // malformed escapes: judge the raw text
      }
    }
    out.push(seg === '*' || isIdSegment(seg) ? '*' : SAFE.test(raw) ? raw : raw.replace(/[^\w.~-]/g, '_'));
  }
  return `/${out.join('/')}`;
}

/**
 * A configured route pattern: `{name}` or `*` matches one segment, `**` the
 * rest of the path. First match wins.
 */
export class RouteMatcher {
  private readonly patterns: Array<{ route: string; parts: string[] }>;

  constructor(routes: readonly string[]) {
    this.patterns = routes.map((route) => ({ route, parts: route.split('/').slice(1) }));
  }

  match(path: string): string | undefined {
    const segs = path.split('/').slice(1);
    outer: for (const p of this.patterns) {
      for (let i = 0; i < p.parts.length; i++) {
        const want = p.parts[i]!;
        if (want === '**') return p.route;
        const got = segs[i];
        if (got === undefined) continue outer;
        if (want === '*' || (want.startsWith('{') && want.endsWith('}'))) continue;
        if (want !== got) continue outer;
      }
      if (segs.length === p.parts.length) return p.route;
    }
    return undefined;
  }
}
