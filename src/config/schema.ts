/**
 * The agent's configuration, said once: a JSON Schema built with TypeBox.
 * Ajv validates a file against it and fills in the `default`s; the types
 * are derived from it (`Static`), and so are the defaults (DEFAULT_CONFIG).
 */
import { Type as T, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/** Features `kernel.without` can take away (src/capabilities/features.ts). */
export const KERNEL_FEATURE_NAMES = ['tp_btf', 'raw_tp', 'ring_buffer', 'uprobe', 'kprobe', 'fentry', 'socket_tracepoints', 'tcp_iterator'] as const;
export type KernelFeatureName = (typeof KERNEL_FEATURE_NAMES)[number];

/** One of a few values, as a JSON Schema `enum` (its error names them all). */
function oneOf<const V extends readonly (string | number)[]>(values: V, options: { default?: V[number]; description?: string } = {}) {
  return T.Unsafe<V[number]>({ enum: [...values], ...options });
}

/** A section of the file: every key optional in the file, present (from its default) after loading. */
function section<P extends Record<string, TSchema>>(properties: P, description?: string) {
  return T.Object(properties, { additionalProperties: false, default: {}, ...(description ? { description } : {}) });
}

/** A closed object whose keys stay optional after loading (no defaults). */
function record<P extends Record<string, TSchema>>(properties: P, options: Record<string, unknown> = {}) {
  return T.Object(properties, { additionalProperties: false, ...options });
}

const int = (minimum: number, maximum: number, def: number, description?: string) => T.Integer({ minimum, maximum, default: def, ...(description ? { description } : {}) });
const bool = (def: boolean, description?: string) => T.Boolean({ default: def, ...(description ? { description } : {}) });
const str = (def: string, description?: string) => T.String({ default: def, ...(description ? { description } : {}) });
const mapSize = (def: number, description?: string) => int(1, 4194304, def, description);
const seriesCap = (def: number, description: string) => int(1, 1000000, def, description);

const MATCH = record(
  {
    comm: T.Optional(T.String({ minLength: 1, maxLength: 15 })),
    exe: T.Optional(T.String({ minLength: 1 })),
    cmdline: T.Optional(T.String({ minLength: 1, format: 'regex' })),
    port: T.Optional(T.Integer({ minimum: 1, maximum: 65535 })),
    pid: T.Optional(T.Integer({ minimum: 1 })),
    cgroup: T.Optional(T.String({ minLength: 1 })),
  },
  { minProperties: 1 },
);

const SERVICE = record({ name: T.String({ minLength: 1, maxLength: 128 }), match: MATCH });
export type ServiceRule = Static<typeof SERVICE>;

/** binary:symbol, binary:symbol+offset, or binary:0xADDRESS (as nm prints it). */
const UPROBE_PATTERN = '^/[^:]+:([A-Za-z_][\\w.@]*(\\+(0x[0-9a-fA-F]+|[0-9]+))?|0x[0-9a-fA-F]+)$';
const METRIC_NAME = '^[a-zA-Z_:][a-zA-Z0-9_:]*$';
const LABEL_NAME = '^[a-zA-Z_][a-zA-Z0-9_]*$';
const METRIC_TYPE = oneOf(['counter', 'gauge', 'histogram']);

const PROBE_ARG = record({
  arg: T.Optional(T.Integer({ minimum: 0, maximum: 4, description: 'Argument index, 0 to 4 (for USDT: the probe\'s argument index).' })),
  field: T.Optional(T.String({ pattern: '^\\w+$', description: 'Tracepoints: a field of the event, by the name its format file gives.' })),
  offset: T.Optional(T.Integer({ minimum: 0, maximum: 65535, description: 'Read `type` at this offset in the memory the argument points to.' })),
  member: T.Optional(T.String({ pattern: '^[A-Za-z_]\\w*\\.[A-Za-z_]\\w*$', description: 'Or "struct.member": offset and type from the binary\'s DWARF debug info.' })),
  type: T.Optional(oneOf(['u8', 'u16', 'u32', 'u64', 's8', 's16', 's32', 's64', 'string'], { description: '`string`: a NUL-terminated string (at the argument, or at the offset in what it points to), cut to `size` bytes.' })),
  size: T.Optional(T.Integer({ minimum: 1, maximum: 31, description: 'Strings: bytes kept, at most 31.' })),
});
export type ProbeArg = Static<typeof PROBE_ARG>;

const PROBE_LABEL = record({
  name: T.String({ pattern: LABEL_NAME }),
  from: T.String({ description: "An arg's name or `ret`." }),
  values: T.Optional(T.Record(T.String(), T.String(), { description: 'Names for raw values ("0": ok); others read `other` if given, else the value.' })),
  other: T.Optional(T.String()),
  format: T.Optional(oneOf(['decimal', 'hex', 'dev'], { description: 'How a number reads: decimal (default), hex, or a device number as major:minor.' })),
});
export type ProbeLabel = Static<typeof PROBE_LABEL>;

const PROBE_METRIC = record({
  name: T.String({ pattern: METRIC_NAME }),
  help: T.Optional(T.String()),
  type: METRIC_TYPE,
  value: T.Optional(T.String({ description: "histogram, gauge (last value seen): an arg's name, `ret`, or `duration` (entry to return, seconds)." })),
  buckets: T.Optional(T.Union([T.Literal('log2'), T.Array(T.Number(), { minItems: 1, maxItems: 32 })])),
  label: T.Optional(PROBE_LABEL),
  labels: T.Optional(T.Array(PROBE_LABEL, { minItems: 1, maxItems: 3, description: 'Up to three labels: at most two from numbers and one from the string arg.' })),
  filter: T.Optional(record({ from: T.String(), op: oneOf(['==', '!=', '<', '<=', '>', '>=']), value: T.Integer() })),
});
export type ProbeMetric = Static<typeof PROBE_METRIC>;

const PROBE = record({
  name: T.String({ pattern: '^[a-z][a-z0-9_-]{0,62}$' }),
  uprobe: T.Optional(T.String({ pattern: UPROBE_PATTERN, description: '"/path/binary:symbol", "/path/binary:symbol+0x10" or "/path/binary:0x1139" (an address as nm prints it)' })),
  uretprobe: T.Optional(T.String({ pattern: UPROBE_PATTERN, description: '"/path/binary:symbol", every metric counted at the return' })),
  usdt: T.Optional(T.String({ pattern: '^/[^:]+:[\\w]+:[\\w]+$', description: '"/path/binary:provider:name"' })),
  tracepoint: T.Optional(T.String({ pattern: '^[\\w]+:[\\w]+$', description: '"category:name" of a kernel tracepoint' })),
  until: T.Optional(T.String({ pattern: '^[\\w]+:[\\w]+$', description: 'The probe that ends what this one starts (duration between): "provider:name" with usdt, "category:name" with tracepoint.' })),
  pairBy: T.Optional(T.Array(T.String(), { minItems: 1, maxItems: 2, description: 'Tracepoint pairs: the fields (one or two, present at both) that match an end to its start; by thread when absent.' })),
  pid: T.Optional(T.Integer({ minimum: 1 })),
  args: T.Optional(T.Record(T.String(), PROBE_ARG, { maxProperties: 4, propertyNames: { pattern: '^[a-z][a-z0-9_]*$', not: { enum: ['ret', 'duration'] } } })),
  maxSeries: T.Optional(T.Integer({ minimum: 1, maximum: 100000 })),
  metrics: T.Array(PROBE_METRIC, { minItems: 1, maxItems: 8 }),
});
export type ProbeConfig = Static<typeof PROBE>;

const OBJECT_LABEL = record({
  name: T.String({ pattern: LABEL_NAME }),
  size: T.Integer({ minimum: 1, maximum: 256, description: 'Bytes in the key; fields follow one another unless `offset` says where.' }),
  offset: T.Optional(T.Integer({ minimum: 0, maximum: 4096 })),
  decoder: oneOf(['uint', 'int', 'hex', 'string', 'ksym', 'inet', 'port', 'dev']),
  values: T.Optional(T.Record(T.String(), T.String(), { description: 'Names for decoded values; others keep theirs.' })),
});
/** A field of a map's key that becomes a label. */
export type ObjectLabel = Static<typeof OBJECT_LABEL>;

const OBJECT_METRIC = record({
  name: T.String({ pattern: METRIC_NAME }),
  help: T.Optional(T.String()),
  type: METRIC_TYPE,
  map: T.String({ minLength: 1 }),
  labels: T.Optional(T.Array(OBJECT_LABEL, { maxItems: 8 })),
  bucket: T.Optional(
    record(
      {
        size: oneOf([1, 2, 4, 8]),
        offset: T.Optional(T.Integer({ minimum: 0, maximum: 4096 })),
        type: oneOf(['log2', 'linear']),
        width: T.Optional(T.Number({ exclusiveMinimum: 0 })),
        count: T.Optional(T.Integer({ minimum: 1, maximum: 256, description: 'Buckets exported (log2: 32, linear: 20 by default); higher indexes are counted as drops.' })),
        multiplier: T.Optional(T.Number({ exclusiveMinimum: 0 })),
      },
      { description: 'Histograms: the key field after the labels is the bucket index.' },
    ),
  ),
  valueOffset: T.Optional(T.Integer({ minimum: 0, maximum: 4096, multipleOf: 8, description: 'Where the u64 value is in the map value (bytes, a multiple of 8); per-CPU values are summed.' })),
});
/** One metric from a map of a user's object. */
export type ObjectMetric = Static<typeof OBJECT_METRIC>;

const OBJECT = record({
  name: T.String({ pattern: '^[a-z][a-z0-9_-]{0,62}$' }),
  path: T.String({ minLength: 1, description: "The .bpf.o; relative paths are from the config file's directory." }),
  programs: T.Optional(T.Array(T.String({ minLength: 1 }), { description: 'Programs to load and attach by their SEC() names; all when absent.' })),
  maxSeries: T.Optional(T.Integer({ minimum: 1, maximum: 100000 })),
  metrics: T.Array(OBJECT_METRIC, { minItems: 1, maxItems: 64 }),
});
/** A user's own compiled BPF object, exported from its maps. */
export type ObjectConfig = Static<typeof OBJECT>;

const webhook = section(
  {
    url: T.String({ pattern: '^(https?://\\S+)?$', default: '', description: 'POST alerts as JSON arrays; "" for none.' }),
    batchSize: int(1, 10000, 100),
    flushIntervalMs: int(1, 600000, 1000),
    maxQueue: int(1, 1000000, 10000),
    maxRetries: int(0, 100, 5),
    backoffMs: int(1, 600000, 500),
  },
);

export const CONFIG_SCHEMA = T.Object(
  {
    listen: T.String({ pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$', default: '127.0.0.1:9527', description: 'Address of /metrics, /events and /healthz.' }),
    web: section({ configFile: str('', 'A web configuration file (exporter-toolkit\'s format): TLS and basic auth for every endpoint; "" for none.') }),
    collectors: section({
      tcp: section({
        enabled: bool(true),
        rtt: oneOf(['close', 'segments', 'off'], { default: 'close', description: 'close: one sample per connection when it closes; segments: from tcp_probe, per socket at most every rttIntervalMs.' }),
        rttIntervalMs: int(1, 3600000, 1000),
        maxSeries: seriesCap(2000, 'Distinct label sets exported; more fold into "_overflow".'),
        maps: section({ sockets: mapSize(65536), stats: mapSize(16384), histograms: mapSize(65536), listeners: mapSize(16384) }),
      }),
      process: section({
        enabled: bool(true),
        maxProcesses: int(16, 4194304, 65536, "Processes the agent's table holds (running, and exited in the last minute, for their children's ancestry); past it the oldest is forgotten and counted."),
      }),
      resources: section(
        { enabled: bool(true), maxSeries: seriesCap(2000, 'Distinct label sets exported per family.') },
        "What each service costs the node (CPU, memory, disk, threads, run-queue wait; its cgroups' memory, limits, OOM kills, throttling), from /proc and cgroupfs.",
      ),
      http: section({
        enabled: bool(true),
        maxSeries: seriesCap(5000, 'Distinct label sets per metric family; more fold into "_overflow".'),
        maxRoutesPerService: int(1, 100000, 100, 'Distinct routes per service; more fold into "_other".'),
        routes: T.Record(T.String(), T.Array(T.String({ pattern: '^/[^\\s]*$', maxLength: 1024 }), { maxItems: 10000 }), { default: {}, description: 'Route patterns per service name: `{id}` or `*` one segment, `**` the rest.' }),
        // OpenTelemetry's default for http.*.request.duration.
        durationBuckets: T.Array(T.Number({ exclusiveMinimum: 0, maximum: 1e6 }), {
          minItems: 1,
          maxItems: 15,
          uniqueItems: true,
          default: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
          description: 'Upper bounds of the duration histograms, in seconds.',
        }),
        flushIntervalMs: int(1, 60000, 200, 'Records are delivered in batches; a lone record waits at most this long.'),
        tls: section(
          { enabled: bool(true), binaries: T.Array(T.String({ pattern: '^/', maxLength: 4096 }), { maxItems: 1000, default: [] }) },
          "Plaintext of TLS connections from uprobes on OpenSSL's SSL_read/SSL_write.",
        ),
        watch: T.Array(MATCH, { maxItems: 10000, default: [], description: 'Processes watched: any of these matches (same keys as services[].match); all when empty.' }),
        records: bool(false, 'A live stream of sampled requests at /events (off: nothing per request leaves the kernel).'),
        sampleEvery: int(1, 65535, 1, "The stream's sampling: 1 request in this many. The overhead budget changes it at run time; histograms are exact whatever it is."),
        bodySizes: bool(true, "Request and response body size histograms (each triples a label set's series)."),
        maps: section(
          { connections: mapSize(16384), aggregation: mapSize(8192) },
          'Kernel tables: tracked connections; aggregated series (more go to a per-process overflow entry).',
        ),
        hooks: oneOf(['auto', 'socket', 'syscalls'], { default: 'auto', description: 'Data hooks: the socket tracepoints (Linux 6.3+), the syscall tracepoints, or the cheapest present.' }),
      }),
    }),
    services: T.Array(SERVICE, { maxItems: 10000, default: [] }),
    scope: section({ cgroup: str('') }, 'What this agent reports on: processes whose cgroup path contains `cgroup` ("": all).'),
    metadata: section(
      {
        containers: bool(false),
        kubernetes: oneOf(['auto', 'off'], { default: 'off' }),
        url: T.String({ pattern: '^(https?://.+)?$', default: '' }),
        tokenFile: str(''),
        refreshSeconds: T.Number({ minimum: 1, maximum: 3600, default: 30 }),
        kubelet: bool(false),
      },
      'Labels saying where a process runs: container_id and systemd_unit from its cgroup (`containers`), and with `kubernetes` (auto: when the API is reachable) ' +
        'k8s_namespace_name, k8s_pod_name, k8s_container_name, k8s_deployment_name. `url`: an API server to list pods from instead of the in-cluster one; ' +
        "`tokenFile`: its bearer token; `kubelet`: ask the node's kubelet (NODE_IP:10250/pods) instead of the API server.",
    ),
    probes: T.Array(PROBE, { maxItems: 256, default: [] }),
    objects: T.Array(OBJECT, { maxItems: 64, default: [] }),
    security: section({
      enabled: bool(true),
      defaultRules: bool(true, 'Load rules/default.yaml before the files in `rules`.'),
      rules: T.Array(T.String({ minLength: 1 }), { default: [] }),
      output: section({
        stdout: bool(true),
        file: str(''),
        maxFileBytes: T.Integer({ minimum: 1024, default: 100 * 1024 * 1024, description: 'The file is rotated past this size, keeping `keepFiles` old ones.' }),
        keepFiles: int(1, 100, 3),
        processEvents: bool(false, 'Every exec and exit too, not only alerts.'),
        webhook,
      }),
    }),
    bpfStats: section({
      intervalSeconds: T.Number({ minimum: 1, maximum: 86400, default: 30 }),
      windowSeconds: T.Number({ exclusiveMinimum: 0, maximum: 60, default: 1 }),
    }),
    kernel: section(
      { without: T.Array(oneOf(KERNEL_FEATURE_NAMES), { uniqueItems: true, default: [] }) },
      'Kernel features to act as if absent, as on an older kernel: each collector then takes its fallback hook or says why it cannot start.',
    ),
    overhead: section(
      {
        maxCpuPercent: T.Number({ minimum: 0, maximum: 800, default: 0, description: 'A CPU budget for the agent and its BPF programs together, in % of one core; 0: none.' }),
        maxSampleEvery: int(1, 65535, 1024),
      },
    ),
    collectIntervalSeconds: T.Number({ minimum: 0.1, maximum: 3600, default: 5 }),
    recorder: section(
      {
        enabled: bool(true),
        path: T.String({ minLength: 1, default: '/var/lib/kernscope/recorder' }),
        maxBytes: T.Integer({ minimum: 262144, maximum: 1099511627776, default: 64 * 1024 * 1024, description: 'All segments together.' }),
        segmentBytes: T.Integer({ minimum: 0, maximum: 1073741824, default: 0, description: 'Size of one segment; 0: an eighth of maxBytes (at least 64 KiB).' }),
        maxRecordsPerSecond: int(10, 1000000, 2000, 'Records a second past which the rest of the second is counted, not written (severe ones always are).'),
        retransmitBurst: int(1, 1000000, 5, 'Retransmits of one connection within a second that make a burst worth a record.'),
      },
      'The flight recorder: notable kernel events and a summary a second, kept in a bounded journal on local disk for `kernscope recorder show --last-boot` after a crash.',
    ),
  },
  { additionalProperties: false },
);

export type Config = Static<typeof CONFIG_SCHEMA>;

/** Every default, as loading an empty file gives them. */
export const DEFAULT_CONFIG: Config = Value.Default(CONFIG_SCHEMA, {}) as Config;

/**
 * The schema a file is checked against: a key with a default may be left
 * out (the type above says it is there once loaded). Validation with
 * `useDefaults` and editors read this one.
 */
export const FILE_SCHEMA: unknown = (function optional(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(optional);
  if (typeof s !== 'object' || s === null) return s;
  const o = s as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) out[k] = k === 'default' || k === 'enum' || k === 'const' ? v : optional(v);
  const props = o.properties as Record<string, { default?: unknown }> | undefined;
  if (Array.isArray(o.required) && props) {
    const required = (o.required as string[]).filter((k) => props[k]?.default === undefined);
    if (required.length) out.required = required;
    else delete out.required;
  }
  return out;
})(CONFIG_SCHEMA);
