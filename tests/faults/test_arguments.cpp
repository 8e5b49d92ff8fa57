// SPDX-License-Identifier: LGPL-2.1-or-later
// Hostile argument vectors through the real CLI: each gets exit status 2
// and a message (or 1 and a message for a well-formed request that cannot
// be served), never a signal and never a silent exit.
#include <catch2/catch.hpp>

#include <chrono>

#include "cli_process.h"
#include "json_check.h"

extern std::string g_cli_path;

using namespace std::chrono_literals;
using testutil::CliProcess;

TEST_CASE("hostile arguments: exit 2 with a message each, never a signal", "[faults][arguments]")
{
	const std::string long_arg(100000, 'x');
	const std::vector<std::vector<std::string>> cases = {
		{"--interval", "-1"},
		{"--interval", "18446744073709551616"},
		{"--interval", "99999999999999999999999999999999"},
		{"--interval", ""},
		{"--interval", "1.5"},
		{"--interval", " 5"},
		{"--interval", "0x10"},
		{"--duration", "0"},
		{"--flow-timeout", "-300"},
		{"--flow-timeout", "4294967296"},
		{"--flow-timeout", "5m"},
		{"--pid", "-1"},
		{"--pid", "abc"},
		{"--uid", "4294967295"},
		{"--port", "65536"},
		{"--port", "0"},
		{"--max-flows", "1"},
		{"--max-sockets", "1"},
		{"--max-flows", "4294967297"},
		{"--ring-buffer", "4095"},
		{"--ring-buffer", "12288"},
		{"--ring-buffer", "-4096"},
		{"--family", ""},
		{"--family", "ipv5"},
		{"--backend", "\xff\xfe\xfd"},
		{"--cgroup", ""},
		{"--cgroup", "relative/path"},
		{"--metrics", "999999"},
		{"--metrics", "localhost:9100"},
		{"--metrics-labels", "uid"},
		{"--metrics", "0", "--metrics-labels", "\xc3\x28"},
		{"--metrics", "0", "--metrics-max-series", "0"},
		{"--recv-peers", "never"},
		{"--json", "--quiet"},
		{"--json=1"},
		{"-"},
		{""},
		{"--", "--json"},
		{"--unknown"},
		{"-Z"},
		{"--interval"},
		{"-i"},
		{"\xff\xff\xff"},
		{"--\xe2\x80\xae"},
		{"--port", long_arg},
		{long_arg},
	};
	for (const auto &args : cases) {
		std::string shown;
		for (const auto &a : args)
			shown += "[" + a.substr(0, 40) + "] ";
		INFO(shown);
		CliProcess cli(g_cli_path, args, CliProcess::Stdout::dev_null);
		const int status = cli.wait_exit(30s);
		CHECK(cli.signaled() == 0);
		CHECK(status == 2);
		CHECK_THAT(cli.err_text, Catch::StartsWith("udpintercept: "));
		CHECK_THAT(cli.err_text, Catch::Contains("Try 'udpintercept --help'"));
		CHECK(fuzzcheck::JsonCheck::utf8_text(cli.err_text)); // bytes of any argument are escaped
		CHECK(cli.err_text.size() < 1000);
	}
}

TEST_CASE("a well-formed request that cannot be served: exit 1 with a message", "[faults][arguments]")
{
	const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
		{{"--cgroup", "/sys/fs/cgroup/no-such-cgroup-udpintercept"}, "no-such-cgroup-udpintercept"},
		{{"--cgroup", "/proc/self"}, "cgroup"},
	};
	for (const auto &[args, expected] : cases) {
		INFO(args.back());
		auto with_backend = args;
		with_backend.push_back("--backend");
		with_backend.push_back(testutil::test_backend());
		CliProcess cli(g_cli_path, with_backend, CliProcess::Stdout::dev_null);
		const int status = cli.wait_exit(120s);
		CHECK(cli.signaled() == 0);
		CHECK(status == 1);
		CHECK_THAT(cli.err_text, Catch::Contains(expected));
		CHECK_THAT(cli.err_text, !Catch::Contains("tracing UDP"));
	}
}
