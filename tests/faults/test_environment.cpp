// SPDX-License-Identifier: LGPL-2.1-or-later
// A machine missing what the tracer needs, or the tracer given the least
// room: a clear error, or exact counts with what could not be counted
// counted. The CLI runs in a mount namespace of its own where a test takes
// something away, so the machine itself is untouched.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <iterator>
#include <sched.h>
#include <sys/mount.h>

#include "cli_process.h"
#include "exchange.h"

extern std::string g_cli_path;

using namespace std::chrono_literals;
using testutil::CliProcess;

namespace {

// Where cgroup v2 is mounted (/proc/self/mounts), empty if nowhere.
std::string cgroup2_mount()
{
	std::ifstream mounts("/proc/self/mounts");
	for (std::string dev, dir, type, rest; mounts >> dev >> dir >> type && std::getline(mounts, rest);)
		if (type == "cgroup2")
			return dir;
	return {};
}

// In the child: a private mount namespace, so what it unmounts stays its own.
bool private_mounts()
{
	return unshare(CLONE_NEWNS) == 0 && mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
}

// Summary figure `name=N` of the CLI's last stderr line.
std::uint64_t summary(const std::string &err, const std::string &name)
{
	const auto at = err.rfind(" " + name + "=");
	REQUIRE(at != std::string::npos);
	return std::stoull(err.substr(at + name.size() + 2));
}

// Totals of the ledger, summed over flows.
faults::Totals total(const faults::Ledger &l)
{
	faults::Totals t;
	for (const auto &[id, f] : l) {
		t.tx_bytes += f.tx_bytes;
		t.tx_packets += f.tx_packets;
		t.rx_bytes += f.rx_bytes;
		t.rx_packets += f.rx_packets;
	}
	return t;
}

} // namespace

TEST_CASE("no BTF at /sys/kernel/btf/vmlinux: a clear error", "[faults][environment]")
{
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json"}), CliProcess::Stdout::dev_null, [] {
		return private_mounts() &&
		       mount("/dev/null", "/sys/kernel/btf/vmlinux", nullptr, MS_BIND, nullptr) == 0;
	});
	CHECK(cli.wait_exit(120s) == 1);
	CHECK_THAT(cli.err_text, Catch::Contains("BTF"));
	CHECK_THAT(cli.err_text, !Catch::Contains("tracing UDP"));
}

TEST_CASE("cgroup v2 not mounted, or mounted read-only: a clear error or exact counts",
	  "[faults][environment]")
{
	const std::string where = cgroup2_mount();
	REQUIRE(!where.empty());
	for (const bool read_only : {false, true}) {
		INFO((read_only ? "read-only " : "unmounted ") << where);
		CliProcess cli(g_cli_path, testutil::with_test_backend({"--json"}), CliProcess::Stdout::pipe,
			       [&] {
				       if (!private_mounts())
					       return false;
				       if (read_only)
					       return mount(nullptr, where.c_str(), nullptr,
							    MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) == 0;
				       return umount2(where.c_str(), MNT_DETACH) == 0;
			       });
		if (!cli.wait_stderr("tracing UDP", 120s)) {
			CHECK(cli.wait_exit(60s) == 1);
			// Forced to the backend that needs it, the error names it; auto
			// reports the backend it tried last.
			CHECK_THAT(cli.err_text, Catch::Contains(testutil::test_backend() == "tracepoint"
									 ? "cgroup v2 is not mounted"
									 : " failed: "));
			std::printf("cgroup v2 %s: %s", read_only ? "read-only" : "unmounted",
				    cli.err_text.c_str());
			continue;
		}
		const auto ledger = faults::exchange(2, 10, 50);
		cli.signal(SIGINT);
		REQUIRE(cli.wait_exit(60s) == 0);
		CHECK(faults::of_ledger(faults::sums(cli.lines(), testutil::current_netns()), ledger) ==
		      ledger);
		std::printf("cgroup v2 %s: traced exactly\n", read_only ? "read-only" : "unmounted");
	}
}

TEST_CASE("cgroup v2 not mounted, the tracepoint backend forced: the error names cgroup v2",
	  "[faults][environment]")
{
	std::ifstream btf("/sys/kernel/btf/vmlinux", std::ios::binary);
	const std::string types((std::istreambuf_iterator<char>(btf)), std::istreambuf_iterator<char>());
	if (types.find("btf_trace_sock_send_length") == std::string::npos)
		return; // a kernel without the backend: forcing it fails for that reason instead
	const std::string where = cgroup2_mount();
	CliProcess cli(g_cli_path, {"--backend", "tracepoint"}, CliProcess::Stdout::dev_null,
		       [&] { return private_mounts() && umount2(where.c_str(), MNT_DETACH) == 0; });
	CHECK(cli.wait_exit(60s) == 1);
	CHECK_THAT(cli.err_text, Catch::Contains("cgroup v2 is not mounted"));
}

TEST_CASE("the smallest ring buffer loses snapshots, counted, and no count", "[faults][environment]")
{
	CliProcess cli(g_cli_path,
		       testutil::with_test_backend({"--json", "--ring-buffer", "4096", "--interval", "0"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	const auto ledger = faults::exchange(50, 40, 32);
	cli.signal(SIGINT);
	REQUIRE(cli.wait_exit(60s) == 0);
	CHECK(faults::of_ledger(faults::sums(cli.lines(), testutil::current_netns()), ledger) == ledger);
	std::printf("ring buffer of 4096 bytes: lost=%llu\n",
		    static_cast<unsigned long long>(summary(cli.err_text, "lost")));
}

TEST_CASE("the smallest flow and socket tables: what they hold is exact, the rest counted untracked",
	  "[faults][environment]")
{
	for (const char *table : {"--max-flows", "--max-sockets"}) {
		INFO(table);
		// This test's traffic only: other processes' flows would take the sixteen places.
		CliProcess cli(g_cli_path, testutil::with_test_backend({"--json", table, "16", "--pid",
									std::to_string(getpid())}));
		REQUIRE(cli.wait_stderr("tracing UDP", 120s));
		// Thirty-one sockets and sixty flows at once, in tables of sixteen.
		const auto ledger = faults::exchange(30, 5, 40, true);
		cli.signal(SIGINT);
		REQUIRE(cli.wait_exit(60s) == 0);
		const auto traced =
			faults::of_ledger(faults::sums(cli.lines(), testutil::current_netns()), ledger);
		// Every flow the tracer reports is exact or absent: none is partly counted.
		std::size_t reported = 0;
		for (const auto &[id, t] : traced) {
			if (t == faults::Totals{})
				continue;
			reported++;
			CHECK(t == ledger.at(id));
		}
		const faults::Totals all = total(ledger), seen = total(traced);
		const std::uint64_t untracked_packets = summary(cli.err_text, "untracked_packets");
		// This namespace's datagrams not in a flow are among those counted untracked
		// (other namespaces' traffic may add to that count, never take from it).
		CHECK(untracked_packets >=
		      (all.tx_packets + all.rx_packets) - (seen.tx_packets + seen.rx_packets));
		CHECK(reported > 0);
		CHECK(reported < ledger.size());
		std::printf("%s 16: %zu of %zu flows reported exactly, untracked_packets=%llu "
			    "untracked_sockets=%llu\n",
			    table, reported, ledger.size(),
			    static_cast<unsigned long long>(untracked_packets),
			    static_cast<unsigned long long>(summary(cli.err_text, "untracked_sockets")));
	}
}
