// SPDX-License-Identifier: GPL-2.0
/* Process starts, forks and exits, for the process table and the security
 * rules. One record per event through a ring buffer: user space needs each
 * one (ancestry, arguments), so nothing is aggregated here. */
#include "common.bpf.h"
#include <bpf/bpf_endian.h>
#include "proc.h"

/* Every layout and enum user space decodes, in the object's BTF. */
KS_BTF_STRUCT(ks_proc_exit);
KS_BTF_STRUCT(ks_proc_exec);
KS_BTF_STRUCT(ks_proc_io);
KS_BTF_STRUCT(ks_proc_priv);
KS_BTF_ENUM(ks_proc_kind);
KS_BTF_ENUM(ks_proc_drop_reason);

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* Wake user space once this many bytes wait; a timer drains the rest. */
const volatile __u64 wakeup_bytes = 16 * sizeof(struct ks_proc_exec);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20);
} proc_events SEC(".maps");

/* Watched path prefixes: index -> NUL-terminated prefix; empty ends the list. */
struct prefix {
	char s[PROC_PREFIX_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PROC_PREFIXES);
	__type(key, __u32);
	__type(value, struct prefix);
} watched_prefixes SEC(".maps");

/* Destination port -> action, for connect(2). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u32);
} watched_ports SEC(".maps");

/* Name of the file run (dentry name, 16 bytes) -> action, for exec. */
struct exe_name {
	char s[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct exe_name);
	__type(value, __u32);
} kill_exec SEC(".maps");

/* Scratch for a path, too big for the stack alongside the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_proc_io);
} io_scratch SEC(".maps");

/* A record, or NULL with the loss counted. */
static __always_inline void *reserve(__u64 size, __u32 lost)
{
	void *e = bpf_ringbuf_reserve(&proc_events, size, 0);
	if (!e)
		count_drop(lost);
	return e;
}

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
	struct ks_proc_exec *e = reserve(sizeof(*e), PROC_DROP_EXEC_LOST);
	if (!e)
		return 0;
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

	/* Enforcement by executable name: dead before its first instruction. */
	struct exe_name key = {};
	bpf_probe_read_kernel_str(key.s, sizeof(key.s), dname);
	__u32 *act = bpf_map_lookup_elem(&kill_exec, &key);
	if (act && *act == PROC_ACT_KILL) {
		bpf_send_signal(9);
		e->h.pad = 1; /* killed */
	}
	submit(e);
	return 0;
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	/* New threads are not new processes. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	struct ks_proc_head *e = reserve(sizeof(*e), PROC_DROP_FORK_LOST);
	if (!e)
		return 0;
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
	struct ks_proc_exit *e = reserve(sizeof(*e), PROC_DROP_EXIT_LOST);
	if (!e)
		return 0;
	fill_head(&e->h, PROC_EXIT, t);
	e->h.exit_code = BPF_CORE_READ(t, exit_code);
	/* Dead threads' times and I/O are in signal_struct; the leader's own
	 * are not folded in until it is released. */
	struct signal_struct *sig = BPF_CORE_READ(t, signal);
	e->utime_ns = BPF_CORE_READ(t, utime) + BPF_CORE_READ(sig, utime);
	e->stime_ns = BPF_CORE_READ(t, stime) + BPF_CORE_READ(sig, stime);
	e->read_bytes = 0;
	e->write_bytes = 0;
	if (bpf_core_field_exists(t->ioac)) {
		e->read_bytes = BPF_CORE_READ(t, ioac.read_bytes) + BPF_CORE_READ(sig, ioac.read_bytes);
		e->write_bytes = BPF_CORE_READ(t, ioac.write_bytes) + BPF_CORE_READ(sig, ioac.write_bytes);
	}
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

/* ---- watched opens and connects ------------------------------------------ */

#define ONES8 0x0101010101010101ULL
#define HIGH8 0x8080808080808080ULL

/* Whether `path` starts with the prefix, compared a word at a time: in the
 * word holding the prefix's NUL only the bytes before it count (the lowest
 * byte the zero test flags is always a true NUL). Eight steps per prefix,
 * where a byte loop took 64: cheaper per open(2), and few enough states
 * for older verifiers (6.1 gave up on the byte loop at 1M instructions).
 * Little-endian: byte k of a word is bits 8k..8k+7. */
static __always_inline bool prefix_match(const char *path, const struct prefix *p)
{
	for (int j = 0; j < PROC_PREFIX_LEN / 8; j++) {
		__u64 pw = *(const __u64 *)(p->s + j * 8);
		__u64 xw = *(const __u64 *)(path + j * 8);
		__u64 nul = (pw - ONES8) & ~pw & HIGH8;
		if (!nul) {
			if (pw != xw)
				return false;
			continue;
		}
		__u64 mask = ((nul & -nul) >> 7) - 1; /* the bytes before the NUL */
		return ((pw ^ xw) & mask) == 0 && (j > 0 || mask);
	}
	return true;
}

struct sys_enter_ctx {
	__u64 unused;
	long id;
	unsigned long args[6];
};

static __always_inline int on_open(const char *upath, __u32 flags)
{
	__u32 zero = 0;
	struct ks_proc_io *e = bpf_map_lookup_elem(&io_scratch, &zero);
	if (!e)
		return 0;
	if (bpf_probe_read_user_str(e->path, sizeof(e->path), upath) <= 0)
		return 0;
	bool hit = false;
	for (__u32 i = 0; i < PROC_PREFIXES; i++) {
		__u32 k = i;
		struct prefix *p = bpf_map_lookup_elem(&watched_prefixes, &k);
		if (!p || !p->s[0])
			break;
		if (prefix_match(e->path, p)) {
			hit = true;
			break;
		}
	}
	if (!hit)
		return 0; /* the common case: an unwatched path, nothing sent */
	struct ks_proc_io *out = reserve(sizeof(*out), PROC_DROP_OPEN_LOST);
	if (!out)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	fill_head(&out->h, PROC_OPEN, t);
	out->flags = flags;
	out->port = 0;
	out->family = 0;
	out->killed = 0;
	__builtin_memset(out->addr, 0, sizeof(out->addr));
	__builtin_memcpy(out->path, e->path, sizeof(out->path));
	submit(out);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int proc_openat(struct sys_enter_ctx *ctx)
{ return on_open((const char *)ctx->args[1], ctx->args[2]); }

SEC("tracepoint/syscalls/sys_enter_openat2")
int proc_openat2(struct sys_enter_ctx *ctx)
{
	/* struct open_how starts with the u64 flags. */
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);
	return on_open((const char *)ctx->args[1], flags);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int proc_connect(struct sys_enter_ctx *ctx)
{
	const struct sockaddr *sa = (const struct sockaddr *)ctx->args[1];
	__u16 family = 0;
	__u16 port = 0;
	__u8 addr[16] = {};
	if (bpf_probe_read_user(&family, sizeof(family), &sa->sa_family))
		return 0;
	if (family == 2) {
		struct sockaddr_in in = {};
		bpf_probe_read_user(&in, sizeof(in), sa);
		port = bpf_ntohs(in.sin_port);
		__builtin_memcpy(addr, &in.sin_addr, 4);
	} else if (family == 10) {
		struct sockaddr_in6 in6 = {};
		bpf_probe_read_user(&in6, sizeof(in6), sa);
		port = bpf_ntohs(in6.sin6_port);
		__builtin_memcpy(addr, &in6.sin6_addr, 16);
	} else {
		return 0;
	}
	__u32 *act = bpf_map_lookup_elem(&watched_ports, &port);
	if (!act)
		return 0;
	__u8 killed = 0;
	if (*act == PROC_ACT_KILL) {
		/* Before the connection exists: the process never sends a byte. */
		bpf_send_signal(9);
		killed = 1;
	}
	struct ks_proc_io *out = reserve(sizeof(*out), PROC_DROP_CONNECT_LOST);
	if (!out)
		return 0;
	fill_head(&out->h, PROC_CONNECT, bpf_get_current_task_btf());
	out->flags = 0;
	out->port = port;
	out->family = family;
	out->killed = killed;
	__builtin_memcpy(out->addr, addr, sizeof(out->addr));
	out->path[0] = 0;
	submit(out);
	return 0;
}

/* ---- privilege: ptrace and setuid ---------------------------------------- */

static __always_inline void emit_priv(__u32 kind, __u32 a, __u32 b)
{
	struct ks_proc_priv *e = reserve(sizeof(*e), PROC_DROP_PRIV_LOST);
	if (!e)
		return;
	fill_head(&e->h, kind, bpf_get_current_task_btf());
	e->a = a;
	e->b = b;
	submit(e);
}

SEC("tracepoint/syscalls/sys_enter_ptrace")
int proc_ptrace(struct sys_enter_ctx *ctx)
{
	long req = ctx->args[0];
	/* Taking hold of, or writing into, another process. */
	if (req == 16 /* ATTACH */ || req == 0x4206 /* SEIZE */ || req == 4 /* POKETEXT */ ||
	    req == 5 /* POKEDATA */ || req == 6 /* POKEUSER */)
		emit_priv(PROC_PTRACE, req, ctx->args[1]);
	return 0;
}

static __always_inline int on_setuid(long euid)
{
	/* Only a non-root process asking to become root. */
	if (euid != 0 || (__u32)bpf_get_current_uid_gid() == 0)
		return 0;
	emit_priv(PROC_SETUID, 0, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_setuid")
int proc_setuid(struct sys_enter_ctx *ctx)
{ return on_setuid((int)ctx->args[0]); }

SEC("tracepoint/syscalls/sys_enter_setreuid")
int proc_setreuid(struct sys_enter_ctx *ctx)
{ return on_setuid((int)ctx->args[1]); }

SEC("tracepoint/syscalls/sys_enter_setresuid")
int proc_setresuid(struct sys_enter_ctx *ctx)
{ return on_setuid((int)ctx->args[1]); }
