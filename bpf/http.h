/* HTTP collector: layouts shared by http.bpf.c and src/collectors/http/decode.ts. */
#ifndef KERNSCOPE_HTTP_H
#define KERNSCOPE_HTTP_H

#define HTTP_REQ_HEAD 160	/* bytes of a request's start kept for user space */
#define HTTP_RESP_HEAD 160	/* bytes of a response's start sent with the record */

enum ks_http_role { HTTP_ROLE_SERVER = 1, HTTP_ROLE_CLIENT = 2 };
enum ks_http_phase {
	HTTP_IDLE = 0,
	HTTP_PARTIAL = 1,	/* fewer than 8 bytes of what may start a request */
	HTTP_REQUEST = 2,	/* a request started, its response has not */
};

/* Enough of a status line to know it: "HTTP/1.1 200". */
#define HTTP_STATUS_MIN 12
#define HTTP_RESP_PRE 16

/* Why a record was sent. */
enum ks_http_end {
	HTTP_END_RESPONSE = 0,	/* the response's status line was seen */
	HTTP_END_CLOSED = 1,	/* the connection closed with a request in flight */
	HTTP_END_EXTRA = 2,	/* a further response with no request in flight:
				 * one of several pipelined requests */
	HTTP_END_CONNECT_FAILED = 3, /* a client's connect failed; errno in `error` */
	HTTP_END_JUDGE = 4,	/* not a request: a process user space has not judged yet */
};

enum ks_http_drop_reason {
	HTTP_DROP_RINGBUF_FULL = 0,
	HTTP_DROP_CONN_TABLE_FULL = 1,
	HTTP_DROP_TOTALS_FULL = 2,
};

/* Verdicts user space gives a process when a watch list is set. */
enum ks_http_verdict { HTTP_VERDICT_WATCH = 1, HTTP_VERDICT_IGNORE = 2, HTTP_VERDICT_PENDING = 3 };

/* Runtime settings user space may change at any time (array `http_config`). */
struct ks_http_config {
	__u32 sample_every;	/* a record for 1 request in this many; 0 or 1: all */
	__u32 pad;
};

/* Exact counts kept in the kernel whatever the sampling: per process,
 * role, service-side port and status class (0: no response). */
struct ks_http_total_key {
	__u32 tgid;
	__u8 role;
	__u8 status_class;
	__u16 port;
};

struct ks_http_total {
	__u64 count;
	__u64 duration_ns;
	__u64 recorded;		/* of `count`, sent to user space as records */
};

struct ks_http_event {
	__u64 duration_ns;	/* request start to response start (or close) */
	__u64 request_bytes;	/* bytes of the request: head and body */
	__u64 response_bytes;	/* bytes of the response's first write */
	__u32 tgid;
	__u32 fd;
	__u8 role;
	__u8 end;
	__u8 family;		/* peer: AF_INET, AF_INET6 or 0 */
	__u8 error;		/* errno of a failed connect */
	__u16 peer_port;	/* host order */
	__u16 req_len;		/* valid bytes in req_head */
	__u16 resp_len;		/* valid bytes in resp_head */
	__u16 local_port;	/* host order; 0 if unknown */
	__u16 weight;		/* requests this record stands for (sampling) */
	__u16 pad2;
	__u8 peer_addr[16];
	char comm[16];
	__u8 req_head[HTTP_REQ_HEAD];
	__u8 resp_head[HTTP_RESP_HEAD];
};

#endif
