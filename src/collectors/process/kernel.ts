/**
 * The process collector's kernel stage: exec, fork and exit hooks (tp_btf
 * where present, raw_tp otherwise), and a rule set's kernel side: watched
 * path prefixes and their index, watched ports, names to kill at exec, and
 * the syscall hooks attached only while some rule needs them (each costs
 * every call of its syscall on the node).
 */
import { BpfObject, u32, type Link } from '../../bpf/object.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { bpfObjectPath } from '../../paths.js';
import type { RuleEvent, RuleSet } from '../../security/rules.js';
import { attachSpec, unchosenPrograms, type HookChoice, type HookSpec } from '../hooks.js';
import { ProcLayout } from './decode.js';
import { prefixBuckets } from './prefixes.js';

const OBJECT = 'proc.bpf.o';

export const PROC_HOOKS: HookSpec[] = [
  { event: 'sched_process_exec', required: true, programs: { tp_btf: 'proc_exec_btf', raw_tp: 'proc_exec_raw' } },
  { event: 'sched_process_fork', required: true, programs: { tp_btf: 'proc_fork_btf', raw_tp: 'proc_fork_raw' } },
  { event: 'sched_process_exit', required: true, programs: { tp_btf: 'proc_exit_btf', raw_tp: 'proc_exit_raw' } },
];

// arm64 has only the *at forms: a program whose syscall is absent stays detached.
const FILE_HOOKS: Array<[string, RuleEvent]> = [
  ['unlink', 'unlink'], ['unlinkat', 'unlink'], ['truncate', 'truncate'], ['ftruncate', 'truncate'], ['rename', 'rename'], ['renameat', 'rename'], ['renameat2', 'rename'],
  ['symlink', 'link'], ['symlinkat', 'link'], ['link', 'link'], ['linkat', 'link'],
];

export class ProcKernel {
  readonly obj: BpfObject;
  /** bpf/proc.h's layouts, from the object's BTF. */
  readonly layout: ProcLayout;
  private readonly ioLinks = new Map<string, Link>();
  private noModulesSaid = false;

  /** Loads the object with the chosen hooks' programs; they are attached by attach(), once the ring buffer is read. */
  constructor(
    private readonly chosen: HookChoice[],
    private readonly features: KernelFeatures,
    private readonly log: (msg: string) => void,
  ) {
    this.obj = BpfObject.load(bpfObjectPath(OBJECT), { skipPrograms: unchosenPrograms(PROC_HOOKS, chosen) });
    try {
      this.layout = new ProcLayout(this.obj);
    } catch (e) {
      this.obj.close();
      throw e;
    }
  }

  attach(): void {
    for (const h of this.chosen) this.obj.attach(h.program!, attachSpec(h));
  }

  /** Puts a rule set's kernel side in place; throws, leaving the old one, when the kernel's filter cannot hold it. */
  apply(rules: RuleSet): void {
    const obj = this.obj;
    const prefixes = rules.watchedPrefixes();
    const slots = obj.map('watched_prefixes');
    const { maxEntries, valueSize } = slots.info;
    if (prefixes.length > maxEntries) throw new Error(`security rules watch ${prefixes.length} path prefixes; the kernel filter holds ${maxEntries}`);
    for (let i = 0; i < maxEntries; i++) {
      const v = Buffer.alloc(valueSize); // NUL-terminated
      const p = prefixes[i];
      if (p) v.write(p.prefix.slice(0, valueSize - 1), 'utf8');
      slots.update(u32(i), v);
    }
    const buckets = obj.map('prefix_buckets');
    const masks = prefixBuckets(prefixes, buckets.info.maxEntries);
    const { any, reads } = this.layout.bucket;
    masks.forEach((m, i) => {
      const v = Buffer.alloc(buckets.info.valueSize);
      v.writeUInt32LE(m.any, any);
      v.writeUInt32LE(m.reads, reads);
      buckets.update(u32(i), v);
    });
    const ports = obj.map('watched_ports');
    for (const { key } of ports.entries()) ports.delete(Buffer.from(key));
    for (const [port, kill] of rules.watchedPorts()) {
      const k = Buffer.alloc(2);
      k.writeUInt16LE(port);
      ports.update(k, u32(kill ? 2 : 1));
    }
    // Port 0, never a connect's destination, asks the kernel for every connect.
    if (rules.allConnects()) ports.update(Buffer.alloc(2), u32(1));
    const names = obj.map('kill_exec');
    for (const { key } of names.entries()) names.delete(Buffer.from(key));
    for (const name of rules.killedNames()) {
      const k = Buffer.alloc(64);
      k.write(name.slice(0, 63), 'utf8');
      names.update(k, u32(2));
    }
    this.hook('proc_openat', prefixes.length > 0);
    this.hook('proc_openat2', prefixes.length > 0);
    this.hook('proc_connect', rules.watchedPorts().size > 0 || rules.allConnects());
    this.hook('proc_ptrace', rules.uses('ptrace'));
    for (const p of ['proc_setuid', 'proc_setreuid', 'proc_setresuid']) this.hook(p, rules.uses('setuid'));
    for (const p of ['proc_dup2', 'proc_dup3', 'proc_dup']) this.hook(p, rules.uses('stdio_socket'));
    // A kernel built without module support has neither syscall.
    const modules = rules.uses('module') && this.features.hasTracepoint('sys_enter_finit_module');
    if (rules.uses('module') && !modules && !this.noModulesSaid) {
      this.noModulesSaid = true;
      this.log('security: module rules inactive: this kernel has no init_module/finit_module (built without module support)');
    }
    for (const p of ['proc_init_module', 'proc_finit_module']) this.hook(p, modules);
    for (const [call, event] of FILE_HOOKS) this.hook(`proc_${call}`, rules.uses(event) && this.features.hasTracepoint(`sys_enter_${call}`));
  }

  /** Attaches or detaches one syscall hook. */
  private hook(program: string, on: boolean): void {
    const link = this.ioLinks.get(program);
    if (on && !link && this.obj.programs.has(program)) this.ioLinks.set(program, this.obj.attach(program, { kind: 'auto' }));
    if (!on && link) {
      link.detach();
      this.ioLinks.delete(program);
    }
  }
}
