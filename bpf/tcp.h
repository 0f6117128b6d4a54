/* TCP collector: the one layout of its tables. src/collectors/tcp/decode.ts
 * reads every offset and enum value below from the object's BTF. */
#ifndef KERNSCOPE_TCP_H
#define KERNSCOPE_TCP_H

enum ks_tcp_dir { TCP_DIR_UNKNOWN = 0, TCP_DIR_OUTBOUND = 1, TCP_DIR_INBOUND = 2 };

/* Who a connection belongs to. `port` is the service side's port: the remote
 * port of an outbound connection, the local port of an inbound one. */
struct ks_tcp_key {
	__u32 tgid;
	__u16 port;
	__u8 dir;
	__u8 pad;
	char comm[16];
}; /* 24 bytes */

struct ks_tcp_counters {
	__u64 opened;
	__u64 closed;
	__u64 sent_bytes;
	__u64 received_bytes;
	__u64 retransmits;
	__u64 resets_sent;
	__u64 resets_received;
	__u64 connect_failed;
}; /* 64 bytes */

enum ks_tcp_hist_kind { TCP_HIST_CONNECT = 0, TCP_HIST_RTT = 1, TCP_HIST_LIFETIME = 2 };

/* Log2 histograms in microseconds: slot i counts values in [2^i, 2^(i+1)) µs;
 * 32 slots reach 71 minutes, the last slot also takes everything above. */
#define TCP_HIST_SLOTS 32

struct ks_tcp_hist_key {
	struct ks_tcp_key key;
	__u32 kind;
	__u32 slot;
}; /* 32 bytes */

struct ks_tcp_hist_value {
	__u64 count;
	__u64 sum_ns;
};

enum ks_tcp_drop_reason {
	TCP_DROP_SOCK_TABLE_FULL = 0,
	TCP_DROP_STATS_TABLE_FULL = 1,
	TCP_DROP_HIST_TABLE_FULL = 2,
	TCP_DROP_LISTENER_TABLE_FULL = 3,
	TCP_DROP_EVENTS_FULL = 4,
};

/* Notable events of one connection, for the flight recorder (only while it
 * is on): a reset, or a burst of retransmits. */
enum ks_tcp_event_kind { TCP_EV_RESET_SENT = 1, TCP_EV_RESET_RECEIVED = 2, TCP_EV_RETRANSMIT_BURST = 3 };

struct ks_tcp_event {
	__u64 ts_ns;
	struct ks_tcp_key key;	/* its owner, as the counters have it; tgid 0 when unseen */
	__u32 kind;
	__u32 count;		/* burst: retransmits within the window */
	__u8 family;		/* AF_INET, AF_INET6 */
	__u8 state;		/* the socket's TCP state */
	__u16 sport;		/* host order */
	__u16 dport;
	__u16 pad;
	__u8 saddr[16];		/* network order; IPv4 in the first 4 bytes */
	__u8 daddr[16];
}; /* 80 bytes */

struct ks_tcp_listener_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct ks_tcp_owner {
	__u32 tgid;
	__u32 pad;
	char comm[16];
};

#endif
