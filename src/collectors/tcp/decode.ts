/** Decoders for bpf/tcp.h. Offsets mirror the C structs; tests pin them. */

export const KEY_SIZE = 24;
export const HIST_KEY_SIZE = 32;

export const DIRECTIONS = ['unknown', 'outbound', 'inbound'] as const;

export interface TcpKey {
  tgid: number;
  port: number;
  dir: number;
  comm: string;
}

/** struct ks_tcp_counters field order. */
export const COUNTER_FIELDS = [
  'opened',
  'closed',
  'sentBytes',
  'receivedBytes',
  'retransmits',
  'resetsSent',
  'resetsReceived',
  'connectFailed',
] as const;
export type CounterField = (typeof COUNTER_FIELDS)[number];

export const HIST_KINDS = ['connect', 'rtt', 'lifetime'] as const;

/** enum ks_tcp_drop_reason, in order. */
export const DROP_REASONS = ['socket_table_full', 'stats_table_full', 'histogram_table_full', 'listener_table_full'];

export function decodeKey(b: Buffer, off = 0): TcpKey {
  const end = b.indexOf(0, off + 8);
  const commEnd = end < 0 || end > off + 24 ? off + 24 : end;
  return {
    tgid: b.readUInt32LE(off),
    port: b.readUInt16LE(off + 4),
    dir: b.readUInt8(off + 6),
    comm: b.toString('latin1', off + 8, commEnd),
  };
}

export function encodeListenerKey(netns: number, port: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(netns, 0);
  b.writeUInt16LE(port, 4);
  return b;
}

export function encodeOwner(tgid: number, comm: string): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(tgid, 0);
  b.write(comm.slice(0, 15), 8, 'latin1');
  return b;
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
