// SPDX-License-Identifier: Apache-2.0
/* Kernscope's native addon: a thin Node-API layer over libbpf.
 *
 * It opens, loads and attaches BPF objects, moves map contents as raw bytes
 * and feeds ring buffers into the libuv loop. It knows nothing of metrics:
 * every decision lives in TypeScript (src/bpf/). Handles given to JS are small
 * integers into the tables below, so a stale or forged handle is an error,
 * never a dangling pointer. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <node_api.h>
#include <uv.h>

#define ERR_CODE "ERR_KERNSCOPE_BPF"
#define MAX_HANDLES 1024
#define LOG_CAP (64 * 1024)

/* ---- libbpf's log, kept per operation so errors can carry it ---------- */

static char log_buf[LOG_CAP];
static size_t log_len;
static bool log_debug;

static void log_append(const char *text, size_t n)
{
	/* Keep the tail: the verifier's verdict is at the end of its log. */
	if (n >= LOG_CAP) {
		text += n - (LOG_CAP - 1);
		n = LOG_CAP - 1;
	}
	if (log_len + n >= LOG_CAP) {
		size_t drop = log_len + n - LOG_CAP + 1;
		if (drop > log_len)
			drop = log_len;
		memmove(log_buf, log_buf + drop, log_len - drop);
		log_len -= drop;
	}
	memcpy(log_buf + log_len, text, n);
	log_len += n;
	log_buf[log_len] = 0;
}

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !log_debug)
		return 0;
	char line[4096];
	va_list again;
	va_copy(again, ap);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0) {
		va_end(again);
		return 0;
	}
	char *text = line;
	/* A verifier log comes as one message, far longer than a line. */
	if ((size_t)n >= sizeof(line)) {
		text = malloc(n + 1);
		if (text)
			vsnprintf(text, n + 1, fmt, again);
		else {
			text = line;
			n = sizeof(line) - 1;
		}
	}
	va_end(again);
	if (log_debug)
		fputs(text, stderr);
	log_append(text, n);
	if (text != line)
		free(text);
	return 0;
}

static void log_reset(void)
{
	log_len = 0;
	log_buf[0] = 0;
}

/* ---- errors ------------------------------------------------------------ */

/* Throws an Error with .code, .errno (positive) and .log (libbpf's output). */
static napi_value throw_err(napi_env env, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err < 0)
		err = -err;
	if (err && n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(err));

	napi_value code, text, error, v;
	napi_create_string_utf8(env, ERR_CODE, NAPI_AUTO_LENGTH, &code);
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
	napi_create_error(env, code, text, &error);
	napi_create_int32(env, err, &v);
	napi_set_named_property(env, error, "errno", v);
	napi_create_string_utf8(env, log_buf, log_len, &v);
	napi_set_named_property(env, error, "log", v);
	napi_throw(env, error);
	return NULL;
}

#define TRY(call)                                                            \
	do {                                                                 \
		if ((call) != napi_ok)                                       \
			return throw_err(env, EINVAL, "invalid arguments");  \
	} while (0)

/* ---- handle tables ------------------------------------------------------ */

struct ringbuf_handle;

static struct bpf_object *objects[MAX_HANDLES];
static struct bpf_link *links[MAX_HANDLES];
static int link_owner[MAX_HANDLES]; /* object handle, to detach on close */
static struct ringbuf_handle *ringbufs[MAX_HANDLES];
static int ringbuf_owner[MAX_HANDLES];

static int slot_for(void **table)
{
	for (int i = 1; i < MAX_HANDLES; i++)
		if (!table[i])
			return i;
	return -1;
}

/* ---- argument helpers --------------------------------------------------- */

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv)
{
	size_t argc = want;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)
		return false;
	return argc >= want;
}

static bool get_i64(napi_env env, napi_value v, int64_t *out)
{
	return napi_get_value_int64(env, v, out) == napi_ok;
}

static bool get_str(napi_env env, napi_value v, char *buf, size_t cap)
{
	size_t len;
	return napi_get_value_string_utf8(env, v, buf, cap, &len) == napi_ok && len < cap - 1;
}

static bool get_buf(napi_env env, napi_value v, void **data, size_t *len)
{
	bool is;
	if (napi_is_buffer(env, v, &is) != napi_ok || !is)
		return false;
	return napi_get_buffer_info(env, v, data, len) == napi_ok;
}

/* Optional property readers for option objects: false if absent. */
static bool prop(napi_env env, napi_value obj, const char *key, napi_value *out)
{
	bool has;
	napi_valuetype t;
	if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has)
		return false;
	if (napi_get_named_property(env, obj, key, out) != napi_ok)
		return false;
	napi_typeof(env, *out, &t);
	return t != napi_undefined && t != napi_null;
}

static napi_value mk_i64(napi_env env, int64_t v)
{
	napi_value r;
	napi_create_int64(env, v, &r);
	return r;
}

static napi_value mk_str(napi_env env, const char *s)
{
	napi_value r;
	napi_create_string_utf8(env, s ? s : "", NAPI_AUTO_LENGTH, &r);
	return r;
}

static napi_value mk_bool(napi_env env, bool b)
{
	napi_value r;
	napi_get_boolean(env, b, &r);
	return r;
}

static void set_prop(napi_env env, napi_value obj, const char *key, napi_value v)
{
	napi_set_named_property(env, obj, key, v);
}

static struct bpf_object *obj_arg(napi_env env, napi_value v)
{
	int64_t h;
	if (!get_i64(env, v, &h) || h <= 0 || h >= MAX_HANDLES || !objects[h])
		return NULL;
	return objects[h];
}

/* The single argument of a call that takes one handle into `table`; -1 if bad. */
static int64_t handle_arg(napi_env env, napi_callback_info info, void **table)
{
	napi_value argv[1];
	int64_t h;
	if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &h) || h <= 0 ||
	    h >= MAX_HANDLES || !table[h])
		return -1;
	return h;
}

static struct bpf_program *prog_arg(napi_env env, struct bpf_object *obj, napi_value v)
{
	char name[256];
	if (!get_str(env, v, name, sizeof(name)))
		return NULL;
	return bpf_object__find_program_by_name(obj, name);
}

/* ---- objects ------------------------------------------------------------ */

static napi_value open_object(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	char path[4096];
	if (!get_args(env, info, 1, argv) || !get_str(env, argv[0], path, sizeof(path)))
		return throw_err(env, EINVAL, "openObject(path): path must be a string");
	int h = slot_for((void **)objects);
	if (h < 0)
		return throw_err(env, EMFILE, "open %s: too many objects", path);
	log_reset();
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	int err = libbpf_get_error(obj);
	if (err)
		return throw_err(env, err, "open %s", path);
	objects[h] = obj;
	return mk_i64(env, h);
}

/* Lists programs, maps and read-only variables (from BTF) of an object. */
static napi_value object_info(napi_env env, napi_callback_info info)
{
	napi_value argv[1], res, progs, maps, vars;
	if (!get_args(env, info, 1, argv))
		return throw_err(env, EINVAL, "objectInfo(handle)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "objectInfo: bad object handle");
	napi_create_object(env, &res);
	napi_create_array(env, &progs);
	napi_create_array(env, &maps);
	napi_create_array(env, &vars);

	uint32_t i = 0;
	struct bpf_program *p;
	bpf_object__for_each_program(p, obj) {
		napi_value o;
		napi_create_object(env, &o);
		set_prop(env, o, "name", mk_str(env, bpf_program__name(p)));
		set_prop(env, o, "section", mk_str(env, bpf_program__section_name(p)));
		set_prop(env, o, "type", mk_i64(env, bpf_program__type(p)));
		set_prop(env, o, "autoload", mk_bool(env, bpf_program__autoload(p)));
		set_prop(env, o, "fd", mk_i64(env, bpf_program__fd(p)));
		napi_set_element(env, progs, i++, o);
	}
	i = 0;
	struct bpf_map *m;
	bpf_object__for_each_map(m, obj) {
		napi_value o;
		napi_create_object(env, &o);
		set_prop(env, o, "name", mk_str(env, bpf_map__name(m)));
		set_prop(env, o, "type", mk_i64(env, bpf_map__type(m)));
		set_prop(env, o, "keySize", mk_i64(env, bpf_map__key_size(m)));
		set_prop(env, o, "valueSize", mk_i64(env, bpf_map__value_size(m)));
		set_prop(env, o, "maxEntries", mk_i64(env, bpf_map__max_entries(m)));
		set_prop(env, o, "fd", mk_i64(env, bpf_map__fd(m)));
		napi_set_element(env, maps, i++, o);
	}
	i = 0;
	struct btf *btf = bpf_object__btf(obj);
	if (btf) {
		int id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
		const struct btf_type *sec = id > 0 ? btf__type_by_id(btf, id) : NULL;
		if (sec) {
			const struct btf_var_secinfo *vs = btf_var_secinfos(sec);
			for (int k = 0; k < btf_vlen(sec); k++, vs++) {
				const struct btf_type *var = btf__type_by_id(btf, vs->type);
				napi_value o;
				napi_create_object(env, &o);
				set_prop(env, o, "name", mk_str(env, btf__name_by_offset(btf, var->name_off)));
				set_prop(env, o, "offset", mk_i64(env, vs->offset));
				set_prop(env, o, "size", mk_i64(env, vs->size));
				napi_set_element(env, vars, i++, o);
			}
		}
	}
	set_prop(env, res, "programs", progs);
	set_prop(env, res, "maps", maps);
	set_prop(env, res, "rodata", vars);
	return res;
}

/* A struct's size and members (byte offsets), or an enum's values, from an
 * object's BTF: the C headers are the one layout, and user space reads it
 * here instead of repeating it. null when the object has no such type. */
static napi_value btf_type(napi_env env, napi_callback_info info)
{
	napi_value argv[2], res, list;
	char name[256];
	if (!get_args(env, info, 2, argv) || !get_str(env, argv[1], name, sizeof(name)))
		return throw_err(env, EINVAL, "btfType(handle, name)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "btfType: bad object handle");
	struct btf *btf = bpf_object__btf(obj);
	int id = btf ? btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT) : -1;
	bool is_enum = false;
	if (btf && id < 0) {
		id = btf__find_by_name_kind(btf, name, BTF_KIND_ENUM);
		is_enum = id > 0;
	}
	if (!btf || id < 0) {
		napi_get_null(env, &res);
		return res;
	}
	const struct btf_type *t = btf__type_by_id(btf, id);
	napi_create_object(env, &res);
	set_prop(env, res, "kind", mk_str(env, is_enum ? "enum" : "struct"));
	set_prop(env, res, "size", mk_i64(env, t->size));
	napi_create_object(env, &list);
	if (is_enum) {
		const struct btf_enum *e = btf_enum(t);
		for (int i = 0; i < btf_vlen(t); i++, e++)
			set_prop(env, list, btf__name_by_offset(btf, e->name_off), mk_i64(env, e->val));
	} else {
		const struct btf_member *m = btf_members(t);
		for (int i = 0; i < btf_vlen(t); i++, m++) {
			napi_value o;
			napi_create_object(env, &o);
			set_prop(env, o, "offset", mk_i64(env, btf_member_bit_offset(t, i) / 8));
			set_prop(env, o, "size", mk_i64(env, btf__resolve_size(btf, m->type)));
			set_prop(env, list, btf__name_by_offset(btf, m->name_off), o);
		}
	}
	set_prop(env, res, is_enum ? "values" : "members", list);
	return res;
}

static napi_value set_autoload(napi_env env, napi_callback_info info)
{
	napi_value argv[3];
	bool on;
	if (!get_args(env, info, 3, argv) || napi_get_value_bool(env, argv[2], &on) != napi_ok)
		return throw_err(env, EINVAL, "setAutoload(handle, program, bool)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "setAutoload: bad object handle");
	struct bpf_program *p = prog_arg(env, obj, argv[1]);
	if (!p)
		return throw_err(env, ENOENT, "setAutoload: no such program");
	int err = bpf_program__set_autoload(p, on);
	if (err)
		return throw_err(env, err, "setAutoload %s", bpf_program__name(p));
	return NULL;
}

/* Writes bytes into .rodata before load (the skeletons' const volatile knobs). */
static napi_value set_rodata(napi_env env, napi_callback_info info)
{
	napi_value argv[3];
	int64_t off;
	void *data;
	size_t len;
	if (!get_args(env, info, 3, argv) || !get_i64(env, argv[1], &off) ||
	    !get_buf(env, argv[2], &data, &len))
		return throw_err(env, EINVAL, "setRodata(handle, offset, buffer)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "setRodata: bad object handle");
	struct bpf_map *m;
	bpf_object__for_each_map(m, obj) {
		const char *n = bpf_map__name(m);
		size_t nl = strlen(n);
		if (nl < 7 || strcmp(n + nl - 7, ".rodata") != 0)
			continue;
		size_t size;
		void *init = (void *)bpf_map__initial_value(m, &size);
		if (!init)
			return throw_err(env, EBUSY, "setRodata: object already loaded");
		if (off < 0 || (size_t)off + len > size)
			return throw_err(env, ERANGE, "setRodata: %zu bytes at %lld exceed .rodata (%zu)",
					 len, (long long)off, size);
		memcpy((char *)init + off, data, len);
		return NULL;
	}
	return throw_err(env, ENOENT, "setRodata: object has no .rodata");
}

static napi_value set_max_entries(napi_env env, napi_callback_info info)
{
	napi_value argv[3];
	char name[256];
	int64_t n;
	if (!get_args(env, info, 3, argv) || !get_str(env, argv[1], name, sizeof(name)) ||
	    !get_i64(env, argv[2], &n) || n <= 0 || n > UINT32_MAX)
		return throw_err(env, EINVAL, "setMaxEntries(handle, map, n)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "setMaxEntries: bad object handle");
	struct bpf_map *m = bpf_object__find_map_by_name(obj, name);
	if (!m)
		return throw_err(env, ENOENT, "setMaxEntries: no map %s", name);
	int err = bpf_map__set_max_entries(m, (uint32_t)n);
	if (err)
		return throw_err(env, err, "setMaxEntries %s", name);
	return NULL;
}

static napi_value load_object(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	if (!get_args(env, info, 1, argv))
		return throw_err(env, EINVAL, "loadObject(handle)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "loadObject: bad object handle");
	log_reset();
	/* The verifier gives up with EAGAIN when a signal is pending; a
	 * profiler's SIGPROF every millisecond would make that every time.
	 * Signals wait until the load is done, then arrive as usual. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int err = bpf_object__load(obj);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* A load parses the kernel's BTF (megabytes) and frees it: give those
	 * pages back, or the agent keeps them resident for its whole life. */
	malloc_trim(0);
	if (err)
		return throw_err(env, err, "load %s", bpf_object__name(obj));
	return NULL;
}

static void ringbuf_destroy(int h);

static napi_value close_object(napi_env env, napi_callback_info info)
{
	int64_t h = handle_arg(env, info, (void **)objects);
	if (h < 0)
		return throw_err(env, EBADF, "closeObject: bad object handle");
	for (int i = 1; i < MAX_HANDLES; i++) {
		if (ringbufs[i] && ringbuf_owner[i] == h)
			ringbuf_destroy(i);
		if (links[i] && link_owner[i] == h) {
			bpf_link__destroy(links[i]);
			links[i] = NULL;
		}
	}
	bpf_object__close(objects[h]);
	objects[h] = NULL;
	return NULL;
}

/* ---- attach ------------------------------------------------------------- */

static int perf_event_open_sw(int cpu, uint64_t freq)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.config = PERF_COUNT_SW_CPU_CLOCK,
		.size = sizeof(attr),
		.freq = 1,
		.sample_freq = freq,
	};
	return syscall(__NR_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* attach(handle, program, spec): spec.kind picks the libbpf call. */
static napi_value attach(napi_env env, napi_callback_info info)
{
	napi_value argv[3], v;
	char kind[32], a[4096], b[256], c[256];
	int64_t pid = -1, off = 0, cpu = 0, freq = 99;
	if (!get_args(env, info, 3, argv))
		return throw_err(env, EINVAL, "attach(handle, program, spec)");
	struct bpf_object *obj = obj_arg(env, argv[0]);
	if (!obj)
		return throw_err(env, EBADF, "attach: bad object handle");
	struct bpf_program *p = prog_arg(env, obj, argv[1]);
	if (!p)
		return throw_err(env, ENOENT, "attach: no such program");
	if (!prop(env, argv[2], "kind", &v) || !get_str(env, v, kind, sizeof(kind)))
		return throw_err(env, EINVAL, "attach: spec.kind must be a string");
	int h = slot_for((void **)links);
	if (h < 0)
		return throw_err(env, EMFILE, "attach: too many links");
	a[0] = b[0] = c[0] = 0;
	if (prop(env, argv[2], "pid", &v) && !get_i64(env, v, &pid))
		return throw_err(env, EINVAL, "attach: spec.pid must be an integer");

	log_reset();
	struct bpf_link *link = NULL;
	const char *name = bpf_program__name(p);
	if (!strcmp(kind, "auto")) {
		link = bpf_program__attach(p);
	} else if (!strcmp(kind, "tracepoint")) {
		if (!prop(env, argv[2], "category", &v) || !get_str(env, v, a, sizeof(a)) ||
		    !prop(env, argv[2], "name", &v) || !get_str(env, v, b, sizeof(b)))
			return throw_err(env, EINVAL, "attach %s: tracepoint needs category and name", name);
		link = bpf_program__attach_tracepoint(p, a, b);
	} else if (!strcmp(kind, "raw_tp")) {
		if (!prop(env, argv[2], "name", &v) || !get_str(env, v, b, sizeof(b)))
			return throw_err(env, EINVAL, "attach %s: raw_tp needs name", name);
		link = bpf_program__attach_raw_tracepoint(p, b);
	} else if (!strcmp(kind, "tp_btf")) {
		link = bpf_program__attach_trace(p);
	} else if (!strcmp(kind, "uprobe") || !strcmp(kind, "uretprobe")) {
		LIBBPF_OPTS(bpf_uprobe_opts, uo);
		uo.retprobe = kind[1] == 'r';
		if (!prop(env, argv[2], "binary", &v) || !get_str(env, v, a, sizeof(a)))
			return throw_err(env, EINVAL, "attach %s: uprobe needs binary", name);
		if (prop(env, argv[2], "symbol", &v)) {
			if (!get_str(env, v, b, sizeof(b)))
				return throw_err(env, EINVAL, "attach %s: symbol must be a string", name);
			uo.func_name = b;
		}
		if (prop(env, argv[2], "offset", &v) && (!get_i64(env, v, &off) || off < 0))
			return throw_err(env, EINVAL, "attach %s: offset must be a non-negative integer", name);
		if (!uo.func_name && !off)
			return throw_err(env, EINVAL, "attach %s: uprobe needs symbol or offset", name);
		link = bpf_program__attach_uprobe_opts(p, pid, a, (size_t)off, &uo);
	} else if (!strcmp(kind, "usdt")) {
		if (!prop(env, argv[2], "binary", &v) || !get_str(env, v, a, sizeof(a)) ||
		    !prop(env, argv[2], "provider", &v) || !get_str(env, v, b, sizeof(b)) ||
		    !prop(env, argv[2], "name", &v) || !get_str(env, v, c, sizeof(c)))
			return throw_err(env, EINVAL, "attach %s: usdt needs binary, provider and name", name);
		link = bpf_program__attach_usdt(p, pid, a, b, c, NULL);
	} else if (!strcmp(kind, "cgroup")) {
		if (!prop(env, argv[2], "path", &v) || !get_str(env, v, a, sizeof(a)))
			return throw_err(env, EINVAL, "attach %s: cgroup needs path", name);
		int fd = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return throw_err(env, errno, "attach %s: open cgroup %s", name, a);
		link = bpf_program__attach_cgroup(p, fd);
		close(fd); /* the link holds its own reference */
	} else if (!strcmp(kind, "perf_event")) {
		if (prop(env, argv[2], "cpu", &v) && !get_i64(env, v, &cpu))
			return throw_err(env, EINVAL, "attach %s: cpu must be an integer", name);
		if (prop(env, argv[2], "frequency", &v) && (!get_i64(env, v, &freq) || freq <= 0))
			return throw_err(env, EINVAL, "attach %s: frequency must be positive", name);
		int pfd = perf_event_open_sw((int)cpu, (uint64_t)freq);
		if (pfd < 0)
			return throw_err(env, errno, "attach %s: perf_event_open on cpu %lld", name,
					 (long long)cpu);
		link = bpf_program__attach_perf_event(p, pfd);
		if (libbpf_get_error(link))
			close(pfd); /* on success the link owns and closes it */
	} else if (!strcmp(kind, "iter")) {
		link = bpf_program__attach_iter(p, NULL);
	} else {
		return throw_err(env, EINVAL, "attach %s: unknown kind %s", name, kind);
	}
	int err = libbpf_get_error(link);
	if (err)
		return throw_err(env, err, "attach %s (%s)", name, kind);
	int64_t oh;
	get_i64(env, argv[0], &oh);
	links[h] = link;
	link_owner[h] = (int)oh;
	return mk_i64(env, h);
}

/* Runs an iterator link once: its program sees every object (a TCP socket,
 * a task) and does its work in maps; what it prints is read and counted,
 * not kept. Returns the bytes printed. */
static napi_value iter_run(napi_env env, napi_callback_info info)
{
	int64_t h = handle_arg(env, info, (void **)links);
	if (h < 0)
		return throw_err(env, EBADF, "iterRun: bad link handle");
	int fd = bpf_iter_create(bpf_link__fd(links[h]));
	if (fd < 0)
		return throw_err(env, errno, "iterRun: bpf_iter_create");
	char buf[4096];
	int64_t total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			close(fd);
			return throw_err(env, err, "iterRun: read");
		}
		if (n == 0)
			break;
		total += n;
	}
	close(fd);
	return mk_i64(env, total);
}

static napi_value detach(napi_env env, napi_callback_info info)
{
	int64_t h = handle_arg(env, info, (void **)links);
	if (h < 0)
		return throw_err(env, EBADF, "detach: bad link handle");
	int err = bpf_link__destroy(links[h]);
	links[h] = NULL;
	if (err)
		return throw_err(env, err, "detach");
	return NULL;
}

/* Tearing down a perf-event link (tracepoint, uprobe) waits for an RCU grace
 * period, ~80 ms here; detachAsync runs each in the libuv thread pool so
 * several overlap. The table slot is freed at once on the main thread. */
struct detach_work {
	napi_async_work work;
	napi_deferred deferred;
	struct bpf_link *link;
	int err;
};

static void detach_execute(napi_env env, void *data)
{
	struct detach_work *w = data;
	w->err = bpf_link__destroy(w->link);
}

static void detach_complete(napi_env env, napi_status status, void *data)
{
	struct detach_work *w = data;
	napi_value v;
	if (w->err) {
		char msg[128];
		snprintf(msg, sizeof(msg), "detach: %s", strerror(-w->err));
		napi_value code, text;
		napi_create_string_utf8(env, ERR_CODE, NAPI_AUTO_LENGTH, &code);
		napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
		napi_create_error(env, code, text, &v);
		napi_reject_deferred(env, w->deferred, v);
	} else {
		napi_get_undefined(env, &v);
		napi_resolve_deferred(env, w->deferred, v);
	}
	napi_delete_async_work(env, w->work);
	free(w);
}

static napi_value detach_async(napi_env env, napi_callback_info info)
{
	napi_value promise, name;
	int64_t h = handle_arg(env, info, (void **)links);
	if (h < 0)
		return throw_err(env, EBADF, "detachAsync: bad link handle");
	struct detach_work *w = calloc(1, sizeof(*w));
	if (!w)
		return throw_err(env, ENOMEM, "detachAsync");
	w->link = links[h];
	links[h] = NULL;
	napi_create_promise(env, &w->deferred, &promise);
	napi_create_string_utf8(env, "kernscope:detach", NAPI_AUTO_LENGTH, &name);
	napi_create_async_work(env, NULL, name, detach_execute, detach_complete, w, &w->work);
	napi_queue_async_work(env, w->work);
	return promise;
}

/* ---- maps (by fd; the object owns the fd) ------------------------------- */

static napi_value map_lookup(napi_env env, napi_callback_info info)
{
	napi_value argv[3], out;
	int64_t fd, vsize;
	void *key, *val;
	size_t klen;
	if (!get_args(env, info, 3, argv) || !get_i64(env, argv[0], &fd) ||
	    !get_buf(env, argv[1], &key, &klen) || !get_i64(env, argv[2], &vsize) || vsize <= 0)
		return throw_err(env, EINVAL, "mapLookup(fd, key, valueSize)");
	napi_create_buffer(env, (size_t)vsize, &val, &out);
	if (bpf_map_lookup_elem((int)fd, key, val)) {
		if (errno == ENOENT) {
			napi_get_null(env, &out);
			return out;
		}
		return throw_err(env, errno, "map lookup");
	}
	return out;
}

static napi_value map_update(napi_env env, napi_callback_info info)
{
	napi_value argv[4];
	int64_t fd, flags;
	void *key, *val;
	size_t klen, vlen;
	if (!get_args(env, info, 4, argv) || !get_i64(env, argv[0], &fd) ||
	    !get_buf(env, argv[1], &key, &klen) || !get_buf(env, argv[2], &val, &vlen) ||
	    !get_i64(env, argv[3], &flags))
		return throw_err(env, EINVAL, "mapUpdate(fd, key, value, flags)");
	if (bpf_map_update_elem((int)fd, key, val, (uint64_t)flags))
		return throw_err(env, errno, "map update");
	return NULL;
}

static napi_value map_delete(napi_env env, napi_callback_info info)
{
	napi_value argv[2];
	int64_t fd;
	void *key;
	size_t klen;
	if (!get_args(env, info, 2, argv) || !get_i64(env, argv[0], &fd) ||
	    !get_buf(env, argv[1], &key, &klen))
		return throw_err(env, EINVAL, "mapDelete(fd, key)");
	if (bpf_map_delete_elem((int)fd, key)) {
		if (errno == ENOENT)
			return mk_bool(env, false);
		return throw_err(env, errno, "map delete");
	}
	return mk_bool(env, true);
}

/* Reads every entry: one batch syscall where the map type allows it, else
 * get_next_key + lookup. Returns { keys, values, count, batched }. */
/* Entries read so far, grown as they come: a dump holds what the map has,
 * not its capacity (a large per-CPU table's capacity is megabytes that
 * would stay resident in the heap). */
struct dump {
	char *keys, *vals;
	uint32_t count, cap;
	int64_t ks, vs;
};

static bool dump_room(struct dump *d, uint32_t more)
{
	if (d->count + more <= d->cap)
		return true;
	uint32_t cap = d->cap ? d->cap : 64;
	while (cap < d->count + more)
		cap *= 2;
	char *k = realloc(d->keys, (size_t)cap * d->ks);
	if (!k)
		return false;
	d->keys = k;
	char *v = realloc(d->vals, (size_t)cap * d->vs);
	if (!v)
		return false;
	d->vals = v;
	d->cap = cap;
	return true;
}

/* Appends n entries (values of `vs` bytes each), summing each value's
 * per-CPU slots into one of d->vs bytes when they differ. */
static bool dump_add(struct dump *d, const char *keys, const char *vals, uint32_t n, int64_t vs)
{
	if (!dump_room(d, n))
		return false;
	memcpy(d->keys + (size_t)d->count * d->ks, keys, (size_t)n * d->ks);
	if (vs == d->vs) {
		memcpy(d->vals + (size_t)d->count * d->vs, vals, (size_t)n * vs);
	} else {
		int64_t cpus = vs / d->vs, words = d->vs / 8;
		for (uint32_t i = 0; i < n; i++) {
			const uint64_t *in = (const uint64_t *)(vals + (size_t)i * vs);
			uint64_t *out = (uint64_t *)(d->vals + (size_t)(d->count + i) * d->vs);
			for (int64_t w = 0; w < words; w++) {
				uint64_t sum = 0;
				for (int64_t c = 0; c < cpus; c++)
					sum += in[c * words + w];
				out[w] = sum;
			}
		}
	}
	d->count += n;
	return true;
}

static napi_value map_dump(napi_env env, napi_callback_info info)
{
	napi_value argv[5], res, kb, vb;
	int64_t fd, ks, vs, max, slot = 0;
	size_t argc = 5;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
	    !get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &ks) || !get_i64(env, argv[2], &vs) ||
	    !get_i64(env, argv[3], &max) || ks <= 0 || vs <= 0 || max <= 0 ||
	    (argc >= 5 && (!get_i64(env, argv[4], &slot) || slot < 0 || (slot && (slot % 8 || vs % slot)))))
		return throw_err(env, EINVAL, "mapDump(fd, keySize, valueSize, maxEntries[, sumSlot])");
	struct dump d = { .ks = ks, .vs = slot ? slot : vs };
	/* Batches of `chunk` entries; a hash bucket larger than that is ENOSPC:
	 * the chunk doubles and the batch is tried again. */
	uint32_t chunk = max < 256 ? (uint32_t)max : 256;
	char *keys = malloc((size_t)ks * chunk), *vals = malloc((size_t)vs * chunk);
	char *token = malloc(ks < 8 ? 8 : ks), *next = malloc(ks < 8 ? 8 : ks);
	bool batched = false, first = true;
	int err = 0;
	if (!keys || !vals || !token || !next)
		err = ENOMEM;
	while (!err && d.count < max) {
		uint32_t n = chunk;
		LIBBPF_OPTS(bpf_map_batch_opts, bo);
		int r = bpf_map_lookup_batch((int)fd, first ? NULL : token, next, keys, vals, &n, &bo);
		if (r && errno == ENOSPC && !n && chunk < max) {
			char *k2 = realloc(keys, (size_t)ks * chunk * 2), *v2 = k2 ? realloc(vals, (size_t)vs * chunk * 2) : NULL;
			if (k2)
				keys = k2;
			if (!k2 || !v2) {
				err = ENOMEM;
				break;
			}
			vals = v2;
			chunk *= 2;
			continue;
		}
		if (r && errno != ENOENT) {
			err = errno;
			break;
		}
		if (!dump_add(&d, keys, vals, n, vs)) {
			err = ENOMEM;
			break;
		}
		memcpy(token, next, ks < 8 ? 8 : ks);
		first = false;
		batched = true;
		if (r) /* ENOENT: that was the last batch */
			break;
	}
	free(token);
	free(next);
	if (err == EINVAL || err == ENOTSUP || err == EOPNOTSUPP || err == 524 /* ENOTSUPP */) {
		/* No batch ops for this map type: key by key. */
		batched = false;
		err = 0;
		d.count = 0;
		char *prev = NULL, *cur = malloc(ks), *last = malloc(ks);
		if (!cur || !last)
			err = ENOMEM;
		while (!err && d.count < max) {
			if (bpf_map_get_next_key((int)fd, prev, cur))
				break;
			memcpy(last, cur, ks);
			prev = last;
			if (bpf_map_lookup_elem((int)fd, cur, vals)) {
				if (errno == ENOENT) /* deleted meanwhile: skip it */
					continue;
				err = errno;
				break;
			}
			if (!dump_add(&d, cur, vals, 1, vs))
				err = ENOMEM;
		}
		free(cur);
		free(last);
	}
	free(keys);
	free(vals);
	if (err) {
		free(d.keys);
		free(d.vals);
		return throw_err(env, err, "map dump");
	}
	napi_create_buffer_copy(env, (size_t)d.count * d.ks, d.keys, NULL, &kb);
	napi_create_buffer_copy(env, (size_t)d.count * d.vs, d.vals, NULL, &vb);
	free(d.keys);
	free(d.vals);
	napi_create_object(env, &res);
	set_prop(env, res, "keys", kb);
	set_prop(env, res, "values", vb);
	set_prop(env, res, "count", mk_i64(env, d.count));
	set_prop(env, res, "batched", mk_bool(env, batched));
	return res;
}

/* ---- ring buffers in the libuv loop ------------------------------------- */

/* Records of one wakeup are packed into a single Buffer as
 * [u32 length][payload, padded to 8 bytes] so JS gets one call per batch. */
struct ringbuf_handle {
	uv_poll_t poll;
	struct ring_buffer *rb;
	napi_env env;
	napi_ref callback;
	napi_async_context actx;
	char *batch;
	size_t len, cap;
	uint32_t count;
	int id;
};

static int on_sample(void *ctx, void *data, size_t size)
{
	struct ringbuf_handle *r = ctx;
	size_t need = 8 + ((size + 7) & ~(size_t)7);
	if (r->len + need > r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64 * 1024;
		while (cap < r->len + need)
			cap *= 2;
		char *nb = realloc(r->batch, cap);
		if (!nb)
			return -ENOMEM;
		r->batch = nb;
		r->cap = cap;
	}
	uint32_t len32 = (uint32_t)size;
	memcpy(r->batch + r->len, &len32, 4);
	memset(r->batch + r->len + 4, 0, 4);
	memcpy(r->batch + r->len + 8, data, size);
	r->len += need;
	r->count++;
	return 0;
}

static void on_readable(uv_poll_t *poll, int status, int events)
{
	struct ringbuf_handle *r = poll->data;
	(void)events;
	if (status < 0)
		return;
	/* Bounded per wakeup so a flood cannot starve the loop: the rest stays
	 * in the ring and the fd stays readable. */
	r->len = 0;
	r->count = 0;
	while (r->count < 65536) {
		int n = ring_buffer__consume(r->rb);
		if (n <= 0)
			break;
	}
	if (!r->count)
		return;
	napi_env env = r->env;
	napi_handle_scope scope;
	napi_open_handle_scope(env, &scope);
	napi_value cb, recv, args[2], result;
	napi_get_reference_value(env, r->callback, &cb);
	napi_get_global(env, &recv); /* make_callback needs an object receiver */
	napi_create_buffer_copy(env, r->len, r->batch, NULL, &args[0]);
	napi_create_uint32(env, r->count, &args[1]);
	napi_make_callback(env, r->actx, recv, cb, 2, args, &result);
	napi_close_handle_scope(env, scope);
	/* Shrink a buffer a burst inflated. */
	if (r->cap > 4 * 1024 * 1024) {
		free(r->batch);
		r->batch = NULL;
		r->cap = 0;
	}
}

static void on_poll_closed(uv_handle_t *h)
{
	struct ringbuf_handle *r = h->data;
	free(r->batch);
	free(r);
}

static void ringbuf_destroy(int h)
{
	struct ringbuf_handle *r = ringbufs[h];
	ringbufs[h] = NULL;
	uv_poll_stop(&r->poll);
	ring_buffer__free(r->rb);
	r->rb = NULL;
	napi_delete_reference(r->env, r->callback);
	napi_async_destroy(r->env, r->actx);
	uv_close((uv_handle_t *)&r->poll, on_poll_closed);
}

/* ringbufOpen(objectHandle, mapFd, callback(batch: Buffer, count: number)) */
static napi_value ringbuf_open(napi_env env, napi_callback_info info)
{
	napi_value argv[3], name, resource;
	int64_t oh, fd;
	napi_valuetype t;
	if (!get_args(env, info, 3, argv) || !get_i64(env, argv[0], &oh) ||
	    !get_i64(env, argv[1], &fd) || napi_typeof(env, argv[2], &t) != napi_ok ||
	    t != napi_function)
		return throw_err(env, EINVAL, "ringbufOpen(handle, mapFd, callback)");
	if (oh <= 0 || oh >= MAX_HANDLES || !objects[oh])
		return throw_err(env, EBADF, "ringbufOpen: bad object handle");
	int h = slot_for((void **)ringbufs);
	if (h < 0)
		return throw_err(env, EMFILE, "ringbufOpen: too many ring buffers");
	struct ringbuf_handle *r = calloc(1, sizeof(*r));
	if (!r)
		return throw_err(env, ENOMEM, "ringbufOpen");
	log_reset();
	r->rb = ring_buffer__new((int)fd, on_sample, r, NULL);
	int err = libbpf_get_error(r->rb);
	if (err) {
		free(r);
		return throw_err(env, err, "ringbufOpen fd %lld", (long long)fd);
	}
	napi_create_string_utf8(env, "kernscope:ringbuf", NAPI_AUTO_LENGTH, &name);
	napi_create_object(env, &resource);
	if (napi_async_init(env, resource, name, &r->actx) != napi_ok) {
		ring_buffer__free(r->rb);
		free(r);
		return throw_err(env, EINVAL, "ringbufOpen: napi_async_init");
	}
	uv_loop_t *loop;
	napi_get_uv_event_loop(env, &loop);
	if (uv_poll_init(loop, &r->poll, ring_buffer__epoll_fd(r->rb))) {
		napi_async_destroy(env, r->actx);
		ring_buffer__free(r->rb);
		free(r);
		return throw_err(env, EIO, "ringbufOpen: uv_poll_init");
	}
	r->poll.data = r;
	r->env = env;
	r->id = h;
	napi_create_reference(env, argv[2], 1, &r->callback);
	uv_poll_start(&r->poll, UV_READABLE, on_readable);
	ringbufs[h] = r;
	ringbuf_owner[h] = (int)oh;
	return mk_i64(env, h);
}

static napi_value ringbuf_close(napi_env env, napi_callback_info info)
{
	int64_t h = handle_arg(env, info, (void **)ringbufs);
	if (h < 0)
		return throw_err(env, EBADF, "ringbufClose: bad ring buffer handle");
	ringbuf_destroy((int)h);
	return NULL;
}

/* Drains a ring buffer now: records submitted without a wakeup are
 * delivered by this, called from a timer. */
static napi_value ringbuf_consume(napi_env env, napi_callback_info info)
{
	int64_t h = handle_arg(env, info, (void **)ringbufs);
	if (h < 0)
		return throw_err(env, EBADF, "ringbufConsume: bad ring buffer handle");
	on_readable(&ringbufs[h]->poll, 0, UV_READABLE);
	return NULL;
}

/* Keeps the loop from waiting on a ring buffer (tests, one-shot tools). */
static napi_value ringbuf_unref(napi_env env, napi_callback_info info)
{
	int64_t h = handle_arg(env, info, (void **)ringbufs);
	if (h < 0)
		return throw_err(env, EBADF, "ringbufUnref: bad ring buffer handle");
	uv_unref((uv_handle_t *)&ringbufs[h]->poll);
	return NULL;
}

/* ---- program statistics -------------------------------------------------- */

static napi_value prog_info(napi_env env, napi_callback_info info)
{
	napi_value argv[1], res;
	int64_t fd;
	if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &fd))
		return throw_err(env, EINVAL, "progInfo(fd)");
	struct bpf_prog_info pi = {};
	uint32_t len = sizeof(pi);
	if (bpf_obj_get_info_by_fd((int)fd, &pi, &len))
		return throw_err(env, errno, "progInfo fd %lld", (long long)fd);
	napi_create_object(env, &res);
	set_prop(env, res, "id", mk_i64(env, pi.id));
	set_prop(env, res, "name", mk_str(env, pi.name));
	set_prop(env, res, "type", mk_i64(env, pi.type));
	set_prop(env, res, "runCount", mk_i64(env, (int64_t)pi.run_cnt));
	set_prop(env, res, "runTimeNs", mk_i64(env, (int64_t)pi.run_time_ns));
	set_prop(env, res, "recursionMisses", mk_i64(env, (int64_t)pi.recursion_misses));
	set_prop(env, res, "verifiedInsns", mk_i64(env, pi.verified_insns));
	return res;
}

/* Turns on run-time statistics until the returned fd is closed. */
static napi_value enable_stats(napi_env env, napi_callback_info info)
{
	(void)info;
	int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (fd < 0)
		return throw_err(env, errno, "enable BPF run-time statistics");
	return mk_i64(env, fd);
}

static napi_value close_fd(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	int64_t fd;
	if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &fd) || fd < 0)
		return throw_err(env, EINVAL, "closeFd(fd)");
	close((int)fd);
	return NULL;
}

/* ---- kernel feature probes ---------------------------------------------- */

static napi_value probe_prog_type(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	int64_t t;
	if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &t))
		return throw_err(env, EINVAL, "probeProgType(type)");
	return mk_bool(env, libbpf_probe_bpf_prog_type((enum bpf_prog_type)t, NULL) == 1);
}

static napi_value probe_map_type(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	int64_t t;
	if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &t))
		return throw_err(env, EINVAL, "probeMapType(type)");
	return mk_bool(env, libbpf_probe_bpf_map_type((enum bpf_map_type)t, NULL) == 1);
}

/* The kernel's BTF, parsed at the first question and kept until released:
 * ~6 MB, wanted only while collectors are planned. */
static struct btf *vmlinux;

/* Whether the kernel's BTF has a named type, e.g. btf_trace_tcp_probe. */
static napi_value vmlinux_has_type(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	char name[256];
	if (!get_args(env, info, 1, argv) || !get_str(env, argv[0], name, sizeof(name)))
		return throw_err(env, EINVAL, "vmlinuxHasType(name)");
	if (!vmlinux) {
		log_reset();
		vmlinux = btf__load_vmlinux_btf();
		if (libbpf_get_error(vmlinux)) {
			int err = libbpf_get_error(vmlinux);
			vmlinux = NULL;
			return throw_err(env, err, "load kernel BTF");
		}
	}
	return mk_bool(env, btf__find_by_name(vmlinux, name) > 0);
}

static napi_value vmlinux_release(napi_env env, napi_callback_info info)
{
	(void)info;
	btf__free(vmlinux);
	vmlinux = NULL;
	return NULL;
}

static napi_value num_cpus(napi_env env, napi_callback_info info)
{
	(void)info;
	int n = libbpf_num_possible_cpus();
	if (n < 0)
		return throw_err(env, n, "count possible CPUs");
	return mk_i64(env, n);
}

/* Freed memory in the middle of malloc's heap goes back to the kernel only
 * on request: the agent asks now and then, or its RSS keeps the high-water
 * mark of every burst of allocations (reads of /proc, map dumps). */
static napi_value trim_heap(napi_env env, napi_callback_info info)
{
	(void)info;
	return mk_bool(env, malloc_trim(0) != 0);
}

/* ---- module ------------------------------------------------------------- */

static napi_value init(napi_env env, napi_value exports)
{
	const char *dbg = getenv("KERNSCOPE_LIBBPF_DEBUG");
	log_debug = dbg && *dbg && strcmp(dbg, "0");
	libbpf_set_print(print_fn);
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);

	struct {
		const char *name;
		napi_callback fn;
	} fns[] = {
		{ "openObject", open_object },	   { "objectInfo", object_info },
		{ "btfType", btf_type },
		{ "setAutoload", set_autoload },   { "setRodata", set_rodata },
		{ "setMaxEntries", set_max_entries }, { "loadObject", load_object },
		{ "closeObject", close_object },   { "attach", attach },
		{ "detach", detach },		   { "detachAsync", detach_async },
		{ "iterRun", iter_run },
		{ "mapLookup", map_lookup },
		{ "mapUpdate", map_update },	   { "mapDelete", map_delete },
		{ "mapDump", map_dump },	   { "ringbufOpen", ringbuf_open },
		{ "ringbufClose", ringbuf_close }, { "ringbufUnref", ringbuf_unref },
		{ "ringbufConsume", ringbuf_consume },
		{ "progInfo", prog_info },	   { "enableStats", enable_stats },
		{ "closeFd", close_fd },	   { "probeProgType", probe_prog_type },
		{ "probeMapType", probe_map_type }, { "vmlinuxHasType", vmlinux_has_type },
		{ "vmlinuxRelease", vmlinux_release },
		{ "numPossibleCpus", num_cpus },    { "trimHeap", trim_heap },
	};
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		napi_value f;
		napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
		napi_set_named_property(env, exports, fns[i].name, f);
	}
	napi_value v;
	char ver[32];
	snprintf(ver, sizeof(ver), "%u.%u", libbpf_major_version(), libbpf_minor_version());
	napi_create_string_utf8(env, ver, NAPI_AUTO_LENGTH, &v);
	napi_set_named_property(env, exports, "libbpfVersion", v);
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
