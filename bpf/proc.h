/* Process collector: layouts shared by proc.bpf.c and src/collectors/process/decode.ts. */
#ifndef KERNSCOPE_PROC_H
#define KERNSCOPE_PROC_H

#define PROC_ARGS_MAX 1024	/* bytes of argv kept; longer lists are marked truncated */
#define PROC_PATH_MAX 256

enum ks_proc_kind {
	PROC_EXEC = 1, PROC_FORK = 2, PROC_EXIT = 3, PROC_OPEN = 4, PROC_CONNECT = 5, PROC_PTRACE = 6, PROC_SETUID = 7,
	PROC_STDIO_SOCKET = 8,	/* ks_proc_io: a TCP/UDP socket duplicated onto fd 0, 1 or 2 */
	PROC_MODULE = 9,	/* ks_proc_priv: init_module (a = 0) or finit_module (a = 1, b = fd) */
	PROC_UNLINK = 10,	/* ks_proc_io, a watched path: unlink, unlinkat */
	PROC_RENAME = 11,	/* ks_proc_io: rename*, flags 0 the old name watched, 1 the new */
	PROC_TRUNCATE = 12,	/* ks_proc_io: truncate(2) by path */
	PROC_LINK = 13,		/* ks_proc_io: symlink* (flags 1) or link* (flags 0) whose target is watched */
};

#define PROC_PATH_DEPTH 32	/* components of a path built in the kernel; deeper ones are cut off at the top */

/* How a path built from dentries came out. */
enum ks_proc_path_flag {
	PROC_PATH_TRUNCATED = 1,	/* longer than PROC_PATH_MAX: its end is cut off */
	PROC_PATH_DELETED = 2,		/* the file was unlinked (run, then removed) */
	PROC_PATH_DETACHED = 4,		/* not under the task's root: a pseudo file (memfd) or a detached mount */
	PROC_PATH_SCRIPT = 8,		/* exe: the file run is the interpreter of a script (filename is the script) */
	PROC_PATH_DEEP = 16,		/* deeper than PROC_PATH_DEPTH: its top is missing */
};

#define PROC_PREFIXES 32	/* watched path prefixes */
#define PROC_PREFIX_LEN 64

/* Watched prefixes by the first four bytes of a path: a path can only be
 * under a prefix of four or more bytes whose first four are its own, so it
 * is compared with the prefixes of its bucket (bit i: prefix i) and with
 * the shorter ones, which are in every bucket. `reads` is the subset watched
 * for reads too: a read-only open is compared with those alone. The bucket
 * is proc_prefix_bucket() of the four bytes as a little-endian u32; user
 * space computes the same. */
#define PROC_PREFIX_BUCKET_BITS 6
#define PROC_PREFIX_BUCKETS (1 << PROC_PREFIX_BUCKET_BITS)
struct ks_prefix_bucket {
	__u32 any;
	__u32 reads;
};
static inline __u32 proc_prefix_bucket(__u32 w)
{
	return ((w ^ (w >> 15)) * 0x9E3779B1u) >> (32 - PROC_PREFIX_BUCKET_BITS);
}

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
	PROC_DROP_STDIO_LOST = 6,
	PROC_DROP_MODULE_LOST = 7,
	PROC_DROP_FILE_LOST = 8,
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
	__u8 exe_flags;		/* enum ks_proc_path_flag, for exe_path */
	__u8 cwd_flags;		/* enum ks_proc_path_flag, for cwd */
	__u8 stdio_sockets;	/* bit i: fd i is a TCP/UDP socket at exec */
	__u8 pad[2];
	__u64 exe_ctime_ns;	/* the file's last change (inode ctime), wall clock */
	__u64 pidns_start_ns;	/* the start (boot clock) of its pid namespace's init; 0 in the node's own */
	char filename[PROC_PATH_MAX];	/* as passed to execve */
	char file_name[64];		/* name of the file run: "memfd:x" for a memfd */
	char exe_path[PROC_PATH_MAX];	/* the file run, built from its dentries up to the task's root */
	char cwd[PROC_PATH_MAX];	/* the working directory, the same way */
	char args[PROC_ARGS_MAX];
};

/* An open(2) of a watched path, or a connect(2) to a watched port. */
struct ks_proc_io {
	struct ks_proc_head h;
	__u32 flags;		/* open: O_* flags; connect: 0; stdio_socket: the fd written (0-2) */
	__u16 port;		/* connect: destination port; stdio_socket: the peer's; host order */
	__u8 family;		/* connect, stdio_socket: AF_INET or AF_INET6 */
	__u8 killed;		/* the kernel sent SIGKILL */
	__u8 addr[16];		/* connect: destination; stdio_socket: the peer; network order */
	__u64 ino;		/* stdio_socket: the socket's inode, as /proc/PID/fd shows it */
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
