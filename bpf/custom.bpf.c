// SPDX-License-Identifier: GPL-2.0
/* One precompiled program for every probe a user declares (uprobe,
 * uretprobe, USDT, kernel tracepoint): what to read, how to filter, label
 * and bucket it comes from read-only constants set at load, one object
 * instance per probe whose metrics share its hooks. The aggregation happens
 * here; user space only names the series. */
#include "common.bpf.h"
#include <bpf/usdt.bpf.h>
#include "custom.h"

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* The enums user space packs and decodes (src/collectors/custom/layout.ts). */
KS_BTF_ENUM(ks_slot_kind);
KS_BTF_ENUM(ks_src);
KS_BTF_ENUM(ks_op);
KS_BTF_ENUM(ks_buckets);

const volatile struct ks_slot slots[CUSTOM_SLOTS] = {};
const volatile __u32 nmetrics = 0;
const volatile struct ks_metric metrics[CUSTOM_METRICS] = {};
/* Some metric needs the end (return, done probe): starts are kept. */
const volatile bool has_return = false;
const volatile __u32 target_tgid = 0;
/* Tracepoint pairs are matched by up to two fields (e.g. dev and sector),
 * not by thread: a block request completes in another context. */
const volatile __u8 pair_slots[2] = {};	/* 1 + slot index; 0 unused */
const volatile struct ks_slot end_slots[2] = {};

struct pending {
	__u64 ts;
	__s64 vals[CUSTOM_SLOTS];
	char str[CUSTOM_STR];
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

/* Scratch for the start of a call: too big for the stack beside a key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending);
} scratch SEC(".maps");

static __always_inline __s64 sext(__u64 v, __u8 size, bool is_signed)
{
	if (!is_signed || size >= 8)
		return v;
	int shift = 64 - size * 8;
	return ((__s64)(v << shift)) >> shift;
}

static __always_inline bool sized(__u8 size)
{
	return size == 1 || size == 2 || size == 4 || size == 8;
}

/* A numeric slot from an argument, or the bytes it points to. */
static __always_inline __s64 read_arg(const volatile struct ks_slot *s, __u64 arg)
{
	__u8 size = s->size;
	if (s->kind == KS_SLOT_ARG)
		return sext(arg, size ? size : 8, s->is_signed);
	if (s->kind == KS_SLOT_ARG_DEREF && sized(size)) {
		__u64 v = 0;
		bpf_probe_read_user(&v, size & 0xf, (void *)(arg + s->offset));
		return sext(v, size, s->is_signed);
	}
	return 0;
}

/* A numeric slot from a tracepoint record. */
static __always_inline __s64 read_field(const volatile struct ks_slot *s, void *ctx)
{
	__u8 size = s->size;
	__u64 v = 0;
	if (s->kind == KS_SLOT_FIELD && sized(size)) {
		bpf_probe_read_kernel(&v, size & 0xf, (void *)((unsigned long)ctx + s->offset));
		return sext(v, size, s->is_signed);
	}
	return 0;
}

/* Strings are cut to the declared size, the rest zeroed: equal strings
 * make equal keys. */
static __always_inline void clip(char *str, __u8 size)
{
	for (int i = 0; i < CUSTOM_STR; i++)
		if (i >= size)
			str[i] = 0;
}

static __always_inline void read_str(const volatile struct ks_slot *s, __u64 arg, void *ctx, char *str)
{
	unsigned long base = (unsigned long)ctx;
	switch (s->kind) {
	case KS_SLOT_STR_USER:
		bpf_probe_read_user_str(str, CUSTOM_STR, (void *)(arg + s->offset));
		break;
	case KS_SLOT_STR_FIELD:
		bpf_probe_read_kernel_str(str, CUSTOM_STR, (void *)(base + s->offset));
		break;
	case KS_SLOT_STR_DATALOC: {
		__u32 loc = 0;
		bpf_probe_read_kernel(&loc, 4, (void *)(base + s->offset));
		bpf_probe_read_kernel_str(str, CUSTOM_STR, (void *)(base + (loc & 0xffff)));
		break;
	}
	default:
		return;
	}
	clip(str, s->size);
}

static __always_inline bool is_str(__u8 kind)
{
	return kind >= KS_SLOT_STR_USER;
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

static __always_inline bool passes(const volatile struct ks_metric *m, __s64 v)
{
	__s64 want = m->filter_val;
	switch (m->filter_op) {
	case KS_OP_EQ: return v == want;
	case KS_OP_NE: return v != want;
	case KS_OP_LT: return v < want;
	case KS_OP_LE: return v <= want;
	case KS_OP_GT: return v > want;
	case KS_OP_GE: return v >= want;
	default: return true;
	}
}

/* Counts one event in every metric whose moment it is: at the start the
 * metrics that need no end, at the end the others. */
static __always_inline void aggregate(struct pending *p, __s64 ret, __s64 dur, bool at_end)
{
	for (__u32 i = 0; i < CUSTOM_METRICS; i++) {
		if (i >= nmetrics)
			break;
		const volatile struct ks_metric *m = &metrics[i];
		if (m->needs_return != at_end)
			continue;
		if (m->filter_op != KS_OP_NONE && !passes(m, pick(m->filter_src, p->vals, ret, dur)))
			continue;
		__s64 value = pick(m->value_src, p->vals, ret, dur);
		struct ks_agg_key key = { .metric = i };
		if (m->label_str)
			__builtin_memcpy(key.str, p->str, CUSTOM_STR);
		key.label = pick(m->label_src, p->vals, ret, dur);
		key.label2 = pick(m->label2_src, p->vals, ret, dur);
		if (m->bucket_mode == KS_BUCKETS_EXPLICIT) {
			__u32 b = 0;
			for (int j = 0; j < CUSTOM_BOUNDS; j++) {
				if (j >= m->nbounds || value <= m->bounds[j])
					break;
				b++;
			}
			key.bucket = b; /* nbounds means above the last bound: +Inf */
		} else if (m->bucket_mode == KS_BUCKETS_LOG2) {
			key.bucket = value > 0 ? log2_u64(value) : 0;
		}
		struct ks_agg_value zero = {};
		struct ks_agg_value *v = bpf_map_lookup_elem(&agg, &key);
		if (!v) {
			bpf_map_update_elem(&agg, &key, &zero, BPF_NOEXIST);
			v = bpf_map_lookup_elem(&agg, &key);
			if (!v) {
				count_drop(CUSTOM_DROP_AGG_FULL);
				continue;
			}
		}
		__sync_fetch_and_add(&v->count, 1);
		__sync_fetch_and_add(&v->sum, value);
		v->last = value;
	}
}

static __always_inline struct pending *start_scratch(void)
{
	__u32 zero = 0;
	struct pending *p = bpf_map_lookup_elem(&scratch, &zero);
	if (p)
		__builtin_memset(p, 0, sizeof(*p));
	return p;
}

/* Counts what needs no end, and keeps the start for the rest. */
static __always_inline int begin(struct pending *p, __u64 key)
{
	aggregate(p, 0, 0, false);
	if (!has_return)
		return 0;
	p->ts = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&pending, &key, p, BPF_ANY))
		count_drop(CUSTOM_DROP_PENDING_FULL);
	return 0;
}

/* Ends what `key` started: `ret` (0 but at a return) and the time since
 * the start are known now. */
static __always_inline int finish(__u64 key, __s64 ret)
{
	struct pending *p = bpf_map_lookup_elem(&pending, &key);
	if (!p)
		return 0;
	__s64 dur = bpf_ktime_get_ns() - p->ts;
	aggregate(p, ret, dur, true);
	bpf_map_delete_elem(&pending, &key);
	return 0;
}

static __always_inline bool wanted(__u64 id)
{
	return !target_tgid || (id >> 32) == target_tgid;
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

/* The start of an event in the traced process's thread: NULL when the
 * probe is for another process (`pid`) or the scratch is missing. */
static __always_inline struct pending *open_start(__u64 *id)
{
	*id = bpf_get_current_pid_tgid();
	return wanted(*id) ? start_scratch() : NULL;
}

/* Slot `i` from an argument's value: the string read, or a number. */
static __always_inline void take(const volatile struct ks_slot *s, __u64 arg, void *ctx, struct pending *p, int i)
{
	if (is_str(s->kind))
		read_str(s, arg, ctx, p->str);
	else
		p->vals[i & (CUSTOM_SLOTS - 1)] = read_arg(s, arg);
}

SEC("uprobe")
int custom_entry(struct pt_regs *ctx)
{
	__u64 id;
	struct pending *p = open_start(&id);
	if (!p)
		return 0;
	for (int i = 0; i < CUSTOM_SLOTS; i++) {
		const volatile struct ks_slot *s = &slots[i];
		if (s->kind != KS_SLOT_NONE)
			take(s, parm(ctx, s->arg), ctx, p, i);
	}
	return begin(p, id);
}

SEC("usdt")
int custom_usdt(struct pt_regs *ctx)
{
	__u64 id;
	struct pending *p = open_start(&id);
	if (!p)
		return 0;
	for (int i = 0; i < CUSTOM_SLOTS; i++) {
		const volatile struct ks_slot *s = &slots[i];
		long arg = 0;
		if (s->kind != KS_SLOT_NONE && !bpf_usdt_arg(ctx, s->arg, &arg))
			take(s, arg, ctx, p, i);
	}
	return begin(p, id);
}

SEC("uretprobe")
int custom_return(struct pt_regs *ctx)
{
	return finish(bpf_get_current_pid_tgid(), (__s64)PT_REGS_RC_CORE(ctx));
}

/* The second probe of a USDT pair (start and done): the thread's start is
 * pending, the time between is the duration. */
SEC("usdt")
int custom_usdt_done(struct pt_regs *ctx)
{
	return finish(bpf_get_current_pid_tgid(), 0);
}

static __always_inline __u64 pair_key(__s64 a, __s64 b)
{
	return (__u64)a * 0x9E3779B97F4A7C15ULL ^ (__u64)b;
}

SEC("tracepoint")
int custom_tp(void *ctx)
{
	__u64 id;
	struct pending *p = open_start(&id);
	if (!p)
		return 0;
	for (int i = 0; i < CUSTOM_SLOTS; i++) {
		const volatile struct ks_slot *s = &slots[i];
		if (is_str(s->kind))
			read_str(s, 0, ctx, p->str);
		else if (s->kind != KS_SLOT_NONE)
			p->vals[i] = read_field(s, ctx);
	}
	__u64 key = id;
	if (pair_slots[0])
		key = pair_key(p->vals[(pair_slots[0] - 1) & 3], pair_slots[1] ? p->vals[(pair_slots[1] - 1) & 3] : 0);
	return begin(p, key);
}

/* The end of a tracepoint pair, found by the same fields at this one. */
SEC("tracepoint")
int custom_tp_done(void *ctx)
{
	__u64 key = bpf_get_current_pid_tgid();
	if (pair_slots[0])
		key = pair_key(read_field(&end_slots[0], ctx), pair_slots[1] ? read_field(&end_slots[1], ctx) : 0);
	return finish(key, 0);
}
