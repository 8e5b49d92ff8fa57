// SPDX-License-Identifier: LGPL-2.1-or-later
// Each bpf() call of a CLI's run refused in turn, as a kernel short of memory
// refuses one (fail_bpf.c, preloaded): the CLI either traces and counts
// exactly, or exits 1 with a message that names what failed. Never a signal,
// an exception's own text, or an exit without a word.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <linux/bpf.h>
#include <map>
#include <unistd.h>

#include "bpf_objects.h"
#include "cli_process.h"
#include "exchange.h"

extern std::string g_cli_path;
extern std::string g_fail_bpf_path;

using namespace std::chrono_literals;
using testutil::CliProcess;

namespace {

struct Run {
	int status = -1;
	bool traced = false; // it said it was tracing
	bool exact = false;  // its counts of the exchange were the ledger's
	std::string err;
};

// Which bpf() calls the preloaded library refuses (fail_bpf.c).
struct Refusal {
	long at = 0;    // the first refused, counted from 1 (0: none)
	long times = 1; // how many in a row
	long cmd = -1;  // only calls of this command are counted (-1: all)
};

// The CLI with `refusal`'s bpf() calls refused with ENOMEM, the count of its
// calls written to `count_file` at its exit; while it traces, `clients`
// each send `count` datagrams, and with `keep_open` their sockets stay open
// until it has stopped (their flows end as finals).
Run run_refusing(const Refusal &refusal, const std::string &count_file, int clients = 2, int count = 5,
		 bool keep_open = false)
{
	// No snapshot falls due while it runs: the counts reach the output only
	// in the flows' closes and finals.
	CliProcess cli(
		g_cli_path, testutil::with_test_backend({"--json", "--interval", "600000"}),
		CliProcess::Stdout::pipe, [&] {
			const char *asan = std::getenv("ASAN_OPTIONS");
			// The sanitized build's runtime wants to be the first library loaded.
			const std::string asan_options = std::string(asan && *asan ? asan : "") +
							 (asan && *asan ? ":" : "") +
							 "verify_asan_link_order=0";
			return setenv("LD_PRELOAD", g_fail_bpf_path.c_str(), 1) == 0 &&
			       setenv("UDPI_FAIL_BPF_AT", std::to_string(refusal.at).c_str(), 1) == 0 &&
			       setenv("UDPI_FAIL_BPF_TIMES", std::to_string(refusal.times).c_str(), 1) == 0 &&
			       setenv("UDPI_FAIL_BPF_CMD", std::to_string(refusal.cmd).c_str(), 1) == 0 &&
			       setenv("UDPI_FAIL_BPF_COUNT", count_file.c_str(), 1) == 0 &&
			       setenv("ASAN_OPTIONS", asan_options.c_str(), 1) == 0;
		});
	Run run;
	faults::Ledger ledger;
	std::vector<testutil::Udp> open;
	if (cli.wait_stderr("tracing UDP", 120s)) {
		run.traced = true;
		ledger = faults::exchange(clients, count, 40, keep_open, keep_open ? &open : nullptr);
		cli.signal(SIGINT);
	}
	run.status = cli.wait_exit(60s);
	run.err = cli.err_text;
	run.exact = run.traced && run.status == 0 &&
		    faults::of_ledger(faults::sums(cli.lines(), testutil::current_netns()), ledger) == ledger;
	return run;
}

// Where the preloaded library writes its count, in a directory of its own.
struct CountFile {
	std::string dir = "/tmp/udpi-fail-bpf-XXXXXX";
	std::string path;

	CountFile()
	{
		REQUIRE(mkdtemp(dir.data()) != nullptr);
		path = dir + "/calls";
	}
	~CountFile()
	{
		std::remove(path.c_str());
		rmdir(dir.c_str());
	}
	CountFile(const CountFile &) = delete;
	CountFile &operator=(const CountFile &) = delete;
};

long calls_counted(const std::string &count_file)
{
	std::ifstream in(count_file);
	long n = -1;
	in >> n;
	return n;
}

// The stage the CLI's error line names ("udpintercept: load failed: ..." -> "load").
std::string stage_of(const std::string &err)
{
	const std::string prefix = "udpintercept: ";
	for (std::size_t at = 0; at < err.size();) {
		const std::size_t end = std::min(err.find('\n', at), err.size());
		const std::string line = err.substr(at, end - at);
		const auto failed = line.find(" failed: ");
		if (line.rfind(prefix, 0) == 0 && failed != std::string::npos)
			return line.substr(prefix.size(), failed - prefix.size());
		at = end + 1;
	}
	return {};
}

} // namespace

TEST_CASE("every bpf() call refused in turn: exact counts, or exit 1 naming what failed",
	  "[faults][syscalls]")
{
	REQUIRE(!g_fail_bpf_path.empty());
	const CountFile counted;
	const std::string &count_file = counted.path;

	long calls = 0;
	{
		const Run clean = run_refusing({}, count_file);
		INFO(clean.err);
		REQUIRE(clean.exact);
		calls = calls_counted(count_file);
		REQUIRE(calls > 0); // the library was preloaded, and counted
	}

	// A run's calls vary a little (threads, sweeps): a few beyond the clean run's too.
	std::map<std::string, int> stopped;
	int exact = 0;
	for (long at = 1; at <= calls + 8; at++) {
		std::remove(count_file.c_str());
		const Run r = run_refusing({.at = at}, count_file);
		INFO("bpf() call " << at << " of " << calls << " refused: exit " << r.status << "\n"
				   << r.err);
		CHECK((r.status == 0 || r.status == 1));
		// An exception's own text (std::out_of_range's, say) says nothing to a
		// user; the sanitized build's reports (a leak on an error path) fail too.
		CHECK_THAT(r.err, !Catch::Contains("basic_string") && !Catch::Contains("terminate called") &&
					  !Catch::Contains("std::") && !Catch::Contains("Sanitizer") &&
					  !Catch::Contains("runtime error:"));
		if (r.status == 0) {
			CHECK(r.exact);
			CHECK_THAT(r.err, Catch::Contains("udpintercept: events="));
			exact += r.exact;
		} else {
			CHECK(!stage_of(r.err).empty());
			stopped[stage_of(r.err)]++;
		}
		// Whatever stopped it, no return probe of its own stays (kprobe backend).
		CHECK(faults::kprobe_events_of_ours().empty());
	}
	std::string stages;
	for (const auto &[stage, n] : stopped)
		stages += (stages.empty() ? "" : ", ") + stage + " " + std::to_string(n);
	std::printf("%ld bpf() calls in a clean run; each refused in turn (and 8 more): %d traced exactly, "
		    "stopped with a message by stage: %s\n",
		    calls, exact, stages.c_str());
}

TEST_CASE("the flow table's read refused part of the way through: read again, or exit 1 naming it",
	  "[faults][syscalls]")
{
	REQUIRE(!g_fail_bpf_path.empty());
	const CountFile counted;
	const std::string &count_file = counted.path;
	// 700 clients of two datagrams each, 1,400 flows (the first datagram's
	// snapshot is sent at once, the second's totals only with the final):
	// the final read of the flow table takes several batches of at most 512
	// (BPF_MAP_LOOKUP_BATCH), of which the second is refused. The sockets
	// stay open until the CLI has stopped, so that their flows end as
	// finals, read by that walk.
	constexpr int kClients = 700;
	{
		const Run once = run_refusing({.at = 2, .times = 1, .cmd = BPF_MAP_LOOKUP_BATCH}, count_file,
					      kClients, 2, true);
		INFO(once.err);
		CHECK(once.status == 0);
		CHECK(once.exact);
		CHECK(calls_counted(count_file) >= 3); // the read took more batches than the refused one
	}
	{
		// Refused for good (every try): the CLI says so, not a short list of finals.
		const Run always = run_refusing({.at = 2, .times = 1000, .cmd = BPF_MAP_LOOKUP_BATCH},
						count_file, kClients, 2, true);
		INFO(always.err);
		CHECK(always.status == 1);
		CHECK_THAT(always.err,
			   Catch::Contains("udpintercept: sweep failed: cannot read the flow table whole: "
					   "Cannot allocate memory"));
	}
}
