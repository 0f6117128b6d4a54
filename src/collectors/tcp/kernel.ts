/**
 * The TCP collector's kernel stage: its hooks (tp_btf where present,
 * raw_tp otherwise), the object loaded with the config's table sizes,
 * listening sockets opened before the agent seeded from /proc, and the
 * TCP socket iterator where the kernel has it.
 */
import { BpfObject, MapUpdate, type Link } from '../../bpf/object.js';
import type { Config } from '../../config/schema.js';
import { bpfObjectPath } from '../../paths.js';
import { scanSockets } from '../../process/sockets.js';
import { attachSpec, unchosenPrograms, type HookChoice, type HookSpec } from '../hooks.js';
import { TcpLayout } from './decode.js';

const OBJECT = 'tcp.bpf.o';

export const TCP_HOOKS: HookSpec[] = [
  { event: 'inet_sock_set_state', required: true, programs: { tp_btf: 'tcp_state_btf', raw_tp: 'tcp_state_raw' } },
  { event: 'tcp_probe', required: false, programs: { tp_btf: 'tcp_probe_btf', raw_tp: 'tcp_probe_raw' } },
  { event: 'tcp_retransmit_skb', required: false, programs: { tp_btf: 'tcp_retransmit_btf', raw_tp: 'tcp_retransmit_raw' } },
  { event: 'tcp_send_reset', required: false, programs: { tp_btf: 'tcp_send_reset_btf', raw_tp: 'tcp_send_reset_raw' } },
  { event: 'tcp_receive_reset', required: false, programs: { tp_btf: 'tcp_receive_reset_btf', raw_tp: 'tcp_receive_reset_raw' } },
  { event: 'tcp_destroy_sock', required: false, programs: { tp_btf: 'tcp_destroy_btf', raw_tp: 'tcp_destroy_raw' } },
];

export interface TcpKernel {
  obj: BpfObject;
  layout: TcpLayout;
  /** The TCP socket iterator that counts open connections' bytes at each collection. */
  live: Link | undefined;
}

/**
 * Loads and attaches the chosen hooks. `iter`: the kernel has the TCP
 * socket iterator (open connections' bytes at each collection; elsewhere
 * bytes count at close only). `records`: the flight recorder is on.
 */
export function loadTcp(config: Config, chosen: HookChoice[], iter: boolean, records: boolean): TcpKernel {
  const cfg = config.collectors.tcp;
  const obj = BpfObject.load(bpfObjectPath(OBJECT), {
    skipPrograms: [...unchosenPrograms(TCP_HOOKS, chosen), ...(iter ? [] : ['tcp_live_bytes'])],
    rodata: {
      keep_until_destroy: chosen.some((h) => h.event === 'tcp_destroy_sock') ? 1 : 0,
      rtt_mode: { off: 0, close: 1, segments: 2 }[cfg.rtt],
      rtt_interval_ns: BigInt(cfg.rttIntervalMs) * 1_000_000n,
      record_events: records ? 1 : 0,
      burst_count: config.recorder.retransmitBurst,
    },
    maxEntries: {
      socks: cfg.maps.sockets,
      tcp_stats: cfg.maps.stats,
      tcp_hist: cfg.maps.histograms,
      listeners: cfg.maps.listeners,
      // Records only while the flight recorder is on.
      tcp_events: records ? 256 << 10 : 4096,
    },
  });
  try {
    const layout = new TcpLayout(obj);
    seedListeners(obj, layout);
    for (const h of chosen) obj.attach(h.program!, attachSpec(h));
    const live = iter ? obj.attach('tcp_live_bytes', { kind: 'iter' }) : undefined;
    return { obj, layout, live };
  } catch (e) {
    obj.close();
    throw e;
  }
}

/** Listening sockets opened before the agent: their accepted connections are inbound. */
function seedListeners(obj: BpfObject, layout: TcpLayout): void {
  const map = obj.map('listeners');
  for (const l of scanSockets()) {
    if (l.state !== 'listen') continue;
    try {
      map.update(layout.encodeListenerKey(l.netns, l.localPort), layout.encodeOwner(l.tgid, l.comm), MapUpdate.NOEXIST);
    } catch {
      // EEXIST: a listen() seen by the kernel meanwhile is fresher
    }
  }
}
