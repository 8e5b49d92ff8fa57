// SPDX-License-Identifier: LGPL-2.1-or-later
// Filters run in the kernel: only matching operations become flows.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <fstream>
#include <linux/bpf.h>
#include <set>
#include <sys/wait.h>

#include "kernel_probe.h"
#include "recorder.h"

using namespace udpintercept;
using namespace std::chrono_literals;
using testutil::endpoint;
using testutil::Recorder;
using testutil::SockAddr;
using testutil::Udp;

namespace {

// A child that waits for the go signal, sends `count` datagrams to `to`, and exits.
struct Child {
	pid_t pid = -1;
	int go = -1;

	template <typename Setup> Child(const SockAddr &to, int count, Setup setup)
	{
		int fds[2];
		REQUIRE(pipe(fds) == 0);
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			close(fds[1]);
			char c;
			if (read(fds[0], &c, 1) != 1)
				_exit(3);
			setup();
			try {
				Udp s(to.family());
				for (int i = 0; i < count; i++)
					s.send_to(to, 11);
			} catch (...) {
				_exit(4);
			}
			_exit(0);
		}
		close(fds[0]);
		go = fds[1];
	}
	int run()
	{
		REQUIRE(write(go, "g", 1) == 1);
		close(go);
		int status = 0;
		REQUIRE(waitpid(pid, &status, 0) == pid);
		return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	}
};

// Own traffic: one datagram from a fresh socket of this process.
void own_traffic(const SockAddr &to)
{
	Udp s(to.family());
	s.send_to(to, 5);
}

std::set<std::uint32_t> pids_seen(const Recorder &rec)
{
	std::set<std::uint32_t> pids;
	for (const auto &e : rec.events)
		pids.insert(e.pid);
	return pids;
}

} // namespace

TEST_CASE("the pid filter keeps one process's operations", "[filters]")
{
	Udp sink(AF_INET);
	sink.bind("127.0.0.1");
	Child child(sink.local(), 3, [] {});
	Options o;
	o.pid = static_cast<std::uint32_t>(child.pid);
	Recorder rec(o);
	own_traffic(sink.local());
	REQUIRE(child.run() == 0);
	rec.stop();
	REQUIRE(!rec.events.empty());
	CHECK(pids_seen(rec) == std::set<std::uint32_t>{static_cast<std::uint32_t>(child.pid)});
	std::uint64_t tx = 0;
	for (const auto &[f, e] : rec.last_by_flow())
		tx += e.tx_packets;
	CHECK(tx == 3);
}

TEST_CASE("the uid filter keeps one user's operations", "[filters]")
{
	Udp sink(AF_INET6);
	sink.bind("::1");
	Child child(sink.local(), 2, [] {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(5);
	});
	Options o;
	o.uid = 65534;
	Recorder rec(o);
	own_traffic(sink.local());
	sink.recv_from(); // root's receive: filtered out too
	REQUIRE(child.run() == 0);
	rec.stop();
	REQUIRE(rec.events.size() >= 1);
	for (const auto &e : rec.events)
		CHECK(e.uid == 65534);
	const auto flows = rec.last_by_flow();
	REQUIRE(flows.size() == 1);
	CHECK(flows.begin()->second.tx_packets == 2);
}

TEST_CASE("the port filter matches the local or the remote port", "[filters]")
{
	Udp a(AF_INET), b(AF_INET), other(AF_INET);
	a.bind("127.0.0.1");
	b.bind("127.0.0.1");
	other.bind("127.0.0.1");
	Options o;
	o.port = b.local().port();
	Recorder rec(o);
	a.send_to(b.local(), 9);     // remote port matches
	b.recv_from();               // local port matches
	a.send_to(other.local(), 9); // neither
	other.recv_from();
	rec.stop();
	const auto flows = rec.last_by_flow();
	REQUIRE(flows.size() == 2);
	CHECK(flows.count({endpoint(a.local()), endpoint(b.local())}) == 1);
	CHECK(flows.count({endpoint(b.local()), endpoint(a.local())}) == 1);
}

TEST_CASE("the family filter keeps IPv6 or IPv4 traffic", "[filters]")
{
	Udp s4(AF_INET), s6(AF_INET6);
	s4.bind("127.0.0.1");
	s6.bind("::1");
	Options o;
	o.family = Family::ipv6;
	Recorder rec(o);
	own_traffic(s4.local());
	own_traffic(s6.local());
	rec.stop();
	REQUIRE(rec.events.size() >= 1);
	for (const auto &e : rec.events)
		CHECK(e.family == Family::ipv6);
}

TEST_CASE("the cgroup filter keeps the tasks of one cgroup v2 directory", "[filters]")
{
	const std::string root = detail::cgroup2_mount();
	REQUIRE(!root.empty());
	const std::string dir = root + "/udpintercept-test-" + std::to_string(getpid());
	REQUIRE(mkdir(dir.c_str(), 0755) == 0);
	Udp sink(AF_INET);
	sink.bind("127.0.0.1");
	Child child(sink.local(), 4, [] {});
	{
		std::ofstream procs(dir + "/cgroup.procs");
		procs << child.pid << std::flush;
		REQUIRE(procs.good());
	}
	Options o;
	o.cgroup = dir;
	{
		Recorder rec(o);
		own_traffic(sink.local());
		REQUIRE(child.run() == 0);
		rec.stop();
		REQUIRE(!rec.events.empty());
		CHECK(pids_seen(rec) == std::set<std::uint32_t>{static_cast<std::uint32_t>(child.pid)});
		struct stat st {};
		REQUIRE(stat(dir.c_str(), &st) == 0);
		for (const auto &e : rec.events)
			CHECK(e.cgroup_id == st.st_ino);
	}
	CHECK(rmdir(dir.c_str()) == 0);
}

TEST_CASE("without privileges the constructor says what is missing", "[errors]")
{
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(5);
		try {
			Tracer t;
			_exit(6);
		} catch (const Error &e) {
			const std::string what = e.what();
			const bool ok = e.stage() == "privileges" && e.code().value() == EPERM &&
					what.find("CAP_BPF") != std::string::npos &&
					what.find("run as root") != std::string::npos;
			_exit(ok ? 0 : 7);
		}
		_exit(8);
	}
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("forcing a backend the kernel lacks is a clear error", "[errors][backend]")
{
	for (Backend b : {Backend::fentry, Backend::kprobe}) {
		Options o;
		o.backend = b;
		try {
			Tracer t(o);
			// This kernel may offer it after all: then it must really trace.
			CHECK(t.backend() == b);
		} catch (const Error &e) {
			// The probe's verdict ("backend"), or the stage its trial load failed at.
			CAPTURE(e.stage());
			CHECK((e.stage() == "backend" || e.stage() == "load" || e.stage() == "attach"));
			CHECK_THAT(std::string(e.what()), Catch::Contains(std::string(to_string(b))));
			CHECK_THAT(std::string(e.what()), Catch::Contains("not available"));
		}
	}
}

TEST_CASE("auto picks a backend and says why", "[backend]")
{
	Tracer t(testutil::with_test_backend({}));
	CHECK(t.backend() != Backend::automatic);
	CHECK(!t.backend_reason().empty());
}

TEST_CASE("the helper probe tells an allowed helper from a forbidden one", "[backend]")
{
	// Raw tracepoints may read the precise clock, not the coarse one (which
	// older kernels do not know at all): both answers come from the verifier.
	CHECK(detail::helper_allowed(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, BPF_FUNC_ktime_get_ns));
	CHECK(!detail::helper_allowed(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, BPF_FUNC_ktime_get_coarse_ns));
	// A helper number no kernel has.
	CHECK(!detail::helper_allowed(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 100000));
}
