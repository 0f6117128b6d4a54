// SPDX-License-Identifier: GPL-2.0
/* TCP life of every process, aggregated in the kernel.
 *
 * Each hook exists twice: tp_btf (preferred, typed arguments) and raw_tp
 * (fallback for kernels whose BTF lacks the tracepoint). Both only read the
 * socket through CO-RE probe reads, so one body serves both; the agent sets
 * autoload on the variant it chose before loading.
 *
 * Connection counts, bytes, retransmits and resets are per-CPU counters,
 * latencies are log2 histograms. Per-event records only while the flight
 * recorder is on, and only for rare events: resets, and bursts of
 * retransmits on one connection. */
#include "common.bpf.h"
#include <bpf/bpf_endian.h>
#include "tcp.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* The enums user space decodes, in the object's BTF. */
KS_BTF_ENUM(ks_tcp_dir);
KS_BTF_ENUM(ks_tcp_hist_kind);
KS_BTF_ENUM(ks_tcp_drop_reason);
KS_BTF_ENUM(ks_tcp_event_kind);
KS_BTF_STRUCT(ks_tcp_event);

/* Set when tcp_destroy_sock is hooked: entries then outlive TCP_CLOSE, so a
 * reset sent right after the close (SO_LINGER 0 sets CLOSE, then sends RST)
 * is still charged to its owner. */
const volatile bool keep_until_destroy = false;

/* RTT: 0 off, 1 one sample per connection at close (no per-packet cost),
 * 2 from tcp_probe on incoming segments, at most one per socket per
 * rtt_interval_ns. */
const volatile __u32 rtt_mode = 1;
const volatile __u64 rtt_interval_ns = 1000000000;

/* Sockets we have seen opening, keyed by their kernel address. */
struct ks_sock_info {
	struct ks_tcp_key key;
	__u64 start_ns;		/* SYN sent, or established for inbound */
	__u64 established_ns;	/* 0 until the handshake completes */
	__u64 rtt_last_ns;	/* last RTT sample, for rtt_mode 2 */
	__u64 live_sent;	/* payload bytes already counted while open (tcp_live_bytes) */
	__u64 live_received;
	__u64 burst_start_ns;	/* the retransmit window's start, for the recorder */
	__u32 burst_count;
	__u32 burst_reported;
};

/* The flight recorder: records on, and retransmits in one second that make a burst. */
const volatile bool record_events = false;
const volatile __u32 burst_count = 5;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} tcp_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ks_sock_info);
} socks SEC(".maps");

/* Listening sockets by (netns, port): inbound connections complete in softirq,
 * where `current` is whoever happened to run, so their owner is the process
 * that called listen(). User space seeds it from /proc at start. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ks_tcp_listener_key);
	__type(value, struct ks_tcp_owner);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ks_tcp_key);
	__type(value, struct ks_tcp_counters);
} tcp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_tcp_hist_key);
	__type(value, struct ks_tcp_hist_value);
} tcp_hist SEC(".maps");

/* Open connections per series, counted afresh by each walk of the socket
 * iterator: user space reads and empties it at each collection. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ks_tcp_key);
	__type(value, __u64);
} tcp_open SEC(".maps");

static const struct ks_tcp_counters zero_counters;
static const struct ks_tcp_hist_value zero_hist;
/* Connections whose start we did not see (opened before the agent). */
static const struct ks_tcp_key unknown_key;

static __always_inline struct ks_tcp_counters *stats_for(const struct ks_tcp_key *key)
{
	struct ks_tcp_counters *c = lookup_or_init(&tcp_stats, key, &zero_counters);
	if (!c)
		count_drop(TCP_DROP_STATS_TABLE_FULL);
	return c;
}

static __always_inline void hist_add(const struct ks_tcp_key *key, __u32 kind, __u64 ns)
{
	struct ks_tcp_hist_key hk = { .key = *key, .kind = kind };
	__u64 us = ns / 1000;
	hk.slot = us ? log2_u64(us) : 0;
	if (hk.slot >= TCP_HIST_SLOTS)
		hk.slot = TCP_HIST_SLOTS - 1;
	struct ks_tcp_hist_value *v = lookup_or_init(&tcp_hist, &hk, &zero_hist);
	if (!v) {
		count_drop(TCP_DROP_HIST_TABLE_FULL);
		return;
	}
	v->count++;
	v->sum_ns += ns;
}

static __always_inline const struct ks_tcp_key *key_of(const struct sock *sk)
{
	__u64 addr = (__u64)sk;
	struct ks_sock_info *info = bpf_map_lookup_elem(&socks, &addr);
	return info ? &info->key : &unknown_key;
}

static __always_inline void owner_key(struct ks_tcp_key *k, __u16 port, __u8 dir)
{
	k->tgid = bpf_get_current_pid_tgid() >> 32;
	k->port = port;
	k->dir = dir;
	bpf_get_current_comm(k->comm, sizeof(k->comm));
}

static __always_inline void on_close(const struct sock *sk, int old)
{
	__u64 addr = (__u64)sk;
	__u64 now = bpf_ktime_get_ns();
	struct ks_sock_info *info = bpf_map_lookup_elem(&socks, &addr);
	const struct ks_tcp_key *key = info ? &info->key : &unknown_key;
	struct ks_tcp_counters *c;

	/* Pre-existing connections are closed too; an unseen listener is not one. */
	if (!info && (old == TCP_LISTEN || old == TCP_SYN_SENT || old == TCP_SYN_RECV))
		return;
	c = stats_for(key);
	if (!c)
		goto cleanup;
	if (info && !info->established_ns) {
		c->connect_failed++;
		goto cleanup;
	}
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u64 acked = BPF_CORE_READ(tp, bytes_acked);
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	/* Both counters follow sequence numbers, where SYN and FIN take one
	 * each; report payload bytes only. Our SYN was acked on every outbound
	 * connection that opened; our FIN was acked in these states; a FIN
	 * received sets SOCK_DONE (tcp_fin()). */
	if (info && info->key.dir == TCP_DIR_OUTBOUND && acked)
		acked--;
	if (((1 << old) & ((1 << TCP_FIN_WAIT2) | (1 << TCP_LAST_ACK) | (1 << TCP_CLOSING))) && acked)
		acked--;
	if ((BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && received)
		received--;
	c->closed++;
	/* What the iterator counted while the connection was open is not
	 * counted again. */
	if (info) {
		acked = acked > info->live_sent ? acked - info->live_sent : 0;
		received = received > info->live_received ? received - info->live_received : 0;
	}
	c->sent_bytes += acked;
	c->received_bytes += received;
	if (info) {
		hist_add(key, TCP_HIST_LIFETIME, now - info->start_ns);
		__u64 srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
		if (rtt_mode == 1 && srtt_us)
			hist_add(key, TCP_HIST_RTT, srtt_us * 1000);
	}
cleanup:
	if (info && !keep_until_destroy)
		bpf_map_delete_elem(&socks, &addr);
}

static __always_inline int handle_state(const struct sock *sk, int old, int new)
{
	/* Half the transitions (FIN_WAIT1, CLOSE_WAIT, LAST_ACK...) matter to
	 * nobody: decide from the states alone before touching the socket. */
	if (new != TCP_SYN_SENT && new != TCP_LISTEN && new != TCP_CLOSE &&
	    !(new == TCP_ESTABLISHED && (old == TCP_SYN_SENT || old == TCP_SYN_RECV)))
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;

	__u64 addr = (__u64)sk;
	__u64 now = bpf_ktime_get_ns();

	if (new == TCP_SYN_SENT) {
		/* connect(): process context, so `current` is the owner. */
		struct ks_sock_info info = { .start_ns = now };
		owner_key(&info.key, bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)),
			  TCP_DIR_OUTBOUND);
		if (bpf_map_update_elem(&socks, &addr, &info, BPF_ANY))
			count_drop(TCP_DROP_SOCK_TABLE_FULL);
		return 0;
	}

	if (new == TCP_LISTEN) {
		struct ks_tcp_listener_key lk = {
			.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
			.port = BPF_CORE_READ(sk, __sk_common.skc_num),
		};
		struct ks_tcp_owner owner = { .tgid = bpf_get_current_pid_tgid() >> 32 };
		bpf_get_current_comm(owner.comm, sizeof(owner.comm));
		if (bpf_map_update_elem(&listeners, &lk, &owner, BPF_ANY))
			count_drop(TCP_DROP_LISTENER_TABLE_FULL);
		return 0;
	}

	if (new == TCP_ESTABLISHED && old == TCP_SYN_SENT) {
		struct ks_sock_info *info = bpf_map_lookup_elem(&socks, &addr);
		struct ks_tcp_counters *c;
		if (!info) {
			c = stats_for(&unknown_key);
			if (c)
				c->opened++;
			return 0;
		}
		info->established_ns = now;
		hist_add(&info->key, TCP_HIST_CONNECT, now - info->start_ns);
		c = stats_for(&info->key);
		if (c)
			c->opened++;
		return 0;
	}

	if (new == TCP_ESTABLISHED && old == TCP_SYN_RECV) {
		struct ks_tcp_listener_key lk = {
			.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
			.port = BPF_CORE_READ(sk, __sk_common.skc_num),
		};
		struct ks_tcp_owner *owner = bpf_map_lookup_elem(&listeners, &lk);
		struct ks_sock_info info = { .start_ns = now, .established_ns = now };
		info.key.port = lk.port;
		info.key.dir = TCP_DIR_INBOUND;
		if (owner) {
			info.key.tgid = owner->tgid;
			__builtin_memcpy(info.key.comm, owner->comm, sizeof(info.key.comm));
		}
		if (bpf_map_update_elem(&socks, &addr, &info, BPF_ANY))
			count_drop(TCP_DROP_SOCK_TABLE_FULL);
		struct ks_tcp_counters *c = stats_for(&info.key);
		if (c)
			c->opened++;
		return 0;
	}

	if (new == TCP_CLOSE) {
		if (old == TCP_LISTEN) {
			struct ks_tcp_listener_key lk = {
				.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
				.port = BPF_CORE_READ(sk, __sk_common.skc_num),
			};
			bpf_map_delete_elem(&listeners, &lk);
			return 0;
		}
		on_close(sk, old);
	}
	return 0;
}

static __always_inline int handle_probe(const struct sock *sk)
{
	__u64 addr = (__u64)sk;
	struct ks_sock_info *info = bpf_map_lookup_elem(&socks, &addr);
	/* Per segment, so as little as possible: sockets we did not see open
	 * are skipped, and one sample per socket per interval is enough. */
	if (!info)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (info->rtt_last_ns && now - info->rtt_last_ns < rtt_interval_ns)
		return 0;
	info->rtt_last_ns = now;
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	/* srtt_us holds 8x the smoothed RTT (Van Jacobson's fixed point). */
	__u64 srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	if (srtt_us)
		hist_add(&info->key, TCP_HIST_RTT, srtt_us * 1000);
	return 0;
}

static __always_inline void record_event(const struct sock *sk, const struct ks_tcp_key *key, __u32 kind, __u32 count)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	struct ks_tcp_event *e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		count_drop(TCP_DROP_EVENTS_FULL);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->key = *key;
	e->kind = kind;
	e->count = count;
	e->family = family;
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	/* A socket closed with SO_LINGER 0 is unhashed (skc_num 0) before its reset. */
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!e->sport)
		e->sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->pad = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	/* Nobody is woken: the agent drains these with its other tables. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline int handle_retransmit(const struct sock *sk)
{
	__u64 addr = (__u64)sk;
	struct ks_sock_info *info = bpf_map_lookup_elem(&socks, &addr);
	struct ks_tcp_counters *c = stats_for(info ? &info->key : &unknown_key);
	if (c)
		c->retransmits++;
	/* A burst: `burst_count` retransmits within a second, one record per window. */
	if (!record_events || !info)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (now - info->burst_start_ns > 1000000000ULL) {
		info->burst_start_ns = now;
		info->burst_count = 0;
		info->burst_reported = 0;
	}
	info->burst_count++;
	if (info->burst_count >= burst_count && !info->burst_reported) {
		info->burst_reported = 1;
		record_event(sk, &info->key, TCP_EV_RETRANSMIT_BURST, info->burst_count);
	}
	return 0;
}

static __always_inline int handle_destroy(const struct sock *sk)
{
	__u64 addr = (__u64)sk;
	bpf_map_delete_elem(&socks, &addr);
	return 0;
}

static __always_inline int handle_send_reset(const struct sock *sk)
{
	/* sk is NULL when the reset answers a segment for no socket. */
	const struct ks_tcp_key *key = sk ? key_of(sk) : &unknown_key;
	struct ks_tcp_counters *c = stats_for(key);
	if (c)
		c->resets_sent++;
	/* A reset for no socket (a closed port) is not a connection's. */
	if (record_events && sk)
		record_event(sk, key, TCP_EV_RESET_SENT, 0);
	return 0;
}

static __always_inline int handle_receive_reset(const struct sock *sk)
{
	const struct ks_tcp_key *key = key_of(sk);
	struct ks_tcp_counters *c = stats_for(key);
	if (c)
		c->resets_received++;
	if (record_events)
		record_event(sk, key, TCP_EV_RESET_RECEIVED, 0);
	return 0;
}

/* tp_btf: typed tracepoints, no tracefs needed. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_btf, const struct sock *sk, int old, int new)
{ return handle_state(sk, old, new); }

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_probe_btf, const struct sock *sk)
{ return handle_probe(sk); }

/* Since Linux 6.16 the tracepoint also fires for failed attempts (a local
 * drop, a busy queue) and passes their error; only sent segments count, as
 * in the kernel's own RetransSegs. Older kernels pass no error: the CO-RE
 * check is false there and the read of ctx[2] is dead code. */
#define RETRANSMIT_FAILED(ctx) \
	(bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb, err) && (int)(ctx)[2] != 0)

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_btf, const struct sock *sk)
{ return RETRANSMIT_FAILED(ctx) ? 0 : handle_retransmit(sk); }

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset_btf, const struct sock *sk)
{ return handle_send_reset(sk); }

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset_btf, const struct sock *sk)
{ return handle_receive_reset(sk); }

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy_btf, const struct sock *sk)
{ return handle_destroy(sk); }

/* raw_tp: the same tracepoints with untyped arguments (kernels >= 4.17). */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcp_state_raw, const struct sock *sk, int old, int new)
{ return handle_state(sk, old, new); }

SEC("raw_tp/tcp_probe")
int BPF_PROG(tcp_probe_raw, const struct sock *sk)
{ return handle_probe(sk); }

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_raw, const struct sock *sk)
{ return RETRANSMIT_FAILED(ctx) ? 0 : handle_retransmit(sk); }

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(tcp_send_reset_raw, const struct sock *sk)
{ return handle_send_reset(sk); }

SEC("raw_tp/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset_raw, const struct sock *sk)
{ return handle_receive_reset(sk); }

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(tcp_destroy_raw, const struct sock *sk)
{ return handle_destroy(sk); }

/* Bytes of open connections, at each collection: the TCP socket iterator
 * walks every socket once, and each one this object saw open adds what it
 * sent and received since the last walk. Nothing runs per packet, and a
 * long-lived connection's traffic shows while it lasts. Only ESTABLISHED
 * and CLOSE_WAIT are read here; the states around a FIN are left to the
 * close, which counts the rest. */
SEC("iter/tcp")
int tcp_live_bytes(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	int state = skc->skc_state;
	if (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	__u64 addr = (__u64)skc;
	struct ks_sock_info *info = bpf_map_lookup_elem(&socks, &addr);
	if (!info || !info->established_ns)
		return 0;
	__u64 *open = bpf_map_lookup_elem(&tcp_open, &info->key);
	if (open) {
		(*open)++; /* the iterator runs one walk at a time */
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&tcp_open, &info->key, &one, BPF_NOEXIST);
	}
	__u64 acked = tp->bytes_acked, received = tp->bytes_received;
	if (info->key.dir == TCP_DIR_OUTBOUND && acked)
		acked--; /* our SYN */
	if (state == TCP_CLOSE_WAIT && received)
		received--; /* their FIN */
	if (acked <= info->live_sent && received <= info->live_received)
		return 0;
	struct ks_tcp_counters *c = stats_for(&info->key);
	if (!c)
		return 0;
	if (acked > info->live_sent) {
		c->sent_bytes += acked - info->live_sent;
		info->live_sent = acked;
	}
	if (received > info->live_received) {
		c->received_bytes += received - info->live_received;
		info->live_received = received;
	}
	return 0;
}
