// SPDX-License-Identifier: LGPL-2.1-or-later
// The CLI's arguments: what each option sets, and a message (never an exit)
// for each kind of bad usage.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "cli_args.h"

using namespace udpintercept;
using cli::Action;

namespace {

cli::ParseResult parse(std::vector<std::string_view> args)
{
	return cli::parse_args(args);
}

} // namespace

TEST_CASE("no arguments: trace everything with the defaults", "[cli_args]")
{
	const auto r = parse({});
	REQUIRE(r.action == Action::run);
	CHECK_FALSE(r.config.json);
	CHECK(r.config.duration.count() == 0);
	CHECK(r.config.options.interval == std::chrono::milliseconds(1000));
}

TEST_CASE("each option sets its field, in every spelling", "[cli_args]")
{
	const auto r = parse({"-j",
			      "--interval",
			      "250",
			      "-d5",
			      "--pid=42",
			      "-u",
			      "0",
			      "-P",
			      "53",
			      "--family",
			      "ipv6",
			      "-c",
			      "/sys/fs/cgroup/x",
			      "-b",
			      "tracepoint",
			      "--max-flows",
			      "200000",
			      "--max-sockets=16",
			      "--ring-buffer",
			      "65536",
			      "--recv-peers",
			      "always",
			      "--flow-timeout",
			      "30",
			      "-v"});
	REQUIRE(r.action == Action::run);
	const auto &c = r.config;
	CHECK(c.json);
	CHECK(c.verbose);
	CHECK(c.duration == std::chrono::seconds(5));
	CHECK(c.options.interval == std::chrono::milliseconds(250));
	CHECK(c.options.pid == 42u);
	CHECK(c.options.uid == 0u);
	CHECK(c.options.port == 53);
	CHECK(c.options.family == Family::ipv6);
	CHECK(c.options.cgroup == "/sys/fs/cgroup/x");
	CHECK(c.options.backend == Backend::tracepoint);
	CHECK(c.options.max_flows == 200000);
	CHECK(c.options.max_sockets == 16);
	CHECK(c.options.ring_buffer_bytes == 65536);
	CHECK_FALSE(c.options.recv_peers_lazy_inexact);
	CHECK(parse({"--recv-peers", "lazy-inexact"}).config.options.recv_peers_lazy_inexact);
	CHECK_FALSE(parse({}).config.options.recv_peers_lazy_inexact);
	CHECK(c.options.flow_timeout == std::chrono::seconds(30));
	CHECK(parse({}).config.options.flow_timeout == std::chrono::seconds(300));
	CHECK(parse({"--flow-timeout=0"}).config.options.flow_timeout.count() == 0);
	CHECK(parse({"-jv"}).config.verbose);
	CHECK(parse({"-i0"}).config.options.interval.count() == 0);
}

TEST_CASE("bad usage is an error message naming the option and what it expects", "[cli_args]")
{
	const std::vector<std::pair<std::vector<std::string_view>, std::string>> cases = {
		{{"--interval", "-5"}, "--interval"},
		{{"--interval", "86400001"}, "86400000"},
		{{"--interval", ""}, "whole number"},
		{{"--interval", "1e3"}, "whole number"},
		{{"--interval", "99999999999999999999999"}, "whole number"},
		{{"--pid", "0"}, "--pid"},
		{{"--port", "70000"}, "65535"},
		{{"--backend", "ebpf"}, "fentry"},
		{{"--family", "ipx"}, "ipv4 or ipv6"},
		{{"--cgroup", "relative"}, "absolute"},
		{{"--ring-buffer", "5000"}, "power of two"},
		{{"--recv-peers", "sometimes"}, "exact or lazy-inexact"},
		{{"--recv-peers", "on-demand"}, "now lazy-inexact"},
		{{"--flow-timeout", "-1"}, "--flow-timeout"},
		{{"--flow-timeout", "31536001"}, "31536000"},
		{{"--flow-timeout", "5m"}, "whole number"},
		{{"--bogus"}, "unknown option '--bogus'"},
		{{"-x"}, "unknown option '-x'"},
		{{"stray"}, "unexpected argument 'stray'"},
		{{"-i"}, "needs a value"},
		{{"--json=yes"}, "takes no value"},
		{{"--help", "--bogus"}, "unknown option"},
		{{"--", "-j"}, "unexpected argument"},
		{{"--port", "\xff\xfe"}, "\\xff\\xfe"},
		{{"-P", "53", "--port", "5353"}, "'--port' given twice"},
		{{"--pid=1", "-p2"}, "'-p' given twice"},
		{{"-u", "0", "-u", "0"}, "given twice"},
		{{"-f", "ipv4", "--family", "ipv6"}, "each filter takes one value"},
		{{"--cgroup", "/a", "-c", "/b"}, "given twice"},
	};
	for (const auto &[args, expected] : cases) {
		INFO(args.front());
		const auto r = parse(args);
		CHECK(r.action == Action::usage_error);
		CHECK_THAT(r.error, Catch::Contains(expected));
	}
}

TEST_CASE("--help and --version end the parse", "[cli_args]")
{
	CHECK(parse({"--help"}).action == Action::help);
	CHECK(parse({"-j", "-h"}).action == Action::help);
	CHECK(parse({"--version"}).action == Action::version);
	CHECK_THAT(std::string(cli::usage()), Catch::Contains("--json"));
}
