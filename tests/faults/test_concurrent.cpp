// SPDX-License-Identifier: LGPL-2.1-or-later
// Tracers side by side: each attaches its own programs (cgroup ones with
// multi-attach) and each counts every flow exactly.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <dlfcn.h>
#include <mutex>
#include <thread>

#include "cli_process.h"
#include "common.h"
#include "exchange.h"

extern std::string g_cli_path;
extern std::string g_legacy_path;

using namespace std::chrono_literals;
using testutil::CliProcess;

namespace {

std::vector<std::string> cli_args()
{
	return testutil::with_test_backend({"--json"});
}

} // namespace

TEST_CASE("two CLIs at once both count exactly", "[faults][concurrent]")
{
	CliProcess a(g_cli_path, cli_args());
	REQUIRE(a.wait_stderr("tracing UDP", 120s));
	CliProcess b(g_cli_path, cli_args());
	REQUIRE(b.wait_stderr("tracing UDP", 120s));
	const auto ledger = faults::exchange(4, 25, 333);
	a.signal(SIGINT);
	b.signal(SIGINT);
	REQUIRE(a.wait_exit(60s) == 0);
	REQUIRE(b.wait_exit(60s) == 0);
	const auto netns = testutil::current_netns();
	CHECK(faults::of_ledger(faults::sums(a.lines(), netns), ledger) == ledger);
	CHECK(faults::of_ledger(faults::sums(b.lines(), netns), ledger) == ledger);
	CHECK_THAT(a.err_text, Catch::Contains("lost=0"));
	CHECK_THAT(b.err_text, Catch::Contains("lost=0"));
}

TEST_CASE("a CLI and the legacy library at once both count exactly", "[faults][concurrent]")
{
	REQUIRE(!g_legacy_path.empty());
	setenv("UDPEVENT_BACKEND", testutil::test_backend().c_str(), 1);
	void *lib = dlopen(g_legacy_path.c_str(), RTLD_NOW | RTLD_LOCAL);
	REQUIRE(lib);
	const auto add_probe = reinterpret_cast<void (*)()>(dlsym(lib, "AddProbe"));
	const auto get_status = reinterpret_cast<unsigned (*)()>(dlsym(lib, "getStatus"));
	const auto dequeue = reinterpret_cast<udp_event_t (*)()>(dlsym(lib, "DequeuePerfEvent"));
	const auto cleanup = reinterpret_cast<void (*)()>(dlsym(lib, "cleanup"));
	REQUIRE((add_probe && get_status && dequeue && cleanup));

	CliProcess cli(g_cli_path, cli_args());
	REQUIRE(cli.wait_stderr("tracing UDP", 120s));
	add_probe();
	REQUIRE(get_status() != 0);

	// The legacy struct has no netns: the ledger's ports name its flows.
	std::mutex mu;
	faults::Ledger legacy;
	std::thread reader([&] {
		for (;;) {
			const udp_event_t e = dequeue();
			if (e.pid == 0 && e.EventTime == 0)
				return; // cleanup()
			const faults::FlowId id =
				faults::flow_id(e.SPT, std::string(e.DADDR) + ":" + std::to_string(e.DPT));
			std::lock_guard lock(mu);
			legacy[id] = {e.tx_b, e.txPkts, e.rx_b, e.rxPkts};
		}
	});
	const auto ledger = faults::exchange(4, 25, 333);
	// Closes carry each flow's totals: wait for them.
	const auto end = std::chrono::steady_clock::now() + 30s;
	bool legacy_exact = false;
	while (!legacy_exact && std::chrono::steady_clock::now() < end) {
		{
			std::lock_guard lock(mu);
			legacy_exact = faults::of_ledger(legacy, ledger) == ledger;
		}
		if (!legacy_exact)
			usleep(50000);
	}
	cleanup();
	reader.join();
	CHECK(legacy_exact);
	cli.signal(SIGINT);
	REQUIRE(cli.wait_exit(60s) == 0);
	CHECK(faults::of_ledger(faults::sums(cli.lines(), testutil::current_netns()), ledger) == ledger);
	dlclose(lib);
	unsetenv("UDPEVENT_BACKEND");
}
