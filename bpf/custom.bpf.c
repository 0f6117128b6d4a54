// SPDX-License-Identifier: GPL-2.0
/* One precompiled program for every metric a user declares on a uprobe,
 * uretprobe or USDT probe: what to read, how to bucket and filter it comes
 * from read-only constants set at load, one object instance per probe. The
 * aggregation happens here; user space only names the series. */
#include "common.bpf.h"
#include <bpf/usdt.bpf.h>
#include "custom.h"

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

const volatile struct ks_slot slots[CUSTOM_SLOTS] = {};
const volatile __u8 value_src = KS_SRC_NONE;
const volatile __u8 label_src = KS_SRC_NONE;
const volatile __u8 filter_src = KS_SRC_NONE;
const volatile __u8 filter_op = KS_OP_NONE;
const volatile __s64 filter_val = 0;
const volatile __u8 bucket_mode = KS_BUCKETS_NONE;
const volatile __u32 nbounds = 0;
const volatile __s64 bounds[CUSTOM_BOUNDS] = {};
/* The return is hooked too: `ret` and `duration` are known there. */
const volatile bool has_return = false;
const volatile __u32 target_tgid = 0;

struct pending {
	__u64 ts;
	__s64 vals[CUSTOM_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ks_agg_key);
	__type(value, struct ks_agg_value);
} agg SEC(".maps");

static __always_inline __s64 sext(__u64 v, __u8 size, bool is_signed)
{
	if (!is_signed || size >= 8)
		return v;
	int shift = 64 - size * 8;
	return ((__s64)(v << shift)) >> shift;
}

static __always_inline __s64 read_slot(const volatile struct ks_slot *s, __u64 arg)
{
	if (s->kind == KS_SLOT_ARG)
		return sext(arg, s->size ? s->size : 8, s->is_signed);
	if (s->kind == KS_SLOT_ARG_DEREF) {
		__u64 v = 0;
		__u8 size = s->size;
		if (size == 1 || size == 2 || size == 4 || size == 8)
			bpf_probe_read_user(&v, size & 0xf, (void *)(arg + s->offset));
		return sext(v, size, s->is_signed);
	}
	return 0;
}

static __always_inline __s64 pick(__u8 src, const __s64 *vals, __s64 ret, __s64 dur)
{
	if (src >= KS_SRC_SLOT0 && src < KS_SRC_SLOT0 + CUSTOM_SLOTS)
		return vals[(src - KS_SRC_SLOT0) & (CUSTOM_SLOTS - 1)];
	if (src == KS_SRC_RET)
		return ret;
	if (src == KS_SRC_DURATION)
		return dur;
	return 0;
}

static __always_inline bool passes(__s64 v)
{
	switch (filter_op) {
	case KS_OP_EQ: return v == filter_val;
	case KS_OP_NE: return v != filter_val;
	case KS_OP_LT: return v < filter_val;
	case KS_OP_LE: return v <= filter_val;
	case KS_OP_GT: return v > filter_val;
	case KS_OP_GE: return v >= filter_val;
	default: return true;
	}
}

static __always_inline void aggregate(const __s64 *vals, __s64 ret, __s64 dur)
{
	if (filter_op != KS_OP_NONE && !passes(pick(filter_src, vals, ret, dur)))
		return;
	__s64 value = pick(value_src, vals, ret, dur);
	struct ks_agg_key key = { .label = pick(label_src, vals, ret, dur) };
	if (bucket_mode == KS_BUCKETS_EXPLICIT) {
		__u32 b = 0;
		for (int i = 0; i < CUSTOM_BOUNDS; i++) {
			if (i >= nbounds || value <= bounds[i])
				break;
			b++;
		}
		key.bucket = b; /* nbounds means above the last bound: +Inf */
	} else if (bucket_mode == KS_BUCKETS_LOG2) {
		key.bucket = value > 0 ? log2_u64(value) : 0;
	}
	struct ks_agg_value zero = {};
	struct ks_agg_value *v = bpf_map_lookup_elem(&agg, &key);
	if (!v) {
		bpf_map_update_elem(&agg, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&agg, &key);
		if (!v) {
			count_drop(CUSTOM_DROP_AGG_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&v->count, 1);
	__sync_fetch_and_add(&v->sum, value);
}

/* Probe reads, not direct loads: a direct load per case lets the compiler
 * merge the cases into one load at a computed context offset, which the
 * verifier refuses. */
static __always_inline __u64 parm(struct pt_regs *ctx, __u8 i)
{
	switch (i) {
	case 0: return PT_REGS_PARM1_CORE(ctx);
	case 1: return PT_REGS_PARM2_CORE(ctx);
	case 2: return PT_REGS_PARM3_CORE(ctx);
	case 3: return PT_REGS_PARM4_CORE(ctx);
	default: return PT_REGS_PARM5_CORE(ctx); /* libbpf 1.1 names five */
	}
}

static __always_inline int entry(__s64 *vals)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (target_tgid && (id >> 32) != target_tgid)
		return 0;
	if (!has_return) {
		aggregate(vals, 0, 0);
		return 0;
	}
	struct pending p = { .ts = bpf_ktime_get_ns() };
	for (int i = 0; i < CUSTOM_SLOTS; i++)
		p.vals[i] = vals[i];
	if (bpf_map_update_elem(&pending, &id, &p, BPF_ANY))
		count_drop(CUSTOM_DROP_PENDING_FULL);
	return 0;
}

SEC("uprobe")
int custom_entry(struct pt_regs *ctx)
{
	__s64 vals[CUSTOM_SLOTS] = {};
	for (int i = 0; i < CUSTOM_SLOTS; i++) {
		const volatile struct ks_slot *s = &slots[i];
		if (s->kind != KS_SLOT_NONE)
			vals[i] = read_slot(s, parm(ctx, s->arg));
	}
	return entry(vals);
}

SEC("usdt")
int custom_usdt(struct pt_regs *ctx)
{
	__s64 vals[CUSTOM_SLOTS] = {};
	for (int i = 0; i < CUSTOM_SLOTS; i++) {
		const volatile struct ks_slot *s = &slots[i];
		long arg = 0;
		if (s->kind != KS_SLOT_NONE && !bpf_usdt_arg(ctx, s->arg, &arg))
			vals[i] = read_slot(s, arg);
	}
	return entry(vals);
}

/* Ends the call or span its thread started: `ret` (0 for a USDT pair) and
 * the time since the start are known now. */
static __always_inline int finish(__s64 ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &id);
	if (!p)
		return 0;
	__s64 vals[CUSTOM_SLOTS];
	for (int i = 0; i < CUSTOM_SLOTS; i++)
		vals[i] = p->vals[i];
	__s64 dur = bpf_ktime_get_ns() - p->ts;
	bpf_map_delete_elem(&pending, &id);
	aggregate(vals, ret, dur);
	return 0;
}

SEC("uretprobe")
int custom_return(struct pt_regs *ctx)
{ return finish((__s64)PT_REGS_RC_CORE(ctx)); }

/* The second probe of a pair (start and done USDT probes): its thread's
 * start is pending, the time between is the duration. */
SEC("usdt")
int custom_usdt_done(struct pt_regs *ctx)
{ return finish(0); }
