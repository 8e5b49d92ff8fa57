// SPDX-License-Identifier: LGPL-2.1-or-later
// The CLI as a new user runs it without root: setpriv(1) to nobody with
// CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or with one of them missing.
#include <catch2/catch.hpp>

#include <csignal>
#include <filesystem>
#include <regex>

#include "unprivileged.h"

extern std::string g_cli_path;
extern std::string g_setpriv_path;

using namespace std::chrono_literals;
using namespace privtest;
using testutil::endpoint;
using testutil::Process;
using testutil::Udp;

namespace {

std::vector<std::string> as_nobody(const std::vector<Cap> &caps, std::vector<std::string> args)
{
	REQUIRE(!g_cli_path.empty());
	std::string list = "-all";
	for (const auto &c : caps)
		list += std::string(",+") + c.setpriv;
	std::vector<std::string> argv{g_setpriv_path,
				      "--reuid=" + std::to_string(kNobody),
				      "--regid=" + std::to_string(kNobody),
				      "--clear-groups",
				      "--inh-caps=" + list,
				      "--ambient-caps=" + list,
				      "--bounding-set=" + list,
				      "--",
				      g_cli_path,
				      "--backend",
				      testutil::test_backend()};
	argv.insert(argv.end(), args.begin(), args.end());
	return argv;
}

// The backend named on the CLI's `tracing` line.
std::string backend_in(const std::string &err)
{
	std::smatch m;
	static const std::regex re("tracing UDP with the ([a-z]+) backend");
	return std::regex_search(err, m, re) ? m[1].str() : "";
}

void check_exact(const std::string &json, const Ledger &ledger)
{
	const auto last = last_snapshots(parse_lines(json), testutil::current_netns());
	for (const auto &[flow, counts] : ledger) {
		INFO(flow.first << " -> " << flow.second << ": expected " << to_string(counts));
		REQUIRE(last.count(flow) == 1);
		CHECK(to_string(counts_of(last.at(flow))) == to_string(counts));
	}
	CHECK(last.size() == ledger.size());
}

// Exit status 1, and the error names every capability missing (and why perf events are refused).
void check_refused(Process &cli, std::uint64_t missing)
{
	CHECK(cli.wait_exit(120s) == 1);
	INFO(cli.err_text);
	CHECK_THAT(cli.err_text, Catch::Contains("privileges failed"));
	for (const auto &c : kNamed)
		if (missing & bit(c.number))
			CHECK_THAT(cli.err_text, Catch::Contains(c.name));
	if (missing & bit(kCapSysAdmin))
		CHECK_THAT(cli.err_text, Catch::Contains("kernel.perf_event_paranoid"));
	CHECK_THAT(cli.err_text, !Catch::Contains("tracing UDP"));
	CHECK(cli.out_text.empty());
}

} // namespace

TEST_CASE("as nobody with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only, the CLI traces exactly", "[cli]")
{
	const std::vector<Cap> three(std::begin(kThree), std::end(kThree));
	std::uint64_t missing = 0;
	const std::string expected = expected_backend(g_cli_path, mask(three), &missing);
	// lazy-inexact: the tracepoint backend's arrival hook waits to be attached
	// on demand, which needs capabilities after the drop (other backends ignore
	// it); --pid: only this test's receives may ask for it, not the machine's.
	Process cli(as_nobody(three, {"--json", "--verbose", "--recv-peers", "lazy-inexact", "--pid",
				      std::to_string(getpid())}));
	if (expected.empty()) {
		// kernel.perf_event_paranoid above 2 on a kernel that then keeps
		// perf events, and so kprobes, from CAP_PERFMON.
		INFO("this kernel refuses the backend under test to these capabilities");
		check_refused(cli, missing);
		return;
	}
	REQUIRE(cli.wait_stderr("tracing UDP with the", 120s));
	const std::string backend = backend_in(cli.err_text);
	INFO(cli.err_text);
	CHECK(backend == expected);

	// Once attached it keeps only what it still uses: the tracepoint
	// backend's arrival hook waits to be attached on demand.
	const bool on_demand = backend == "tracepoint";
	const std::uint64_t kept_bpf = maps_need_cap_bpf() ? bit(kCapBpf) : 0;
	CHECK(cap_names(cap_eff(cli.pid())) ==
	      cap_names(on_demand ? bit(kCapBpf) | bit(kCapNetAdmin) : kept_bpf));
	if (backend == "kprobe") {
		// tracefs is root's: the return probes get the kernel's default room, and the line says why.
		CHECK_THAT(cli.err_text, Catch::Contains("return probes with the kernel's default room"));
		CHECK_THAT(cli.err_text, Catch::Contains("kprobe_events is not writable"));
	}

	Ledger ledger = exchange();
	{
		// recv() without an address on an unconnected socket: the tracepoint
		// backend then attaches its arrival hook (CAP_BPF, CAP_NET_ADMIN), and
		// the datagram that asked for it counts with an unknown peer.
		Udp r(AF_INET), x(AF_INET);
		r.bind("127.0.0.1");
		x.bind("127.0.0.1");
		const auto from_x = std::make_pair(endpoint(r.local()), endpoint(x.local()));
		x.send_to(r.local(), 33);
		REQUIRE(r.recv() == 33);
		if (on_demand) {
			REQUIRE(cli.wait_stderr("attached the arrival hook", 60s));
			REQUIRE(cli.wait_stderr("capabilities kept once attached", 60s, 2));
			CHECK(cap_names(cap_eff(cli.pid())) == cap_names(kept_bpf));
			auto &unknown = ledger[{endpoint(r.local()), "0.0.0.0:0"}];
			unknown.rx_packets += 1;
			unknown.rx_bytes += 33;
		} else {
			ledger[from_x].rx_packets += 1;
			ledger[from_x].rx_bytes += 33;
		}
		for (int i = 0; i < 4; i++)
			x.send_to(r.local(), 33);
		for (int i = 0; i < 4; i++)
			REQUIRE(r.recv() == 33);
		auto &to_r = ledger[{endpoint(x.local()), endpoint(r.local())}];
		to_r.tx_packets += 5;
		to_r.tx_bytes += 5 * 33;
		ledger[from_x].rx_packets += 4;
		ledger[from_x].rx_bytes += 4 * 33;
	}
	cli.signal(SIGINT);
	REQUIRE(cli.wait_exit(120s) == 0);
	check_exact(cli.out_text, ledger);
	CHECK_THAT(cli.err_text, Catch::Contains(" lost=0 "));
	CHECK_THAT(cli.err_text, Catch::Contains(on_demand ? "peer_unknown=1 " : "peer_unknown=0 "));
}

TEST_CASE("as nobody without one of the three capabilities, the CLI names it or does without", "[cli]")
{
	for (const auto &drop : kThree) {
		std::vector<Cap> caps;
		for (const auto &c : kThree)
			if (c.number != drop.number)
				caps.push_back(c);
		std::uint64_t missing = 0;
		const std::string expected = expected_backend(g_cli_path, mask(caps), &missing);
		INFO("without " << drop.name << ", expecting " << (expected.empty() ? "an error" : expected));
		Process cli(as_nobody(caps, {"--json"}));
		if (expected.empty()) {
			check_refused(cli, missing);
			continue;
		}
		// Only the tracepoint backend's cgroup programs need CAP_NET_ADMIN.
		REQUIRE(cli.wait_stderr("tracing UDP with the", 120s));
		INFO(cli.err_text);
		CHECK(backend_in(cli.err_text) == expected);
		const Ledger ledger = exchange();
		cli.signal(SIGINT);
		REQUIRE(cli.wait_exit(120s) == 0);
		check_exact(cli.out_text, ledger);
	}
}

TEST_CASE("as nobody with --metrics, the HTTP server's threads hold no capability", "[cli]")
{
	const std::vector<Cap> three(std::begin(kThree), std::end(kThree));
	std::uint64_t missing = 0;
	if (expected_backend(g_cli_path, mask(three), &missing).empty()) {
		SUCCEED("the backend under test is refused to these capabilities here (see above)");
		return;
	}
	Process cli(as_nobody(three, {"--metrics", "127.0.0.1:0", "--quiet"}));
	REQUIRE(cli.wait_stderr("tracing UDP with the", 120s));
	INFO(cli.err_text);
	const std::string tasks = "/proc/" + std::to_string(cli.pid()) + "/task";
	int threads = 0;
	for (const auto &task : std::filesystem::directory_iterator(tasks)) {
		const pid_t tid = std::stoi(task.path().filename());
		std::ifstream status(task.path() / "status");
		std::string line, prm;
		while (std::getline(status, line))
			if (line.rfind("CapPrm:", 0) == 0)
				prm = line.substr(7);
		const std::uint64_t permitted = std::stoull(prm, nullptr, 16);
		INFO("thread " << tid << " CapPrm " << cap_names(permitted));
		if (tid == cli.pid())
			CHECK((permitted & bit(kCapPerfmon)) == 0);
		else
			CHECK(permitted == 0);
		threads++;
	}
	CHECK(threads > 1); // civetweb's threads are there
	cli.signal(SIGINT);
	CHECK(cli.wait_exit(120s) == 0);
}
