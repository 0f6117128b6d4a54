/* ns per read/write syscall, for the cost of syscalls the agent does not
 * trace (bench/syscalls.ts):
 *   syscalls pipe N   1-byte write and read on a pipe, N times each
 *   syscalls tcp N    1-byte ping-pong over a loopback TCP connection
 *   syscalls open-abs N   open+close of /etc/hostname (a path no rule watches)
 *   syscalls open-rel N   the same by a relative name from /etc (the kernel joins the cwd)
 *   syscalls exec N   fork, exec of /bin/true and wait, ns each */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	long n = atol(argv[2]);
	char c = 'x';
	if (!strncmp(argv[1], "open-", 5)) {
		const char *p = "/etc/hostname";
		if (!strcmp(argv[1], "open-rel")) {
			if (chdir("/etc"))
				return 1;
			p = "hostname";
		}
		double t0 = now();
		for (long i = 0; i < n; i++) {
			int fd = open(p, O_RDONLY);
			if (fd < 0)
				return 1;
			close(fd);
		}
		printf("%.1f\n", (now() - t0) / n);
		return 0;
	}
	if (!strcmp(argv[1], "exec")) {
		double t0 = now();
		for (long i = 0; i < n; i++) {
			pid_t pid = fork();
			if (pid == 0) {
				execl("/bin/true", "true", (char *)NULL);
				_exit(127);
			}
			int st;
			if (pid < 0 || waitpid(pid, &st, 0) != pid || st != 0)
				return 1;
		}
		printf("%.1f\n", (now() - t0) / n);
		return 0;
	}
	if (!strcmp(argv[1], "pipe")) {
		int p[2];
		if (pipe(p))
			return 1;
		double t0 = now();
		for (long i = 0; i < n; i++) {
			if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
				return 1;
		}
		printf("%.1f\n", (now() - t0) / (2.0 * n));
		return 0;
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len))
		return 1;
	int cl = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(cl, (struct sockaddr *)&a, sizeof(a)))
		return 1;
	int sv = accept(l, NULL, NULL);
	double t0 = now();
	for (long i = 0; i < n; i++) {
		if (write(cl, &c, 1) != 1 || read(sv, &c, 1) != 1 || write(sv, &c, 1) != 1 || read(cl, &c, 1) != 1)
			return 1;
	}
	printf("%.1f\n", (now() - t0) / (4.0 * n));
	return 0;
}
