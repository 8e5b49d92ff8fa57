// SPDX-License-Identifier: LGPL-2.1-or-later
// stdout under faults: a reader that goes away (with or without traffic
// to come), a reader that stalls, a device that is full.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>

#include "cli_process.h"
#include "exchange.h"
#include "json_check.h"

extern std::string g_cli_path;

using namespace std::chrono_literals;
using testutil::CliProcess;

namespace {

} // namespace

TEST_CASE("a closed stdout ends the CLI within seconds even when no snapshot is due", "[faults][output]")
{
	// A port nothing uses: not one snapshot will come.
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json", "--port", "9"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	cli.close_stdout();
	const auto closed = std::chrono::steady_clock::now();
	const int status = cli.wait_exit(10s);
	std::printf(
		"closed stdout: the CLI exited %.0f ms after its reader went\n",
		std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - closed).count());
	CHECK(status == 1);
	CHECK_THAT(cli.err_text, Catch::Contains("cannot write to stdout: Broken pipe"));
	CHECK_THAT(cli.err_text, Catch::Contains("events=0 lost=0"));
}

TEST_CASE("udpintercept --json | head -1: the CLI ends after its first line is read", "[faults][output]")
{
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	faults::exchange(1, 1, 10);
	REQUIRE(cli.wait_until([&] { return !cli.lines().empty(); }, 20s));
	cli.close_stdout();
	CHECK(cli.wait_exit(10s) == 1);
	CHECK_THAT(cli.err_text, Catch::Contains("Broken pipe"));
	CHECK_THAT(cli.err_text, Catch::Contains("events="));
}

TEST_CASE("a stalled reader blocks the output, which stays whole lines with exact totals", "[faults][output]")
{
	// A snapshot per operation: the pipe fills while the reader stalls.
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json", "--interval", "0"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	cli.stall_stdout(true);
	const auto ledger = faults::exchange(20, 200, 64);
	cli.stall_stdout(false);
	cli.signal(SIGINT);
	REQUIRE(cli.wait_exit(120s) == 0);
	const auto lines = cli.lines();
	CHECK(lines.size() > 4000 / 4); // far more than a 64 KiB pipe holds
	std::size_t invalid = 0;
	for (const auto &line : lines)
		invalid += !fuzzcheck::JsonCheck(line).valid();
	CHECK(invalid == 0);
	CHECK(cli.out_text.back() == '\n');
	// Snapshots the full ring buffer could not take are counted; the totals stay exact.
	CHECK(faults::of_ledger(faults::sums(lines, testutil::current_netns()), ledger) == ledger);
	std::printf("stalled reader: %zu lines, summary: %s", lines.size(),
		    cli.err_text.substr(cli.err_text.rfind("udpintercept: events=")).c_str());
}

TEST_CASE("a write error (stdout on /dev/full) exits 1 naming it, with the summary", "[faults][output]")
{
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json"}), CliProcess::Stdout::dev_full);
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	faults::exchange(1, 3, 10);
	CHECK(cli.wait_exit(20s) == 1);
	CHECK_THAT(cli.err_text, Catch::Contains("cannot write to stdout: No space left on device"));
	CHECK_THAT(cli.err_text, Catch::Contains("udpintercept: events="));
}

TEST_CASE("a stalled reader does not keep SIGTERM from stopping the CLI", "[faults][output]")
{
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json", "--interval", "0"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	cli.stall_stdout(true);
	faults::exchange(20, 200, 64); // far more than the pipe holds
	cli.signal(SIGTERM);
	const auto sent = std::chrono::steady_clock::now();
	const int status = cli.wait_exit(20s);
	const double ms =
		std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent).count();
	std::printf("stalled reader, SIGTERM: the CLI exited %.0f ms after it\n", ms);
	REQUIRE(status == 1); // its output is not all written
	CHECK_THAT(cli.err_text, Catch::Contains("lines of output not written"));
	CHECK_THAT(cli.err_text, Catch::Contains("udpintercept: events="));
	// What it wrote before it gave up is whole lines.
	cli.stall_stdout(false);
	cli.wait_until([] { return false; }, 1s);
	const auto lines = cli.lines();
	CHECK(!lines.empty());
	std::size_t invalid = 0;
	for (const auto &line : lines)
		invalid += !fuzzcheck::JsonCheck(line).valid();
	CHECK(invalid == 0);
	CHECK(cli.out_text.back() == '\n');
}

TEST_CASE("at the end of --duration a slow reader still gets every line", "[faults][output]")
{
	CliProcess cli(g_cli_path,
		       testutil::with_test_backend({"--json", "--interval", "0", "--duration", "6"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	cli.stall_stdout(true);
	const auto ledger = faults::exchange(20, 200, 64);
	// Stalled past the end of the duration: the final snapshots wait for the reader.
	cli.wait_until([] { return false; }, 8s);
	cli.stall_stdout(false);
	REQUIRE(cli.wait_exit(60s) == 0);
	const auto lines = cli.lines();
	CHECK(faults::of_ledger(faults::sums(lines, testutil::current_netns()), ledger) == ledger);
}
