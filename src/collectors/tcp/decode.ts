/**
 * The TCP collector's kernel layouts (bpf/tcp.h), read from the loaded
 * object's BTF: offsets, sizes and enum values come from the compiled C, and
 * a member or value this file needs and the object lacks fails the load.
 */
import { addr } from '../inet.js';
import type { BpfObject } from '../../bpf/object.js';

export interface TcpKey {
  tgid: number;
  port: number;
  /** 'outbound', 'inbound' or 'unknown' (enum ks_tcp_dir). */
  dir: string;
  comm: string;
}

/** struct ks_tcp_counters members, by the name each counter has here. */
const COUNTER_MEMBERS = {
  opened: 'opened',
  closed: 'closed',
  sentBytes: 'sent_bytes',
  receivedBytes: 'received_bytes',
  retransmits: 'retransmits',
  resetsSent: 'resets_sent',
  resetsReceived: 'resets_received',
  connectFailed: 'connect_failed',
} as const;
export type CounterField = keyof typeof COUNTER_MEMBERS;
export const COUNTER_FIELDS = Object.keys(COUNTER_MEMBERS) as CounterField[];

export type HistKind = 'connect' | 'rtt' | 'lifetime';
const HIST_NAMES: Record<string, HistKind> = { TCP_HIST_CONNECT: 'connect', TCP_HIST_RTT: 'rtt', TCP_HIST_LIFETIME: 'lifetime' };
const DIR_NAMES: Record<string, string> = { TCP_DIR_UNKNOWN: 'unknown', TCP_DIR_OUTBOUND: 'outbound', TCP_DIR_INBOUND: 'inbound' };
/** Metric reason labels of enum ks_tcp_drop_reason, by enumerator. */
const DROP_NAMES: Record<string, string> = {
  TCP_DROP_SOCK_TABLE_FULL: 'socket_table_full',
  TCP_DROP_STATS_TABLE_FULL: 'stats_table_full',
  TCP_DROP_HIST_TABLE_FULL: 'histogram_table_full',
  TCP_DROP_LISTENER_TABLE_FULL: 'listener_table_full',
  TCP_DROP_EVENTS_FULL: 'events_ringbuf_full',
};
const EVENT_NAMES: Record<string, TcpEventKind> = { TCP_EV_RESET_SENT: 'tcp_reset_sent', TCP_EV_RESET_RECEIVED: 'tcp_reset_received', TCP_EV_RETRANSMIT_BURST: 'tcp_retransmit_burst' };
export type TcpEventKind = 'tcp_reset_sent' | 'tcp_reset_received' | 'tcp_retransmit_burst';

/** TCP states by number (include/net/tcp_states.h). */
const TCP_STATES = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING', 'NEW_SYN_RECV'];

/** A reset or a burst of retransmits on one connection (struct ks_tcp_event), for the flight recorder. */
export interface TcpEvent {
  kind: TcpEventKind;
  tsNs: number;
  key: TcpKey;
  local: string;
  remote: string;
  state: string;
  /** burst: retransmits within the second */
  count: number;
}

export class TcpLayout {
  readonly key;
  readonly histKey;
  /** u64 slots of struct ks_tcp_hist_value. */
  readonly histValue: { count: number; sum: number };
  private readonly listener;
  private readonly owner;
  private readonly commSize: number;
  /** u64 slot of each counter in struct ks_tcp_counters. */
  readonly counterSlots = {} as Record<CounterField, number>;
  private readonly dirs: string[] = [];
  private readonly histKinds: HistKind[] = [];
  /** Drop reason labels, by the kernel's index. */
  readonly dropReasons: string[];
  private readonly event;
  private readonly eventKinds: TcpEventKind[] = [];

  constructor(obj: BpfObject) {
    this.key = obj.struct('ks_tcp_key', ['tgid', 'port', 'dir', 'comm'] as const);
    this.histKey = obj.struct('ks_tcp_hist_key', ['key', 'kind', 'slot'] as const);
    this.listener = obj.struct('ks_tcp_listener_key', ['netns', 'port'] as const);
    const hv = obj.struct('ks_tcp_hist_value', ['count', 'sum_ns'] as const);
    this.histValue = { count: hv.count / 8, sum: hv.sum_ns / 8 };
    this.owner = obj.struct('ks_tcp_owner', ['tgid', 'comm'] as const);
    const k = obj.btfType('ks_tcp_key');
    if (k?.kind !== 'struct') throw new Error(`${obj.path}: no struct ks_tcp_key`);
    this.commSize = k.members.comm!.size;
    const c = obj.struct('ks_tcp_counters', Object.values(COUNTER_MEMBERS));
    for (const [f, m] of Object.entries(COUNTER_MEMBERS)) this.counterSlots[f as CounterField] = c[m] / 8;
    for (const [n, v] of Object.entries(obj.enumValues('ks_tcp_dir', Object.keys(DIR_NAMES)))) this.dirs[v] = DIR_NAMES[n]!;
    for (const [n, v] of Object.entries(obj.enumValues('ks_tcp_hist_kind', Object.keys(HIST_NAMES)))) this.histKinds[v] = HIST_NAMES[n]!;
    this.dropReasons = obj.enumLabels('ks_tcp_drop_reason', DROP_NAMES);
    this.event = obj.struct('ks_tcp_event', ['ts_ns', 'key', 'kind', 'count', 'family', 'state', 'sport', 'dport', 'saddr', 'daddr'] as const);
    for (const [n, v] of Object.entries(obj.enumValues('ks_tcp_event_kind', Object.keys(EVENT_NAMES)))) this.eventKinds[v] = EVENT_NAMES[n]!;
  }

  decodeEvent(b: Buffer): TcpEvent | undefined {
    const E = this.event;
    if (b.length < E.size) return undefined;
    const kind = this.eventKinds[b.readUInt32LE(E.kind)];
    if (!kind) return undefined;
    const family = b.readUInt8(E.family);
    const at = (a: number, port: number): string => {
      const s = addr(b.subarray(a, a + 16), family);
      return `${family === 10 && s.includes(':') ? `[${s}]` : s}:${port}`;
    };
    const state = b.readUInt8(E.state);
    return {
      kind,
      tsNs: Number(b.readBigUInt64LE(E.ts_ns)),
      key: this.decodeKey(b, E.key),
      local: at(E.saddr, b.readUInt16LE(E.sport)),
      remote: at(E.daddr, b.readUInt16LE(E.dport)),
      state: TCP_STATES[state] ?? String(state),
      count: b.readUInt32LE(E.count),
    };
  }

  decodeKey(b: Buffer, off = 0): TcpKey {
    const K = this.key;
    const start = off + K.comm;
    const end = b.indexOf(0, start);
    const commEnd = end < 0 || end > start + this.commSize ? start + this.commSize : end;
    return {
      tgid: b.readUInt32LE(off + K.tgid),
      port: b.readUInt16LE(off + K.port),
      dir: this.dirs[b.readUInt8(off + K.dir)] ?? 'unknown',
      comm: b.toString('latin1', start, commEnd),
    };
  }

  /** A histogram entry's key: its series, which histogram, which slot. */
  decodeHistKey(b: Buffer): { key: Buffer; kind: HistKind | undefined; slot: number } {
    const H = this.histKey;
    return { key: b.subarray(H.key, H.key + this.key.size), kind: this.histKinds[b.readUInt32LE(H.kind)], slot: b.readUInt32LE(H.slot) };
  }

  encodeListenerKey(netns: number, port: number): Buffer {
    const b = Buffer.alloc(this.listener.size);
    b.writeUInt32LE(netns, this.listener.netns);
    b.writeUInt16LE(port, this.listener.port);
    return b;
  }

  /** struct ks_tcp_owner; comm is cut to leave its NUL. */
  encodeOwner(tgid: number, comm: string): Buffer {
    const b = Buffer.alloc(this.owner.size);
    b.writeUInt32LE(tgid, this.owner.tgid);
    b.write(comm.slice(0, this.commSize - 1), this.owner.comm, 'latin1');
    return b;
  }
}

// Kept here for the layout tests; the map reads use BpfMap.field.
export { sumField } from '../../bpf/object.js';

/**
 * The `port` label: the service side's port (the listener's), never a
 * client's ephemeral one, so it is bounded by the ports services listen on.
 */
export function portLabel(port: number): string {
  return port === 0 ? 'unknown' : String(port);
}
