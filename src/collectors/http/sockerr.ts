/**
 * Socket errors per service (bpf/http.h struct ks_sock_err_key, counted in
 * the kernel by the HTTP collector's socket and syscall hooks): failed
 * sends, receives, connects and accepts by errno, and reads or writes on an
 * fd that is not open (EBADF) where the syscall exits are hooked. The fold
 * adds each key's growth since the last collection.
 */
import os from 'node:os';
import type client from 'prom-client';
import type { BpfObject, MapEntry } from '../../bpf/object.js';
import type { ProcessNames } from '../../process/names.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { MetricsRegistry } from '../../metrics/registry.js';
import { Cumulative } from '../cumulative.js';
import { u64 } from './decode.js';
import type { KernelProc } from './fold.js';

const ERRNO_NAMES = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

export class SocketErrors {
  private readonly key;
  private readonly ops = new Map<number, string>();
  private readonly last = new Cumulative();
  private readonly counter: client.Counter<string>;
  private readonly limiter: LabelLimiter;
  /** Each fold's new errors by service, process, operation and errno name (the flight recorder's). */
  onError: ((service: string, tgid: number, op: string, error: string, n: number) => void) | undefined;

  constructor(
    obj: BpfObject,
    metrics: MetricsRegistry,
    metaLabels: readonly string[],
    maxSeries: number,
    onOverflow: () => void,
    private readonly namer: { names(tgid: number, comm: string, port?: number, argv?: readonly string[]): ProcessNames },
  ) {
    this.key = obj.struct('ks_sock_err_key', ['tgid', 'op', 'err'] as const);
    const ops = obj.enumValues('ks_sock_op', ['SOCK_OP_SEND', 'SOCK_OP_RECV', 'SOCK_OP_CONNECT', 'SOCK_OP_ACCEPT'] as const);
    for (const [k, v] of Object.entries(ops)) this.ops.set(v, k.slice('SOCK_OP_'.length).toLowerCase());
    this.counter = metrics.counter('kernscope_socket_errors_total', 'Socket calls that failed, by service, operation (send, recv, connect, accept) and errno name; EAGAIN and EINTR are not errors. EBADF: a read or write on an fd not open (seen where the syscall exits are hooked).', ['service_name', 'operation', 'error', ...metaLabels]);
    this.limiter = new LabelLimiter(maxSeries, onOverflow);
  }

  /** The table's entries (values summed over CPUs); `proc` names the process, `forget` deletes an exited one's. */
  fold(entries: Iterable<MapEntry>, proc: (tgid: number) => KernelProc, forget: (key: Buffer) => void): void {
    const K = this.key;
    for (const { key, value } of entries) {
      const tgid = key.readUInt32LE(K.tgid);
      const p = proc(tgid);
      const [d] = this.last.delta(key.toString('hex'), [u64(value, 0)], !p.live) as [number];
      if (!p.live) forget(key);
      if (d <= 0) continue;
      const n = this.namer.names(tgid, p.comm, undefined, p.argv);
      if (!n.inScope) continue;
      const op = this.ops.get(key.readUInt16LE(K.op)) ?? 'other';
      const error = errnoName(key.readUInt16LE(K.err));
      const labels = this.limiter.admit(`${n.service}\0${op}\0${error}\0${Object.values(n.meta).join('\0')}`, { service_name: n.service, operation: op, error, ...n.meta });
      this.counter.inc(labels, d);
      this.onError?.(n.service, tgid, op, error, d);
    }
  }
}
