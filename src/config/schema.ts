/** The agent's configuration: JSON Schema (validated by Ajv) and its type. */

/** Features `kernel.without` can take away (src/capabilities/features.ts). */
export const KERNEL_FEATURE_NAMES = ['tp_btf', 'raw_tp', 'ring_buffer', 'uprobe', 'kprobe', 'fentry', 'socket_tracepoints', 'tcp_iterator'] as const;
export type KernelFeatureName = (typeof KERNEL_FEATURE_NAMES)[number];

export interface ServiceRule {
  name: string;
  match: {
    comm?: string;
    exe?: string;
    cmdline?: string;
    port?: number;
    pid?: number;
    cgroup?: string;
  };
}

export interface ProbeArg {
  /** Argument index, 0 to 4 (for USDT: the probe's argument index). */
  arg?: number;
  /** Tracepoints: a field of the event, by the name its format file gives. */
  field?: string;
  /** Read `type` at this offset in the memory the argument points to. */
  offset?: number;
  /** Or "struct.member": offset and type from the binary's DWARF debug info. */
  member?: string;
  /** `string`: a NUL-terminated string (at the argument, or at the offset in what it points to), cut to `size` bytes. */
  type?: 'u8' | 'u16' | 'u32' | 'u64' | 's8' | 's16' | 's32' | 's64' | 'string';
  /** Strings: bytes kept, at most 31. */
  size?: number;
}

export interface ProbeLabel {
  name: string;
  /** An arg's name or `ret`. */
  from: string;
  /** Names for raw values ("0": ok); others read `other` if given, else the value. */
  values?: Record<string, string>;
  other?: string;
  /** How a number reads: decimal (default), hex, or a device number as major:minor. */
  format?: 'decimal' | 'hex' | 'dev';
}

export interface ProbeMetric {
  name: string;
  help?: string;
  type: 'counter' | 'gauge' | 'histogram';
  /** histogram, gauge (last value seen): an arg's name, `ret`, or `duration` (entry to return, seconds). */
  value?: string;
  buckets?: number[] | 'log2';
  label?: ProbeLabel;
  /** Up to three labels: at most two from numbers and one from the string arg. */
  labels?: ProbeLabel[];
  filter?: { from: string; op: '==' | '!=' | '<' | '<=' | '>' | '>='; value: number };
}

export interface ProbeConfig {
  name: string;
  /** "/path/binary:symbol", "/path/binary:symbol+0x10" or "/path/binary:0x1139" (an address as nm prints it) */
  uprobe?: string;
  /** "/path/binary:symbol", every metric counted at the return */
  uretprobe?: string;
  /** "/path/binary:provider:name" */
  usdt?: string;
  /** "category:name" of a kernel tracepoint */
  tracepoint?: string;
  /** The probe that ends what this one starts (duration between): "provider:name" with usdt, "category:name" with tracepoint. */
  until?: string;
  /** Tracepoint pairs: the fields (one or two, present at both) that match an end to its start; by thread when absent. */
  pairBy?: string[];
  pid?: number;
  args?: Record<string, ProbeArg>;
  maxSeries?: number;
  metrics: ProbeMetric[];
}

/** A field of a map's key that becomes a label. */
export interface ObjectLabel {
  name: string;
  /** Bytes in the key; fields follow one another unless `offset` says where. */
  size: number;
  offset?: number;
  decoder: 'uint' | 'int' | 'hex' | 'string' | 'ksym' | 'inet' | 'port' | 'dev';
  /** Names for decoded values; others keep theirs. */
  values?: Record<string, string>;
}

/** One metric from a map of a user's object. */
export interface ObjectMetric {
  name: string;
  help?: string;
  type: 'counter' | 'gauge' | 'histogram';
  map: string;
  labels?: ObjectLabel[];
  /** Histograms: the key field after the labels is the bucket index. */
  /** count: buckets exported (log2: 32, linear: 20 by default); higher indexes are counted as drops. */
  bucket?: { size: 1 | 2 | 4 | 8; offset?: number; type: 'log2' | 'linear'; width?: number; count?: number; multiplier?: number };
  /** Where the u64 value is in the map value (bytes, a multiple of 8); per-CPU values are summed. */
  valueOffset?: number;
}

/** A user's own compiled BPF object, exported from its maps. */
export interface ObjectConfig {
  name: string;
  /** The .bpf.o; relative paths are from the config file's directory. */
  path: string;
  /** Programs to load and attach by their SEC() names; all when absent. */
  programs?: string[];
  maxSeries?: number;
  metrics: ObjectMetric[];
}

export interface Config {
  listen: string;
  /** A web configuration file (exporter-toolkit's format): TLS and basic auth for every endpoint; "" for none. */
  web: { configFile: string };
  collectors: {
    tcp: {
      enabled: boolean;
      /** close: one sample per connection when it closes; segments: from tcp_probe, per socket at most every rttIntervalMs. */
      rtt: 'close' | 'segments' | 'off';
      rttIntervalMs: number;
      maxSeries: number;
      maps: { sockets: number; stats: number; histograms: number; listeners: number };
    };
    process: { enabled: boolean };
    /** What each service costs the node (CPU, memory, disk, threads, run-queue wait; its cgroups' memory, limits, OOM kills, throttling), from /proc and cgroupfs. */
    resources: { enabled: boolean; maxSeries: number };
    http: {
      enabled: boolean;
      /** Distinct label sets per metric family; more fold into "_overflow". */
      maxSeries: number;
      /** Distinct routes per service; more fold into "_other". */
      maxRoutesPerService: number;
      /** Route patterns per service name: `{id}` or `*` one segment, `**` the rest. */
      routes: Record<string, string[]>;
      /** Upper bounds of the duration histograms, in seconds. */
      durationBuckets: number[];
      /** Records are delivered in batches; a lone record waits at most this long. */
      flushIntervalMs: number;
      /** Plaintext of TLS connections from uprobes on OpenSSL's SSL_read/SSL_write. */
      tls: { enabled: boolean; binaries: string[] };
      /** Processes watched: any of these matches (same keys as services[].match); all when empty. */
      watch: ServiceRule['match'][];
      /** A live stream of sampled requests at /events (off: nothing per request leaves the kernel). */
      records: boolean;
      /** The stream's sampling: 1 request in this many. The overhead budget changes it at run time; histograms are exact whatever it is. */
      sampleEvery: number;
      /** Request and response body size histograms (each triples a label set's series). */
      bodySizes: boolean;
      /** Kernel tables: tracked connections; aggregated series (more go to a per-process overflow entry). */
      maps: { connections: number; aggregation: number };
      /** Data hooks: the socket tracepoints (Linux 6.3+), the syscall tracepoints, or the cheapest present. */
      hooks: 'auto' | 'socket' | 'syscalls';
    };
  };
  services: ServiceRule[];
  /** What this agent reports on: processes whose cgroup path contains `cgroup` ("": all). */
  scope: { cgroup: string };
  /**
   * Labels saying where a process runs: container_id and systemd_unit from
   * its cgroup (`containers`), and with `kubernetes` (auto: when the API is
   * reachable) k8s_namespace_name, k8s_pod_name, k8s_container_name,
   * k8s_deployment_name. `url`: an API server to list pods from instead of
   * the in-cluster one; `tokenFile`: its bearer token; `kubelet`: ask the
   * node's kubelet (NODE_IP:10250/pods) instead of the API server.
   */
  metadata: { containers: boolean; kubernetes: 'auto' | 'off'; url: string; tokenFile: string; refreshSeconds: number; kubelet: boolean };
  probes: ProbeConfig[];
  objects: ObjectConfig[];
  security: {
    enabled: boolean;
    /** Load rules/default.yaml before the files in `rules`. */
    defaultRules: boolean;
    rules: string[];
    output: {
      stdout: boolean;
      file: string;
      /** The file is rotated past this size, keeping `keepFiles` old ones. */
      maxFileBytes: number;
      keepFiles: number;
      /** Every exec and exit too, not only alerts. */
      processEvents: boolean;
      /** POST alerts as JSON arrays; "" for none. */
      webhook: { url: string; batchSize: number; flushIntervalMs: number; maxQueue: number; maxRetries: number; backoffMs: number };
    };
  };
  bpfStats: { intervalSeconds: number; windowSeconds: number };
  /**
   * Kernel features to act as if absent, as on an older kernel: each
   * collector then takes its fallback hook or says why it cannot start.
   */
  kernel: { without: KernelFeatureName[] };
  /** A CPU budget for the agent and its BPF programs together, in % of one core; 0: none. */
  overhead: { maxCpuPercent: number; maxSampleEvery: number };
  collectIntervalSeconds: number;
  /**
   * The flight recorder: notable kernel events and a summary a second, kept
   * in a bounded journal on local disk for `kernscope recorder show
   * --last-boot` after a crash.
   */
  recorder: {
    enabled: boolean;
    path: string;
    /** All segments together. */
    maxBytes: number;
    /** Size of one segment; 0: an eighth of maxBytes (at least 64 KiB). */
    segmentBytes: number;
    /** Records a second past which the rest of the second is counted, not written (severe ones always are). */
    maxRecordsPerSecond: number;
    /** Retransmits of one connection within a second that make a burst worth a record. */
    retransmitBurst: number;
  };
}

export const DEFAULT_CONFIG: Config = {
  listen: '127.0.0.1:9527',
  web: { configFile: '' },
  collectors: {
    tcp: {
      enabled: true,
      rtt: 'close',
      rttIntervalMs: 1000,
      maxSeries: 2000,
      maps: { sockets: 65536, stats: 16384, histograms: 65536, listeners: 16384 },
    },
    process: { enabled: true },
    resources: { enabled: true, maxSeries: 2000 },
    http: {
      enabled: true,
      maxSeries: 5000,
      maxRoutesPerService: 100,
      routes: {},
      // OpenTelemetry's default for http.*.request.duration.
      durationBuckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
      flushIntervalMs: 200,
      tls: { enabled: true, binaries: [] },
      watch: [],
      records: false,
      sampleEvery: 1,
      bodySizes: true,
      maps: { connections: 16384, aggregation: 8192 },
      hooks: 'auto',
    },
  },
  services: [],
  scope: { cgroup: '' },
  metadata: { containers: false, kubernetes: 'off', url: '', tokenFile: '', refreshSeconds: 30, kubelet: false },
  probes: [],
  objects: [],
  security: { enabled: true, defaultRules: true, rules: [], output: { stdout: true, file: '', maxFileBytes: 100 * 1024 * 1024, keepFiles: 3, processEvents: false, webhook: { url: '', batchSize: 100, flushIntervalMs: 1000, maxQueue: 10000, maxRetries: 5, backoffMs: 500 } } },
  bpfStats: { intervalSeconds: 30, windowSeconds: 1 },
  kernel: { without: [] },
  overhead: { maxCpuPercent: 0, maxSampleEvery: 1024 },
  collectIntervalSeconds: 5,
  recorder: { enabled: true, path: '/var/lib/kernscope/recorder', maxBytes: 64 * 1024 * 1024, segmentBytes: 0, maxRecordsPerSecond: 2000, retransmitBurst: 5 },
};

const mapSize = { type: 'integer', minimum: 1, maximum: 4194304 };

const MATCH_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    comm: { type: 'string', minLength: 1, maxLength: 15 },
    exe: { type: 'string', minLength: 1 },
    cmdline: { type: 'string', minLength: 1, format: 'regex' },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    pid: { type: 'integer', minimum: 1 },
    cgroup: { type: 'string', minLength: 1 },
  },
} as const;

/** binary:symbol, binary:symbol+offset, or binary:0xADDRESS (as nm prints it). */
const UPROBE_PATTERN = '^/[^:]+:([A-Za-z_][\\w.@]*(\\+(0x[0-9a-fA-F]+|[0-9]+))?|0x[0-9a-fA-F]+)$';

const LABEL_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'from'],
  properties: {
    name: { type: 'string', pattern: '^[a-zA-Z_][a-zA-Z0-9_]*$' },
    from: { type: 'string' },
    values: { type: 'object', additionalProperties: { type: 'string' } },
    other: { type: 'string' },
    format: { enum: ['decimal', 'hex', 'dev'] },
  },
} as const;

export const CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    listen: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$' },
    web: { type: 'object', additionalProperties: false, properties: { configFile: { type: 'string' } } },
    collectors: {
      type: 'object',
      additionalProperties: false,
      properties: {
        tcp: {
          type: 'object',
          additionalProperties: false,
          properties: {
            enabled: { type: 'boolean' },
            rtt: { enum: ['close', 'segments', 'off'] },
            rttIntervalMs: { type: 'integer', minimum: 1, maximum: 3600000 },
            maxSeries: { type: 'integer', minimum: 1, maximum: 1000000 },
            maps: {
              type: 'object',
              additionalProperties: false,
              properties: { sockets: mapSize, stats: mapSize, histograms: mapSize, listeners: mapSize },
            },
          },
        },
        process: { type: 'object', additionalProperties: false, properties: { enabled: { type: 'boolean' } } },
        resources: { type: 'object', additionalProperties: false, properties: { enabled: { type: 'boolean' }, maxSeries: { type: 'integer', minimum: 1, maximum: 1000000 } } },
        http: {
          type: 'object',
          additionalProperties: false,
          properties: {
            enabled: { type: 'boolean' },
            maxSeries: { type: 'integer', minimum: 1, maximum: 1000000 },
            maxRoutesPerService: { type: 'integer', minimum: 1, maximum: 100000 },
            routes: {
              type: 'object',
              additionalProperties: {
                type: 'array',
                maxItems: 10000,
                items: { type: 'string', pattern: '^/[^\\s]*$', maxLength: 1024 },
              },
            },
            durationBuckets: { type: 'array', minItems: 1, maxItems: 15, uniqueItems: true, items: { type: 'number', exclusiveMinimum: 0, maximum: 1e6 } },
            flushIntervalMs: { type: 'integer', minimum: 1, maximum: 60000 },
            watch: { type: 'array', maxItems: 10000, items: MATCH_SCHEMA },
            records: { type: 'boolean' },
            sampleEvery: { type: 'integer', minimum: 1, maximum: 65535 },
            bodySizes: { type: 'boolean' },
            tls: {
              type: 'object',
              additionalProperties: false,
              properties: {
                enabled: { type: 'boolean' },
                binaries: { type: 'array', maxItems: 1000, items: { type: 'string', pattern: '^/', maxLength: 4096 } },
              },
            },
            maps: { type: 'object', additionalProperties: false, properties: { connections: mapSize, aggregation: mapSize } },
            hooks: { enum: ['auto', 'socket', 'syscalls'] },
          },
        },
      },
    },
    services: {
      type: 'array',
      maxItems: 10000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'match'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 128 },
          match: MATCH_SCHEMA,
        },
      },
    },
    scope: { type: 'object', additionalProperties: false, properties: { cgroup: { type: 'string' } } },
    metadata: {
      type: 'object',
      additionalProperties: false,
      properties: {
        containers: { type: 'boolean' },
        kubernetes: { enum: ['auto', 'off'] },
        url: { type: 'string', pattern: '^(https?://.+)?$' },
        tokenFile: { type: 'string' },
        refreshSeconds: { type: 'number', minimum: 1, maximum: 3600 },
        kubelet: { type: 'boolean' },
      },
    },
    probes: {
      type: 'array',
      maxItems: 256,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'metrics'],
        properties: {
          name: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,62}$' },
          uprobe: { type: 'string', pattern: UPROBE_PATTERN },
          uretprobe: { type: 'string', pattern: UPROBE_PATTERN },
          usdt: { type: 'string', pattern: '^/[^:]+:[\\w]+:[\\w]+$' },
          tracepoint: { type: 'string', pattern: '^[\\w]+:[\\w]+$' },
          until: { type: 'string', pattern: '^[\\w]+:[\\w]+$' },
          pairBy: { type: 'array', minItems: 1, maxItems: 2, items: { type: 'string' } },
          pid: { type: 'integer', minimum: 1 },
          maxSeries: { type: 'integer', minimum: 1, maximum: 100000 },
          args: {
            type: 'object',
            maxProperties: 4,
            propertyNames: { pattern: '^[a-z][a-z0-9_]*$', not: { enum: ['ret', 'duration'] } },
            additionalProperties: {
              type: 'object',
              additionalProperties: false,
              properties: {
                arg: { type: 'integer', minimum: 0, maximum: 4 },
                field: { type: 'string', pattern: '^\\w+$' },
                offset: { type: 'integer', minimum: 0, maximum: 65535 },
                member: { type: 'string', pattern: '^[A-Za-z_]\\w*\\.[A-Za-z_]\\w*$' },
                type: { enum: ['u8', 'u16', 'u32', 'u64', 's8', 's16', 's32', 's64', 'string'] },
                size: { type: 'integer', minimum: 1, maximum: 31 },
              },
            },
          },
          metrics: {
            type: 'array',
            minItems: 1,
            maxItems: 8,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['name', 'type'],
              properties: {
                name: { type: 'string', pattern: '^[a-zA-Z_:][a-zA-Z0-9_:]*$' },
                help: { type: 'string' },
                type: { enum: ['counter', 'gauge', 'histogram'] },
                value: { type: 'string' },
                buckets: { oneOf: [{ const: 'log2' }, { type: 'array', minItems: 1, maxItems: 32, items: { type: 'number' } }] },
                label: LABEL_SCHEMA,
                labels: { type: 'array', minItems: 1, maxItems: 3, items: LABEL_SCHEMA },
                filter: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['from', 'op', 'value'],
                  properties: { from: { type: 'string' }, op: { enum: ['==', '!=', '<', '<=', '>', '>='] }, value: { type: 'integer' } },
                },
              },
            },
          },
        },
      },
    },
    objects: {
      type: 'array',
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'path', 'metrics'],
        properties: {
          name: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,62}$' },
          path: { type: 'string', minLength: 1 },
          programs: { type: 'array', items: { type: 'string', minLength: 1 } },
          maxSeries: { type: 'integer', minimum: 1, maximum: 100000 },
          metrics: {
            type: 'array',
            minItems: 1,
            maxItems: 64,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['name', 'type', 'map'],
              properties: {
                name: { type: 'string', pattern: '^[a-zA-Z_:][a-zA-Z0-9_:]*$' },
                help: { type: 'string' },
                type: { enum: ['counter', 'gauge', 'histogram'] },
                map: { type: 'string', minLength: 1 },
                labels: {
                  type: 'array',
                  maxItems: 8,
                  items: {
                    type: 'object',
                    additionalProperties: false,
                    required: ['name', 'size', 'decoder'],
                    properties: {
                      name: { type: 'string', pattern: '^[a-zA-Z_][a-zA-Z0-9_]*$' },
                      size: { type: 'integer', minimum: 1, maximum: 256 },
                      offset: { type: 'integer', minimum: 0, maximum: 4096 },
                      decoder: { enum: ['uint', 'int', 'hex', 'string', 'ksym', 'inet', 'port', 'dev'] },
                      values: { type: 'object', additionalProperties: { type: 'string' } },
                    },
                  },
                },
                bucket: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['size', 'type'],
                  properties: {
                    size: { enum: [1, 2, 4, 8] },
                    offset: { type: 'integer', minimum: 0, maximum: 4096 },
                    type: { enum: ['log2', 'linear'] },
                    width: { type: 'number', exclusiveMinimum: 0 },
                    count: { type: 'integer', minimum: 1, maximum: 256 },
                    multiplier: { type: 'number', exclusiveMinimum: 0 },
                  },
                },
                valueOffset: { type: 'integer', minimum: 0, maximum: 4096, multipleOf: 8 },
              },
            },
          },
        },
      },
    },
    security: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        defaultRules: { type: 'boolean' },
        rules: { type: 'array', items: { type: 'string', minLength: 1 } },
        output: {
          type: 'object',
          additionalProperties: false,
          properties: {
            stdout: { type: 'boolean' },
            file: { type: 'string' },
            maxFileBytes: { type: 'integer', minimum: 1024 },
            keepFiles: { type: 'integer', minimum: 1, maximum: 100 },
            processEvents: { type: 'boolean' },
            webhook: {
              type: 'object',
              additionalProperties: false,
              properties: {
                url: { type: 'string', pattern: '^(https?://\\S+)?$' },
                batchSize: { type: 'integer', minimum: 1, maximum: 10000 },
                flushIntervalMs: { type: 'integer', minimum: 1, maximum: 600000 },
                maxQueue: { type: 'integer', minimum: 1, maximum: 1000000 },
                maxRetries: { type: 'integer', minimum: 0, maximum: 100 },
                backoffMs: { type: 'integer', minimum: 1, maximum: 600000 },
              },
            },
          },
        },
      },
    },
    bpfStats: {
      type: 'object',
      additionalProperties: false,
      properties: {
        intervalSeconds: { type: 'number', minimum: 1, maximum: 86400 },
        windowSeconds: { type: 'number', exclusiveMinimum: 0, maximum: 60 },
      },
    },
    kernel: {
      type: 'object',
      additionalProperties: false,
      properties: {
        without: { type: 'array', items: { enum: KERNEL_FEATURE_NAMES }, uniqueItems: true },
      },
    },
    overhead: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxCpuPercent: { type: 'number', minimum: 0, maximum: 800 },
        maxSampleEvery: { type: 'integer', minimum: 1, maximum: 65535 },
      },
    },
    collectIntervalSeconds: { type: 'number', minimum: 0.1, maximum: 3600 },
    recorder: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        path: { type: 'string', minLength: 1 },
        maxBytes: { type: 'integer', minimum: 262144, maximum: 1099511627776 },
        segmentBytes: { type: 'integer', minimum: 0, maximum: 1073741824 },
        maxRecordsPerSecond: { type: 'integer', minimum: 10, maximum: 1000000 },
        retransmitBurst: { type: 'integer', minimum: 1, maximum: 1000000 },
      },
    },
  },
} as const;
