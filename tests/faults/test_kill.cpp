// SPDX-License-Identifier: LGPL-2.1-or-later
// A CLI killed with SIGKILL under traffic leaves nothing of its own in the
// kernel, and the next one starts and counts exactly.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>

#include "bpf_objects.h"
#include "cli_process.h"
#include "exchange.h"

extern std::string g_cli_path;

using namespace std::chrono_literals;
using testutil::CliProcess;

namespace {

// Waits, with a deadline, for the kernel to free what a dead process held
// (maps go after an RCU grace period, and links with their last reference).
bool gone(const faults::BpfObjects &objects, std::chrono::seconds deadline)
{
	const auto end = std::chrono::steady_clock::now() + deadline;
	while (!faults::still_there(objects).empty()) {
		if (std::chrono::steady_clock::now() >= end)
			return false;
		usleep(20000);
	}
	return true;
}

} // namespace

TEST_CASE("SIGKILL under traffic leaves no program, link, map or probe of ours; the next start is exact",
	  "[faults][kill]")
{
	REQUIRE(!g_cli_path.empty());
	{
		faults::Background traffic;
		CliProcess cli(g_cli_path, testutil::with_test_backend({"--json"}));
		REQUIRE(cli.wait_stderr("tracing UDP", 120s));
		const auto held = faults::bpf_objects_of(cli.pid());
		INFO("programs " << held.progs.size() << ", maps " << held.maps.size() << ", links "
				 << held.links.size());
		REQUIRE(!held.progs.empty());
		REQUIRE(!held.maps.empty());
		// Links may be none: before 5.15 a kprobe holds its program through a perf event.
		REQUIRE(cli.wait_until([&] { return cli.lines().size() >= 10; }, 20s)); // under traffic
		cli.signal(SIGKILL);
		REQUIRE(cli.wait_exit(20s) == -2);
		CHECK(cli.signaled() == SIGKILL);
		const bool freed = gone(held, 30s);
		const auto left = faults::still_there(held);
		INFO("left: programs " << left.progs.size() << ", maps " << left.maps.size() << ", links "
				       << left.links.size());
		CHECK(freed);
		// A killed tracer cannot remove its return probes (kprobe backend): the next start does.
		std::printf("after SIGKILL: %zu kprobe_events entries of ours\n",
			    faults::kprobe_events_of_ours().size());
	}

	// The next start works and counts exactly; it removes the return probes
	// (kprobe backend) the killed one could not, and its stop its own.
	CliProcess cli(g_cli_path, testutil::with_test_backend({"--json"}));
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	const auto ledger = faults::exchange(3, 7, 100);
	cli.signal(SIGINT);
	REQUIRE(cli.wait_exit(60s) == 0);
	CHECK(faults::of_ledger(faults::sums(cli.lines(), testutil::current_netns()), ledger) == ledger);
	const auto probes = faults::kprobe_events_of_ours();
	INFO("kprobe_events: " << (probes.empty() ? "" : probes.front()));
	CHECK(probes.empty());
}
