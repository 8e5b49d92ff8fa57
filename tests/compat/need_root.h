// SPDX-License-Identifier: LGPL-2.1-or-later
// Root tests skip (exit 77) without root and say why, except in CI: CI runs
// as root, so there a missing privilege is a failure, never a skip.
#ifndef UDPEVENT_TESTS_NEED_ROOT_H
#define UDPEVENT_TESTS_NEED_ROOT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline int in_ci(void)
{
	const char *ci = getenv("CI");
	return ci && *ci && strcmp(ci, "false") != 0 && strcmp(ci, "0") != 0;
}

static inline void need_root(const char *test)
{
	if (geteuid() == 0)
		return;
	if (in_ci()) {
		fprintf(stderr, "%s: FAIL: needs root (BPF and namespaces), and CI must run it as root\n", test);
		exit(1);
	}
	fprintf(stderr, "%s: skipped: needs root (BPF, cgroup attach and namespaces)\n", test);
	exit(77);
}

#endif
