// SPDX-License-Identifier: GPL-2.0
/* Flight recorder: the kernel's notable events that no other collector
 * sends one by one (TCP's resets and retransmit bursts come from tcp.bpf.c,
 * which knows each connection's owner). An OOM kill is rare, matters by
 * itself and goes through a ring buffer; a full buffer is counted. */
#include "common.bpf.h"
#include "recorder.h"

KS_BTF_STRUCT(ks_rec_oom);
KS_BTF_ENUM(ks_rec_kind);
KS_BTF_ENUM(ks_rec_drop_reason);

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} rec_events SEC(".maps");

static __always_inline void *reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&rec_events, size, 0);
	if (!e)
		count_drop(REC_DROP_RINGBUF_FULL);
	return e;
}

/* The classic tracepoint: its fields grew over kernel versions (6.1 has the
 * pid alone), and CO-RE reads those this kernel has. */
SEC("tracepoint/oom/mark_victim")
int rec_oom(struct trace_event_raw_mark_victim *ctx)
{
	struct ks_rec_oom *e = reserve(sizeof(*e));
	if (!e)
		return 0;
	/* The kill happens in the allocating task's context: it is the trigger. */
	e->h.ts_ns = bpf_ktime_get_ns();
	e->h.kind = REC_OOM_KILL;
	e->h.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->h.comm, sizeof(e->h.comm));
	e->victim = BPF_CORE_READ(ctx, pid);
	e->uid = 0;
	e->total_vm_kb = 0;
	e->anon_rss_kb = 0;
	e->file_rss_kb = 0;
	e->oom_score_adj = 0;
	e->pad = 0;
	__builtin_memset(e->victim_comm, 0, sizeof(e->victim_comm));
	if (bpf_core_field_exists(ctx->total_vm)) {
		e->total_vm_kb = BPF_CORE_READ(ctx, total_vm);
		e->anon_rss_kb = BPF_CORE_READ(ctx, anon_rss);
		e->file_rss_kb = BPF_CORE_READ(ctx, file_rss);
	}
	if (bpf_core_field_exists(ctx->uid))
		e->uid = BPF_CORE_READ(ctx, uid);
	if (bpf_core_field_exists(ctx->oom_score_adj))
		e->oom_score_adj = BPF_CORE_READ(ctx, oom_score_adj);
	if (bpf_core_field_exists(ctx->__data_loc_comm)) {
		__u32 loc = BPF_CORE_READ(ctx, __data_loc_comm);
		bpf_probe_read_kernel_str(e->victim_comm, sizeof(e->victim_comm), (void *)ctx + (loc & 0xffff));
	}
	/* An OOM kill is severe: wake user space now. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}
