/**
 * What a probe's target binary says about itself, read with binutils and
 * LLVM's tools: where an address lies in the file, the symbols and USDT
 * probes it has (for error messages), a struct member's place in its DWARF.
 */
import { execFileSync } from 'node:child_process';

/** The file offset of a virtual address, through the ELF LOAD segment holding it (readelf -lW). */
export function fileOffset(binary: string, vaddr: number): number {
  const out = execFileSync('readelf', ['-lW', binary], { encoding: 'utf8' });
  for (const l of out.split('\n')) {
    const c = l.trim().split(/\s+/);
    if (c[0] !== 'LOAD') continue;
    const [off, va, , , memsz] = [Number(c[1]), Number(c[2]), Number(c[3]), Number(c[4]), Number(c[5])];
    if (vaddr >= va && vaddr < va + memsz) return vaddr - va + off;
  }
  throw new Error(`address 0x${vaddr.toString(16)} is in no loadable segment of ${binary}`);
}

/** Symbol names of an ELF file nearest to `want`, for "no such symbol" errors. */
export function nearestSymbols(binary: string, want: string): string[] {
  let out = '';
  try {
    out = execFileSync('readelf', ['-Ws', '--dyn-syms', binary], { encoding: 'utf8', maxBuffer: 256 << 20 });
  } catch {
    return [];
  }
  const names = new Set<string>();
  for (const l of out.split('\n')) {
    const c = l.trim().split(/\s+/);
    if (c[3] === 'FUNC' && c[7]) names.add(c[7].replace(/@.*$/, ''));
  }
  const w = want.toLowerCase();
  const score = (n: string): number => {
    const s = n.toLowerCase();
    if (s.includes(w) || w.includes(s)) return 0;
    let common = 0;
    while (common < s.length && common < w.length && s[common] === w[common]) common++;
    return 100 - common;
  };
  return [...names].sort((a, b) => score(a) - score(b) || a.localeCompare(b)).slice(0, 3);
}

/** Integer C types by the names DWARF gives them: [bytes, signed]. */
const C_TYPES: Record<string, [number, boolean]> = {
  uint8_t: [1, false], 'unsigned char': [1, false], int8_t: [1, true], char: [1, true], 'signed char': [1, true], _Bool: [1, false], bool: [1, false],
  uint16_t: [2, false], 'unsigned short': [2, false], 'short unsigned int': [2, false], int16_t: [2, true], short: [2, true], 'short int': [2, true],
  uint32_t: [4, false], 'unsigned int': [4, false], unsigned: [4, false], int32_t: [4, true], int: [4, true],
  uint64_t: [8, false], 'unsigned long': [8, false], 'long unsigned int': [8, false], 'long long unsigned int': [8, false], size_t: [8, false], uintptr_t: [8, false],
  int64_t: [8, true], long: [8, true], 'long int': [8, true], 'long long int': [8, true], ssize_t: [8, true], intptr_t: [8, true], off_t: [8, true],
};

/**
 * Offset, size and signedness of `struct.member` from a binary's DWARF, by
 * llvm-dwarfdump. Errors say what is missing: no debug info at all (a
 * stripped binary), no such struct, no such member (with those there are).
 */
export function resolveMember(binary: string, spec: string, strBytes: number): { offset: number; size: number; signed: boolean; string: boolean } {
  const [struct, member] = spec.split('.') as [string, string];
  let out = '';
  try {
    out = execFileSync('llvm-dwarfdump', ['--name', struct, '--show-children', binary], { encoding: 'utf8', maxBuffer: 256 << 20 });
  } catch (e) {
    throw new Error(`cannot read DWARF of ${binary}: ${(e as Error).message.split('\n')[0]}`);
  }
  const blocks = out.split(/\n(?=0x[0-9a-f]+:)/);
  const start = blocks.findIndex((b) => /DW_TAG_structure_type/.test(b) && b.includes(`DW_AT_name\t("${struct}")`) && /DW_AT_byte_size/.test(b));
  if (start < 0) {
    const debug = execFileSync('llvm-dwarfdump', ['--debug-info', binary], { encoding: 'utf8', maxBuffer: 256 << 20 }).includes('DW_TAG_compile_unit');
    throw new Error(debug ? `no struct ${struct} in the debug info of ${binary}` : `${binary} has no debug info (stripped?): give offset and type instead of member`);
  }
  const members: Array<{ name: string; offset: number; type: string }> = [];
  for (const b of blocks.slice(start + 1)) {
    if (!/DW_TAG_member/.test(b)) break;
    const name = /DW_AT_name\t\("([^"]+)"\)/.exec(b)?.[1];
    const loc = /DW_AT_data_member_location\t\((0x[0-9a-f]+|\d+)\)/.exec(b)?.[1];
    const type = /DW_AT_type\t\(0x[0-9a-f]+ "([^"]+)"\)/.exec(b)?.[1];
    if (name && loc !== undefined && type) members.push({ name, offset: Number(loc), type });
  }
  const m = members.find((x) => x.name === member);
  if (!m) throw new Error(`struct ${struct} has no member ${member} (it has: ${members.map((x) => x.name).join(', ')})`);
  const chars = /^(?:const )?char\[(\d+)\]$/.exec(m.type);
  if (chars) return { offset: m.offset, size: Math.min(Number(chars[1]), strBytes - 1), signed: false, string: true };
  const t = C_TYPES[m.type];
  if (!t) throw new Error(`${spec} is a ${m.type}: only integer and char array members can be read`);
  return { offset: m.offset, size: t[0], signed: t[1], string: false };
}

/** USDT probes a binary has, for "no such probe" errors. */
export function usdtProbes(binary: string): string[] {
  try {
    const out = execFileSync('readelf', ['-n', binary], { encoding: 'utf8', maxBuffer: 256 << 20 });
    const list: string[] = [];
    let provider = '';
    for (const l of out.split('\n')) {
      const p = /Provider: (\S+)/.exec(l);
      if (p) provider = p[1]!;
      const n = /Name: (\S+)/.exec(l);
      if (n && provider) list.push(`${provider}:${n[1]}`);
    }
    return [...new Set(list)];
  } catch {
    return [];
  }
}

