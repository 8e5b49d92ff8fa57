// SPDX-License-Identifier: LGPL-2.1-or-later
// The README's C++ examples are examples/*.cpp, which the build compiles.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

namespace {

std::string slurp(const std::string &path)
{
	std::ifstream in(path);
	REQUIRE(in.good());
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

} // namespace

TEST_CASE("the README's C++ example is the compiled examples/count_dns.cpp", "[readme]")
{
	const std::string readme = slurp(UDPI_SOURCE_ROOT "/README.md");
	const std::string example = slurp(UDPI_SOURCE_ROOT "/examples/count_dns.cpp");
	CHECK(readme.find("```cpp\n" + example + "```") != std::string::npos);
}

TEST_CASE("the README's metrics example is the compiled examples/top_talkers.cpp", "[readme]")
{
	const std::string readme = slurp(UDPI_SOURCE_ROOT "/README.md");
	const std::string example = slurp(UDPI_SOURCE_ROOT "/examples/top_talkers.cpp");
	CHECK(readme.find("```cpp\n" + example + "```") != std::string::npos);
}

TEST_CASE("the README starts with the two commands", "[readme]")
{
	const std::string readme = slurp(UDPI_SOURCE_ROOT "/README.md");
	const auto first_block = readme.find("```sh\n");
	REQUIRE(first_block != std::string::npos);
	CHECK(readme.find("scripts/dev trace", first_block) < readme.find("```", first_block + 6));
	CHECK(readme.find("scripts/dev test", first_block) < readme.find("```", first_block + 6));
}
