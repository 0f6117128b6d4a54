import fs from 'node:fs';
import { TRACEFS } from '../../capabilities/features.js';

/** One field of a tracepoint record, from its tracefs format file. */
export interface TpField {
  name: string;
  offset: number;
  size: number;
  signed: boolean;
  /** 'int': an integer of 1, 2, 4 or 8 bytes; 'chars': an inline char array; 'dataloc': a __data_loc string. */
  kind: 'int' | 'chars' | 'dataloc' | 'other';
}

/** Parses the text of events/<category>/<name>/format. */
export function parseFormat(text: string): TpField[] {
  const out: TpField[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*field:(.+?);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d+);/.exec(line);
    if (!m) continue;
    const decl = m[1]!.trim();
    const name = /(\w+)\s*(\[[^\]]*\])?$/.exec(decl)?.[1];
    if (!name) continue;
    const size = Number(m[3]);
    let kind: TpField['kind'] = 'other';
    if (decl.startsWith('__data_loc') && /char\s*\[\]/.test(decl)) kind = 'dataloc';
    else if (/\bchar\s+\w+\s*\[\d+\]$/.test(decl)) kind = 'chars';
    else if (!decl.includes('[') && !decl.includes('*') && [1, 2, 4, 8].includes(size)) kind = 'int';
    else if (decl.includes('*') && size === 8) kind = 'int'; // a pointer: its value
    out.push({ name, offset: Number(m[2]), size, signed: m[4] === '1', kind });
  }
  return out;
}

/** Fields of a tracepoint; throws a plain error naming what is missing. */
export function tracepointFields(category: string, name: string): TpField[] {
  const dir = `${TRACEFS}/events/${category}`;
  let text: string;
  try {
    text = fs.readFileSync(`${dir}/${name}/format`, 'utf8');
  } catch {
    if (!fs.existsSync(`${TRACEFS}/events`)) throw new Error(`tracefs is not mounted at ${TRACEFS}`);
    if (!fs.existsSync(dir)) throw new Error(`no tracepoint category ${category}`);
    const have = fs.readdirSync(dir).filter((n) => fs.existsSync(`${dir}/${n}/format`));
    const near = have.filter((n) => n.includes(name) || name.includes(n) || n.split('_').some((w) => w.length > 2 && name.includes(w)));
    throw new Error(`no tracepoint ${category}:${name} (${category} has: ${(near.length ? near : have).slice(0, 12).join(', ')})`);
  }
  return parseFormat(text).filter((f) => !f.name.startsWith('common_') || f.name === 'common_pid');
}
