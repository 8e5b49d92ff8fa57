// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Preloaded into the CLI (LD_PRELOAD) by the [syscalls] faults test: the
 * process's bpf() calls are counted across its threads (only those of the
 * command UDPI_FAIL_BPF_CMD, a number, if set), and the one numbered
 * UDPI_FAIL_BPF_AT (from 1), with the UDPI_FAIL_BPF_TIMES - 1 after it
 * (default 1 in all), fails with UDPI_FAIL_BPF_ERRNO (a number, default
 * ENOMEM) instead of reaching the kernel. At exit the count is written to
 * UDPI_FAIL_BPF_COUNT (a file), so that a run without a failure tells the
 * test how many calls a run makes. libbpf and the library both call bpf()
 * through libc's syscall(), which this replaces.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef long (*syscall_fn)(long, ...);

static atomic_long calls;
static long fail_at, fail_times = 1, only_cmd = -1;
static int fail_errno = ENOMEM;
static const char *count_path;

static void write_count(void)
{
	FILE *f = fopen(count_path, "w");

	if (f) {
		fprintf(f, "%ld\n", atomic_load(&calls));
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
	if (number == SYS_bpf && (only_cmd < 0 || a[0] == only_cmd)) {
		const long n = atomic_fetch_add(&calls, 1) + 1;

		if (fail_at > 0 && n >= fail_at && n < fail_at + fail_times) {
			errno = fail_errno;
			return -1;
		}
	}
	return fn(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
