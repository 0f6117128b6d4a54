// SPDX-License-Identifier: GPL-2.0
/* Programs that do nothing, for `kernscope doctor`: loading them proves a
 * hook type is usable, and timing a syscall or a call with one attached gives
 * the cost of that hook on this machine. Each returns at once so the figure
 * is the hook's own price, not a program's. */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

__u64 hits = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_syscall_tp(void *ctx) { return 0; }

SEC("raw_tp/sys_enter")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tp_btf/sys_enter")
int probe_tp_btf(void *ctx) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

SEC("uretprobe")
int probe_uretprobe(void *ctx) { return 0; }

SEC("perf_event")
int probe_perf_event(void *ctx) { return 0; }

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ringbuf SEC(".maps");
