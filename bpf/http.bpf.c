// SPDX-License-Identifier: GPL-2.0
/* HTTP/1.x RED metrics from socket syscalls, aggregated in the kernel.
 *
 * Sockets enter the `conns` table when accept(2) or connect(2) returns;
 * every read and write costs one small lookup and leaves unless its process
 * has a tracked connection, then one hash lookup by (tgid, fd). On a tracked
 * connection the kernel recognises where a request and its response start,
 * parses the request line and the headers it needs (method, route key,
 * Content-Length, Host) and, when the response's status line is seen, adds
 * the request to a per-CPU histogram table keyed by process, role, method,
 * status, route (or host) and port. Nothing per request leaves the kernel;
 * user space folds the tables at each scrape. Only rare shapes (pipelined
 * requests, heads the kernel cannot parse, failed connects) send a record
 * through the ring buffer, and user space counts those into the same series.
 *
 * Each hook is the exit of a syscall (classic tracepoint): the syscall's
 * arguments are still in the task's saved registers there, so one hook per
 * syscall is enough. */
#include "common.bpf.h"
#include <bpf/bpf_endian.h>
#include "http.h"

#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115
#define MSG_PEEK 2

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* Enum types in BTF, so that user space reads their values from the object. */
KS_BTF_ENUM(ks_http_role);
KS_BTF_ENUM(ks_sock_op);
KS_BTF_ENUM(ks_connect_error);
KS_BTF_STRUCT(ks_sock_err_key);
KS_BTF_ENUM(ks_http_method);
KS_BTF_ENUM(ks_http_end);
KS_BTF_ENUM(ks_http_drop_reason);
KS_BTF_ENUM(ks_http_verdict);
KS_BTF_ENUM(ks_http_name_kind);
KS_BTF_STRUCT(ks_http_event);

/* The agent's own tgid: its /metrics traffic is not the node's. */
const volatile __u32 self_tgid = 0;

/* Waking the reader costs microseconds per record; the agent is woken once
 * this many bytes wait, and drains the rest on a timer. */
const volatile __u64 wakeup_bytes = 16 * sizeof(struct ks_http_event);

/* Histogram bounds, set at load from the config: durations in ns, body
 * sizes in bytes, ascending; `*_nbounds` of them are used. */
const volatile __u64 dur_bounds[HTTP_MAX_BOUNDS] = {};
const volatile __u32 dur_nbounds = 0;
const volatile __u64 size_bounds[HTTP_MAX_BOUNDS] = {};
const volatile __u32 size_nbounds = 0;
/* A live stream of sampled requests (config collectors.http.records). */
const volatile bool sample_records = false;

/* Body sizes parsed at all (config collectors.http.bodySizes). */
const volatile bool body_sizes = true;

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

enum parse_state { PARSE_NONE = 0, PARSE_OK = 1, PARSE_BAD = 2 };

struct conn {
	__u64 sk;		/* its socket, once it points back here (conn_refs); 0: not yet. An fd's next socket is another connection */
	__u64 start_ns;
	__u64 request_bytes;
	__u64 connect_ns;	/* when a client's connect() returned */
	__u64 name;		/* route key (server) or host key (client) of the request */
	__u32 content_length;
	__u16 head_end;		/* offset past the request head's blank line; 0: not seen */
	__u16 req_len;		/* valid bytes in req_head */
	__u16 peer_port;	/* host order */
	__u16 local_port;	/* host order */
	__u8 role;
	__u8 phase;
	__u8 family;
	__u8 resp_pre_len;
	__u8 method;
	__u8 parsed;		/* enum parse_state */
	__u8 has_length;	/* the request head had a Content-Length */
	__u8 chunked;
	__u8 pipelined;		/* pipelined requests wait in user space */
	__u8 tls;		/* plaintext comes from SSL_read/SSL_write */
	__u8 reset;		/* its socket was reset: it ends at its task's next call */
	__u8 tls_wire;		/* TLS records seen on it: the SSL uprobes will want its fd */
	__u8 pad[3];
	__u64 id;		/* tells it from a later connection on the same fd */
	__u64 named;		/* the last key this connection wrote to http_names */
	__u8 peer_addr[16];
	/* A status line that arrives in pieces is gathered here (twice the
	 * room: copies have a fixed size). */
	__u8 resp_pre[HTTP_RESP_PRE * 2];
	/* Request bytes gathered across reads, HTTP_REQ_HEAD at most. Reads
	 * copy a fixed HTTP_REQ_HEAD bytes at an offset below 256, so the
	 * verifier sees every copy fit; bytes past req_len are not used. */
	__u8 req_head[HTTP_REQ_HEAD + 256];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn_key);
	__type(value, struct conn);
} conns SEC(".maps");

/* With the socket tracepoints, each tracked socket points back at its
 * connection's key, so that the socket's own state change ends the
 * connection: no hook on every close(2) of every file and pipe, nor on
 * the exits of accept(2) and connect(2). A client's is written when its
 * SYN leaves (in connect(2)); a server's is made, empty (tgid 0), when the
 * handshake makes the socket, and filled at its first read or write, where
 * the task and its fd are known. Freed with the socket. */
struct conn_ref {
	__u32 tgid;	/* 0: accepted, not yet seen by its task; REF_SEEN: seen, not tracked */
	__u32 fd;
	__u64 id;
};

#define REF_SEEN 0xffffffff

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_ref);
} conn_refs SEC(".maps");

/* The aggregation: one histogram set per series and CPU. Allocated as used:
 * a preallocated per-CPU table would cost its full size on every CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ks_http_agg_key);
	__type(value, struct ks_http_agg);
} http_agg SEC(".maps");

/* Where requests go when `http_agg` is full: per (tgid, role, status,
 * port), so counts and histograms stay exact, without method or route. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ks_http_agg_key);
	__type(value, struct ks_http_agg);
} http_agg_overflow SEC(".maps");

/* Route and host keys, with the bytes they stand for: written once per key,
 * read by user space when a key is new to it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ks_http_name);
} http_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} http_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_http_config);
} http_config SEC(".maps");

/* In-kernel filters, evaluated when a connection is accepted or connected,
 * before anything of it is read: an untracked connection costs each later
 * syscall one hash lookup. With `filter_on`, a connection is tracked when
 * its service-side port is in `watch_ports`, or its process is not judged
 * IGNORE in `tgid_verdict` (user space judges each process it sees by the
 * watch list: by pid, executable, command, cgroup). */
const volatile bool filter_on = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} watch_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tgid_verdict SEC(".maps");

/* TLS: OpenSSL's SSL_read/SSL_write, by uprobes, give the plaintext. */
const volatile bool tls_enabled = false;

struct tls_call {
	__u64 ssl;
	__u64 buf;
	__u64 count_ptr; /* size_t * of the _ex variants, else 0 */
};

/* The SSL call in progress on each thread, from entry to return. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

/* The last tracked socket each thread read or wrote: OpenSSL over a socket
 * BIO makes its syscall inside the SSL call, Node reads the socket just
 * before SSL_read; either way this is the connection of the SSL object.
 * Task storage: a plain write into the thread's own slot, where a hash
 * would cost a lookup on every read and write. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} last_fd SEC(".maps");

struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

/* SSL object -> fd, learnt once, so a write long after its read (Node
 * answering a request asynchronously) finds its connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __u32);
} ssl_fds SEC(".maps");

/* Socket errors per (tgid, op, errno); counts, summed by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ks_sock_err_key);
	__type(value, __u64);
} sock_errors SEC(".maps");

#define EAGAIN 11
#define EINTR 4
#define EBADF 9

/* Counted unless the call only has to be made again. */
static __always_inline void count_sock_error_of(__u32 tgid, __u16 op, long ret)
{
	if (ret == -EAGAIN || ret == -EINTR || ret == -EINPROGRESS || ret >= 0 || ret < -4095)
		return;
	struct ks_sock_err_key k = { .tgid = tgid, .op = op, .err = -ret };
	if (k.tgid == self_tgid)
		return;
	__u64 *v = bpf_map_lookup_elem(&sock_errors, &k);
	if (v) {
		(*v)++;
		return;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&sock_errors, &k, &one, BPF_NOEXIST))
		count_drop(HTTP_DROP_SOCK_ERRORS_FULL);
}

static __always_inline void count_sock_error(__u16 op, long ret)
{
	count_sock_error_of(bpf_get_current_pid_tgid() >> 32, op, ret);
}

static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

static __always_inline struct conn *lookup(__u32 fd, struct conn_key *k)
{
	k->tgid = bpf_get_current_pid_tgid() >> 32;
	k->fd = fd;
	return bpf_map_lookup_elem(&conns, k);
}


#define B4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)
#define B8(a, b, c, d, e, f, g, h) ((__u64)B4(a, b, c, d) | (__u64)B4(e, f, g, h) << 32)

/* A request line starts with a method; checked on 4 bytes here, wholly by
 * method_of() when the request is parsed. */
static __always_inline bool is_request(__u64 v)
{
	__u32 w = (__u32)v;
	return w == B4('G', 'E', 'T', ' ') || w == B4('P', 'O', 'S', 'T') ||
	       w == B4('P', 'U', 'T', ' ') || w == B4('D', 'E', 'L', 'E') ||
	       w == B4('H', 'E', 'A', 'D') || w == B4('P', 'A', 'T', 'C') ||
	       w == B4('O', 'P', 'T', 'I') || w == B4('C', 'O', 'N', 'N') ||
	       w == B4('T', 'R', 'A', 'C');
}

/* The method of a request's first 8 bytes and the length of its token;
 * OTHER when they are not a known method followed by a space. */
static __always_inline __u8 method_of(__u64 v, __u32 *len)
{
	__u32 w = (__u32)v;
	__u64 m5 = v & 0xffffffffffULL, m6 = v & 0xffffffffffffULL, m7 = v & 0xffffffffffffffULL;
	__u64 m8 = v;
	if (w == B4('G', 'E', 'T', ' ')) { *len = 3; return HTTP_METHOD_GET; }
	if (w == B4('P', 'U', 'T', ' ')) { *len = 3; return HTTP_METHOD_PUT; }
	if (m5 == (B8('P', 'O', 'S', 'T', ' ', 0, 0, 0))) { *len = 4; return HTTP_METHOD_POST; }
	if (m5 == (B8('H', 'E', 'A', 'D', ' ', 0, 0, 0))) { *len = 4; return HTTP_METHOD_HEAD; }
	if (m6 == (B8('P', 'A', 'T', 'C', 'H', ' ', 0, 0))) { *len = 5; return HTTP_METHOD_PATCH; }
	if (m6 == (B8('T', 'R', 'A', 'C', 'E', ' ', 0, 0))) { *len = 5; return HTTP_METHOD_TRACE; }
	if (m7 == (B8('D', 'E', 'L', 'E', 'T', 'E', ' ', 0))) { *len = 6; return HTTP_METHOD_DELETE; }
	if (m8 == B8('O', 'P', 'T', 'I', 'O', 'N', 'S', ' ')) { *len = 7; return HTTP_METHOD_OPTIONS; }
	if (m8 == B8('C', 'O', 'N', 'N', 'E', 'C', 'T', ' ')) { *len = 7; return HTTP_METHOD_CONNECT; }
	return HTTP_METHOD_OTHER;
}

/* 'HTTP/1.' at the start of 8 bytes. */
static __always_inline bool is_status_line(__u64 v)
{
	return (__u32)v == B4('H', 'T', 'T', 'P') && ((v >> 32) & 0xffffff) == ('/' | '1' << 8 | '.' << 16);
}

/* The status code of "HTTP/1.x NNN" (12 bytes at p), 0 if not one. */
static __always_inline __u16 status_of(const __u8 *p)
{
	__u64 v = *(const __u64 *)p;
	if (!is_status_line(v) || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
		return 0;
	__u8 a = p[9] - '0', b = p[10] - '0', c = p[11] - '0';
	if (a < 1 || a > 5 || b > 9 || c > 9)
		return 0;
	return a * 100 + b * 10 + c;
}

/* ---- Parsing: route keys and headers ----------------------------------
 * Route keys follow src/collectors/http/route.ts exactly (a test over a
 * corpus of paths holds the two together): the key is the FNV-1a hash of
 * the path's template, each id-like segment replaced by '*'. A segment is
 * an id when it is a number, a UUID, a hex string of 8 or more with a
 * digit, a token of 16 or more mixing letters and digits, or longer than
 * 64. A segment with a '%' escape is never collapsed here: its raw bytes
 * are hashed, and user space decodes and templates the path it is given, so
 * one key never stands for two templates. */

#define FNV_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static __always_inline __u64 fnv(__u64 h, __u8 c)
{
	return (h ^ c) * FNV_PRIME;
}

/* Byte classes, one table lookup per byte so that the walk over a path
 * has a single branch per byte (the verifier walks every iteration). */
#define C_DIGIT 0x001
#define C_ALPHA 0x002
#define C_HEX 0x004
#define C_DASH 0x008
#define C_SIGN 0x010		/* + or - */
#define C_SEP 0x020		/* . or , */
#define C_PCT 0x040
#define C_X 0x080		/* x or X */
#define C_ZERO 0x100
#define C_STAR 0x200
#define C_STOP 0x400		/* ends a segment: '/', ' ', '?', '#', or no target byte */

#define R10(f, b) f(b), f(b + 1), f(b + 2), f(b + 3), f(b + 4), f(b + 5), f(b + 6), f(b + 7), f(b + 8), f(b + 9)
#define CLS(c)                                                                              \
	(((c) < 0x21 || (c) > 0x7e || (c) == '/' || (c) == '?' || (c) == '#' ? C_STOP : 0) | \
	 ((c) >= '0' && (c) <= '9' ? C_DIGIT | C_HEX : 0) |                                    \
	 (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') ? C_ALPHA : 0) |            \
	 (((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F') ? C_HEX : 0) |              \
	 ((c) == '-' ? C_DASH | C_SIGN : 0) | ((c) == '+' ? C_SIGN : 0) |                       \
	 ((c) == '.' || (c) == ',' ? C_SEP : 0) | ((c) == '%' ? C_PCT : 0) |                    \
	 ((c) == 'x' || (c) == 'X' ? C_X : 0) | ((c) == '0' ? C_ZERO : 0) | ((c) == '*' ? C_STAR : 0))

static const __u16 ctab[256] = {
	R10(CLS, 0), R10(CLS, 10), R10(CLS, 20), R10(CLS, 30), R10(CLS, 40), R10(CLS, 50),
	R10(CLS, 60), R10(CLS, 70), R10(CLS, 80), R10(CLS, 90), R10(CLS, 100), R10(CLS, 110),
	R10(CLS, 120), R10(CLS, 130), R10(CLS, 140), R10(CLS, 150), R10(CLS, 160), R10(CLS, 170),
	R10(CLS, 180), R10(CLS, 190), R10(CLS, 200), R10(CLS, 210), R10(CLS, 220), R10(CLS, 230),
	R10(CLS, 240), CLS(250), CLS(251), CLS(252), CLS(253), CLS(254), CLS(255),
};

/* Counts of a segment's byte classes, one byte each in one word: a byte
 * adds its class's increments from a table in a single step (a segment is
 * at most HTTP_NAME_MAX bytes, so no count overflows its byte). */
#define K_DIGIT 0
#define K_HEX 8
#define K_SIGN 16
#define K_SEP 24
#define K_ALPHA 32
#define K_PCT 40
#define K_STAR 48
#define KCOUNT(w, k) ((__u32)((w) >> (k)) & 0xff)
#define CNT(c)                                                                  \
	((CLS(c) & C_DIGIT ? 1ULL << K_DIGIT : 0) | (CLS(c) & C_HEX ? 1ULL << K_HEX : 0) | \
	 (CLS(c) & C_SIGN ? 1ULL << K_SIGN : 0) | (CLS(c) & C_SEP ? 1ULL << K_SEP : 0) |   \
	 (CLS(c) & C_ALPHA ? 1ULL << K_ALPHA : 0) | (CLS(c) & C_PCT ? 1ULL << K_PCT : 0) | \
	 (CLS(c) & C_STAR ? 1ULL << K_STAR : 0))

static const __u64 cinc[256] = {
	R10(CNT, 0), R10(CNT, 10), R10(CNT, 20), R10(CNT, 30), R10(CNT, 40), R10(CNT, 50),
	R10(CNT, 60), R10(CNT, 70), R10(CNT, 80), R10(CNT, 90), R10(CNT, 100), R10(CNT, 110),
	R10(CNT, 120), R10(CNT, 130), R10(CNT, 140), R10(CNT, 150), R10(CNT, 160), R10(CNT, 170),
	R10(CNT, 180), R10(CNT, 190), R10(CNT, 200), R10(CNT, 210), R10(CNT, 220), R10(CNT, 230),
	R10(CNT, 240), CNT(250), CNT(251), CNT(252), CNT(253), CNT(254), CNT(255),
};

/* Classes whose places in a segment matter (below 64): a byte of one
 * takes the slower step. */
#define C_PLACED (C_DASH | C_SIGN | C_SEP | C_X | C_ZERO)

/* One segment's bytes: counts of classes, and where (below 64) dashes,
 * signs, separators, an x and a zero stood. */
struct seg {
	__u64 h;		/* the path's hash with this segment's raw bytes */
	__u64 h0;		/* the path's hash before this segment */
	__u64 counts;		/* K_* bytes */
	__u64 dash_at, sign_at, sep_at, x_at, zero_at;
	__u32 len;
};

static __always_inline void seg_start(struct seg *s, __u64 h)
{
	__builtin_memset(s, 0, sizeof(*s));
	s->h = h;
	s->h0 = h;
}

static __always_inline void seg_byte(struct seg *s, __u8 c, __u32 cls)
{
	__u32 len = s->len;
	s->h = fnv(s->h, c);
	s->len = len + 1;
	s->counts += cinc[c];
	if (cls & C_PLACED) {
		__u64 at = 1ULL << (len & 63);
		s->dash_at |= at & -(__u64)((cls & C_DASH) >> 3);
		s->sign_at |= at & -(__u64)((cls & C_SIGN) >> 4);
		s->sep_at |= at & -(__u64)((cls & C_SEP) >> 5);
		s->x_at |= at & -(__u64)((cls & C_X) >> 7);
		s->zero_at |= at & -(__u64)((cls & C_ZERO) >> 8);
	}
}

#define UUID_DASHES ((1ULL << 8) | (1ULL << 13) | (1ULL << 18) | (1ULL << 23))

static __always_inline bool seg_is_id(const struct seg *sg)
{
	struct {
		__u64 dash_at, sign_at, sep_at, x_at, zero_at;
		__u32 len, digits, hexes, signs, seps, alpha, pct, stars;
	} v = {
		.dash_at = sg->dash_at, .sign_at = sg->sign_at, .sep_at = sg->sep_at,
		.x_at = sg->x_at, .zero_at = sg->zero_at, .len = sg->len,
		.digits = KCOUNT(sg->counts, K_DIGIT), .hexes = KCOUNT(sg->counts, K_HEX),
		.signs = KCOUNT(sg->counts, K_SIGN), .seps = KCOUNT(sg->counts, K_SEP),
		.alpha = KCOUNT(sg->counts, K_ALPHA), .pct = KCOUNT(sg->counts, K_PCT),
		.stars = KCOUNT(sg->counts, K_STAR),
	};
	typeof(v) *s = &v;
	__u32 n = s->len;
	if (n == 1 && s->stars)
		return true;
	if (s->pct || n == 0)
		return false;
	if (n > 64)
		return true;
	/* [+-]?\d+([.,]\d+)? */
	if (s->digits && s->digits + s->signs + s->seps == n && s->signs <= 1 && s->seps <= 1 &&
	    (!s->signs || s->sign_at == 1) && (s->sep_at & (1 | (1ULL << (n - 1)) | (s->sign_at << 1))) == 0)
		return true;
	/* 8-4-4-4-12 hex */
	if (n == 36 && s->dash_at == UUID_DASHES && s->hexes == 32)
		return true;
	/* (0x)?[0-9a-f]{8,} with a digit */
	if (s->digits && ((s->hexes == n && n >= 8) ||
			  (n >= 10 && s->zero_at & 1 && s->x_at == 2 && s->hexes == n - 1)))
		return true;
	/* A long token of letters and digits. */
	return n >= 16 && s->digits && s->alpha;
}

/* The path's hash once segment `s` ends: its raw bytes, or '*'. */
static __always_inline __u64 seg_end(const struct seg *s, bool complete)
{
	if (!complete || seg_is_id(s))
		return fnv(s->h0, '*');
	return s->h;
}

/* `v & mask`, kept where the compiler would prove the mask useless: the
 * verifier needs to see it to bound the access. */
static __always_inline __u32 masked(__u32 v, const __u32 mask)
{
	asm volatile("%0 &= %1" : "+r"(v) : "i"(mask));
	return v;
}

struct headers {
	__u32 head_end;		/* 0: not within the bytes */
	__u32 content_length;
	__u32 host_off;
	__u32 host_len;
	__u64 host;		/* hash of the Host value, lower case, without port */
	__u8 has_length;
	__u8 chunked;
	__u8 pad[6];
};

enum hdr_state { HDR_SKIP, HDR_LENGTH, HDR_HOST, HDR_HOST_DONE };

/* Per-CPU room for the parsers: the bytes they walk (a request head copied
 * from its connection, or a response head from the user's buffer) and the
 * walk's state. The walks are bpf_loop steps whose state lives here, in a
 * map value, where the verifier tracks no exact values: each step is
 * verified once, whatever the bytes, instead of once per byte and path. */
struct scratch {
	__u8 buf[512];		/* 512 of room: word reads near byte 256 stay inside */
	struct ks_http_name name;
	struct seg s;
	__u64 h;
	__u32 i, end, segs;
	__u8 ended, query, capped, bad;
	/* header walk */
	__u32 hi, hn, state;
	__u8 want_host, bracket, length_only;
	__u64 cl, hh;
	struct headers hd;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline struct scratch *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

struct walk_ctx {
	struct scratch *w;
};

static long path_step(__u32 idx, struct walk_ctx *ctx)
{
	struct scratch *w = ctx->w;
	if (!w)
		return 1;
	__u32 i = w->i;
	if (i >= w->end)
		return 1;
	__u8 c = w->buf[masked(i, 0x1ff)];
	__u32 cls = ctab[c];
	w->i = i + 1;
	if (!(cls & C_STOP)) {
		seg_byte(&w->s, c, cls);
		return 0;
	}
	if (c == ' ' || c == '?' || c == '#') {
		w->ended = 1;
		w->query = c != ' ';
		w->i = i;
		return 1;
	}
	if (c != '/') {
		w->bad = 1;
		return 1;
	}
	if (w->capped)
		return 0;
	w->h = seg_end(&w->s, true);
	if (w->segs >= HTTP_MAX_SEGMENTS) {
		w->h = fnv(fnv(fnv(w->h, '/'), '*'), '*');
		w->capped = 1;
		return 0;
	}
	w->segs++;
	seg_start(&w->s, fnv(w->h, '/'));
	return 0;
}

struct path_out {
	__u64 name;
	__u32 path_len;
	__u32 line_end;		/* where the request line's bytes were left */
	__u8 complete;
};

/* The path of the request line in w->buf, from `off` (its '/') within n
 * valid bytes: its route key. Returns false for a byte no target has. */
static __always_inline bool scan_path(struct scratch *w, __u32 off, __u32 n, struct path_out *out)
{
	struct walk_ctx ctx = { .w = w };
	w->end = off + HTTP_NAME_MAX < n ? off + HTTP_NAME_MAX : n; /* the name keeps as many */
	w->i = off + 1;
	w->segs = 1;
	w->ended = w->query = w->capped = w->bad = 0;
	w->h = fnv(FNV_BASIS, '/');
	seg_start(&w->s, w->h);
	bpf_loop(HTTP_NAME_MAX, path_step, &ctx, 0);
	if (w->bad)
		return false;
	__u32 i = w->i;
	__u64 h = w->h;
	out->path_len = i - off;
	if (!w->capped)
		h = seg_end(&w->s, w->ended);
	out->complete = w->ended || w->capped;
	/* The version after the target, when within the bytes (after a query
	 * it is not looked for: the header walk finds the line's end). */
	if (w->ended && !w->query && i + 10 <= n && i < HTTP_REQ_HEAD) {
		__u64 v = *(const __u64 *)(w->buf + masked(i + 1, 0xff));
		if (v != B8('H', 'T', 'T', 'P', '/', '1', '.', '1') && v != B8('H', 'T', 'T', 'P', '/', '1', '.', '0'))
			return false;
		if (w->buf[masked(i + 9, 0x1ff)] != '\r')
			return false;
	}
	out->line_end = i;
	out->name = h | 1; /* never 0 */
	return true;
}

#define LOWER8 0x2020202020202020ULL

/* A line's start at i + 1 (buf[i] is its '\n'): the head's end, or a field
 * name compared a word at a time; only Content-Length, Transfer-Encoding
 * and (for a client's request) Host are read. */
static __always_inline long line_start(struct scratch *w, __u32 i)
{
	w->state = HDR_SKIP;
	w->hi = i + 1;
	if (i + 1 >= w->hn)
		return 1;
	__u32 q = masked(i + 1, 0xff);
	if (w->buf[q] == '\r') {
		if (i + 2 < w->hn && w->buf[masked(i + 2, 0x1ff)] == '\n')
			w->hd.head_end = i + 3;
		return 1;
	}
	__u64 w0 = *(const __u64 *)(w->buf + q) | LOWER8;
	__u64 w1 = *(const __u64 *)(w->buf + q + 8) | LOWER8;
	if (w0 == B8('c', 'o', 'n', 't', 'e', 'n', 't', '-') &&
	    (w1 & 0xffffffffffffffULL) == B8('l', 'e', 'n', 'g', 't', 'h', ':', 0)) {
		w->state = HDR_LENGTH;
		w->hd.has_length = 1;
		w->cl = 0;
		w->hi = i + 16;
	} else if (w0 == B8('t', 'r', 'a', 'n', 's', 'f', 'e', 'r') &&
		   w1 == B8('-', 'e', 'n', 'c', 'o', 'd', 'i', 'n')) {
		w->hd.chunked = 1;
	} else if (w->want_host && (w0 & 0xffffffffffULL) == B8('h', 'o', 's', 't', ':', 0, 0, 0)) {
		w->state = HDR_HOST;
		w->hi = i + 6;
	}
	return 0;
}

#define ONES8 0x0101010101010101ULL
#define HIGH8 0x8080808080808080ULL

/* One step of the header walk. Between the fields it reads, the walk looks
 * for line ends only, a word at a time: a word without '\n' is skipped
 * whole, and in one with it the first '\n' is found without a byte loop
 * (the lowest flagged byte of the zero-byte test is always a true match;
 * the multiply turns its bit into its index). */
static long hdr_step(__u32 idx, struct walk_ctx *ctx)
{
	struct scratch *w = ctx->w;
	if (!w)
		return 1;
	__u32 i = w->hi;
	if (i >= w->hn || i >= 256)
		return 1;
	if (w->state != HDR_LENGTH && w->state != HDR_HOST) {
		if (i + 8 <= w->hn) {
			__u64 x = *(const __u64 *)(w->buf + masked(i, 0xff)) ^ (ONES8 * '\n');
			__u64 m = (x - ONES8) & ~x & HIGH8;
			if (!m) {
				w->hi = i + 8;
				return 0;
			}
			i += (((m & -m) >> 7) * 0x0001020304050607ULL) >> 56;
		} else if (w->buf[masked(i, 0xff)] != '\n') {
			w->hi = i + 1;
			return 0;
		}
		return line_start(w, i);
	}
	__u8 c = w->buf[masked(i, 0xff)];
	w->hi = i + 1;
	if (c == '\n')
		return line_start(w, i);
	if (w->state == HDR_LENGTH) {
		if ((__u8)(c - '0') < 10) {
			if (w->cl < 0xffffffffULL)
				w->cl = w->cl * 10 + (c - '0');
		} else if (c != ' ' && c != '\t') {
			w->state = HDR_SKIP;
			/* A response needs nothing past its length. */
			if (w->length_only)
				return 1;
		}
	} else {
		__u32 len = w->hd.host_len;
		if (c == ' ' || c == '\t') {
			if (len)
				w->state = HDR_HOST_DONE;
		} else if ((c == ':' && len && !w->bracket) || c == '\r') {
			w->state = HDR_HOST_DONE; /* the port, or the line's end */
		} else {
			if (!len) {
				w->hd.host_off = i;
				w->bracket = c == '[';
			}
			w->hd.host_len = len + 1;
			w->hh = fnv(w->hh, c | ((__u8)(c - 'A') < 26 ? 0x20 : 0));
			if (c == ']')
				w->state = HDR_HOST_DONE;
		}
	}
	return 0;
}

/* Header fields of the head in w->buf (n valid bytes) from `from`, inside
 * its start line. */
static __always_inline void scan_headers(struct scratch *w, __u32 from, __u32 n, bool want_host,
					 bool length_only, struct headers *out)
{
	struct walk_ctx ctx = { .w = w };
	__builtin_memset(&w->hd, 0, sizeof(w->hd));
	w->hi = from;
	w->hn = n > 256 ? 256 : n;
	w->state = HDR_SKIP;
	w->want_host = want_host;
	w->length_only = length_only;
	w->bracket = 0;
	w->cl = 0;
	w->hh = FNV_BASIS;
	bpf_loop(256, hdr_step, &ctx, 0);
	*out = w->hd;
	out->content_length = w->cl > 0xffffffffULL ? 0xffffffff : w->cl;
	if (out->host_len)
		out->host = w->hh | 1;
}

/* Keeps what a key stands for, once: a lookup when it is known. */
static __always_inline void remember_name(__u64 key, __u8 kind, const __u8 *src, __u32 len, bool complete)
{
	if (bpf_map_lookup_elem(&http_names, &key))
		return;
	struct scratch *s = scratch();
	if (!s)
		return;
	s->name.kind = kind;
	s->name.complete = complete;
	s->name.len = len > HTTP_NAME_MAX ? HTTP_NAME_MAX : len;
	bpf_probe_read_kernel(s->name.bytes, HTTP_NAME_MAX, src);
	if (bpf_map_update_elem(&http_names, &key, &s->name, BPF_NOEXIST) == -7 /* E2BIG */)
		count_drop(HTTP_DROP_NAMES_FULL);
}

/* Parses the request gathered in c->req_head, or already in the scratch
 * buffer (`w`, a fresh request read whole): its method and route (or, for a
 * client, its Host), and what frames its body. */
static __always_inline void parse_request(struct conn *c, bool final, struct scratch *w)
{
	__u32 n = c->req_len > HTTP_REQ_HEAD ? HTTP_REQ_HEAD : c->req_len, mlen = 0;
	struct path_out rp = {};
	struct headers hd;
	c->parsed = PARSE_BAD;
	if (n < 8)
		return;
	const __u8 *src = w ? w->buf : c->req_head;
	__u8 method = method_of(*(__u64 *)src, &mlen);
	if (method == HTTP_METHOD_OTHER)
		return;
	/* An absolute or '*' target, CONNECT, a control byte or another
	 * version: left to user space. */
	if (method == HTTP_METHOD_CONNECT || src[(mlen + 1) & 0xf] != '/')
		return;
	if (!w) {
		w = scratch();
		if (!w)
			return;
		__builtin_memcpy(w->buf, c->req_head, HTTP_REQ_HEAD);
	}
	if (!scan_path(w, mlen + 1, n, &rp))
		return;
	bool client = c->role == HTTP_ROLE_CLIENT;
	scan_headers(w, rp.line_end, n, client, false, &hd);
	if (!final && !hd.head_end && n < HTTP_REQ_HEAD) {
		c->parsed = PARSE_NONE; /* a head in pieces: parsed whole later */
		return;
	}
	c->method = method;
	c->head_end = hd.head_end;
	c->content_length = hd.content_length;
	c->has_length = hd.has_length;
	c->chunked = hd.chunked;
	c->parsed = PARSE_OK;
	/* A keep-alive connection asking for the same route again (or the
	 * same host) skips the names table. */
	if (client) {
		c->name = hd.host;
		if (hd.host && c->named != hd.host)
			remember_name(hd.host, HTTP_NAME_HOST, w->buf + (hd.host_off & 0xff), hd.host_len, true);
	} else {
		c->name = rp.name;
		if (c->named != rp.name)
			remember_name(rp.name, HTTP_NAME_ROUTE, w->buf + ((mlen + 1) & 0xf), rp.path_len, rp.complete);
	}
	c->named = c->name;
}

/* ---- Aggregation ------------------------------------------------------- */

static const struct ks_http_agg zero_agg;

static __always_inline __u32 bucket_of(const volatile __u64 *bounds, __u32 n, __u64 v)
{
	__u32 i;
	for (i = 0; i < HTTP_MAX_BOUNDS; i++)
		if (i >= n || v <= bounds[i])
			break;
	return i;
}

static __always_inline void hist_add(struct ks_http_hist *h, __u32 bucket, __u64 v)
{
	h->count++;
	h->sum += v;
	h->buckets[bucket & (HTTP_BUCKETS - 1)]++;
}

/* One request into its series; a full table sends it to the overflow entry
 * of its (process, role, status, port), so nothing is lost uncounted. */
static __always_inline void aggregate(struct conn *c, const struct conn_key *k, __u16 status, __u64 duration,
				      __s64 req_body, __s64 resp_body)
{
	struct ks_http_agg_key ak = {
		.tgid = k->tgid,
		.role = c->role,
		.method = c->method,
		.status = status,
		.port = c->role == HTTP_ROLE_SERVER ? c->local_port : c->peer_port,
		.name = c->name,
	};
	if (c->role == HTTP_ROLE_CLIENT) {
		ak.family = c->family;
		__builtin_memcpy(ak.addr, c->peer_addr, sizeof(ak.addr));
	}
	struct ks_http_agg *a = lookup_or_init(&http_agg, &ak, &zero_agg);
	if (!a) {
		count_drop(HTTP_DROP_AGG_FULL);
		ak.method = 0;
		ak.name = 0;
		ak.family = 0;
		ak.overflow = 1;
		__builtin_memset(ak.addr, 0, sizeof(ak.addr));
		a = lookup_or_init(&http_agg_overflow, &ak, &zero_agg);
		if (!a) {
			count_drop(HTTP_DROP_OVERFLOW_FULL);
			return;
		}
	}
	hist_add(&a->duration, bucket_of(dur_bounds, dur_nbounds, duration), duration);
	if (req_body >= 0)
		hist_add(&a->req_body, bucket_of(size_bounds, size_nbounds, req_body), req_body);
	if (resp_body >= 0)
		hist_add(&a->resp_body, bucket_of(size_bounds, size_nbounds, resp_body), resp_body);
}

/* The request's body size: its Content-Length, else what followed its head
 * (never known for a chunked body); -1 when unknown. */
static __always_inline __s64 request_body(const struct conn *c)
{
	if (!body_sizes)
		return -1;
	if (c->has_length)
		return c->content_length;
	if (c->chunked || !c->head_end || c->pipelined)
		return c->pipelined ? 0 : -1;
	return c->request_bytes > c->head_end ? c->request_bytes - c->head_end : 0;
}

/* ---- Records: the slow path -------------------------------------------- */

/* A record, or NULL with the loss counted. */
static __always_inline struct ks_http_event *reserve(void)
{
	struct ks_http_event *e = bpf_ringbuf_reserve(&http_events, sizeof(*e), 0);
	if (!e)
		count_drop(HTTP_DROP_RINGBUF_FULL);
	return e;
}

static __always_inline void submit(struct ks_http_event *e)
{
	__u64 waiting = bpf_ringbuf_query(&http_events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, waiting >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void fill(struct ks_http_event *e, const struct conn *c, const struct conn_key *k, __u8 end)
{
	e->duration_ns = c->start_ns ? bpf_ktime_get_ns() - c->start_ns : 0;
	e->request_bytes = c->request_bytes;
	e->response_bytes = 0;
	e->tgid = k->tgid;
	e->fd = k->fd;
	e->role = c->role;
	e->end = end;
	e->family = c->family;
	e->error = 0;
	e->peer_port = c->peer_port;
	e->local_port = c->local_port;
	e->weight = 1;
	e->req_len = 0;
	e->resp_len = 0;
	__builtin_memcpy(e->peer_addr, c->peer_addr, sizeof(e->peer_addr));
	/* A connection ended by a reset runs in whatever task was current. */
	if ((bpf_get_current_pid_tgid() >> 32) == k->tgid)
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	else
		__builtin_memset(e->comm, 0, sizeof(e->comm));
}

/* A request the kernel could not parse, or a response to a pipelined one:
 * both heads go to user space, which parses and counts them. */
static __always_inline void emit(struct conn *c, const struct conn_key *k, __u8 end, const void *resp,
				 bool resp_in_kernel, long resp_len)
{
	struct ks_http_event *e = reserve();
	if (!e)
		return;
	fill(e, c, k, end);
	e->response_bytes = resp_len > 0 ? resp_len : 0;
	if (end != HTTP_END_EXTRA) {
		e->req_len = c->req_len > HTTP_REQ_HEAD ? HTTP_REQ_HEAD : c->req_len;
		__builtin_memcpy(e->req_head, c->req_head, HTTP_REQ_HEAD);
	}
	if (resp_in_kernel) {
		__builtin_memcpy(e->resp_head, c->resp_pre, HTTP_RESP_PRE);
		e->resp_len = c->resp_pre_len < HTTP_RESP_PRE ? c->resp_pre_len : HTTP_RESP_PRE;
	} else if (resp && resp_len > 0) {
		/* Fixed-size copy; bytes past resp_len are not used. */
		if (!bpf_probe_read_user(e->resp_head, HTTP_RESP_HEAD, resp) ||
		    !bpf_probe_read_user(e->resp_head, HTTP_STATUS_MIN, resp))
			e->resp_len = resp_len > HTTP_RESP_HEAD ? HTTP_RESP_HEAD : resp_len;
	}
	submit(e);
}

/* A read (or write) holding several requests: their heads, from the
 * buffer itself, so that user space can name each later response. */
static __always_inline void emit_pipeline(struct conn *c, const struct conn_key *k, const void *buf, long len)
{
	struct ks_http_event *e = reserve();
	if (!e)
		return;
	fill(e, c, k, HTTP_END_PIPELINE);
	if (!bpf_probe_read_user(e->req_head, HTTP_PIPE_HEAD, buf))
		e->req_len = len > HTTP_PIPE_HEAD ? HTTP_PIPE_HEAD : len;
	else if (!bpf_probe_read_user(e->req_head, HTTP_REQ_HEAD, buf))
		e->req_len = len > HTTP_REQ_HEAD ? HTTP_REQ_HEAD : len;
	submit(e);
	c->pipelined = 1;
}

/* ---- The request's side ------------------------------------------------ */

/* Appends what fits of the call's bytes (`got` of them copied to `w`) to
 * the request head. The copy has a fixed size (a variable one the verifier
 * cannot always bound); bytes past req_len are not used. */
static __always_inline void append_request(struct conn *c, const struct scratch *w, __u32 got)
{
	__u32 off = c->req_len & 0xff;
	if (off >= HTTP_REQ_HEAD || c->req_len >= HTTP_REQ_HEAD || !got)
		return;
	if (bpf_probe_read_kernel(c->req_head + off, HTTP_REQ_HEAD, w->buf))
		return;
	__u32 room = HTTP_REQ_HEAD - off;
	c->req_len = off + (got < room ? got : room);
}

static __always_inline void set_last_fd(__u32 fd)
{
	__u32 *last = bpf_task_storage_get(&last_fd, bpf_get_current_task_btf(), NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (last)
		*last = fd;
}

static __always_inline void start_request(struct conn *c)
{
	c->start_ns = bpf_ktime_get_ns();
	c->request_bytes = 0;
	c->req_len = 0;
	c->resp_pre_len = 0;
	c->parsed = PARSE_NONE;
	c->method = 0;
	c->name = 0;
	c->head_end = 0;
	c->has_length = 0;
	c->chunked = 0;
}

/* Data on the request's side: a server reads it, a client writes it; the
 * call's first `got` bytes are in w->buf. A request may arrive in pieces as
 * small as a byte: fewer than 8 bytes in an idle connection are kept until
 * there are enough to see a method. The request is parsed as soon as its
 * head is whole, or at its response. A request read whole is parsed where
 * it was copied, and kept in the connection only when something later may
 * need its bytes (a head in pieces, one the kernel leaves to user space, the
 * live stream). */
static __always_inline void request_data(struct conn *c, const struct conn_key *k, __u64 head,
					 struct scratch *w, __u32 got, const void *buf, long first, long len)
{
	if (c->phase == HTTP_OPAQUE)
		return;
	bool fresh = false;
	if (c->phase == HTTP_IDLE) {
		/* A TLS handshake or record (content type 22 or 23, version 3.x). */
		if (tls_enabled && got >= 2 && (w->buf[0] == 0x16 || w->buf[0] == 0x17) && w->buf[1] == 0x03) {
			c->tls_wire = 1;
			set_last_fd(k->fd);
			return;
		}
		if (got >= 8 && !is_request(head))
			return;
		start_request(c);
		c->phase = got >= 8 ? HTTP_REQUEST : HTTP_PARTIAL;
		fresh = true;
	}
	c->request_bytes += len;
	if (c->parsed != PARSE_NONE)
		return; /* body bytes */
	if (fresh && c->phase == HTTP_REQUEST) {
		c->req_len = got < HTTP_REQ_HEAD ? got : HTTP_REQ_HEAD;
		parse_request(c, c->req_len >= HTTP_REQ_HEAD, w);
		if (c->parsed != PARSE_OK || sample_records) {
			c->req_len = 0;
			append_request(c, w, got);
		}
	} else {
		append_request(c, w, got);
		if (c->phase == HTTP_PARTIAL) {
			if (c->req_len < 8)
				return;
			c->phase = is_request(*(__u64 *)c->req_head) ? HTTP_REQUEST : HTTP_IDLE;
			if (c->phase == HTTP_IDLE)
				return;
		}
		/* A head in pieces waits for its response, or for the room to fill. */
		if (!fresh && c->req_len < HTTP_REQ_HEAD)
			return;
		parse_request(c, c->req_len >= HTTP_REQ_HEAD, NULL);
	}
	if (c->parsed == PARSE_OK && c->head_end && !c->chunked &&
	    c->request_bytes > (__u64)c->head_end + c->content_length && buf && fresh)
		emit_pipeline(c, k, buf, first);
}

/* ---- The response's side ----------------------------------------------- */

/* The end of a request: into the tables, or to user space when the kernel
 * could not parse it. `p` holds n bytes of the response's start (NULL if
 * they came in pieces), `total` its first write. */
static __always_inline void end_request(struct conn *c, const struct conn_key *k, __u16 status,
					struct scratch *w, __u32 n, long total, const void *ubuf)
{
	__s64 resp_body = -1;
	/* The response's head first: parsing the request reuses the room. */
	if (body_sizes && w && status != 101) {
		struct headers hd;
		scan_headers(w, 12, n, false, true, &hd);
		if (hd.has_length)
			resp_body = hd.content_length;
		else if (!hd.chunked && hd.head_end)
			resp_body = total > hd.head_end ? total - hd.head_end : 0;
	}
	if (c->parsed == PARSE_NONE)
		parse_request(c, true, NULL);
	if (c->parsed != PARSE_OK) {
		emit(c, k, HTTP_END_RESPONSE, ubuf, !ubuf, total);
		return;
	}
	aggregate(c, k, status, bpf_ktime_get_ns() - c->start_ns, request_body(c), resp_body);
	if (sample_records) {
		/* 1 in sample_every, at random; the copy is not counted again. */
		__u32 zero = 0, every = 1;
		struct ks_http_config *cfg = bpf_map_lookup_elem(&http_config, &zero);
		if (cfg && cfg->sample_every > 1)
			every = cfg->sample_every;
		if (every == 1 || bpf_get_prandom_u32() % every == 0)
			emit(c, k, HTTP_END_SAMPLE, ubuf, !ubuf, total);
	}
}

/* Data on the response's side: a server writes it, a client reads it. */
static __always_inline void response_data(struct conn *c, const struct conn_key *k, __u64 head,
					  struct scratch *w, __u32 got, const void *buf, long first, long len)
{
	if (!buf || c->phase == HTTP_OPAQUE)
		return; /* sendfile: body bytes */
	if (c->phase != HTTP_REQUEST) {
		/* A status line with no request in flight answers a pipelined
		 * request that came in the same read as an earlier one. */
		if (c->pipelined && got >= HTTP_STATUS_MIN && is_status_line(head))
			emit(c, k, HTTP_END_EXTRA, buf, false, len);
		return;
	}
	if (c->resp_pre_len == 0 && got >= HTTP_STATUS_MIN) {
		__u16 status = status_of(w->buf);
		if (status >= 200 || status == 101) {
			end_request(c, k, status, w, got, len, buf);
			c->phase = status == 101 ? HTTP_OPAQUE : HTTP_IDLE;
		}
		return;
	}
	/* A status line in pieces: gather HTTP_STATUS_MIN bytes first (fixed
	 * 16-byte copies, as for the request head). */
	__u32 off = c->resp_pre_len & 0xf;
	if (off >= HTTP_STATUS_MIN)
		off = 0;
	if (!got || bpf_probe_read_kernel(c->resp_pre + off, HTTP_RESP_PRE, w->buf))
		return;
	__u32 room = HTTP_RESP_PRE - off;
	c->resp_pre_len = off + (got < room ? got : room);
	if (c->resp_pre_len < HTTP_STATUS_MIN)
		return;
	__u16 status = status_of(c->resp_pre);
	if (status >= 200 || status == 101) {
		end_request(c, k, status, NULL, 0, len, NULL);
		c->phase = status == 101 ? HTTP_OPAQUE : HTTP_IDLE;
	}
	c->resp_pre_len = 0;
}

/* The call's first bytes into the scratch buffer, in one fixed-size copy
 * (near the end of a mapping, a short one): how many are valid. */
static __always_inline __u32 copy_call(struct scratch *w, const void *buf, long first)
{
	if (!buf || first <= 0)
		return 0;
	if (!bpf_probe_read_user(w->buf, HTTP_SCAN, buf))
		return first < HTTP_SCAN ? first : HTTP_SCAN;
	if (!bpf_probe_read_user(w->buf, 16, buf))
		return first < 16 ? first : 16;
	return 0;
}

static __always_inline void plain_data(struct conn *c, const struct conn_key *k, const void *buf,
				       long first, long len, bool is_read)
{
	bool server = c->role == HTTP_ROLE_SERVER;
	if (c->phase == HTTP_OPAQUE)
		return;
	/* Body bytes (sendfile, later reads and writes) need no copy. */
	if (server == is_read) {
		if (!buf || (c->phase == HTTP_REQUEST && c->parsed != PARSE_NONE)) {
			if (c->phase != HTTP_IDLE)
				c->request_bytes += len;
			return;
		}
	} else if (!buf || (c->phase != HTTP_REQUEST && !c->pipelined)) {
		return;
	}
	struct scratch *w = scratch();
	if (!w)
		return;
	__u32 got = copy_call(w, buf, first);
	__u64 head = got >= 8 ? *(__u64 *)w->buf : 0;
	if (server == is_read)
		request_data(c, k, head, w, got, buf, first, len);
	else
		response_data(c, k, head, w, got, buf, first, len);
}

/* One read or write of `len` bytes, the first `first` of them at `buf`
 * (NULL for sendfile), on a tracked connection. */
static __always_inline int on_data(struct conn *c, const struct conn_key *k, __u32 fd, const void *buf,
				   long first, long len, bool is_read)
{
	/* Only a connection that carries TLS records: plain HTTP pays nothing. */
	if (tls_enabled && (c->tls_wire || c->tls))
		set_last_fd(fd);
	if (c->tls)
		return 0; /* ciphertext: the plaintext comes through the uprobes */
	plain_data(c, k, buf, first, len, is_read);
	return 0;
}

static const struct conn zero_conn;

/* Processes that have had a tracked connection: the syscalls of every other
 * process exit after this one small lookup, before their registers are
 * read. Entries are never removed but by the LRU: a stale one only costs
 * the longer path. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tracked_tgids SEC(".maps");

/* The command of each process with a tracked connection, as the kernel saw
 * it: a process that exits before user space reads the tables (curl, a cron
 * job) is still named. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct ks_http_proc);
} proc_comms SEC(".maps");

/* Comm and first arguments of the current process. */
static __always_inline void remember_process(__u32 tgid)
{
	struct ks_http_proc p = {};
	struct task_struct *task = bpf_get_current_task_btf();
	unsigned long start = BPF_CORE_READ(task, mm, arg_start), end = BPF_CORE_READ(task, mm, arg_end);
	bpf_get_current_comm(p.comm, sizeof(p.comm));
	if (end > start) {
		unsigned long len = end - start;
		/* Near the end of the stack's mapping the long copy faults: a short one. */
		if (!bpf_probe_read_user(p.args, HTTP_PROC_ARGS, (void *)start))
			p.args_len = len > HTTP_PROC_ARGS ? HTTP_PROC_ARGS : len;
		else if (!bpf_probe_read_user(p.args, 32, (void *)start))
			p.args_len = len > 32 ? 32 : len;
	}
	bpf_map_update_elem(&proc_comms, &tgid, &p, BPF_ANY);
}

/* A process seen for the first time with a watch list set: user space is
 * asked once (PENDING marks it) to judge it, so that a process that never
 * makes HTTP traffic is not tracked for ever. Until then it is tracked. */
static __always_inline void ask_judgement(__u32 tgid)
{
	__u8 pending = HTTP_VERDICT_PENDING;
	if (bpf_map_update_elem(&tgid_verdict, &tgid, &pending, BPF_NOEXIST))
		return;
	struct ks_http_event *e = reserve();
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->tgid = tgid;
	e->end = HTTP_END_JUDGE;
	e->weight = 1;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

/* The local port of a socket fd of the current task, through its file. */
static __always_inline __u16 local_port(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), fds + (fd & 0xffff)) || !f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	return BPF_CORE_READ(sock, sk, __sk_common.skc_num);
}

/* A connection starts being tracked: its entry in conns, unless the watch
 * list leaves its process out (NULL then). `lport`: its local port, host order. */
static __always_inline struct conn *track_conn(__u32 fd, __u8 role, __u8 family, __u16 port, const __u8 *addr, __u16 lport)
{
	struct conn_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	/* A port a rule names alone watches the servers on it (user space
	 * exports no client series for it): clients go by their verdict. */
	if (filter_on) {
		if (role != HTTP_ROLE_SERVER || !bpf_map_lookup_elem(&watch_ports, &lport)) {
			__u8 *v = bpf_map_lookup_elem(&tgid_verdict, &k.tgid);
			if (v && *v == HTTP_VERDICT_IGNORE)
				return NULL;
			if (!v)
				ask_judgement(k.tgid);
		}
	}
	/* The entry is too large for the stack: insert zeroes, then fill in.
	 * BPF_ANY: a reused fd number starts a new connection. */
	if (bpf_map_update_elem(&conns, &k, &zero_conn, BPF_ANY)) {
		count_drop(HTTP_DROP_CONN_TABLE_FULL);
		return NULL;
	}
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (!c)
		return NULL;
	__u8 one = 1;
	bpf_map_update_elem(&tracked_tgids, &k.tgid, &one, BPF_ANY);
	remember_process(k.tgid);
	c->role = role;
	c->family = family;
	c->peer_port = port;
	c->local_port = lport;
	c->connect_ns = role == HTTP_ROLE_CLIENT ? bpf_ktime_get_ns() : 0;
	__builtin_memcpy(c->peer_addr, addr, 16);
	return c;
}

/* With the syscall exits: the peer from the syscall's sockaddr. */
static __always_inline void track(__u32 fd, __u8 role, const struct sockaddr *sa)
{
	__u8 family = 0;
	__u16 port = 0;
	__u8 addr[16] = {};
	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return;
	if (sa) {
		__u16 f = 0;
		bpf_probe_read_user(&f, sizeof(f), &sa->sa_family);
		if (f == AF_INET) {
			struct sockaddr_in in = {};
			bpf_probe_read_user(&in, sizeof(in), sa);
			port = bpf_ntohs(in.sin_port);
			__builtin_memcpy(addr, &in.sin_addr, 4);
		} else if (f == AF_INET6) {
			struct sockaddr_in6 in6 = {};
			bpf_probe_read_user(&in6, sizeof(in6), sa);
			port = bpf_ntohs(in6.sin6_port);
			__builtin_memcpy(addr, &in6.sin6_addr, 16);
		} else {
			return; /* unix sockets and others: not HTTP over TCP */
		}
		family = f;
	}
	track_conn(fd, role, family, port, addr, local_port(fd));
}

/* First iovec of an iovec array: where a head would be. */
static __always_inline const void *first_iov(const struct iovec *iov, long *len)
{
	struct iovec v = {};
	if (bpf_probe_read_user(&v, sizeof(v), iov))
		return NULL;
	if ((long)v.iov_len < *len)
		*len = v.iov_len;
	return v.iov_base;
}

static __always_inline const void *msg_iov(const struct user_msghdr *m, long *len)
{
	struct iovec *iov = NULL;
	if (bpf_probe_read_user(&iov, sizeof(iov), &m->msg_iov))
		return NULL;
	return first_iov(iov, len);
}

struct sys_exit_ctx {
	__u64 unused;
	long id;
	long ret;
};

#define ARG(regs, n) BPF_CORE_READ(regs, n)

SEC("tracepoint/syscalls/sys_exit_accept4")
int http_accept4(struct sys_exit_ctx *ctx)
{
	if (ctx->ret >= 0)
		track(ctx->ret, HTTP_ROLE_SERVER, NULL);
	else
		count_sock_error(SOCK_OP_ACCEPT, ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int http_accept(struct sys_exit_ctx *ctx)
{
	if (ctx->ret >= 0)
		track(ctx->ret, HTTP_ROLE_SERVER, NULL);
	else
		count_sock_error(SOCK_OP_ACCEPT, ctx->ret);
	return 0;
}

/* A client whose server is down: one record, so it counts as an error
 * (rare, and each one matters). */
static __always_inline void emit_failure(struct conn *c, const struct conn_key *k, long err)
{
	struct ks_http_event *e = reserve();
	if (!e)
		return;
	fill(e, c, k, HTTP_END_CONNECT_FAILED);
	e->duration_ns = bpf_ktime_get_ns() - c->connect_ns;
	e->role = HTTP_ROLE_CLIENT;
	e->error = err < 0 ? -err : err;
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

static __always_inline bool is_connect_error(long ret)
{
	return ret == -CONNECT_ERR_REFUSED || ret == -CONNECT_ERR_TIMEOUT ||
	       ret == -CONNECT_ERR_HOST_UNREACHABLE || ret == -CONNECT_ERR_NETWORK_UNREACHABLE ||
	       ret == -CONNECT_ERR_RESET;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int http_connect(struct sys_exit_ctx *ctx)
{
	long ret = ctx->ret;
	count_sock_error(SOCK_OP_CONNECT, ret);
	/* Non-blocking connects (Node, curl, nginx) return -EINPROGRESS and
	 * learn a failure from getsockopt(SO_ERROR); blocking ones here. */
	if (ret != 0 && ret != -EINPROGRESS && !is_connect_error(ret))
		return 0;
	struct pt_regs *r = user_regs();
	__u32 fd = ARG(r, di);
	track(fd, HTTP_ROLE_CLIENT, (const struct sockaddr *)ARG(r, si));
	if (ret == 0 || ret == -EINPROGRESS)
		return 0;
	struct conn_key k;
	struct conn *c = lookup(fd, &k);
	if (c) {
		emit_failure(c, &k, ret);
		bpf_map_delete_elem(&conns, &k);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_getsockopt")
int http_getsockopt(struct sys_exit_ctx *ctx)
{
	if (ctx->ret != 0)
		return 0;
	struct pt_regs *r = user_regs();
	if (ARG(r, si) != 1 /* SOL_SOCKET */ || ARG(r, dx) != 4 /* SO_ERROR */)
		return 0;
	struct conn_key k;
	struct conn *c = lookup(ARG(r, di), &k);
	/* Only a client that has sent nothing yet: this is its connect's fate. */
	if (!c || c->role != HTTP_ROLE_CLIENT || c->start_ns)
		return 0;
	int err = 0;
	if (bpf_probe_read_user(&err, sizeof(err), (void *)ARG(r, r10)) || !is_connect_error(-(long)err))
		return 0;
	count_sock_error(SOCK_OP_CONNECT, -(long)err);
	emit_failure(c, &k, err);
	bpf_map_delete_elem(&conns, &k);
	return 0;
}

struct sys_enter_ctx {
	__u64 unused;
	long id;
	unsigned long args[6];
};

/* A connection's end. `may_parse`: in the task's own context, where the
 * per-CPU scratch is free; a reset can end it from a softirq that
 * interrupted a program using the scratch, so a head in pieces goes to
 * user space whole instead. */
static __always_inline void end_conn(struct conn *c, struct conn_key *k, bool may_parse)
{
	if (c->phase == HTTP_REQUEST) {
		/* No response: a server's aborted request, a client's error. */
		if (c->parsed == PARSE_NONE && may_parse)
			parse_request(c, true, NULL);
		if (c->parsed == PARSE_OK)
			aggregate(c, k, 0, bpf_ktime_get_ns() - c->start_ns, request_body(c), -1);
		else
			emit(c, k, HTTP_END_CLOSED, NULL, false, 0);
	}
	/* Pipelined requests still waiting in user space were never answered. */
	if (c->pipelined) {
		struct ks_http_event *e = reserve();
		if (e) {
			fill(e, c, k, HTTP_END_CLOSED);
			e->weight = 0; /* nothing of its own to count */
			submit(e);
		}
	}
	bpf_map_delete_elem(&conns, k);
}

/* With the syscall exits: at the call, where the fd is an argument of the
 * context (no register read). A close that fails was not of a tracked fd. */
SEC("tracepoint/syscalls/sys_enter_close")
int http_close(struct sys_enter_ctx *ctx)
{
	struct conn_key k;
	struct conn *c = lookup(ctx->args[0], &k);
	if (c)
		end_conn(c, &k, true);
	return 0;
}

enum buf_kind { BUF_PLAIN, BUF_IOV, BUF_MSG, BUF_NONE };

/* Every read and write syscall exits through here. The cheap checks come
 * first: a failed or empty call, then the one hash lookup that tells a
 * tracked connection from everything else (pipes, files, untracked or
 * filtered sockets); only then are arguments and payload read. A peek
 * (MSG_PEEK) is not a read: the same bytes come again. */
static __always_inline int on_syscall(struct sys_exit_ctx *ctx, enum buf_kind kind, bool is_read, int flags_arg)
{
	long len = ctx->ret;
	if (len <= 0) {
		/* The syscall exits see what the socket layer never does: an fd
		 * that is not open. Other errors are counted for sockets only. */
		struct conn_key ek;
		if (len == -EBADF || (len < 0 && lookup(ARG(user_regs(), di), &ek)))
			count_sock_error(is_read ? SOCK_OP_RECV : SOCK_OP_SEND, len);
		return 0;
	}
	struct conn_key k = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	if (!bpf_map_lookup_elem(&tracked_tgids, &k.tgid))
		return 0;
	struct pt_regs *r = user_regs();
	__u32 fd = ARG(r, di);
	k.fd = fd;
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (!c)
		return 0;
	if (flags_arg == 3 && (ARG(r, dx) & MSG_PEEK))
		return 0;
	if (flags_arg == 4 && (ARG(r, r10) & MSG_PEEK))
		return 0;
	const void *buf = NULL;
	long first = len;
	if (kind == BUF_PLAIN)
		buf = (const void *)ARG(r, si);
	else if (kind == BUF_IOV)
		buf = first_iov((const struct iovec *)ARG(r, si), &first);
	else if (kind == BUF_MSG)
		buf = msg_iov((const struct user_msghdr *)ARG(r, si), &first);
	return on_data(c, &k, fd, buf, first, len, is_read);
}

SEC("tracepoint/syscalls/sys_exit_read")
int http_read(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, true, 0); }

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int http_recvfrom(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, true, 4); }

SEC("tracepoint/syscalls/sys_exit_readv")
int http_readv(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_IOV, true, 0); }

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int http_recvmsg(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_MSG, true, 3); }

SEC("tracepoint/syscalls/sys_exit_write")
int http_write(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, false, 0); }

SEC("tracepoint/syscalls/sys_exit_sendto")
int http_sendto(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, false, 0); }

SEC("tracepoint/syscalls/sys_exit_writev")
int http_writev(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_IOV, false, 0); }

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int http_sendmsg(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_MSG, false, 0); }

/* A body from a file (nginx): bytes only, never a head. */
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int http_sendfile(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_NONE, false, 0); }

/* ---- Socket tracepoints: the cheaper data hooks ------------------------
 * sock:sock_recv_length and sock:sock_send_length (Linux 6.3+) fire inside
 * the socket layer only, so reads and writes of files and pipes pay nothing
 * and a tp_btf program costs less than a syscall tracepoint's. The buffer
 * is the syscall's: its number and arguments are in the task's user
 * registers. Calls from elsewhere (io_uring, the kernel's own sockets) are
 * left alone. */

#if defined(__TARGET_ARCH_arm64)
#define NR_READ 63
#define NR_WRITE 64
#define NR_READV 65
#define NR_WRITEV 66
#define NR_SENDFILE 71
#define NR_SENDTO 206
#define NR_RECVFROM 207
#define NR_SENDMSG 211
#define NR_RECVMSG 212
#define NR_CONNECT 203
#define REG_NR syscallno
#else
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_CONNECT 42
#define REG_NR orig_ax
#endif

#define IPPROTO_TCP 6

/* Once per connection: its socket points back at it. */
static __always_inline void index_conn(struct sock *sk, const struct conn_key *k, struct conn *c)
{
	struct conn_ref *ref = bpf_sk_storage_get(&conn_refs, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ref)
		return; /* no memory: the entry lasts until its fd is reused or its process goes */
	c->id = bpf_ktime_get_ns();
	c->sk = (__u64)sk;
	ref->tgid = k->tgid;
	ref->fd = k->fd;
	ref->id = c->id;
}

/* The peer of a socket, from the socket itself. */
static __always_inline __u8 sock_peer(struct sock *sk, __u16 *port, __u8 *addr)
{
	__u8 family = sk->__sk_common.skc_family;
	*port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == AF_INET)
		__builtin_memcpy(addr, &sk->__sk_common.skc_daddr, 4);
	else if (family == AF_INET6)
		BPF_CORE_READ_INTO(addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		return 0;
	return family;
}

/* A socket accepted since the agent started, at its task's first read or
 * write: tracked now, with the fd the task reads it by (even in another
 * process than the one that accepted it, as Node's cluster hands them
 * over). Tried once per socket: a process the watch list leaves out pays
 * one storage lookup per call after that. */
static __always_inline struct conn *accepted(struct sock *sk, struct conn_key *k)
{
	struct conn_ref *ref = bpf_sk_storage_get(&conn_refs, sk, NULL, 0);
	if (!ref || ref->tgid != 0)
		return NULL;
	ref->tgid = REF_SEEN;
	if (k->tgid == self_tgid)
		return NULL;
	/* A server's series are by its own port; its peer stays unnamed, as
	 * with the syscall hooks. */
	__u8 addr[16] = {};
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	return track_conn(k->fd, HTTP_ROLE_SERVER, 0, 0, addr, sk->__sk_common.skc_num);
}

/* A client's SYN leaves, inside connect(2) (or a sendto/sendmsg with
 * MSG_FASTOPEN): the task and its fd are the syscall's. Calls from
 * elsewhere (io_uring, the kernel's own sockets) are left alone. */
static __always_inline void client_started(struct sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == self_tgid)
		return;
	struct pt_regs *r = user_regs();
	long nr = r->REG_NR;
	if (nr != NR_CONNECT && nr != NR_SENDTO && nr != NR_SENDMSG)
		return;
	struct conn_key k = { .tgid = tgid, .fd = r->di };
	__u8 addr[16] = {};
	__u16 port = 0;
	__u8 family = sock_peer(sk, &port, addr);
	if (!family)
		return;
	/* An earlier connection on this fd that never ended (reset, then
	 * closed without another call) ends before this one replaces it. */
	struct conn *old = bpf_map_lookup_elem(&conns, &k);
	if (old && old->sk != (__u64)sk)
		end_conn(old, &k, true);
	/* The local port is chosen after SYN_SENT is set: read at the first call. */
	struct conn *c = track_conn(k.fd, HTTP_ROLE_CLIENT, family, port, addr, 0);
	if (c)
		index_conn(sk, &k, c);
}

/* A client's connect failed: the handshake ended in a reset (refused), a
 * timeout or an ICMP error, whose errno the kernel has put in sk_err. Its
 * context may be a softirq: the owner comes from the socket's storage. */
static __always_inline void connect_failed(struct sock *sk)
{
	struct conn_ref *ref = bpf_sk_storage_get(&conn_refs, sk, NULL, 0);
	if (!ref)
		return;
	struct conn_key k = { .tgid = ref->tgid, .fd = ref->fd };
	__u64 id = ref->id;
	bpf_sk_storage_delete(&conn_refs, sk);
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (!c || c->id != id)
		return;
	int err = sk->sk_err;
	if (is_connect_error(-(long)err)) {
		count_sock_error_of(k.tgid, SOCK_OP_CONNECT, -(long)err);
		emit_failure(c, &k, err);
	}
	/* Else the task closed it before the handshake ended: nothing sent. */
	bpf_map_delete_elem(&conns, &k);
}

static __always_inline int on_sock(struct sock *sk, int ret, bool is_read)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* A typed pointer here: registers are plain loads, not helper calls. */
	struct pt_regs *r;
	if (ret <= 0) {
		count_sock_error(is_read ? SOCK_OP_RECV : SOCK_OP_SEND, ret);
		if (ret == -EAGAIN)
			return 0;
		/* The end of a reset connection: its task has seen it. */
		r = user_regs();
		struct conn_key ek = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = r->di };
		struct conn *ec = bpf_map_lookup_elem(&conns, &ek);
		if (ec && ec->reset)
			end_conn(ec, &ek, true);
		return 0;
	}
	r = user_regs();
	long nr = r->REG_NR, first = ret;
	/* A body from a file (nginx's sendfile) never holds a head, and no
	 * series needs its byte count: it ends here, before any lookup. */
	if (nr == NR_SENDFILE)
		return 0;
	struct conn_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = r->di };
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (c && c->sk && c->sk != (__u64)sk) {
		/* The fd's earlier connection, reset by its peer and closed
		 * without another call on it: it ends now, and this socket is
		 * a connection of its own. */
		end_conn(c, &k, true);
		c = NULL;
	}
	if (!c && !(c = accepted(sk, &k)))
		return 0;
	if (!c->sk)
		index_conn(sk, &k, c);
	if (!c->local_port)
		c->local_port = sk->__sk_common.skc_num;
	const void *buf = NULL;
	if (nr == NR_READ || nr == NR_RECVFROM || nr == NR_WRITE || nr == NR_SENDTO)
		buf = (const void *)r->si;
	else if (nr == NR_READV || nr == NR_WRITEV)
		buf = first_iov((const struct iovec *)r->si, &first);
	else if (nr == NR_RECVMSG || nr == NR_SENDMSG)
		buf = msg_iov((const struct user_msghdr *)r->si, &first);
	else
		return 0; /* io_uring, splice and others: not a call with a buffer */
	on_data(c, &k, k.fd, buf, first, ret, is_read);
	/* A reset that came back inside this very call (on loopback, a write
	 * to a closed peer): what the call said is in; now it ends. */
	if (c->reset)
		end_conn(c, &k, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(http_sock_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK)
		return 0; /* not a read: the same bytes come again */
	return on_sock(sk, ret, true);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(http_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock(sk, ret, false);
}

#define SHUTDOWN_MASK 3

/* The end of a tracked connection, seen by its socket's state changes, a
 * few per connection instead of a hook on every close(2):
 * - its task closes it: tcp_close() shuts both directions before leaving
 *   ESTABLISHED or CLOSE_WAIT (for FIN_WAIT1, LAST_ACK, or CLOSE when
 *   unread data makes it a reset). It ends here.
 * - a reset from the peer (to CLOSE with a direction still open): the task
 *   has not seen it yet, and may still be inside the write the reset
 *   answers; it ends at the task's next call on the socket.
 * A half close, shutdown(SHUT_WR), is neither: the response may still be
 * read. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(http_sock_state, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT) {
		client_started(sk);
		return 0;
	}
	if (newstate == TCP_SYN_RECV && oldstate != TCP_SYN_SENT) {
		/* A server's socket, made by the handshake: marked for its task's first call. */
		bpf_sk_storage_get(&conn_refs, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE) {
		connect_failed(sk);
		return 0;
	}
	if (oldstate != TCP_ESTABLISHED && oldstate != TCP_CLOSE_WAIT)
		return 0;
	bool closing = sk->sk_shutdown == SHUTDOWN_MASK;
	if (!closing && newstate != TCP_CLOSE)
		return 0;
	struct conn_ref *ref = bpf_sk_storage_get(&conn_refs, sk, NULL, 0);
	if (!ref)
		return 0;
	struct conn_key k = { .tgid = ref->tgid, .fd = ref->fd };
	__u64 id = ref->id;
	bpf_sk_storage_delete(&conn_refs, sk);
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (!c || c->id != id)
		return 0;
	if (closing)
		end_conn(c, &k, false);
	else
		c->reset = 1;
	return 0;
}

/* ---- TLS ---------------------------------------------------------------- */

static __always_inline int tls_enter(void *ssl, void *buf, void *count_ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((id >> 32) == self_tgid)
		return 0;
	struct tls_call call = { .ssl = (__u64)ssl, .buf = (__u64)buf, .count_ptr = (__u64)count_ptr };
	bpf_map_update_elem(&tls_calls, &id, &call, BPF_ANY);
	return 0;
}

static __always_inline int tls_return(long ret, bool is_read, bool ex)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tls_call *call = bpf_map_lookup_elem(&tls_calls, &id);
	if (!call)
		return 0;
	struct tls_call cl = *call;
	bpf_map_delete_elem(&tls_calls, &id);

	struct ssl_key sk = { .ssl = cl.ssl, .tgid = id >> 32 };
	__u32 *known = bpf_map_lookup_elem(&ssl_fds, &sk);
	__u32 fd;
	if (known) {
		fd = *known;
	} else {
		__u32 *last = bpf_task_storage_get(&last_fd, bpf_get_current_task_btf(), NULL, 0);
		if (!last)
			return 0;
		fd = *last;
		bpf_map_update_elem(&ssl_fds, &sk, &fd, BPF_ANY);
	}

	long n = ret;
	if (ex) { /* SSL_read_ex/SSL_write_ex: 1 on success, the count by pointer */
		__u64 cnt = 0;
		if (ret != 1 || !cl.count_ptr || bpf_probe_read_user(&cnt, sizeof(cnt), (void *)cl.count_ptr))
			return 0;
		n = cnt;
	}
	if (n <= 0)
		return 0;
	struct conn_key k;
	struct conn *c = lookup(fd, &k);
	if (!c)
		return 0;
	c->tls = 1;
	plain_data(c, &k, (const void *)cl.buf, n, n, is_read);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_enter_rw, void *ssl, void *buf)
{ return tls_enter(ssl, buf, NULL); }

SEC("uprobe")
int BPF_KPROBE(tls_enter_ex, void *ssl, void *buf, __u64 num, void *count)
{ return tls_enter(ssl, buf, count); }

SEC("uretprobe")
int BPF_KRETPROBE(tls_read_ret, long ret)
{ return tls_return((int)ret, true, false); }

SEC("uretprobe")
int BPF_KRETPROBE(tls_write_ret, long ret)
{ return tls_return((int)ret, false, false); }

SEC("uretprobe")
int BPF_KRETPROBE(tls_read_ex_ret, long ret)
{ return tls_return((int)ret, true, true); }

SEC("uretprobe")
int BPF_KRETPROBE(tls_write_ex_ret, long ret)
{ return tls_return((int)ret, false, true); }
