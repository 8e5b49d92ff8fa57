// SPDX-License-Identifier: LGPL-2.1-or-later
// The library in a process that became nobody with chosen capabilities: it
// counts exactly with the three, names the one that is missing, says when
// RLIMIT_MEMLOCK is what stops it, and gives up what it no longer uses.
#include <catch2/catch.hpp>

#include <csignal>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/signalfd.h>

#include <udpintercept/tracer.h>

#include "process.h"
#include "recorder.h"
#include "unprivileged.h"

using namespace std::chrono_literals;
using namespace privtest;
using testutil::Process;

extern std::string g_cli_path;

namespace {

void say(const std::string &line)
{
	const std::string text = line + "\n";
	if (write(1, text.data(), text.size()) < 0)
		_exit(121);
}

/**
 * A Tracer made in a child process that became nobody with `caps` (after
 * `prepare`, which may say things on stdout). It says "ready BACKEND CAPEFF"
 * once attached and privileges dropped, traces until SIGUSR1, then prints its
 * snapshots as JSON lines and "end"; or "error STAGE ERRNO WHAT".
 */
Process tracer_as_nobody(const std::vector<int> &caps, const std::function<void()> &prepare = {})
{
	return Process(std::function<int()>([caps, prepare] {
		sigset_t usr1;
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigprocmask(SIG_BLOCK, &usr1, nullptr);
		const int sfd = signalfd(-1, &usr1, SFD_CLOEXEC);
		become(kNobody, caps);
		if (prepare)
			prepare();
		std::string json;
		try {
			udpintercept::Tracer tracer(testutil::with_test_backend({}),
						    [&json](const udpintercept::Event &e) {
							    json += udpintercept::to_json(e) + "\n";
						    });
			tracer.drop_privileges();
			char eff[32];
			std::snprintf(eff, sizeof(eff), "%llx",
				      static_cast<unsigned long long>(cap_eff(getpid())));
			say("ready " + std::string(udpintercept::to_string(tracer.backend())) + " " + eff);
			for (;;) {
				pollfd fds[2] = {{tracer.fd(), POLLIN, 0}, {sfd, POLLIN, 0}};
				::poll(fds, 2, 100);
				tracer.process();
				if (fds[1].revents)
					break;
			}
			tracer.stop();
			say(json + "end");
			return 0;
		} catch (const udpintercept::Error &e) {
			say("error " + e.stage() + " " + std::to_string(e.code().value()) + " " + e.what());
			return 3;
		}
	}));
}

// The child's "ready" line, split: backend and effective capabilities.
std::pair<std::string, std::uint64_t> ready_line(const std::string &out)
{
	const auto pos = out.find("ready ");
	std::istringstream in(out.substr(pos + 6));
	std::string backend, eff;
	in >> backend >> eff;
	return {backend, std::stoull(eff, nullptr, 16)};
}

// Traffic while the child traces, then its snapshots held to the ledger.
void check_traces_exactly(Process &child)
{
	const Ledger ledger = exchange();
	child.signal(SIGUSR1);
	REQUIRE(child.wait_stdout("\nend", 120s));
	CHECK(child.wait_exit(30s) == 0);
	const auto last = last_snapshots(parse_lines(child.out_text), testutil::current_netns());
	for (const auto &[flow, counts] : ledger) {
		INFO(flow.first << " -> " << flow.second << ": expected " << to_string(counts));
		REQUIRE(last.count(flow) == 1);
		CHECK(to_string(counts_of(last.at(flow))) == to_string(counts));
	}
	CHECK(last.size() == ledger.size());
}

// The constructor threw the privileges error naming every capability missing.
void check_refused(Process &child, std::uint64_t missing)
{
	CHECK(child.wait_exit(30s) == 3);
	CHECK_THAT(child.out_text, Catch::Contains("error privileges 1 "));
	for (const auto &c : kNamed)
		if (missing & bit(c.number))
			CHECK_THAT(child.out_text, Catch::Contains(c.name));
}

bool ready_or_error(Process &child)
{
	return child.wait_for(
		[&] {
			return child.out_text.find("ready ") != std::string::npos ||
			       child.out_text.find("error ") != std::string::npos;
		},
		120s);
}

} // namespace

TEST_CASE("a Tracer made by nobody with the three capabilities counts exactly and keeps only what it uses",
	  "[library]")
{
	std::uint64_t missing = 0;
	const std::string expected =
		expected_backend(g_cli_path, bit(kCapBpf) | bit(kCapPerfmon) | bit(kCapNetAdmin), &missing);
	Process child = tracer_as_nobody({kCapBpf, kCapPerfmon, kCapNetAdmin});
	REQUIRE(ready_or_error(child));
	INFO(child.out_text << child.err_text);
	if (expected.empty()) {
		check_refused(child, missing);
		return;
	}
	REQUIRE(child.out_text.find("ready ") != std::string::npos);
	const auto [backend, eff] = ready_line(child.out_text);
	CHECK(backend == expected);
	const std::uint64_t kept_bpf = maps_need_cap_bpf() ? bit(kCapBpf) : 0;
	// Exact by default: every hook is attached, none waits on demand.
	CHECK(cap_names(eff) == cap_names(kept_bpf));
	check_traces_exactly(child);
}

TEST_CASE("a Tracer made by nobody without one of the capabilities names it, or does without", "[library]")
{
	for (const auto &drop : kThree) {
		std::vector<int> caps;
		std::uint64_t held = 0;
		for (const auto &c : kThree)
			if (c.number != drop.number) {
				caps.push_back(c.number);
				held |= bit(c.number);
			}
		std::uint64_t missing = 0;
		const std::string expected = expected_backend(g_cli_path, held, &missing);
		Process child = tracer_as_nobody(caps);
		REQUIRE(ready_or_error(child));
		INFO("without " << drop.name << ": " << child.out_text << child.err_text);
		if (expected.empty()) {
			check_refused(child, missing);
			continue;
		}
		REQUIRE(child.out_text.find("ready ") != std::string::npos);
		CHECK(ready_line(child.out_text).first == expected);
		check_traces_exactly(child);
	}
}

TEST_CASE("with a small RLIMIT_MEMLOCK, a kernel that charges BPF memory to it is named as the cause",
	  "[library][memlock]")
{
	// The test's own finding, from a map of 1 MiB under a limit of 64 KiB
	// that cannot be raised: EPERM if the kernel charges the rlimit.
	Process child = tracer_as_nobody({kCapBpf, kCapPerfmon, kCapNetAdmin}, [] {
		const rlimit small{64 * 1024, 64 * 1024};
		if (setrlimit(RLIMIT_MEMLOCK, &small) != 0)
			_exit(122);
		union bpf_attr attr {
		};
		attr.map_type = BPF_MAP_TYPE_ARRAY;
		attr.key_size = 4;
		attr.value_size = 1024;
		attr.max_entries = 1024;
		const long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
		say(fd < 0 && errno == EPERM ? "charged yes" : "charged no");
		if (fd >= 0)
			close(static_cast<int>(fd));
	});
	std::uint64_t missing = 0;
	const std::string expected =
		expected_backend(g_cli_path, bit(kCapBpf) | bit(kCapPerfmon) | bit(kCapNetAdmin), &missing);
	REQUIRE(ready_or_error(child));
	INFO(child.out_text << child.err_text);
	const bool charged = child.out_text.find("charged yes") != std::string::npos;
	std::printf("[memlock] this kernel charges BPF memory to RLIMIT_MEMLOCK: %s\n",
		    charged ? "yes" : "no");
	if (expected.empty()) {
		// The privileges come first (see the test above).
		check_refused(child, missing);
		return;
	}
	if (charged) {
		CHECK(child.wait_exit(30s) == 3);
		CHECK_THAT(child.out_text, Catch::Contains("RLIMIT_MEMLOCK"));
		CHECK_THAT(child.out_text, Catch::Contains("64 KiB"));
		CHECK_THAT(child.out_text, Catch::Contains("LimitMEMLOCK=infinity"));
		return;
	}
	REQUIRE(child.out_text.find("ready ") != std::string::npos);
	check_traces_exactly(child);
}
