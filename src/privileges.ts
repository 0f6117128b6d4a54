import fs from 'node:fs';
import { KernscopeError } from './errors.js';

const CAP_SYS_ADMIN = 21n;
const CAP_PERFMON = 38n;
const CAP_BPF = 39n;

function effectiveCaps(): bigint {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  return BigInt(`0x${hex}`);
}

/** Fails early, naming the capability, instead of deep inside a BPF load. */
export function checkPrivileges(): void {
  const caps = effectiveCaps();
  const has = (c: bigint): boolean => ((caps >> c) & 1n) === 1n;
  if (has(CAP_SYS_ADMIN)) return;
  const missing = [];
  if (!has(CAP_BPF)) missing.push('CAP_BPF');
  if (!has(CAP_PERFMON)) missing.push('CAP_PERFMON');
  if (missing.length) {
    throw new KernscopeError(
      'ERR_KERNSCOPE_PRIVILEGE',
      `missing capability ${missing.join(' and ')} (or CAP_SYS_ADMIN): run as root or grant them, e.g. setcap cap_bpf,cap_perfmon+ep`,
    );
  }
}

export function checkBtf(): void {
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) {
    throw new KernscopeError(
      'ERR_KERNSCOPE_KERNEL',
      'this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): kernscope needs CONFIG_DEBUG_INFO_BTF=y (Linux 5.4 or newer)',
    );
  }
}
