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
KS_BTF_ENUM(ks_proc_path_flag);

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 0170000
#define S_IFSOCK 0140000

char LICENSE[] SEC("license") = "GPL";

KS_DECLARE_DROPS

/* Wake user space once this many bytes wait; a timer drains the rest. */
const volatile __u64 wakeup_bytes = 16 * sizeof(struct ks_proc_exec);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20);
} proc_events SEC(".maps");

/* Watched path prefixes: index -> NUL-terminated prefix, found through
 * prefix_buckets. */
struct prefix {
	char s[PROC_PREFIX_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PROC_PREFIXES);
	__type(key, __u32);
	__type(value, struct prefix);
} watched_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PROC_PREFIX_BUCKETS);
	__type(key, __u32);
	__type(value, struct ks_prefix_bucket);
} prefix_buckets SEC(".maps");

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

/* ---- paths from dentries ------------------------------------------------- */

/* A path's components, leaf first, then the path written out top first.
 * buf is twice PROC_PATH_MAX so that a masked offset plus a full-size read
 * always fits, which is what the verifier needs to see. */
struct path_scratch {
	const unsigned char *names[PROC_PATH_DEPTH];
	/* Counters live here, not in registers: read back from a map they are
	 * unknown to the verifier, so the loops' states prune instead of
	 * multiplying (1M instructions otherwise). */
	__u32 n;
	__u32 pos;
	__u32 flags;
	__u32 pad;
	char buf[PROC_PATH_MAX * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} path_scratch SEC(".maps");

/* Writes the absolute path of (dentry, vfsmount) into path_scratch and
 * into out unless it is NULL, as d_path(3) would, from the dentries: up
 * each mount to its root, across to the mount point it hangs on, up to
 * the task's root (a container's, for a process in one). Needs no helper that tracepoints lack (bpf_d_path is
 * for fentry and LSM programs only). Returns enum ks_proc_path_flag. */
static __always_inline __u8 build_path(struct dentry *d, struct vfsmount *vm, struct task_struct *t, char *out)
{
	__u32 zero = 0;
	struct path_scratch *s = bpf_map_lookup_elem(&path_scratch, &zero);
	if (out)
		out[0] = 0;
	if (!s || !d || !vm)
		return PROC_PATH_DEEP;
	struct dentry *root_d = BPF_CORE_READ(t, fs, root.dentry);
	struct vfsmount *root_m = BPF_CORE_READ(t, fs, root.mnt);
	struct mount *m = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
	s->n = 0;
	s->pos = 0;
	s->flags = PROC_PATH_DEEP; /* until the walk reaches a root */
	if (!BPF_CORE_READ(d, d_hash.pprev) && BPF_CORE_READ(d, d_parent) != d)
		s->flags |= PROC_PATH_DELETED;
	/* Each step goes up a directory or across a mount point. */
	for (int i = 0; i < PROC_PATH_DEPTH + 16; i++) {
		if (d == root_d && vm == root_m) {
			s->flags &= ~PROC_PATH_DEEP;
			break;
		}
		if (d == mnt_root) {
			struct mount *parent = BPF_CORE_READ(m, mnt_parent);
			if (parent == m) {
				s->flags &= ~PROC_PATH_DEEP; /* the namespace's root mount */
				break;
			}
			d = BPF_CORE_READ(m, mnt_mountpoint);
			m = parent;
			vm = (void *)m + bpf_core_field_offset(struct mount, mnt);
			mnt_root = BPF_CORE_READ(vm, mnt_root);
			continue;
		}
		__u32 n = s->n;
		if (n >= PROC_PATH_DEPTH)
			break;
		struct dentry *up = BPF_CORE_READ(d, d_parent);
		s->names[n & (PROC_PATH_DEPTH - 1)] = BPF_CORE_READ(d, d_name.name);
		s->n = n + 1;
		if (up == d) {
			/* A root that is no mount's: a pseudo file such as a memfd. */
			s->flags = (s->flags & ~PROC_PATH_DEEP) | PROC_PATH_DETACHED;
			break;
		}
		d = up;
	}
	/* Top first: components from the last found to the first. */
	for (int i = PROC_PATH_DEPTH - 1; i >= 0; i--) {
		if ((__u32)i >= s->n)
			continue;
		__u32 pos = s->pos;
		if (pos >= PROC_PATH_MAX - 1) {
			s->flags |= PROC_PATH_TRUNCATED;
			break;
		}
		s->buf[pos & (PROC_PATH_MAX - 1)] = '/';
		long r = bpf_probe_read_kernel_str(&s->buf[(pos + 1) & (PROC_PATH_MAX - 1)], PROC_PATH_MAX, s->names[i]);
		if (r <= 0)
			break;
		s->pos = pos + r; /* the slash, the name, not its NUL */
	}
	__u32 pos = s->pos;
	if (pos == 0) {
		s->buf[0] = '/';
		pos = 1;
	}
	if (pos >= PROC_PATH_MAX) {
		s->flags |= PROC_PATH_TRUNCATED;
		pos = PROC_PATH_MAX - 1;
	}
	asm volatile("" : "+r"(pos));
	s->buf[pos & (PROC_PATH_MAX - 1)] = 0;
	if (out) {
		bpf_probe_read_kernel(out, PROC_PATH_MAX, s->buf);
		out[PROC_PATH_MAX - 1] = 0;
	}
	return s->flags;
}

/* ---- a file written after its container started ------------------------- */

/* struct inode's ctime as older kernels lay it out (CO-RE picks the one
 * this kernel has): a timespec64 before 6.6, renamed __i_ctime in 6.6,
 * seconds and nanoseconds apart from 6.11. */
struct inode___ts {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct inode___ts66 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

static __always_inline __u64 inode_ctime_ns(struct inode *i)
{
	if (bpf_core_field_exists(i->i_ctime_sec))
		return BPF_CORE_READ(i, i_ctime_sec) * 1000000000ULL + BPF_CORE_READ(i, i_ctime_nsec);
	struct inode___ts66 *i66 = (void *)i;
	if (bpf_core_field_exists(i66->__i_ctime))
		return BPF_CORE_READ(i66, __i_ctime.tv_sec) * 1000000000ULL + BPF_CORE_READ(i66, __i_ctime.tv_nsec);
	struct inode___ts *old = (void *)i;
	if (bpf_core_field_exists(old->i_ctime))
		return BPF_CORE_READ(old, i_ctime.tv_sec) * 1000000000ULL + BPF_CORE_READ(old, i_ctime.tv_nsec);
	return 0;
}

/* When the init of the task's own pid namespace started, by the boot
 * clock: a container's start. 0 in the node's namespace. */
static __always_inline __u64 pidns_start(struct task_struct *t)
{
	struct pid *pid = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	if (!level || level > 31)
		return 0;
	struct upid up = {};
	if (bpf_probe_read_kernel(&up, sizeof(up), (void *)pid + bpf_core_field_offset(struct pid, numbers) + level * sizeof(struct upid)))
		return 0;
	struct task_struct *init = BPF_CORE_READ(up.ns, child_reaper);
	return init ? BPF_CORE_READ(init, start_boottime) : 0;
}

/* ---- sockets on standard streams ------------------------------------------ */

/* The TCP/UDP socket behind fd in the current task, or NULL. */
/* The file behind fd in task t's table, or NULL. */
static __always_inline struct file *file_at(struct task_struct *t, __u64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xffff]))
		return NULL;
	return f;
}

static __always_inline struct sock *inet_sock_at(struct task_struct *t, __u64 fd, __u64 *ino)
{
	struct file *f = file_at(t, fd);
	if (!f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	if (ino)
		*ino = BPF_CORE_READ(f, f_inode, i_ino);
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return family == AF_INET || family == AF_INET6 ? sk : NULL;
}

static __always_inline __u8 stdio_sockets(struct task_struct *t)
{
	__u8 bits = 0;
	for (int fd = 0; fd < 3; fd++)
		if (inet_sock_at(t, fd, NULL))
			bits |= 1 << fd;
	return bits;
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
	/* Where the file run really is, and where the process stands: rules
	 * on paths must not depend on how execve's argument was spelled
	 * (./x, ../x, a symlink, /proc/self/fd/N). */
	e->exe_flags = build_path(BPF_CORE_READ(bprm, file, f_path.dentry), BPF_CORE_READ(bprm, file, f_path.mnt), t, e->exe_path);
	/* binfmt_script gives interp a copy of the interpreter's name. */
	if (BPF_CORE_READ(bprm, interp) != BPF_CORE_READ(bprm, filename))
		e->exe_flags |= PROC_PATH_SCRIPT;
	e->cwd_flags = build_path(BPF_CORE_READ(t, fs, pwd.dentry), BPF_CORE_READ(t, fs, pwd.mnt), t, e->cwd);
	e->stdio_sockets = stdio_sockets(t);
	e->exe_ctime_ns = inode_ctime_ns(BPF_CORE_READ(bprm, file, f_inode));
	e->pidns_start_ns = pidns_start(t);
	e->pad[0] = 0;
	e->pad[1] = 0;

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

#define AT_FDCWD -100
/* O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND: an open that changes the file. */
#define O_CHANGES (03 | 0100 | 01000 | 02000)

/* The path a syscall names, into e->path: as given when absolute or
 * relative to a directory fd; joined to the working directory when
 * relative to it, so that `cd /etc && cat shadow` is /etc/shadow (a
 * leading "./" is dropped; ".." is kept as written). */
static __always_inline bool read_path(struct ks_proc_io *e, const char *upath, long dirfd)
{
	/* One read of user memory per call: each read costs more in its fixed
	 * checks than in the bytes it copies. */
	if (bpf_probe_read_user_str(e->path, sizeof(e->path), upath) <= 0)
		return false;
	/* An int in a 64-bit register: its upper half is not the sign. */
	if (e->path[0] == '/' || (int)dirfd != AT_FDCWD)
		return true;
	__u32 skip = e->path[0] == '.' && e->path[1] == '/' ? 2 : 0;
	struct task_struct *t = bpf_get_current_task_btf();
	build_path(BPF_CORE_READ(t, fs, pwd.dentry), BPF_CORE_READ(t, fs, pwd.mnt), t, NULL);
	__u32 zero = 0;
	struct path_scratch *s = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!s)
		return false;
	__u32 pos = s->pos; /* the working directory's length; 0 for "/" */
	if (pos < PROC_PATH_MAX - 1) {
		s->buf[pos & (PROC_PATH_MAX - 1)] = '/';
		if (bpf_probe_read_kernel_str(&s->buf[(pos + 1) & (PROC_PATH_MAX - 1)], PROC_PATH_MAX, e->path + skip) <= 0)
			return false;
	} /* else the directory alone fills it */
	bpf_probe_read_kernel(e->path, sizeof(e->path), s->buf);
	e->path[PROC_PATH_MAX - 1] = 0;
	return true;
}

/* e->path under a watched prefix: reported as `kind`, with `flags`.
 * Returns whether the path was watched. */
static __always_inline int report_if_watched(struct ks_proc_io *e, __u32 kind, __u32 flags, __u32 lost)
{
	/* Only the prefixes of the path's bucket, and for a read-only open only
	 * those watched for reads: most opens compare with none or one. */
	__u32 b = proc_prefix_bucket(*(const __u32 *)e->path) & (PROC_PREFIX_BUCKETS - 1);
	struct ks_prefix_bucket *bk = bpf_map_lookup_elem(&prefix_buckets, &b);
	if (!bk)
		return 0;
	__u32 mask = kind == PROC_OPEN && !(flags & O_CHANGES) ? bk->reads : bk->any;
	bool hit = false;
	for (__u32 i = 0; i < PROC_PREFIXES && mask >> i; i++) {
		if (!((mask >> i) & 1))
			continue;
		__u32 k = i;
		struct prefix *p = bpf_map_lookup_elem(&watched_prefixes, &k);
		if (p && prefix_match(e->path, p)) {
			hit = true;
			break;
		}
	}
	if (!hit)
		return 0; /* the common case: an unwatched path, nothing sent */
	struct ks_proc_io *out = reserve(sizeof(*out), lost);
	if (!out)
		return 1;
	fill_head(&out->h, kind, bpf_get_current_task_btf());
	out->flags = flags;
	out->port = 0;
	out->family = 0;
	out->killed = 0;
	__builtin_memset(out->addr, 0, sizeof(out->addr));
	__builtin_memcpy(out->path, e->path, sizeof(out->path));
	out->ino = 0;
	submit(out);
	return 1;
}

/* A syscall on a path under a watched prefix: reported, with `flags`.
 * Returns whether the path was watched. */
static __always_inline int on_path(__u32 kind, const char *upath, long dirfd, __u32 flags, __u32 lost)
{
	__u32 zero = 0;
	struct ks_proc_io *e = bpf_map_lookup_elem(&io_scratch, &zero);
	if (!e || !read_path(e, upath, dirfd))
		return 0;
	return report_if_watched(e, kind, flags, lost);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int proc_openat(struct sys_enter_ctx *ctx)
{ on_path(PROC_OPEN, (const char *)ctx->args[1], ctx->args[0], ctx->args[2], PROC_DROP_OPEN_LOST); return 0; }

SEC("tracepoint/syscalls/sys_enter_openat2")
int proc_openat2(struct sys_enter_ctx *ctx)
{
	/* struct open_how starts with the u64 flags. */
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);
	on_path(PROC_OPEN, (const char *)ctx->args[1], ctx->args[0], flags, PROC_DROP_OPEN_LOST);
	return 0;
}

/* ---- files removed, renamed, truncated, linked ----------------------------- */

SEC("tracepoint/syscalls/sys_enter_unlink")
int proc_unlink(struct sys_enter_ctx *ctx)
{ on_path(PROC_UNLINK, (const char *)ctx->args[0], AT_FDCWD, 0, PROC_DROP_FILE_LOST); return 0; }

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int proc_unlinkat(struct sys_enter_ctx *ctx)
{ on_path(PROC_UNLINK, (const char *)ctx->args[1], ctx->args[0], 0, PROC_DROP_FILE_LOST); return 0; }

SEC("tracepoint/syscalls/sys_enter_truncate")
int proc_truncate(struct sys_enter_ctx *ctx)
{ on_path(PROC_TRUNCATE, (const char *)ctx->args[0], AT_FDCWD, 0, PROC_DROP_FILE_LOST); return 0; }

/* ftruncate(2): the file's path, built from its dentries, is what is watched. */
SEC("tracepoint/syscalls/sys_enter_ftruncate")
int proc_ftruncate(struct sys_enter_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct file *f = file_at(t, (unsigned int)ctx->args[0]);
	if (!f)
		return 0;
	__u32 zero = 0;
	struct ks_proc_io *e = bpf_map_lookup_elem(&io_scratch, &zero);
	if (!e)
		return 0;
	build_path(BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), t, e->path);
	report_if_watched(e, PROC_TRUNCATE, 0, PROC_DROP_FILE_LOST);
	return 0;
}

/* A rename is reported once when either name is watched: flags 0 the old one, 1 the new. */
static __always_inline int on_rename(const char *from, long fromfd, const char *to, long tofd)
{
	if (!on_path(PROC_RENAME, from, fromfd, 0, PROC_DROP_FILE_LOST))
		on_path(PROC_RENAME, to, tofd, 1, PROC_DROP_FILE_LOST);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_rename")
int proc_rename(struct sys_enter_ctx *ctx)
{ return on_rename((const char *)ctx->args[0], AT_FDCWD, (const char *)ctx->args[1], AT_FDCWD); }

SEC("tracepoint/syscalls/sys_enter_renameat")
int proc_renameat(struct sys_enter_ctx *ctx)
{ return on_rename((const char *)ctx->args[1], ctx->args[0], (const char *)ctx->args[3], ctx->args[2]); }

SEC("tracepoint/syscalls/sys_enter_renameat2")
int proc_renameat2(struct sys_enter_ctx *ctx)
{ return on_rename((const char *)ctx->args[1], ctx->args[0], (const char *)ctx->args[3], ctx->args[2]); }

/* A link to a watched file: the target is what matters (flags 1 a symlink,
 * 0 a hard link). A symlink's target is relative to the link, not to the
 * working directory: taken as written (dirfd 0). */
SEC("tracepoint/syscalls/sys_enter_symlink")
int proc_symlink(struct sys_enter_ctx *ctx)
{ on_path(PROC_LINK, (const char *)ctx->args[0], 0, 1, PROC_DROP_FILE_LOST); return 0; }

SEC("tracepoint/syscalls/sys_enter_symlinkat")
int proc_symlinkat(struct sys_enter_ctx *ctx)
{ on_path(PROC_LINK, (const char *)ctx->args[0], 0, 1, PROC_DROP_FILE_LOST); return 0; }

SEC("tracepoint/syscalls/sys_enter_link")
int proc_link(struct sys_enter_ctx *ctx)
{ on_path(PROC_LINK, (const char *)ctx->args[0], AT_FDCWD, 0, PROC_DROP_FILE_LOST); return 0; }

SEC("tracepoint/syscalls/sys_enter_linkat")
int proc_linkat(struct sys_enter_ctx *ctx)
{ on_path(PROC_LINK, (const char *)ctx->args[1], ctx->args[0], 0, PROC_DROP_FILE_LOST); return 0; }

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
	if (!act) {
		/* Key 0: a rule asks for every connect (an opt-in). */
		__u16 all = 0;
		act = bpf_map_lookup_elem(&watched_ports, &all);
		if (!act)
			return 0;
	}
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
	out->ino = 0;
	submit(out);
	return 0;
}

/* ---- a network socket put on fd 0, 1 or 2: a reverse shell's mark ---------- */

/* fd: the one whose file is looked at; newfd: the standard stream it lands on. */
static __always_inline int on_stdio_dup(__u64 oldfd, __u64 newfd)
{
	if (newfd > 2)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 ino = 0;
	struct sock *sk = inet_sock_at(t, oldfd, &ino);
	if (!sk)
		return 0; /* the common case: a pipe, a file, a Unix socket */
	struct ks_proc_io *out = reserve(sizeof(*out), PROC_DROP_STDIO_LOST);
	if (!out)
		return 0;
	fill_head(&out->h, PROC_STDIO_SOCKET, t);
	out->flags = newfd;
	out->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	out->port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	out->killed = 0;
	__builtin_memset(out->addr, 0, sizeof(out->addr));
	if (out->family == AF_INET) {
		__u32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(out->addr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&out->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	out->ino = ino;
	out->path[0] = 0;
	submit(out);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_dup2")
int proc_dup2(struct sys_enter_ctx *ctx)
{ return ctx->args[0] == ctx->args[1] ? 0 : on_stdio_dup(ctx->args[0], ctx->args[1]); }

SEC("tracepoint/syscalls/sys_enter_dup3")
int proc_dup3(struct sys_enter_ctx *ctx)
{ return on_stdio_dup(ctx->args[0], ctx->args[1]); }

/* close(0); dup(sock): dup(2) takes the lowest free descriptor, so a 0, 1
 * or 2 free at entry is where the socket lands. Seen at entry: an exit
 * tracepoint would put the exit of every syscall on the slow path. */
SEC("tracepoint/syscalls/sys_enter_dup")
int proc_dup(struct sys_enter_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	unsigned long *open = BPF_CORE_READ(t, files, fdt, open_fds);
	unsigned long w = ~0UL;
	if (!open || bpf_probe_read_kernel(&w, sizeof(w), open))
		return 0;
	__u64 newfd = !(w & 1) ? 0 : !(w & 2) ? 1 : !(w & 4) ? 2 : 3;
	return on_stdio_dup(ctx->args[0], newfd);
}

/* ---- privilege: ptrace and setuid ---------------------------------------- */

static __always_inline void emit_priv(__u32 kind, __u32 a, __u32 b)
{
	struct ks_proc_priv *e = reserve(sizeof(*e), kind == PROC_MODULE ? PROC_DROP_MODULE_LOST : PROC_DROP_PRIV_LOST);
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

/* Loading kernel code: rare, and each one reported. */
SEC("tracepoint/syscalls/sys_enter_init_module")
int proc_init_module(struct sys_enter_ctx *ctx)
{
	emit_priv(PROC_MODULE, 0, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_finit_module")
int proc_finit_module(struct sys_enter_ctx *ctx)
{
	emit_priv(PROC_MODULE, 1, ctx->args[0]);
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
