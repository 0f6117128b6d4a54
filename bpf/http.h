/* HTTP collector: the one layout shared by http.bpf.c and src/collectors/http/.
 * TypeScript reads every offset, size and enum value below from the object's
 * BTF at load (src/collectors/http/layout.ts) and fails on a mismatch. */
#ifndef KERNSCOPE_HTTP_H
#define KERNSCOPE_HTTP_H

#define HTTP_REQ_HEAD 256	/* bytes of a request's start gathered per connection */
#define HTTP_PIPE_HEAD 512	/* bytes of a read holding pipelined requests, sent as a record */
#define HTTP_RESP_HEAD 160	/* bytes of a response's start sent with a record */
#define HTTP_SCAN 256		/* bytes of a response head parsed in the kernel */
#define HTTP_NAME_MAX 128	/* bytes of a path or host kept with its key */
#define HTTP_BUCKETS 16		/* histogram buckets: up to 15 bounds, then +Inf */
#define HTTP_MAX_BOUNDS (HTTP_BUCKETS - 1)
#define HTTP_MAX_SEGMENTS 12	/* path segments templated; more become one "**" */

enum ks_http_role { HTTP_ROLE_SERVER = 1, HTTP_ROLE_CLIENT = 2 };

/* Methods as the kernel recognises them; anything else is OTHER ("_OTHER"). */
enum ks_http_method {
	HTTP_METHOD_OTHER = 0,
	HTTP_METHOD_GET = 1,
	HTTP_METHOD_POST = 2,
	HTTP_METHOD_PUT = 3,
	HTTP_METHOD_DELETE = 4,
	HTTP_METHOD_HEAD = 5,
	HTTP_METHOD_PATCH = 6,
	HTTP_METHOD_OPTIONS = 7,
	HTTP_METHOD_CONNECT = 8,
	HTTP_METHOD_TRACE = 9,
};

enum ks_http_phase {
	HTTP_IDLE = 0,
	HTTP_PARTIAL = 1,	/* fewer than 8 bytes of what may start a request */
	HTTP_REQUEST = 2,	/* a request started, its response has not */
	HTTP_OPAQUE = 3,	/* after a 101 Switching Protocols: not HTTP/1 any more */
};

/* Enough of a status line to know it: "HTTP/1.1 200". */
#define HTTP_STATUS_MIN 12
#define HTTP_RESP_PRE 16

/* Why a record was sent (records are the slow path: the common request is
 * aggregated in the kernel and sends nothing). */
enum ks_http_end {
	HTTP_END_RESPONSE = 0,	/* a request the kernel could not parse, at its response */
	HTTP_END_CLOSED = 1,	/* closed with pipelined requests unanswered */
	HTTP_END_EXTRA = 2,	/* a response to one of several pipelined requests */
	HTTP_END_CONNECT_FAILED = 3, /* a client's connect failed; errno in `error` */
	HTTP_END_JUDGE = 4,	/* not a request: a process user space has not judged yet */
	HTTP_END_PIPELINE = 5,	/* a read with several requests: their heads */
	HTTP_END_SAMPLE = 6,	/* a copy of an aggregated request for the live stream: not counted */
};

enum ks_http_drop_reason {
	HTTP_DROP_RINGBUF_FULL = 0,
	HTTP_DROP_CONN_TABLE_FULL = 1,
	HTTP_DROP_AGG_FULL = 2,		/* counted in the overflow table instead */
	HTTP_DROP_OVERFLOW_FULL = 3,	/* the overflow table too: lost */
	HTTP_DROP_NAMES_FULL = 4,	/* a path or host not kept: labelled "_unknown" */
	HTTP_DROP_SOCK_ERRORS_FULL = 5,	/* a socket error's series not counted */
};

/* Verdicts user space gives a process when a watch list is set. */
enum ks_http_verdict { HTTP_VERDICT_WATCH = 1, HTTP_VERDICT_IGNORE = 2, HTTP_VERDICT_PENDING = 3 };

enum ks_http_name_kind { HTTP_NAME_ROUTE = 1, HTTP_NAME_HOST = 2 };

/* One series of the in-kernel aggregation. A server's is keyed by its route
 * key, a client's by its Host key and the server's address. */
struct ks_http_agg_key {
	__u32 tgid;
	__u8 role;
	__u8 method;		/* enum ks_http_method */
	__u16 status;		/* 0: no response (closed first) */
	__u16 port;		/* the service side's port */
	__u8 family;		/* client: the server's address family */
	__u8 overflow;		/* 1: the overflow entry of (tgid, role, status, port) */
	__u32 pad;
	__u64 name;		/* key of a struct ks_http_name: route or host; 0: none */
	__u8 addr[16];		/* client: the server's address */
};

struct ks_http_hist {
	__u64 count;
	__u64 sum;
	__u64 buckets[HTTP_BUCKETS];	/* not cumulative; the last is +Inf */
};

struct ks_http_agg {
	struct ks_http_hist duration;	/* nanoseconds */
	struct ks_http_hist req_body;	/* bytes; count 0 when never known */
	struct ks_http_hist resp_body;
};

/* What a route or host key stands for: its first bytes as the kernel saw
 * them, templated once by user space. */
struct ks_http_name {
	__u8 kind;		/* enum ks_http_name_kind */
	__u8 complete;		/* 0: the bytes end inside the path */
	__u16 len;
	__u32 pad;
	char bytes[HTTP_NAME_MAX];
};

#define HTTP_PROC_ARGS 160

/* A process as the kernel saw it at its tracked connections, so that one
 * gone before user space reads the tables is still named. */
struct ks_http_proc {
	char comm[16];
	__u16 args_len;		/* valid bytes of args: NUL-separated arguments */
	__u8 pad[6];
	char args[HTTP_PROC_ARGS];
};

/* Runtime settings user space may change at any time (array `http_config`). */
struct ks_http_config {
	__u32 sample_every;	/* live stream: a record for 1 request in this many (0, 1: all) */
	__u32 pad;
};

struct ks_http_event {
	__u64 duration_ns;	/* request start to response start (or close) */
	__u64 request_bytes;	/* bytes of the request: head and body */
	__u64 response_bytes;	/* bytes of the response's first write */
	__u32 tgid;
	__u32 fd;
	__u8 role;
	__u8 end;		/* enum ks_http_end */
	__u8 family;		/* peer: AF_INET, AF_INET6 or 0 */
	__u8 error;		/* errno of a failed connect */
	__u16 peer_port;	/* host order */
	__u16 req_len;		/* valid bytes in req_head */
	__u16 resp_len;		/* valid bytes in resp_head */
	__u16 local_port;	/* host order; 0 if unknown */
	__u16 weight;		/* requests this record stands for */
	__u16 pad2;
	__u8 peer_addr[16];
	char comm[16];
	__u8 req_head[HTTP_PIPE_HEAD];
	__u8 resp_head[HTTP_RESP_HEAD];
};

/* Socket errors, counted in the kernel per process, operation and errno:
 * a write to a socket already closed or reset (EPIPE, ECONNRESET), a read
 * on one not connected (ENOTCONN), a connect refused, an accept that
 * failed; and, where the syscall exits are hooked, a read or write on an fd
 * that is not open (EBADF: the use-after-close of a connection pool). */
enum ks_sock_op { SOCK_OP_SEND = 1, SOCK_OP_RECV = 2, SOCK_OP_CONNECT = 3, SOCK_OP_ACCEPT = 4 };

/* The errors a client's failed connect is told apart by (errno values),
 * each its own error_type in user space. */
enum ks_connect_error {
	CONNECT_ERR_REFUSED = 111,		/* ECONNREFUSED */
	CONNECT_ERR_TIMEOUT = 110,		/* ETIMEDOUT */
	CONNECT_ERR_HOST_UNREACHABLE = 113,	/* EHOSTUNREACH */
	CONNECT_ERR_NETWORK_UNREACHABLE = 101,	/* ENETUNREACH */
	CONNECT_ERR_RESET = 104,		/* ECONNRESET */
};

struct ks_sock_err_key {
	__u32 tgid;
	__u16 op;		/* enum ks_sock_op */
	__u16 err;		/* errno, positive */
};

#endif
