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

/**
 * The capabilities the agent uses, what each serves, and which collectors
 * need it: the least privilege to grant (deploy/systemd, the DaemonSet).
 * Found by running the agent with each taken away (test/e2e/privileges).
 */
export const CAPABILITIES = [
  { name: 'CAP_BPF', bit: 39n, for: 'loading programs and maps', collectors: ['tcp', 'http', 'process', 'custom', 'objects', 'recorder'] },
  { name: 'CAP_PERFMON', bit: 38n, for: 'tracepoints, reading kernel memory', collectors: ['tcp', 'http', 'process', 'custom', 'objects', 'recorder'] },
  { name: 'CAP_SYS_ADMIN', bit: 21n, for: 'uprobes (HTTP over TLS, custom uprobes and USDT), BPF run-time statistics, mounting tracefs when it is absent', collectors: ['custom'] },
  { name: 'CAP_SYS_PTRACE', bit: 19n, for: "other users' processes: /proc/PID/exe, io and fd (names, what each service costs, listening ports)", collectors: ['resources'] },
  { name: 'CAP_DAC_READ_SEARCH', bit: 2n, for: "other users' /proc/PID/fd and files not readable by root's owner bits", collectors: ['resources'] },
  { name: 'CAP_SYS_RESOURCE', bit: 24n, for: 'maps on kernels before 5.11, which count them in RLIMIT_MEMLOCK', collectors: [] },
] as const;

export interface CapabilityState {
  name: string;
  ok: boolean;
  for: string;
}

/** Which of the agent's capabilities this process has. */
export function capabilityReport(): CapabilityState[] {
  const caps = effectiveCaps();
  return CAPABILITIES.map((c) => ({ name: c.name, ok: ((caps >> c.bit) & 1n) === 1n, for: c.for }));
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
