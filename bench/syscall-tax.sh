#!/bin/sh
# What a syscall tracepoint costs the syscalls it does not trace: once any
# sys_enter_* or sys_exit_* tracepoint has a program, every syscall of every
# process takes the kernel's slow path. A getppid(2) loop on CPU 0, timed
# with no tracepoint, with an empty program on a syscall the loop never
# makes at entry, at exit, and at both (best of 3 runs of 2M calls each).
# Run by hand, as root: sh bench/syscall-tax.sh
# With checkouts as arguments (sh bench/syscall-tax.sh . /tmp/other), the
# same loop under each one's agent (defaults, pinned to CPU 1), alternating
# over five rounds: what each agent's hooks cost a syscall they do not trace.
set -eu
command -v bpftrace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace >/dev/null
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/loop.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	long n = atol(argv[1]);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
C
cc -O2 -o "$dir/loop" "$dir/loop.c"
best() { for i in 1 2 3; do taskset -c 0 "$dir/loop" 2000000; done | sort -n | head -n 1; }
with() {
	bpftrace -e "$1" >/dev/null 2>&1 &
	pid=$!
	sleep 3
	printf '%-44s %s ns\n' "$2" "$(best)"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
}
printf '%-44s %s ns\n' 'no tracepoint' "$(best)"
with 'tracepoint:syscalls:sys_enter_ptrace {}' 'an entry tracepoint (sys_enter_ptrace)'
with 'tracepoint:syscalls:sys_exit_accept4 {}' 'an exit tracepoint (sys_exit_accept4)'
with 'tracepoint:syscalls:sys_enter_ptrace {} tracepoint:syscalls:sys_exit_accept4 {}' 'both'
[ $# -eq 0 ] && exit 0
for round in 1 2 3 4 5; do
	for ck in "$@"; do
		taskset -c 1 "$ck/bin/kernscope" run --listen 127.0.0.1:19527 >/dev/null 2>"$dir/agent.log" &
		pid=$!
		until grep -q 'collector process: running' "$dir/agent.log" 2>/dev/null; do sleep 0.2; done
		sleep 1
		printf 'round %s, agent of %-28s %s ns\n' "$round" "$(git -C "$ck" rev-parse --short HEAD)" "$(best)"
		kill -INT "$pid"
		wait "$pid" 2>/dev/null || true
	done
done
