/**
 * The HTTP collector's kernel layouts (bpf/http.h), read from the loaded
 * object's BTF: offsets, sizes and enum values come from the compiled C, and
 * a member or value this file needs and the object lacks fails the load.
 */
import { addr } from '../inet.js';
import { u64, type BpfObject } from '../../bpf/object.js';

export { u64 };

const EVENT_FIELDS = [
  'duration_ns', 'request_bytes', 'response_bytes', 'tgid', 'fd', 'role', 'end', 'family', 'error',
  'peer_port', 'req_len', 'resp_len', 'local_port', 'weight', 'peer_addr', 'comm', 'req_head', 'resp_head',
] as const;
const KEY_FIELDS = ['tgid', 'role', 'method', 'status', 'port', 'family', 'overflow', 'name', 'addr'] as const;
const CONN_FIELDS = ['role', 'family', 'peer_port', 'peer_addr', 'local_port'] as const;
const END_NAMES = ['HTTP_END_RESPONSE', 'HTTP_END_CLOSED', 'HTTP_END_EXTRA', 'HTTP_END_CONNECT_FAILED', 'HTTP_END_JUDGE', 'HTTP_END_PIPELINE', 'HTTP_END_SAMPLE'] as const;
/** Label values of enum ks_http_method, by enumerator. */
const METHOD_NAMES: Record<string, string> = {
  HTTP_METHOD_OTHER: '_OTHER', HTTP_METHOD_GET: 'GET', HTTP_METHOD_POST: 'POST', HTTP_METHOD_PUT: 'PUT',
  HTTP_METHOD_DELETE: 'DELETE', HTTP_METHOD_HEAD: 'HEAD', HTTP_METHOD_PATCH: 'PATCH',
  HTTP_METHOD_OPTIONS: 'OPTIONS', HTTP_METHOD_CONNECT: 'CONNECT', HTTP_METHOD_TRACE: 'TRACE',
};
/** Metric reason labels of enum ks_http_drop_reason, by enumerator. */
const DROP_NAMES: Record<string, string> = {
  HTTP_DROP_RINGBUF_FULL: 'ringbuf_full',
  HTTP_DROP_CONN_TABLE_FULL: 'connection_table_full',
  HTTP_DROP_AGG_FULL: 'aggregation_table_full',
  HTTP_DROP_OVERFLOW_FULL: 'overflow_table_full',
  HTTP_DROP_NAMES_FULL: 'names_table_full',
  HTTP_DROP_SOCK_ERRORS_FULL: 'socket_errors_table_full',
};

export type End = 'response' | 'closed' | 'extra' | 'connect_failed' | 'judge' | 'pipeline' | 'sample';

export interface HttpEvent {
  durationNs: number;
  requestBytes: number;
  responseBytes: number;
  tgid: number;
  fd: number;
  role: number;
  end: End;
  family: number;
  /** errno of a failed connect. */
  error: number;
  peerPort: number;
  /** The connection's local port (a server's listening port); 0 if unknown. */
  localPort: number;
  /** Requests this record stands for of its own (0: it only closes pipelined ones). */
  weight: number;
  /** The peer's address ("" for a server's connection: accept does not record it). */
  peerAddr: string;
  comm: string;
  reqHead: Buffer;
  respHead: Buffer;
}

export interface AggKey {
  tgid: number;
  role: number;
  method: string;
  status: number;
  port: number;
  overflow: boolean;
  /** Key of the route (server) or Host (client) in http_names, as hex; "" for none. */
  name: string;
  addr: string;
}

export class HttpLayout {
  readonly event;
  readonly reqHeadSize: number;
  readonly respHeadSize: number;
  readonly key;
  readonly conn;
  readonly connKey;
  /** u64 slot of each histogram in struct ks_http_agg, and of count, sum, buckets in one. */
  readonly hist: { duration: number; reqBody: number; respBody: number; count: number; sum: number; buckets: number; nbuckets: number };
  readonly name;
  readonly proc;
  readonly roles: { server: number; client: number };
  readonly nameKinds: { route: number; host: number };
  /** Drop reason labels, by the kernel's index. */
  readonly dropReasons: string[];
  /** error_type of a client whose connect failed, by errno (bpf/http.h ks_connect_error). */
  readonly connectErrors: string[];
  private readonly methods: string[] = [];
  private readonly ends: End[] = [];

  constructor(obj: BpfObject) {
    this.event = obj.struct('ks_http_event', EVENT_FIELDS);
    const ev = obj.btfType('ks_http_event');
    if (ev?.kind !== 'struct') throw new Error('unreachable');
    this.reqHeadSize = ev.members.req_head!.size;
    this.respHeadSize = ev.members.resp_head!.size;
    this.key = obj.struct('ks_http_agg_key', KEY_FIELDS);
    this.conn = obj.struct('conn', CONN_FIELDS);
    this.connKey = obj.struct('conn_key', ['tgid', 'fd'] as const);
    const agg = obj.struct('ks_http_agg', ['duration', 'req_body', 'resp_body'] as const);
    const h = obj.struct('ks_http_hist', ['count', 'sum', 'buckets'] as const);
    this.hist = {
      duration: agg.duration / 8, reqBody: agg.req_body / 8, respBody: agg.resp_body / 8,
      count: h.count / 8, sum: h.sum / 8, buckets: h.buckets / 8, nbuckets: (h.size - h.buckets) / 8,
    };
    this.name = obj.struct('ks_http_name', ['kind', 'complete', 'len', 'bytes'] as const);
    this.proc = obj.struct('ks_http_proc', ['comm', 'args_len', 'args'] as const);
    const roles = obj.enumValues('ks_http_role', ['HTTP_ROLE_SERVER', 'HTTP_ROLE_CLIENT'] as const);
    this.roles = { server: roles.HTTP_ROLE_SERVER, client: roles.HTTP_ROLE_CLIENT };
    const kinds = obj.enumValues('ks_http_name_kind', ['HTTP_NAME_ROUTE', 'HTTP_NAME_HOST'] as const);
    this.nameKinds = { route: kinds.HTTP_NAME_ROUTE, host: kinds.HTTP_NAME_HOST };
    const methods = obj.enumValues('ks_http_method', Object.keys(METHOD_NAMES));
    for (const [k, v] of Object.entries(methods)) this.methods[v] = METHOD_NAMES[k]!;
    const ends = obj.enumValues('ks_http_end', END_NAMES);
    for (const [k, v] of Object.entries(ends)) this.ends[v] = k.slice('HTTP_END_'.length).toLowerCase() as End;
    this.dropReasons = obj.enumLabels('ks_http_drop_reason', DROP_NAMES);
    this.connectErrors = obj.enumLabels('ks_connect_error', {
      CONNECT_ERR_REFUSED: 'connection_refused',
      CONNECT_ERR_TIMEOUT: 'timeout',
      CONNECT_ERR_HOST_UNREACHABLE: 'host_unreachable',
      CONNECT_ERR_NETWORK_UNREACHABLE: 'network_unreachable',
      CONNECT_ERR_RESET: 'connection_reset',
    });
  }

  method(v: number): string {
    return this.methods[v] ?? '_OTHER';
  }

  decodeEvent(b: Buffer): HttpEvent | undefined {
    const o = this.event;
    if (b.length < o.size) return undefined;
    const family = b.readUInt8(o.family);
    const reqLen = Math.min(b.readUInt16LE(o.req_len), this.reqHeadSize);
    const respLen = Math.min(b.readUInt16LE(o.resp_len), this.respHeadSize);
    const commEnd = b.indexOf(0, o.comm);
    const end = this.ends[b.readUInt8(o.end)];
    if (!end) return undefined;
    return {
      durationNs: u64(b, o.duration_ns),
      requestBytes: u64(b, o.request_bytes),
      responseBytes: u64(b, o.response_bytes),
      tgid: b.readUInt32LE(o.tgid),
      fd: b.readUInt32LE(o.fd),
      role: b.readUInt8(o.role),
      end,
      family,
      error: b.readUInt8(o.error),
      peerPort: b.readUInt16LE(o.peer_port),
      localPort: b.readUInt16LE(o.local_port),
      weight: b.readUInt16LE(o.weight),
      peerAddr: family ? addr(b.subarray(o.peer_addr, o.peer_addr + 16), family) : '',
      comm: b.toString('latin1', o.comm, commEnd < 0 || commEnd > o.comm + 16 ? o.comm + 16 : commEnd),
      // Views, not copies: the batch Buffer lives as long as this record is
      // looked at, and nothing keeps a head (parsed requests are kept instead).
      reqHead: b.subarray(o.req_head, o.req_head + reqLen),
      respHead: b.subarray(o.resp_head, o.resp_head + respLen),
    };
  }

  decodeKey(b: Buffer): AggKey {
    const o = this.key;
    const family = b.readUInt8(o.family);
    const name = b.subarray(o.name, o.name + 8);
    return {
      tgid: b.readUInt32LE(o.tgid),
      role: b.readUInt8(o.role),
      method: this.method(b.readUInt8(o.method)),
      status: b.readUInt16LE(o.status),
      port: b.readUInt16LE(o.port),
      overflow: b.readUInt8(o.overflow) !== 0,
      name: name.every((x) => x === 0) ? '' : name.toString('hex'),
      addr: family ? addr(b.subarray(o.addr, o.addr + 16), family) : '',
    };
  }

  /** A process's comm and first arguments as the kernel saw them (a cut last argument is dropped). */
  decodeProc(b: Buffer): { comm: string; argv: string[] } {
    const o = this.proc;
    const end = b.indexOf(0, o.comm);
    const comm = b.toString('latin1', o.comm, end < 0 || end > o.comm + 16 ? o.comm + 16 : end);
    const len = Math.min(b.readUInt16LE(o.args_len), b.length - o.args);
    const parts = b.toString('utf8', o.args, o.args + len).split('\0');
    if (parts.length && b[o.args + len - 1] !== 0) parts.pop(); // cut inside an argument
    else if (parts.at(-1) === '') parts.pop();
    return { comm, argv: parts };
  }

  /** What a name key stands for: its kind, bytes and whether they end inside the path. */
  decodeName(b: Buffer): { kind: number; complete: boolean; text: string } {
    const o = this.name;
    const len = Math.min(b.readUInt16LE(o.len), b.length - o.bytes);
    return { kind: b.readUInt8(o.kind), complete: b.readUInt8(o.complete) !== 0, text: b.toString('latin1', o.bytes, o.bytes + len) };
  }
}
