/* Helpers shared by every Kernscope BPF object. */
#ifndef KERNSCOPE_COMMON_BPF_H
#define KERNSCOPE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

/* Drop reasons index the per-object `drops` array; user space names them. */
#define KS_MAX_DROP_REASONS 16

/* Every object that can lose data declares `drops` through this macro, so the
 * agent reads losses the same way for every collector. */
#define KS_DECLARE_DROPS                                                     \
	struct {                                                             \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                     \
		__uint(max_entries, KS_MAX_DROP_REASONS);                    \
		__type(key, __u32);                                          \
		__type(value, __u64);                                        \
	} drops SEC(".maps");                                                \
	static __always_inline void count_drop(__u32 reason)                 \
	{                                                                    \
		__u64 *v = bpf_map_lookup_elem(&drops, &reason);             \
		if (v)                                                       \
			(*v)++;                                              \
	}

/* Puts an enum's type, with its values, in the object's BTF, where user
 * space reads them instead of repeating them by hand. */
#define KS_BTF_ENUM(name) const volatile enum name ks_btf_##name = (enum name)0

/* Puts a struct in the object's BTF when no map or global names it (a ring
 * buffer record): an 8-byte pointer in .bss that nothing uses. */
#define KS_BTF_STRUCT(name) struct name *ks_btf_##name __attribute__((unused))

/* Index of the highest set bit: bucket i holds values in [2^i, 2^(i+1)). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

/* Find a per-CPU slot or create it zeroed; NULL means the map is full. */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *zero)
{
	void *v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	/* -EEXIST is fine: another CPU created it between the two calls. */
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

#endif
