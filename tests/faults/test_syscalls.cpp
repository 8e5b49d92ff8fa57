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
extern std::string g_legacy_path;
extern long g_sweep_first;
extern long g_sweep_stride;

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
	int err = ENOMEM;
};

// The child's environment, set between fork and exec: fail_bpf.c
// preloaded, refusing `refusal`'s calls, its count written to `count_file`.
bool preload_refusing(const Refusal &refusal, const std::string &count_file)
{
	const char *asan = std::getenv("ASAN_OPTIONS");
	// The sanitized build's runtime wants to be the first library loaded.
	const std::string asan_options = std::string(asan && *asan ? asan : "") + (asan && *asan ? ":" : "") +
					 "verify_asan_link_order=0";
	return setenv("LD_PRELOAD", g_fail_bpf_path.c_str(), 1) == 0 &&
	       setenv("UDPI_FAIL_BPF_AT", std::to_string(refusal.at).c_str(), 1) == 0 &&
	       setenv("UDPI_FAIL_BPF_TIMES", std::to_string(refusal.times).c_str(), 1) == 0 &&
	       setenv("UDPI_FAIL_BPF_CMD", std::to_string(refusal.cmd).c_str(), 1) == 0 &&
	       setenv("UDPI_FAIL_BPF_ERRNO", std::to_string(refusal.err).c_str(), 1) == 0 &&
	       setenv("UDPI_FAIL_BPF_COUNT", count_file.c_str(), 1) == 0 &&
	       setenv("ASAN_OPTIONS", asan_options.c_str(), 1) == 0;
}

// The CLI with `refusal`'s bpf() calls refused (with ENOMEM unless it says
// another errno), the count of its calls written to `count_file` at its
// exit; while it traces, `clients` each send `count` datagrams, and with
// `keep_open` their sockets stay open until it has stopped (their flows end
// as finals).
Run run_refusing(const Refusal &refusal, const std::string &count_file, int clients = 2, int count = 5,
		 bool keep_open = false)
{
	// No snapshot falls due while it runs: the counts reach the output only
	// in the flows' closes and finals.
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json", "--interval", "600000"}),
		       CliProcess::Stdout::pipe, [&] { return preload_refusing(refusal, count_file); });
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

// The first call the library refused, as its count file's second line says.
struct RefusedCall {
	long cmd = -1;
	std::string name; // of the program or map it would have made, "-" for none
	unsigned long btf_size = 0;

	// A question about the kernel rather than a part of the tracer: a
	// program or map without a name or with one of libbpf's own
	// ("libbpf_mmap"), or a BTF too small to be the object's.
	bool probe() const
	{
		return ((cmd == BPF_PROG_LOAD || cmd == BPF_MAP_CREATE) &&
			(name == "-" || name.rfind("libbpf_", 0) == 0)) ||
		       (cmd == BPF_BTF_LOAD && btf_size < 1024);
	}
};

RefusedCall refused_call(const std::string &count_file)
{
	std::ifstream in(count_file);
	long calls;
	std::string word;
	RefusedCall call;
	in >> calls >> word >> call.cmd >> call.name >> call.btf_size;
	return call;
}

// An exception's own text (std::out_of_range's, say) says nothing to a user;
// the sanitized build's reports (a leak on an error path) fail too.
void check_nothing_internal(const std::string &err)
{
	CHECK_THAT(err, !Catch::Contains("basic_string") && !Catch::Contains("terminate called") &&
				!Catch::Contains("std::") && !Catch::Contains("Sanitizer") &&
				!Catch::Contains("runtime error:"));
}

// Which calls a sweep refused: all of them, or a sample (--sweep-first,
// --sweep-stride) where a run takes seconds (an emulated kernel).
std::string calls_refused()
{
	if (g_sweep_first == 1 && g_sweep_stride == 1)
		return "each refused in turn (and 8 more)";
	return "one call in " + std::to_string(g_sweep_stride) + " refused, from call " +
	       std::to_string(g_sweep_first) + " (to 8 past them)";
}

// "load 55, attach 10": how many runs stopped at each stage.
std::string by_stage(const std::map<std::string, int> &stopped)
{
	std::string out;
	for (const auto &[stage, n] : stopped)
		out += (out.empty() ? "" : ", ") + stage + " " + std::to_string(n);
	return out;
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
	for (long at = g_sweep_first; at <= calls + 8; at += g_sweep_stride) {
		std::remove(count_file.c_str());
		const Run r = run_refusing({.at = at}, count_file);
		INFO("bpf() call " << at << " of " << calls << " refused: exit " << r.status << "\n"
				   << r.err);
		CHECK((r.status == 0 || r.status == 1));
		check_nothing_internal(r.err);
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
	const std::string stages = by_stage(stopped);
	std::printf("%ld bpf() calls in a clean run; %s: %d traced exactly, stopped with a message by stage: "
		    "%s\n",
		    calls, calls_refused().c_str(), exact, stages.c_str());
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
		// ENOSPC: a hash bucket holds more entries than the batch has room
		// for (here three times in a row, as for a bucket of over 2,048):
		// asked again with room for twice as many each time.
		const Run bucket =
			run_refusing({.at = 2, .times = 3, .cmd = BPF_MAP_LOOKUP_BATCH, .err = ENOSPC},
				     count_file, kClients, 2, true);
		INFO(bucket.err);
		CHECK(bucket.status == 0);
		CHECK(bucket.exact);
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

namespace {

// A run of the legacy library's consumer (legacy_client.cpp): each round's
// line, the descriptors' line, and its stderr (why a round fell short).
struct LegacyRun {
	int status = -1;
	bool attached[2] = {}, exact[2] = {};
	int rounds = 0;            // round lines read
	int fds[3] = {-1, -1, -1}; // open but sockets: before the first round, after each
	std::string err;
};

std::string self_path()
{
	char path[4096];
	const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	REQUIRE(n > 0);
	return std::string(path, static_cast<std::size_t>(n));
}

LegacyRun run_legacy_refusing(const Refusal &refusal, const std::string &count_file)
{
	CliProcess client(self_path(), {"--legacy-client", g_legacy_path}, CliProcess::Stdout::pipe, [&] {
		return setenv("UDPEVENT_BACKEND", testutil::test_backend().c_str(), 1) == 0 &&
		       preload_refusing(refusal, count_file);
	});
	LegacyRun run;
	run.status = client.wait_exit(120s);
	run.err = client.err_text;
	for (const auto &line : client.lines()) {
		int round = 0, attached = 0, exact = 0;
		if (std::sscanf(line.c_str(), "round %d attached=%d exact=%d", &round, &attached, &exact) ==
			    3 &&
		    (round == 1 || round == 2)) {
			run.attached[round - 1] = attached;
			run.exact[round - 1] = exact;
			run.rounds++;
		}
		std::sscanf(line.c_str(), "fds %d %d %d", &run.fds[0], &run.fds[1], &run.fds[2]);
	}
	return run;
}

// What the round's kept error (udpEvent_lastError()) names: "AddProbe load"
// for "AddProbe failed: load failed: ...", "stopped tracing" for the
// poller's end, or empty.
std::string legacy_stage_of(const std::string &err, int round_number = 1)
{
	const std::string round = "legacy client: round " + std::to_string(round_number) + ": ";
	const auto at = err.find(round);
	if (at == std::string::npos)
		return {};
	const std::string kept = err.substr(at + round.size(), err.find('\n', at) - at - round.size());
	const std::string add_probe = "AddProbe failed: ";
	if (kept.rfind(add_probe, 0) == 0) {
		const auto failed = kept.find(" failed: ", add_probe.size());
		return failed == std::string::npos
			       ? std::string{}
			       : "AddProbe " + kept.substr(add_probe.size(), failed - add_probe.size());
	}
	return kept.rfind("stopped tracing", 0) == 0 ? "stopped tracing" : std::string{};
}

} // namespace

TEST_CASE("every bpf() call of the legacy library refused in turn: exact counts, or the cause kept and the "
	  "next AddProbe() exact",
	  "[faults][syscalls]")
{
	REQUIRE(!g_fail_bpf_path.empty());
	REQUIRE(!g_legacy_path.empty());
	const CountFile counted;
	const std::string &count_file = counted.path;

	long calls = 0;
	{
		const LegacyRun clean = run_legacy_refusing({}, count_file);
		INFO(clean.err);
		REQUIRE(clean.status == 0);
		REQUIRE(clean.rounds == 2);
		REQUIRE((clean.exact[0] && clean.exact[1]));
		REQUIRE(clean.fds[0] > 0);
		CHECK(clean.fds[1] == clean.fds[0]);
		CHECK(clean.fds[2] == clean.fds[0]);
		calls = calls_counted(count_file); // the first round's: the second's are not counted
		REQUIRE(calls > 0);
	}

	std::map<std::string, int> stopped;
	int exact = 0, kept_by_libbpf = 0;
	for (long at = g_sweep_first; at <= calls + 8; at += g_sweep_stride) {
		std::remove(count_file.c_str());
		const LegacyRun r = run_legacy_refusing({.at = at}, count_file);
		INFO("bpf() call " << at << " of " << calls << " refused: exit " << r.status << "\n"
				   << r.err);
		CHECK(r.status == 0);
		CHECK(r.rounds == 2);
		check_nothing_internal(r.err);
		if (r.exact[0]) {
			exact++;
		} else {
			// Why is kept for udpEvent_lastError(), and names what failed.
			CHECK(!legacy_stage_of(r.err).empty());
			stopped[legacy_stage_of(r.err)]++;
		}
		// Whatever failed, the next AddProbe() attaches and counts exactly,
		// but for one cause outside the library's reach: libbpf asks the
		// kernel what it supports once per process and keeps the answers,
		// so a question refused is a feature missing for the process's
		// life (g_features_learned in loader.cpp). Then the next AddProbe()
		// must say so, and the refused call must have been such a question.
		if (!r.exact[1]) {
			const RefusedCall call = refused_call(count_file);
			INFO("the refused call: command " << call.cmd << ", name " << call.name
							  << ", BTF size " << call.btf_size);
			CHECK(legacy_stage_of(r.err, 1) == "AddProbe load");
			CHECK(legacy_stage_of(r.err, 2) == "AddProbe load");
			CHECK_THAT(r.err, Catch::Contains("nor could an earlier load of this process"));
			CHECK(call.probe());
			kept_by_libbpf++;
		}
		// Nothing of a round is left open once cleanup() or a failed AddProbe() returned.
		CHECK(r.fds[0] > 0);
		CHECK(r.fds[1] == r.fds[0]);
		CHECK(r.fds[2] == r.fds[0]);
		CHECK(faults::kprobe_events_of_ours().empty());
	}
	const std::string stages = by_stage(stopped);
	std::printf(
		"legacy library: %ld bpf() calls in a round; %s: %d rounds exact, the cause kept by stage: "
		"%s; the next round exact in all but %d (libbpf's kept answers)\n",
		calls, calls_refused().c_str(), exact, stages.c_str(), kept_by_libbpf);
}
