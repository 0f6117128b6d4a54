/* Flight recorder: layouts shared by recorder.bpf.c and
 * src/collectors/recorder/, which reads them from the object's BTF. */
#ifndef KERNSCOPE_RECORDER_H
#define KERNSCOPE_RECORDER_H

enum ks_rec_kind { REC_OOM_KILL = 1 };

enum ks_rec_drop_reason { REC_DROP_RINGBUF_FULL = 0 };

struct ks_rec_head {
	__u64 ts_ns;
	__u32 kind;
	__u32 pid;	/* the task the kernel ran for */
	char comm[16];
}; /* 32 bytes */

/* The OOM killer chose a victim. Older kernels' tracepoint gives only the
 * pid; the rest is 0 there (and comm empty). */
struct ks_rec_oom {
	struct ks_rec_head h;
	__u32 victim;
	__u32 uid;
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__s32 oom_score_adj;
	__u32 pad;
	char victim_comm[16];
}; /* 88 bytes */

#endif
