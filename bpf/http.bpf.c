// SPDX-License-Identifier: GPL-2.0
/* HTTP/1.x requests seen from socket syscalls, with no change to the apps.
 *
 * Sockets enter the `conns` table when accept(2) or connect(2) returns;
 * every read and write of any process costs one hash lookup, and exits there
 * unless its (tgid, fd) is a tracked connection. On a tracked connection the
 * kernel only recognises where a request and a response start (a method
 * token, an "HTTP/1." status line) and keeps the time and the request's
 * first bytes; one record per request goes to user space when the response
 * starts, carrying both heads, and user space parses them.
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

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* The agent's own tgid: its /metrics traffic is not the node's. */
const volatile __u32 self_tgid = 0;

/* Waking the reader costs microseconds per record; the agent is woken once
 * this many bytes wait, and drains the rest on a timer. */
const volatile __u64 wakeup_bytes = 32 * sizeof(struct ks_http_event);

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

struct conn {
	__u64 start_ns;
	__u64 request_bytes;
	__u8 role;
	__u8 phase;
	__u8 family;
	__u8 resp_pre_len;
	__u16 peer_port;
	__u16 req_len;
	__u8 peer_addr[16];
	/* A status line that arrives in pieces is gathered here (twice the
	 * room, as for req_head). */
	__u8 resp_pre[HTTP_RESP_PRE * 2];
	/* Request bytes gathered across reads, HTTP_REQ_HEAD at most. Reads
	 * copy a fixed HTTP_REQ_HEAD bytes at an offset below 256, so the
	 * verifier sees every copy fit; bytes past req_len are not used. */
	__u8 req_head[HTTP_REQ_HEAD + 256];
	__u8 tls;		/* plaintext comes from SSL_read/SSL_write */
	__u8 pad2;
	__u16 local_port;	/* host order */
	/* Requests the one in flight stands for if recorded; 0: counted only
	 * (sampled out when it started, so its bytes are not copied). */
	__u16 weight;
	__u8 pad3[2];
	__u64 connect_ns;	/* when a client's connect() returned */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn_key);
	__type(value, struct conn);
} conns SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ks_http_total_key);
	__type(value, struct ks_http_total);
} http_totals SEC(".maps");

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
 * before SSL_read; either way this is the connection of the SSL object. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
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

/* First 8 bytes of a buffer; 0 when unreadable. */
static __always_inline __u64 peek8(const void *buf, long len)
{
	__u64 v = 0;
	if (len < 8 || bpf_probe_read_user(&v, sizeof(v), buf))
		return 0;
	return v;
}

#define B4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

/* A request line starts with a method; checked on 4 bytes, user space
 * checks the rest. */
static __always_inline bool is_request(__u64 v)
{
	__u32 w = (__u32)v;
	return w == B4('G', 'E', 'T', ' ') || w == B4('P', 'O', 'S', 'T') ||
	       w == B4('P', 'U', 'T', ' ') || w == B4('D', 'E', 'L', 'E') ||
	       w == B4('H', 'E', 'A', 'D') || w == B4('P', 'A', 'T', 'C') ||
	       w == B4('O', 'P', 'T', 'I');
}

/* 'HTTP/1.' at the start of 8 bytes. */
static __always_inline bool is_status_line(__u64 v)
{
	return (__u32)v == B4('H', 'T', 'T', 'P') && ((v >> 32) & 0xffffff) == ('/' | '1' << 8 | '.' << 16);
}

static __always_inline void emit_failure(struct conn *c, const struct conn_key *k, long err);

/* A record, or NULL with the loss counted. */
static __always_inline struct ks_http_event *reserve(void)
{
	struct ks_http_event *e = bpf_ringbuf_reserve(&http_events, sizeof(*e), 0);
	if (!e)
		count_drop(HTTP_DROP_RINGBUF_FULL);
	return e;
}

/* One request in the exact per-process counts; a full table is counted. */
static __always_inline void add_total(const struct ks_http_total_key *tk, __u64 duration_ns, bool recorded)
{
	static const struct ks_http_total none;
	struct ks_http_total *t = lookup_or_init(&http_totals, tk, &none);
	if (!t) {
		count_drop(HTTP_DROP_TOTALS_FULL);
		return;
	}
	t->count++;
	t->duration_ns += duration_ns;
	if (recorded)
		t->recorded++;
}

/* Whether the request starting now gets a record: all do unless user space
 * set sample_every, then 1 in sample_every, at random. Decided at the start
 * so that a request sampled out costs no copy of its bytes. Returns the
 * record's weight, 0 for none. */
static __always_inline __u16 sample_weight(void)
{
	__u32 zero = 0, every = 1;
	struct ks_http_config *cfg = bpf_map_lookup_elem(&http_config, &zero);
	if (cfg && cfg->sample_every > 1)
		every = cfg->sample_every > 65535 ? 65535 : cfg->sample_every;
	return every == 1 || bpf_get_prandom_u32() % every == 0 ? every : 0;
}

/* Counts the request exactly; says with what weight it is recorded (0: not). */
static __always_inline __u16 count_request(struct conn *c, const struct conn_key *k, __u8 status_class,
					   __u64 duration_ns)
{
	__u16 weight = c->weight;
	bool record = weight > 0;
	struct ks_http_total_key tk = {
		.tgid = k->tgid,
		.role = c->role,
		.status_class = status_class,
		.port = c->role == HTTP_ROLE_SERVER ? c->local_port : c->peer_port,
	};
	add_total(&tk, duration_ns, record);
	return weight;
}

static __always_inline void emit(struct conn *c, const struct conn_key *k, __u8 end,
				 const void *resp, bool resp_in_kernel, long resp_len, char code)
{
	__u64 duration = bpf_ktime_get_ns() - c->start_ns;
	__u8 status_class = code >= '1' && code <= '5' ? code - '0' : 0;
	__u16 weight = count_request(c, k, status_class, duration);
	if (!weight)
		return;
	struct ks_http_event *e = reserve();
	if (!e)
		return;
	e->weight = weight;
	e->duration_ns = duration;
	e->request_bytes = c->request_bytes;
	e->response_bytes = resp_len > 0 ? resp_len : 0;
	e->tgid = k->tgid;
	e->fd = k->fd;
	e->role = c->role;
	e->end = end;
	e->family = c->family;
	e->peer_port = c->peer_port;
	e->local_port = c->local_port;
	__builtin_memcpy(e->peer_addr, c->peer_addr, sizeof(e->peer_addr));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->req_len = end == HTTP_END_EXTRA ? 0 : c->req_len;
	__builtin_memcpy(e->req_head, c->req_head, sizeof(e->req_head));
	e->resp_len = 0;
	if (resp_in_kernel) {
		__builtin_memcpy(e->resp_head, c->resp_pre, HTTP_RESP_PRE);
		e->resp_len = c->resp_pre_len < HTTP_RESP_PRE ? c->resp_pre_len : HTTP_RESP_PRE;
	} else if (resp && resp_len > 0) {
		/* Fixed-size copy; bytes past resp_len are not used. */
		if (!bpf_probe_read_user(e->resp_head, HTTP_RESP_HEAD, resp) ||
		    !bpf_probe_read_user(e->resp_head, HTTP_STATUS_MIN, resp))
			e->resp_len = resp_len > HTTP_RESP_HEAD ? HTTP_RESP_HEAD : resp_len;
	}
	__u64 waiting = bpf_ringbuf_query(&http_events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, waiting >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Appends what fits of `buf` to the request head. The copy has a fixed size
 * (a variable one the verifier cannot always bound); near the end of a
 * mapping it falls back to a smaller one. */
static __always_inline void append_request(struct conn *c, const void *buf, long len)
{
	__u32 off = c->req_len & 0xff;
	if (off >= HTTP_REQ_HEAD || !buf || len <= 0)
		return;
	if (bpf_probe_read_user(c->req_head + off, HTTP_REQ_HEAD, buf) &&
	    bpf_probe_read_user(c->req_head + off, 16, buf))
		return;
	__u32 room = HTTP_REQ_HEAD - off;
	c->req_len = off + (len < room ? len : room);
}

static __always_inline void start_request(struct conn *c)
{
	c->weight = sample_weight();
	c->start_ns = bpf_ktime_get_ns();
	c->request_bytes = 0;
	c->req_len = 0;
	c->resp_pre_len = 0;
}

/* Data on the request's side: a server reads it, a client writes it.
 * A request may arrive in pieces as small as a byte: fewer than 8 bytes in
 * an idle connection are kept until there are enough to see a method. */
static __always_inline void request_data(struct conn *c, __u64 head, const void *buf, long len)
{
	if (c->phase == HTTP_IDLE) {
		if (len >= 8 && !is_request(head))
			return;
		start_request(c);
		c->phase = len >= 8 ? HTTP_REQUEST : HTTP_PARTIAL;
	}
	c->request_bytes += len;
	/* A request sampled out keeps only the 8 bytes that tell it is one. */
	if (c->weight || c->phase == HTTP_PARTIAL)
		append_request(c, buf, len);
	if (c->phase == HTTP_PARTIAL && c->req_len >= 8) {
		__u64 first = *(__u64 *)c->req_head;
		c->phase = is_request(first) ? HTTP_REQUEST : HTTP_IDLE;
	}
}

/* What a status line says: 2 final, 1 interim (100 Continue), 0 not one. */
static __always_inline int status_kind(__u64 head, char code)
{
	if (!is_status_line(head))
		return 0;
	if (code >= '2' && code <= '5')
		return 2;
	return code == '1' ? 1 : 0;
}

/* Data on the response's side: a server writes it, a client reads it. */
static __always_inline void response_data(struct conn *c, const struct conn_key *k, __u64 head,
					  const void *buf, long len)
{
	char code = 0;
	if (!buf)
		return; /* sendfile: body bytes */
	if (c->phase != HTTP_REQUEST) {
		/* A status line with no request in flight answers a pipelined
		 * request that came in the same read as an earlier one. */
		if (c->start_ns && len >= HTTP_STATUS_MIN && is_status_line(head) &&
		    !bpf_probe_read_user(&code, 1, buf + 9) && status_kind(head, code) == 2)
			emit(c, k, HTTP_END_EXTRA, buf, false, len, code);
		return;
	}
	if (c->resp_pre_len == 0 && len >= HTTP_STATUS_MIN) {
		if (bpf_probe_read_user(&code, 1, buf + 9))
			return;
		if (status_kind(head, code) == 2) {
			emit(c, k, HTTP_END_RESPONSE, buf, false, len, code);
			c->phase = HTTP_IDLE;
		}
		return;
	}
	/* A status line in pieces: gather HTTP_STATUS_MIN bytes first (fixed
	 * 16-byte copies, as for the request head). */
	__u32 off = c->resp_pre_len & 0xf;
	if (off >= HTTP_STATUS_MIN)
		off = 0;
	if (bpf_probe_read_user(c->resp_pre + off, HTTP_RESP_PRE, buf) &&
	    bpf_probe_read_user(c->resp_pre + off, 1, buf))
		return;
	__u32 room = HTTP_RESP_PRE - off;
	c->resp_pre_len = off + (len < room ? len : room);
	if (c->resp_pre_len < HTTP_STATUS_MIN)
		return;
	if (status_kind(*(__u64 *)c->resp_pre, c->resp_pre[9]) == 2) {
		emit(c, k, HTTP_END_RESPONSE, NULL, true, len, c->resp_pre[9]);
		c->phase = HTTP_IDLE;
	}
	c->resp_pre_len = 0;
}

static __always_inline void plain_data(struct conn *c, const struct conn_key *k, const void *buf,
				       long len, bool is_read)
{
	__u64 head = buf ? peek8(buf, len) : 0;
	bool server = c->role == HTTP_ROLE_SERVER;
	if (server == is_read)
		request_data(c, head, buf, len);
	else
		response_data(c, k, head, buf, len);
}

/* One read or write of `len` bytes at `buf` (NULL for sendfile) on a
 * tracked connection. */
static __always_inline int on_data(struct conn *c, const struct conn_key *k, __u32 fd, const void *buf,
				   long len, bool is_read)
{
	if (tls_enabled) {
		__u64 id = bpf_get_current_pid_tgid();
		bpf_map_update_elem(&last_fd, &id, &fd, BPF_ANY);
	}
	if (c->tls)
		return 0; /* ciphertext: the plaintext comes through the uprobes */
	plain_data(c, k, buf, len, is_read);
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

static __always_inline void track(__u32 fd, __u8 role, const struct sockaddr *sa)
{
	struct conn_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	__u8 family = 0;
	__u16 port = 0;
	__u8 addr[16] = {};
	if (k.tgid == self_tgid)
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
	__u16 lport = local_port(fd);
	if (filter_on) {
		__u16 sport = role == HTTP_ROLE_SERVER ? lport : port;
		if (!bpf_map_lookup_elem(&watch_ports, &sport)) {
			__u8 *v = bpf_map_lookup_elem(&tgid_verdict, &k.tgid);
			if (v && *v == HTTP_VERDICT_IGNORE)
				return;
			if (!v)
				ask_judgement(k.tgid);
		}
	}
	/* The entry is too large for the stack: insert zeroes, then fill in.
	 * BPF_ANY: a reused fd number starts a new connection. */
	if (bpf_map_update_elem(&conns, &k, &zero_conn, BPF_ANY)) {
		count_drop(HTTP_DROP_CONN_TABLE_FULL);
		return;
	}
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (!c)
		return;
	__u8 one = 1;
	bpf_map_update_elem(&tracked_tgids, &k.tgid, &one, BPF_ANY);
	c->role = role;
	c->family = family;
	c->peer_port = port;
	c->local_port = lport;
	c->connect_ns = role == HTTP_ROLE_CLIENT ? bpf_ktime_get_ns() : 0;
	__builtin_memcpy(c->peer_addr, addr, sizeof(addr));
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
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int http_accept(struct sys_exit_ctx *ctx)
{
	if (ctx->ret >= 0)
		track(ctx->ret, HTTP_ROLE_SERVER, NULL);
	return 0;
}

/* A client whose server is down: one record, so it counts as an error. */
static __always_inline void emit_failure(struct conn *c, const struct conn_key *k, long err)
{
	/* Rare, and each one matters: never sampled out. */
	struct ks_http_total_key tk = { .tgid = k->tgid, .role = HTTP_ROLE_CLIENT, .port = c->peer_port };
	add_total(&tk, 0, true);
	struct ks_http_event *e = reserve();
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->weight = 1;
	e->duration_ns = bpf_ktime_get_ns() - c->connect_ns;
	e->tgid = k->tgid;
	e->fd = k->fd;
	e->role = HTTP_ROLE_CLIENT;
	e->end = HTTP_END_CONNECT_FAILED;
	e->error = err < 0 ? -err : err;
	e->family = c->family;
	e->peer_port = c->peer_port;
	__builtin_memcpy(e->peer_addr, c->peer_addr, sizeof(e->peer_addr));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

static __always_inline bool is_connect_error(long ret)
{
	return ret == -111 /* ECONNREFUSED */ || ret == -110 /* ETIMEDOUT */ ||
	       ret == -113 /* EHOSTUNREACH */ || ret == -101 /* ENETUNREACH */ ||
	       ret == -104 /* ECONNRESET */;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int http_connect(struct sys_exit_ctx *ctx)
{
	long ret = ctx->ret;
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
	emit_failure(c, &k, err);
	bpf_map_delete_elem(&conns, &k);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_close")
int http_close(struct sys_exit_ctx *ctx)
{
	struct conn_key k;
	struct conn *c = lookup(ARG(user_regs(), di), &k);
	if (!c)
		return 0;
	if (c->phase == HTTP_REQUEST)
		emit(c, &k, HTTP_END_CLOSED, NULL, false, 0, 0);
	bpf_map_delete_elem(&conns, &k);
	return 0;
}

enum buf_kind { BUF_PLAIN, BUF_IOV, BUF_MSG, BUF_NONE };

/* Every read and write syscall exits through here. The cheap checks come
 * first: a failed or empty call, then the one hash lookup that tells a
 * tracked connection from everything else (pipes, files, untracked or
 * filtered sockets); only then are arguments and payload read. */
static __always_inline int on_syscall(struct sys_exit_ctx *ctx, enum buf_kind kind, bool is_read)
{
	long len = ctx->ret;
	if (len <= 0)
		return 0;
	struct conn_key k = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	if (!bpf_map_lookup_elem(&tracked_tgids, &k.tgid))
		return 0;
	struct pt_regs *r = user_regs();
	__u32 fd = ARG(r, di);
	k.fd = fd;
	struct conn *c = bpf_map_lookup_elem(&conns, &k);
	if (!c)
		return 0;
	const void *buf = NULL;
	long first = len;
	if (kind == BUF_PLAIN)
		buf = (const void *)ARG(r, si);
	else if (kind == BUF_IOV)
		buf = first_iov((const struct iovec *)ARG(r, si), &first);
	else if (kind == BUF_MSG)
		buf = msg_iov((const struct user_msghdr *)ARG(r, si), &first);
	return on_data(c, &k, fd, buf, len, is_read);
}

SEC("tracepoint/syscalls/sys_exit_read")
int http_read(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, true); }

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int http_recvfrom(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, true); }

SEC("tracepoint/syscalls/sys_exit_readv")
int http_readv(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_IOV, true); }

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int http_recvmsg(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_MSG, true); }

SEC("tracepoint/syscalls/sys_exit_write")
int http_write(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, false); }

SEC("tracepoint/syscalls/sys_exit_sendto")
int http_sendto(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_PLAIN, false); }

SEC("tracepoint/syscalls/sys_exit_writev")
int http_writev(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_IOV, false); }

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int http_sendmsg(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_MSG, false); }

/* A body from a file (nginx): bytes only, never a head. */
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int http_sendfile(struct sys_exit_ctx *ctx) { return on_syscall(ctx, BUF_NONE, false); }

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
		__u32 *last = bpf_map_lookup_elem(&last_fd, &id);
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
	plain_data(c, &k, (const void *)cl.buf, n, is_read);
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
