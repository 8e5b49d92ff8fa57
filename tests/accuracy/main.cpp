// SPDX-License-Identifier: LGPL-2.1-or-later
// The accuracy tier: skip (77) without root; each scenario makes its own
// fresh network namespace.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "testutil.h"

int main(int argc, char **argv)
{
	testutil::require_root_or_skip(argv[0]);
	return Catch::Session().run(argc, argv);
}
