// SPDX-License-Identifier: LGPL-2.1-or-later
#include <catch2/catch.hpp>

#include <cerrno>
#include <udpintercept/error.h>
#include <udpintercept/options.h>

using namespace udpintercept;

namespace {

// The message of the Error that validate() throws, or "" if it accepts.
std::string rejection(const Options &o)
{
	try {
		o.validate();
		return "";
	} catch (const Error &e) {
		CHECK(e.stage() == "options");
		CHECK(e.code().value() == EINVAL);
		CHECK(&e.code().category() == &category());
		return e.what();
	}
}

} // namespace

TEST_CASE("defaults are valid", "[options]")
{
	CHECK(rejection(Options{}) == "");
}

TEST_CASE("each invalid field is named in the error", "[options]")
{
	Options o;
	o.interval = std::chrono::milliseconds(-1);
	CHECK_THAT(rejection(o), Catch::Contains("interval"));
	o = {};
	o.flow_timeout = std::chrono::seconds(-1);
	CHECK_THAT(rejection(o), Catch::Contains("flow_timeout"));
	o.flow_timeout = std::chrono::seconds(31536001);
	CHECK_THAT(rejection(o), Catch::Contains("Options::flow_timeout"));

	o = {};
	o.pid = 0;
	CHECK_THAT(rejection(o), Catch::Contains("pid"));

	o = {};
	o.port = 0;
	CHECK_THAT(rejection(o), Catch::Contains("port"));

	o = {};
	o.cgroup = "relative/path";
	CHECK_THAT(rejection(o), Catch::Contains("absolute path"));

	o = {};
	o.max_flows = 3;
	CHECK_THAT(rejection(o), Catch::Contains("max_flows"));

	o = {};
	o.max_sockets = 0;
	CHECK_THAT(rejection(o), Catch::Contains("max_sockets"));

	o = {};
	o.ring_buffer_bytes = 5000;
	CHECK_THAT(rejection(o), Catch::Contains("power of two"));
}

TEST_CASE("interval 0 is the per-operation mode, not an error", "[options]")
{
	Options o;
	o.interval = std::chrono::milliseconds(0);
	CHECK(rejection(o) == "");
}

TEST_CASE("errors carry the project's category, errno text and stage", "[error]")
{
	const Error e("attach", EPERM, "cannot attach: needs CAP_BPF");
	CHECK(e.stage() == "attach");
	CHECK(e.code().value() == EPERM);
	CHECK(std::string(e.code().category().name()) == "udpintercept");
	CHECK(e.code() == std::errc::operation_not_permitted);
	CHECK_THAT(std::string(e.what()), Catch::Contains("needs CAP_BPF"));
}
