// SPDX-License-Identifier: LGPL-2.1-or-later
// The tracer as an unprivileged user with only the capabilities it needs:
// needs root to hand those out (skips with 77 without it, fails in CI), and
// runs in a fresh network namespace whose traffic is all its own.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "testutil.h"

std::string g_cli_path;
std::string g_setpriv_path = "/usr/bin/setpriv";

int main(int argc, char **argv)
{
	testutil::require_root_or_skip(argv[0]);
	Catch::Session session;
	using namespace Catch::clara;
	auto cli =
		session.cli() | Opt(g_cli_path, "path")["--cli"]("the udpintercept executable") |
		Opt(g_setpriv_path, "path")["--setpriv"]("util-linux's setpriv (default /usr/bin/setpriv)");
	session.cli(cli);
	if (int rc = session.applyCommandLine(argc, argv); rc != 0)
		return rc;
	testutil::enter_fresh_netns();
	return session.run();
}
