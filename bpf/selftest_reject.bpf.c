// SPDX-License-Identifier: GPL-2.0
/* Deliberately refused by the verifier (a map value read without a NULL
 * check), so tests can see the verifier's log in the error. */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} m SEC(".maps");

SEC("raw_tp/sys_enter")
int rejected(void *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&m, &k);
	return *v; /* no NULL check */
}
