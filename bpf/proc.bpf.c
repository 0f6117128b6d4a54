// SPDX-License-Identifier: GPL-2.0
/* Process starts, forks and exits, for the process table and the security
 * rules. One record per event through a ring buffer: user space needs each
 * one (ancestry, arguments), so nothing is aggregated here. */
#include "common.bpf.h"
#include "proc.h"

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* Wake user space once this many bytes wait; a timer drains the rest. */
const volatile __u64 wakeup_bytes = 16 * sizeof(struct ks_proc_exec);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} proc_events SEC(".maps");

static __always_inline void fill_head(struct ks_proc_head *h, __u32 kind, const struct task_struct *t)
{
	h->ts_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->kind = kind;
	h->pid = BPF_CORE_READ(t, tgid);
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	h->uid = bpf_get_current_uid_gid();
	h->exit_code = 0;
	h->pad = 0;
	BPF_CORE_READ_STR_INTO(&h->comm, t, comm);
}

static __always_inline void submit(void *e)
{
	__u64 waiting = bpf_ringbuf_query(&proc_events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, waiting >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline int on_exec(struct task_struct *t, struct linux_binprm *bprm)
{
	struct ks_proc_exec *e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
	if (!e) {
		count_drop(PROC_DROP_RINGBUF_FULL);
		return 0;
	}
	fill_head(&e->h, PROC_EXEC, t);
	const char *filename = BPF_CORE_READ(bprm, filename);
	if (bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename) < 0)
		e->filename[0] = 0;
	/* The file actually run: a memfd's name says "memfd:", whatever path
	 * (/dev/fd/N, /proc/self/fd/N) it was run by. */
	const unsigned char *dname = BPF_CORE_READ(bprm, file, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(e->file_name, sizeof(e->file_name), dname) < 0)
		e->file_name[0] = 0;

	/* argv is in the new image's memory, NUL-separated, between arg_start
	 * and arg_end. */
	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end > start ? end - start : 0;
	e->args_truncated = len > PROC_ARGS_MAX;
	if (len > PROC_ARGS_MAX)
		len = PROC_ARGS_MAX;
	e->args_len = 0;
	if (len && !bpf_probe_read_user(e->args, len & (PROC_ARGS_MAX * 2 - 1) & 0x7ff, (void *)start))
		e->args_len = len;
	submit(e);
	return 0;
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	/* New threads are not new processes. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	struct ks_proc_head *e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
	if (!e) {
		count_drop(PROC_DROP_RINGBUF_FULL);
		return 0;
	}
	fill_head(e, PROC_FORK, child);
	e->ppid = BPF_CORE_READ(parent, tgid);
	submit(e);
	return 0;
}

static __always_inline int on_exit(struct task_struct *t)
{
	/* The process ends with its leader; other threads' exits are not. */
	if (BPF_CORE_READ(t, pid) != BPF_CORE_READ(t, tgid))
		return 0;
	struct ks_proc_head *e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
	if (!e) {
		count_drop(PROC_DROP_RINGBUF_FULL);
		return 0;
	}
	fill_head(e, PROC_EXIT, t);
	e->exit_code = BPF_CORE_READ(t, exit_code);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(proc_exec_btf, struct task_struct *t, pid_t old_pid, struct linux_binprm *bprm)
{ return on_exec(t, bprm); }

SEC("tp_btf/sched_process_fork")
int BPF_PROG(proc_fork_btf, struct task_struct *parent, struct task_struct *child)
{ return on_fork(parent, child); }

SEC("tp_btf/sched_process_exit")
int BPF_PROG(proc_exit_btf, struct task_struct *t)
{ return on_exit(t); }

SEC("raw_tp/sched_process_exec")
int BPF_PROG(proc_exec_raw, struct task_struct *t, pid_t old_pid, struct linux_binprm *bprm)
{ return on_exec(t, bprm); }

SEC("raw_tp/sched_process_fork")
int BPF_PROG(proc_fork_raw, struct task_struct *parent, struct task_struct *child)
{ return on_fork(parent, child); }

SEC("raw_tp/sched_process_exit")
int BPF_PROG(proc_exit_raw, struct task_struct *t)
{ return on_exit(t); }
