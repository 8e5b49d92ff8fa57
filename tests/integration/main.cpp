// SPDX-License-Identifier: LGPL-2.1-or-later
// Root integration tests: skip (77) without root, then run in a fresh
// network namespace so that this test's traffic is all its namespace sees.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "testutil.h"

// Set by the command line: the CLI to test (tests that need it skip the check otherwise).
std::string g_cli_path;

int main(int argc, char **argv)
{
	testutil::require_root_or_skip(argv[0]);
	Catch::Session session;
	using namespace Catch::clara;
	auto cli = session.cli() | Opt(g_cli_path, "path")["--cli"]("the udpintercept executable");
	session.cli(cli);
	if (int rc = session.applyCommandLine(argc, argv); rc != 0)
		return rc;
	testutil::enter_fresh_netns();
	return session.run();
}
