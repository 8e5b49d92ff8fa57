// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Preloaded (LD_PRELOAD) into the CLI, or into a consumer of the legacy
 * library, by the [syscalls] faults test: the
 * process's bpf() calls are counted across its threads (only those of the
 * command UDPI_FAIL_BPF_CMD, a number, if set), and the one numbered
 * UDPI_FAIL_BPF_AT (from 1), with the UDPI_FAIL_BPF_TIMES - 1 after it
 * (default 1 in all), fails with UDPI_FAIL_BPF_ERRNO (a number, default
 * ENOMEM) instead of reaching the kernel. libbpf and the library both call
 * bpf() through libc's syscall(), which this replaces.
 *
 * At exit the count is written to UDPI_FAIL_BPF_COUNT (a file), so that a
 * run without a failure tells the test how many calls a run makes, and on
 * a second line what the first refused call was: "refused CMD NAME SIZE",
 * its command, the name it gave the program or map it would have made ("-"
 * for none or another command), and the size of the BTF it would have
 * loaded (0 for another command).
 *
 * A process that calls udpi_fail_bpf_pause() (found with dlsym()) has its
 * later calls neither counted nor refused.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef long (*syscall_fn)(long, ...);

static atomic_long calls;
static atomic_bool paused;
static long fail_at, fail_times = 1, only_cmd = -1;
static int fail_errno = ENOMEM;
static const char *count_path;
static atomic_bool refused_one;
static long refused_cmd;
static char refused_name[BPF_OBJ_NAME_LEN + 1];
static unsigned long refused_btf_size;

static void write_count(void)
{
	FILE *f = fopen(count_path, "w");

	if (f) {
		fprintf(f, "%ld\n", atomic_load(&calls));
		if (atomic_load(&refused_one))
			fprintf(f, "refused %ld %s %lu\n", refused_cmd, refused_name[0] ? refused_name : "-",
				refused_btf_size);
		fclose(f);
	}
}

__attribute__((constructor)) static void setup(void)
{
	const char *at = getenv("UDPI_FAIL_BPF_AT"), *err = getenv("UDPI_FAIL_BPF_ERRNO");
	const char *cmd = getenv("UDPI_FAIL_BPF_CMD"), *times = getenv("UDPI_FAIL_BPF_TIMES");

	fail_at = at ? atol(at) : 0;
	if (err)
		fail_errno = atoi(err);
	if (cmd)
		only_cmd = atol(cmd);
	if (times)
		fail_times = atol(times);
	count_path = getenv("UDPI_FAIL_BPF_COUNT");
	if (count_path)
		atexit(write_count);
}

static void note_refused(long cmd, const union bpf_attr *attr)
{
	const char *name = "";

	refused_cmd = cmd;
	if (cmd == BPF_PROG_LOAD)
		name = attr->prog_name;
	else if (cmd == BPF_MAP_CREATE)
		name = attr->map_name;
	else if (cmd == BPF_BTF_LOAD)
		refused_btf_size = attr->btf_size;
	for (size_t i = 0; i < BPF_OBJ_NAME_LEN && name[i]; i++)
		refused_name[i] = name[i];
}

__attribute__((visibility("default"))) void udpi_fail_bpf_pause(void)
{
	atomic_store(&paused, true);
}

long syscall(long number, ...)
{
	static _Atomic(syscall_fn) real;
	syscall_fn fn = atomic_load(&real);
	long a[6];
	va_list ap;

	va_start(ap, number);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (!fn) {
		fn = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
		atomic_store(&real, fn);
	}
	if (number == SYS_bpf && (only_cmd < 0 || a[0] == only_cmd) && !atomic_load(&paused)) {
		const long n = atomic_fetch_add(&calls, 1) + 1;

		if (fail_at > 0 && n >= fail_at && n < fail_at + fail_times) {
			if (!atomic_exchange(&refused_one, true))
				note_refused(a[0], (const union bpf_attr *)a[1]);
			errno = fail_errno;
			return -1;
		}
	}
	return fn(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
