// SPDX-License-Identifier: GPL-2.0
/* Exercises the addon in tests: rodata knobs, hash and array maps, a ring
 * buffer, and every attach kind the agent uses. Filters on one tgid so other
 * processes on the machine never disturb the counts. */
#include "common.bpf.h"
#include <bpf/usdt.bpf.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
const volatile __u64 cookie = 0;

KS_DECLARE_DROPS

struct event {
	__u32 tgid;
	__u32 seq;
	__u64 cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

/* key: 0 syscall tracepoint, 1 tp_btf, 2 raw_tp, 3 uprobe, 4 uretprobe */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} percpu_hits SEC(".maps");

__u32 seq = 0;

static __always_inline int hit(__u32 kind)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	__u64 one = 1, zero = 0;
	__u64 *v = bpf_map_lookup_elem(&hits, &kind);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&hits, &kind, &one, BPF_ANY);
	v = lookup_or_init(&percpu_hits, &kind, &zero);
	if (v)
		(*v)++;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(0);
		return 0;
	}
	e->tgid = target_tgid;
	e->seq = seq++;
	e->cookie = cookie;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int selftest_tp(void *ctx) { return hit(0); }

SEC("tp_btf/sys_enter")
int BPF_PROG(selftest_btf, struct pt_regs *regs, long id)
{ return id == 110 /* __NR_getppid on x86_64 */ ? hit(1) : 0; }

SEC("raw_tp/sys_enter")
int BPF_PROG(selftest_raw, struct pt_regs *regs, long id)
{ return id == 110 ? hit(2) : 0; }

SEC("uprobe")
int selftest_uprobe(void *ctx) { return hit(3); }

SEC("uretprobe")
int selftest_uretprobe(void *ctx) { return hit(4); }

/* Attached to a test cgroup: every egress packet and every active connect of
 * its members is counted (keys 5 and 6 of `hits`). */
static __always_inline void bump(__u32 kind)
{
	__u64 one = 1;
	__u64 *v = bpf_map_lookup_elem(&hits, &kind);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&hits, &kind, &one, BPF_ANY);
}

SEC("cgroup_skb/egress")
int selftest_egress(struct __sk_buff *skb)
{
	bump(5);
	return 1; /* let it through */
}

SEC("sockops")
int selftest_sockops(struct bpf_sock_ops *ops)
{
	if (ops->op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		bump(6);
	return 1;
}

SEC("perf_event")
int selftest_perf(void *ctx)
{
	bump(7);
	return 0;
}

/* USDT kernscope:tick(n): counts hits (key 8) and sums the argument (key 9). */
SEC("usdt")
int BPF_USDT(selftest_usdt, long n)
{
	__u32 sum_key = 9;
	__u64 *v;
	bump(8);
	v = bpf_map_lookup_elem(&hits, &sum_key);
	if (v)
		__sync_fetch_and_add(v, n);
	else
		bpf_map_update_elem(&hits, &sum_key, &n, BPF_ANY);
	return 0;
}
