// SPDX-License-Identifier: GPL-2.0
/* A user's own BPF object, exported by Kernscope from its maps alone (see
 * kernscope.yaml beside it): the programs attach by their SEC() names, the
 * agent reads the maps and turns keys into labels. Nothing here knows about
 * Kernscope but the map layouts the YAML declares. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

/* Executions by user and command. */
struct exec_key {
	__u32 uid;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct exec_key);
	__type(value, __u64);
} execs SEC(".maps");

/* Sizes of write(2) calls by command, in log2 buckets: the last key field
 * is the bucket, as ebpf_exporter's exp2 histograms have it. */
struct write_key {
	char comm[16];
	__u32 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct write_key);
	__type(value, __u64);
} write_sizes SEC(".maps");

/* TCP connection attempts by destination address and port. */
struct connect_key {
	__u8 daddr[4];
	__u16 dport;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct connect_key);
	__type(value, __u64);
} connects SEC(".maps");

/* Expired timers by kernel function: keys are addresses, labels are names. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} timers SEC(".maps");

static __always_inline void bump(void *map, const void *key)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(map, key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
}

SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
	struct exec_key k = { .uid = (__u32)bpf_get_current_uid_gid() };
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	bump(&execs, &k);
	return 0;
}

struct sys_enter_write {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 fd;
	__u64 buf;
	__u64 count;
};

SEC("tracepoint/syscalls/sys_enter_write")
int on_write(struct sys_enter_write *ctx)
{
	struct write_key k = {};
	__u64 n = ctx->count;
	__u32 b = 0;
	while (n > 1 && b < 63) {
		n >>= 1;
		b++;
	}
	k.bucket = b;
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	__u64 one = 1, *v = bpf_map_lookup_elem(&write_sizes, &k);
	if (v)
		*v += 1;
	else
		bpf_map_update_elem(&write_sizes, &k, &one, BPF_NOEXIST);
	return 0;
}

struct inet_sock_set_state {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
};

SEC("tracepoint/sock/inet_sock_set_state")
int on_state(struct inet_sock_set_state *ctx)
{
	/* TCP_SYN_SENT: an outgoing connection attempt, once each. */
	if (ctx->newstate != 2 || ctx->family != 2 || ctx->protocol != 6)
		return 0;
	struct connect_key k = { .dport = ctx->dport };
	__builtin_memcpy(k.daddr, ctx->daddr, 4);
	bump(&connects, &k);
	return 0;
}

struct timer_expire_entry {
	__u64 common;
	void *timer;
	unsigned long now;
	void *function;
};

SEC("tracepoint/timer/timer_expire_entry")
int on_timer(struct timer_expire_entry *ctx)
{
	__u64 fn = (__u64)ctx->function;
	bump(&timers, &fn);
	return 0;
}
