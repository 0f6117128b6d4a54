/*
 * Targets for measuring what a hook costs on this machine (`kernscope doctor`,
 * src/capabilities/): functions with a known first instruction, so that a
 * uprobe on them costs what the kernel's emulation or single-stepping costs,
 * and a loop that times n calls of them or of getppid(2). Kept apart from
 * the libbpf bridge (kernscope.c), which never needs them.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

#if defined(__x86_64__)
__asm__(".text\n"
	".globl kernscope_probe_emulated\n"
	".type kernscope_probe_emulated,@function\n"
	"kernscope_probe_emulated:\n"
	"	push %rbp\n" /* emulated by the kernel's uprobe code */
	"	pop %rbp\n"
	"	ret\n"
	".size kernscope_probe_emulated, .-kernscope_probe_emulated\n"
	".globl kernscope_probe_stepped\n"
	".type kernscope_probe_stepped,@function\n"
	"kernscope_probe_stepped:\n"
	"	sub $8, %rsp\n" /* executed out of line: a single-step trap */
	"	add $8, %rsp\n"
	"	ret\n"
	".size kernscope_probe_stepped, .-kernscope_probe_stepped\n"
	".globl kernscope_probe_ret\n" /* like _emulated, for a uretprobe alone */
	".type kernscope_probe_ret,@function\n"
	"kernscope_probe_ret:\n"
	"	push %rbp\n"
	"	pop %rbp\n"
	"	ret\n"
	".size kernscope_probe_ret, .-kernscope_probe_ret\n");
void kernscope_probe_emulated(void);
void kernscope_probe_stepped(void);
void kernscope_probe_ret(void);
#else
__attribute__((noinline, visibility("default"))) void kernscope_probe_emulated(void)
{
	__asm__ volatile("" ::: "memory");
}
__attribute__((noinline, visibility("default"))) void kernscope_probe_stepped(void)
{
	__asm__ volatile("" ::: "memory");
}
__attribute__((noinline, visibility("default"))) void kernscope_probe_ret(void)
{
	__asm__ volatile("" ::: "memory");
}
#endif

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static napi_value fail(napi_env env, const char *msg)
{
	napi_throw_error(env, NULL, msg);
	return NULL;
}

/* benchCall(kind, n): ns for n calls of getppid(2) or of a probe target. */
static napi_value bench_call(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	char kind[32];
	size_t len = 0;
	int64_t n = 0;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
	    napi_get_value_string_utf8(env, argv[0], kind, sizeof(kind), &len) != napi_ok ||
	    napi_get_value_int64(env, argv[1], &n) != napi_ok || n <= 0 || n > 100000000)
		return fail(env, "benchCall(kind, n)");
	void (*volatile fn)(void) = NULL;
	if (!strcmp(kind, "emulated"))
		fn = kernscope_probe_emulated;
	else if (!strcmp(kind, "stepped"))
		fn = kernscope_probe_stepped;
	else if (!strcmp(kind, "ret"))
		fn = kernscope_probe_ret;
	else if (strcmp(kind, "getppid"))
		return fail(env, "benchCall: unknown kind");
	int64_t t0 = now_ns();
	if (fn)
		for (int64_t i = 0; i < n; i++)
			fn();
	else
		for (int64_t i = 0; i < n; i++)
			syscall(SYS_getppid);
	napi_value out;
	napi_create_int64(env, now_ns() - t0, &out);
	return out;
}

static napi_value init(napi_env env, napi_value exports)
{
	napi_value f;
	napi_create_function(env, "benchCall", NAPI_AUTO_LENGTH, bench_call, NULL, &f);
	napi_set_named_property(env, exports, "benchCall", f);
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
