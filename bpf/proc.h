/* Process collector: layouts shared by proc.bpf.c and src/collectors/process/decode.ts. */
#ifndef KERNSCOPE_PROC_H
#define KERNSCOPE_PROC_H

#define PROC_ARGS_MAX 1024	/* bytes of argv kept; longer lists are marked truncated */
#define PROC_PATH_MAX 256

enum ks_proc_kind { PROC_EXEC = 1, PROC_FORK = 2, PROC_EXIT = 3, PROC_OPEN = 4, PROC_CONNECT = 5, PROC_PTRACE = 6, PROC_SETUID = 7 };

#define PROC_PREFIXES 16	/* watched path prefixes */
#define PROC_PREFIX_LEN 64

/* What the kernel does on its own when a rule decided there matches. */
enum ks_proc_action { PROC_ACT_REPORT = 1, PROC_ACT_KILL = 2 };

/* A record lost to a full ring buffer, by what it was: an exec lost is a
 * process unseen by the rules, a fork or an exit only a gap in the table. */
enum ks_proc_drop_reason {
	PROC_DROP_EXEC_LOST = 0,
	PROC_DROP_FORK_LOST = 1,
	PROC_DROP_EXIT_LOST = 2,
	PROC_DROP_OPEN_LOST = 3,
	PROC_DROP_CONNECT_LOST = 4,
	PROC_DROP_PRIV_LOST = 5,
};

/* Common head of every record. */
struct ks_proc_head {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 kind;
	__u32 pid;		/* tgid */
	__u32 ppid;		/* real parent's tgid */
	__u32 uid;
	__u32 exit_code;	/* exit: the wait(2) status, code << 8 | signal */
	__u32 pad;
	char comm[16];
}; /* 56 bytes */

/* A process's end, with what it used in all: its threads, alive and dead,
 * as the kernel has summed them when its leader exits. Read by the
 * resources collector for what its last walk of /proc could not see (a
 * process shorter than a walk's interval). */
struct ks_proc_exit {
	struct ks_proc_head h;
	__u64 utime_ns;
	__u64 stime_ns;
	__u64 read_bytes;	/* storage I/O, as /proc/PID/io counts it */
	__u64 write_bytes;
};

struct ks_proc_exec {
	struct ks_proc_head h;
	__u16 args_len;		/* bytes in args: NUL-separated argv */
	__u8 args_truncated;
	__u8 pad[5];
	char filename[PROC_PATH_MAX];	/* as passed to execve */
	char file_name[64];		/* name of the file run: "memfd:x" for a memfd */
	char args[PROC_ARGS_MAX];
};

/* An open(2) of a watched path, or a connect(2) to a watched port. */
struct ks_proc_io {
	struct ks_proc_head h;
	__u32 flags;		/* open: O_* flags; connect: 0 */
	__u16 port;		/* connect: destination port, host order */
	__u8 family;		/* connect: AF_INET or AF_INET6 */
	__u8 killed;		/* the kernel sent SIGKILL */
	__u8 addr[16];		/* connect: destination, network order */
	char path[PROC_PATH_MAX];	/* open: as passed to the syscall */
};

/* ptrace(2) that takes hold of another process, or a non-root process
 * making itself root: rare calls, each reported. */
struct ks_proc_priv {
	struct ks_proc_head h;
	__u32 a;	/* ptrace: request; setuid: the uid asked for */
	__u32 b;	/* ptrace: target pid */
};

#endif
