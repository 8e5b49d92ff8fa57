// SPDX-License-Identifier: LGPL-2.1-or-later
// Fault tests: root (skip 77 without it, fail in CI), in a fresh network
// namespace so that the traffic they count is theirs alone.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <string_view>

#include "testutil.h"

std::string g_cli_path;      // --cli: the udpintercept executable
std::string g_legacy_path;   // --legacy: libudpEvent.so
std::string g_fail_bpf_path; // --fail-bpf: fail_bpf.so, preloaded to refuse a bpf() call
long g_sweep_first = 1;      // --sweep-first: the first call the [syscalls] sweeps refuse
long g_sweep_stride = 1;     // --sweep-stride: then one call in this many

int legacy_client(const char *library); // legacy_client.cpp

int main(int argc, char **argv)
{
	// A child of the [syscalls] tests: a consumer of the legacy library.
	if (argc == 3 && std::string_view(argv[1]) == "--legacy-client")
		return legacy_client(argv[2]);
	testutil::require_root_or_skip(argv[0]);
	Catch::Session session;
	using namespace Catch::clara;
	auto cli =
		session.cli() | Opt(g_cli_path, "path")["--cli"]("the udpintercept executable") |
		Opt(g_legacy_path, "path")["--legacy"]("libudpEvent.so") |
		Opt(g_fail_bpf_path, "path")["--fail-bpf"]("fail_bpf.so, preloaded to refuse a bpf() call") |
		Opt(g_sweep_first, "n")["--sweep-first"]("[syscalls]: the first call refused (default 1)") |
		Opt(g_sweep_stride, "n")["--sweep-stride"](
			"then one call in n (default 1: each call; more samples a slow machine's sweep)");
	session.cli(cli);
	if (int rc = session.applyCommandLine(argc, argv); rc != 0)
		return rc;
	if (g_sweep_first < 1 || g_sweep_stride < 1) {
		std::fprintf(stderr, "%s: --sweep-first and --sweep-stride take a number from 1\n", argv[0]);
		return 2;
	}
	testutil::enter_fresh_netns();
	return session.run();
}
