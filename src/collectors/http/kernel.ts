/**
 * The HTTP collector's kernel side (bpf/http.bpf.c): which hooks to use on
 * this kernel, loading with the config's bounds, seeding connections opened
 * before the agent, per-process verdicts, TLS uprobes, and reading the
 * tables. Policy (who is watched, what a key is named) lives in the stages
 * that call it.
 */
import fs from 'node:fs';
import { BpfObject, MapUpdate, u32, type BpfProgram, type MapEntry, type RingBuffer } from '../../bpf/object.js';
import { scanSockets } from '../../process/sockets.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import type { HookChoice } from '../hooks.js';
import { HttpLayout } from './decode.js';
import { SIZE_BUCKETS } from './export.js';
import type { KeyName, KernelProc } from './fold.js';

const OBJECT = 'http.bpf.o';

/**
 * Where connections start without the socket tracepoints: syscall exits.
 * With them, a connection starts at its socket's state change instead
 * (SYN sent; a handshake's socket, tracked at its task's first call), and
 * no exit tracepoint is attached: one would put every syscall of every
 * process on the slow path (bench/syscall-tax.sh). Not seen then: errors
 * accept(2) returns itself (EMFILE), and connect(2)'s before any SYN
 * leaves (EADDRNOTAVAIL, ENETUNREACH).
 */
const SYSCALLS: Array<[string, string]> = [
  ['sys_exit_accept4', 'http_accept4'],
  ['sys_exit_accept', 'http_accept'],
  ['sys_exit_connect', 'http_connect'],
  ['sys_exit_getsockopt', 'http_getsockopt'],
];
/** Where reads, writes and closes are seen without the socket tracepoints. */
const DATA_SYSCALLS: Array<[string, string]> = [
  ['sys_enter_close', 'http_close'],
  ['sys_exit_read', 'http_read'],
  ['sys_exit_recvfrom', 'http_recvfrom'],
  ['sys_exit_readv', 'http_readv'],
  ['sys_exit_recvmsg', 'http_recvmsg'],
  ['sys_exit_write', 'http_write'],
  ['sys_exit_sendto', 'http_sendto'],
  ['sys_exit_writev', 'http_writev'],
  ['sys_exit_sendmsg', 'http_sendmsg'],
  ['sys_exit_sendfile64', 'http_sendfile'],
];
/**
 * The socket layer's tracepoints (Linux 6.3+): only socket I/O pays for
 * them, and a connection ends at its socket's state change, not at a hook
 * on every close(2) of every file.
 */
const DATA_SOCKET: Array<[string, string]> = [
  ['sock_recv_length', 'http_sock_recv'],
  ['sock_send_length', 'http_sock_send'],
  ['inet_sock_set_state', 'http_sock_state'],
];
/** Hooks the collector runs without. */
const OPTIONAL = ['sys_exit_accept', 'sys_exit_sendfile64', 'sys_exit_getsockopt', 'SSL_read/SSL_write'];

const TLS_PROGRAMS = ['tls_enter_rw', 'tls_enter_ex', 'tls_read_ret', 'tls_write_ret', 'tls_read_ex_ret', 'tls_write_ex_ret'];
/** Each OpenSSL entry point: the program at its entry and at its return. */
const TLS_PROBES: Array<[string, string, string]> = [
  ['SSL_read', 'tls_enter_rw', 'tls_read_ret'],
  ['SSL_write', 'tls_enter_rw', 'tls_write_ret'],
  ['SSL_read_ex', 'tls_enter_ex', 'tls_read_ex_ret'],
  ['SSL_write_ex', 'tls_enter_ex', 'tls_write_ex_ret'],
];
/** Where Debian and others put OpenSSL 3's libssl. */
const LIBSSL = ['/usr/lib/x86_64-linux-gnu/libssl.so.3', '/lib/x86_64-linux-gnu/libssl.so.3', '/usr/lib/aarch64-linux-gnu/libssl.so.3', '/usr/lib64/libssl.so.3', '/usr/lib/libssl.so.3'];

/** u64 bounds for a rodata array of HTTP_MAX_BOUNDS (bpf/http.h). */
function bounds(values: readonly number[]): Buffer {
  const b = Buffer.alloc(15 * 8);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt(Math.round(v)), i * 8));
  return b;
}

/**
 * Hooks on this kernel. Reads and writes: the socket tracepoints where the
 * kernel has them, else the syscall exits; collectors.http.hooks forces either.
 */
export function planHooks(f: KernelFeatures, config: Config): { hooks: HookChoice[]; missing?: HookChoice } {
  const tracepoint = ([event, program]: [string, string]): HookChoice =>
    f.hasTracepoint(event) ? { event, kind: 'tracepoint', program } : { event, kind: null, reason: 'tracepoint not in this kernel (or tracefs not mounted)' };
  const want = config.collectors.http.hooks;
  const socketOk = f.tpBtf && DATA_SOCKET.every(([event]) => f.hasBtfType(`btf_trace_${event}`));
  const hooks: HookChoice[] = want === 'syscalls' || (want === 'auto' && !socketOk)
    ? [...SYSCALLS, ...DATA_SYSCALLS].map(tracepoint)
    : DATA_SOCKET.map(([event, program]) => (socketOk ? { event, kind: 'tp_btf', program } : { event, kind: null, reason: f.tpBtf ? 'tracepoint not in this kernel (Linux 6.3+)' : 'tp_btf programs cannot be loaded' }));
  if (config.collectors.http.tls.enabled) {
    hooks.push(f.uprobe.ok ? { event: 'SSL_read/SSL_write', kind: 'uprobe' } : { event: 'SSL_read/SSL_write', kind: null, reason: f.uprobe.detail ?? 'uprobes unavailable' });
  }
  return { hooks, missing: hooks.find((h) => !h.kind && !OPTIONAL.includes(h.event)) };
}

export class HttpKernel {
  readonly obj: BpfObject;
  readonly layout: HttpLayout;
  private rb: RingBuffer | undefined;
  /** Binaries whose SSL_read/SSL_write are probed. */
  tlsBinaries: string[] = [];

  constructor(
    private readonly config: Config,
    private readonly hooks: HookChoice[],
    private readonly log: (msg: string) => void,
  ) {
    const cfg = config.collectors.http;
    const chosen = new Set(hooks.filter((h) => h.kind === 'tracepoint' || h.kind === 'tp_btf').map((h) => h.program));
    const tls = hooks.some((h) => h.kind === 'uprobe');
    const durations = [...cfg.durationBuckets].sort((a, b) => a - b);
    this.obj = BpfObject.load(bpfObjectPath(OBJECT), {
      skipPrograms: [
        ...[...SYSCALLS, ...DATA_SYSCALLS, ...DATA_SOCKET].map(([, program]) => program).filter((p) => !chosen.has(p)),
        ...(tls ? [] : TLS_PROGRAMS),
      ],
      rodata: {
        self_tgid: process.pid,
        tls_enabled: tls ? 1 : 0,
        filter_on: cfg.watch.length || config.scope.cgroup ? 1 : 0,
        // Histogram bounds: the kernel counts each request in its bucket.
        dur_bounds: bounds(durations.map((s) => Math.round(s * 1e9))),
        dur_nbounds: durations.length,
        size_bounds: bounds(SIZE_BUCKETS),
        size_nbounds: SIZE_BUCKETS.length,
        body_sizes: cfg.bodySizes ? 1 : 0,
        sample_records: cfg.records ? 1 : 0,
      },
      maxEntries: { conns: cfg.maps.connections, http_agg: cfg.maps.aggregation },
    });
    try {
      this.layout = new HttpLayout(this.obj);
    } catch (e) {
      this.obj.close();
      throw e;
    }
  }

  /** Ports watched by themselves: a connection on one is tracked whatever its process. */
  watchPorts(ports: Iterable<number>): void {
    for (const port of ports) {
      const k = Buffer.alloc(2);
      k.writeUInt16LE(port);
      this.obj.map('watch_ports').update(k, Buffer.from([1]));
    }
  }

  /**
   * Connections open before the agent started: the kernel never saw their
   * accept() or connect(). A socket on a port its namespace listens on is a
   * server's; any other, a client's. Written with NOEXIST: a connection the
   * kernel has seen meanwhile is fresher.
   */
  seedConnections(skip: (tgid: number) => boolean): void {
    const map = this.obj.map('conns');
    const all = scanSockets();
    const listening = new Set(all.filter((s) => s.state === 'listen').map((s) => `${s.netns}:${s.localPort}`));
    const o = this.layout.conn; // struct conn, from the object's BTF
    for (const s of all) {
      if (s.state !== 'established' || s.tgid === process.pid || skip(s.tgid)) continue;
      const key = Buffer.alloc(this.layout.connKey.size);
      key.writeUInt32LE(s.tgid, this.layout.connKey.tgid);
      key.writeUInt32LE(s.fd, this.layout.connKey.fd);
      const v = Buffer.alloc(map.info.valueSize);
      const server = listening.has(`${s.netns}:${s.localPort}`);
      v.writeUInt8(server ? this.layout.roles.server : this.layout.roles.client, o.role);
      v.writeUInt16LE(s.localPort, o.local_port);
      if (!server) {
        v.writeUInt8(s.family, o.family);
        v.writeUInt16LE(s.remotePort, o.peer_port);
        s.remoteAddr.copy(v, o.peer_addr);
      }
      try {
        map.update(key, v, MapUpdate.NOEXIST);
        this.obj.map('tracked_tgids').update(u32(s.tgid), Buffer.from([1]));
      } catch {
        // EEXIST: seen by the kernel already; E2BIG: the table is full
      }
    }
  }

  /** The ring buffer of the slow path; drained by the kernel's wakeups and by consume(). */
  openRecords(onRecord: (rec: Buffer) => void): void {
    this.rb = this.obj.ringBuffer('http_events', onRecord);
  }

  consume(): void {
    this.rb?.consume();
  }

  attach(): void {
    for (const h of this.hooks) if (h.kind === 'tracepoint' || h.kind === 'tp_btf') this.obj.attach(h.program!, { kind: 'auto' });
    if (this.hooks.some((h) => h.kind === 'uprobe')) this.attachTls();
  }

  /**
   * Uprobes on SSL_read/SSL_write (and _ex) in libssl and in binaries that
   * link OpenSSL statically, such as node. A binary without the symbols is
   * skipped, and said so.
   */
  private attachTls(): void {
    const cfg = this.config.collectors.http.tls;
    const candidates = new Set([...LIBSSL.filter((p) => fs.existsSync(p)).slice(0, 1), process.execPath, ...cfg.binaries]);
    this.tlsBinaries = [];
    for (const binary of candidates) {
      try {
        fs.accessSync(binary, fs.constants.R_OK);
      } catch {
        this.log(`http: TLS: ${binary}: not readable, skipped`);
        continue;
      }
      const links = [];
      try {
        for (const [symbol, enter, ret] of TLS_PROBES) {
          links.push(this.obj.attach(enter, { kind: 'uprobe', binary, symbol }));
          links.push(this.obj.attach(ret, { kind: 'uretprobe', binary, symbol }));
        }
        this.tlsBinaries.push(binary);
      } catch (e) {
        for (const l of links) l.detach();
        this.log(`http: TLS: ${binary}: ${(e as Error).message.split('\n')[0]}, skipped`);
      }
    }
  }

  /** The live stream's sampling: 1 request in `n`. */
  setSampleEvery(n: number): void {
    const v = Buffer.alloc(8);
    v.writeUInt32LE(n);
    this.obj.map('http_config').update(Buffer.alloc(4), v);
  }

  /** Whether a process may be watched (bpf/http.bpf.c `tgid_verdict`). */
  setVerdict(tgid: number, watch: boolean): void {
    this.obj.map('tgid_verdict').update(u32(tgid), Buffer.from([watch ? 1 : 2]));
  }

  /**
   * Stops tracking a process's connections: once per ignored process that
   * made HTTP traffic, so one table walk is cheap beside what tracking would
   * cost.
   */
  untrack(tgid: number): void {
    const conns = this.obj.map('conns');
    for (const { key } of conns.entries()) if (key.readUInt32LE(this.layout.connKey.tgid) === tgid) conns.delete(key);
    // Its syscalls now leave at the first lookup again.
    this.obj.map('tracked_tgids').delete(u32(tgid));
  }

  /**
   * Drops the connections of processes gone: an exiting process closes its
   * sockets without close(2), and a connection closed before its first read
   * or write never pointed its socket back at it. Returns how many went.
   */
  sweepConnections(alive: (tgid: number) => boolean): number {
    const conns = this.obj.map('conns');
    const off = this.layout.connKey.tgid;
    let gone = 0;
    for (const { key } of conns.entries()) if (!alive(key.readUInt32LE(off)) && conns.delete(key)) gone++;
    return gone;
  }

  /** http_agg or http_agg_overflow, each value summed over CPUs in the addon. */
  table(overflow: boolean): MapEntry[] {
    return this.obj.map(overflow ? 'http_agg_overflow' : 'http_agg').summedEntries();
  }

  /** sock_errors, summed over CPUs. */
  socketErrors(): MapEntry[] {
    return this.obj.map('sock_errors').summedEntries();
  }

  forgetSocketError(key: Buffer): void {
    this.obj.map('sock_errors').delete(key);
  }

  forget(key: Buffer, overflow: boolean): void {
    this.obj.map(overflow ? 'http_agg_overflow' : 'http_agg').delete(key);
  }

  /** What a route or host key stands for; undefined when the kernel lost it. */
  name(hex: string): KeyName | undefined {
    const v = this.obj.map('http_names').lookup(Buffer.from(hex, 'hex'));
    return v ? this.layout.decodeName(v) : undefined;
  }

  /** A process as the kernel saw it at its connections (comm and argv), with whether it lives. */
  proc(tgid: number, live: boolean): KernelProc {
    const v = this.obj.map('proc_comms').lookup(u32(tgid));
    return { live, ...(v ? this.layout.decodeProc(v) : { comm: '', argv: [] }) };
  }

  forgetProc(tgid: number): void {
    this.obj.map('proc_comms').delete(u32(tgid));
  }

  programs(): BpfProgram[] {
    return [...this.obj.programs.values()];
  }

  async close(): Promise<void> {
    this.rb?.close();
    this.rb = undefined;
    await this.obj.closeAsync();
  }
}
