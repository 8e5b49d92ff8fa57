// SPDX-License-Identifier: LGPL-2.1-or-later
// Filters run in the kernel: only matching operations become flows.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <fstream>
#include <linux/bpf.h>
#include <map>
#include <set>
#include <sched.h>
#include <sys/mount.h>
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
	Child(const Child &) = delete;
	Child &operator=(const Child &) = delete;
	// One never run (a test failed first) ends without sending, and leaves its cgroup.
	~Child()
	{
		if (go < 0)
			return;
		close(go);
		waitpid(pid, nullptr, 0);
	}
	int run()
	{
		REQUIRE(write(go, "g", 1) == 1);
		close(go);
		go = -1;
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

namespace {

// A cgroup v2 directory made for a test under the mount's root, removed at the end.
struct CgroupDir {
	std::string path;
	std::uint64_t id = 0;

	explicit CgroupDir(std::string p) : path(std::move(p))
	{
		REQUIRE(mkdir(path.c_str(), 0755) == 0);
		struct stat st {};
		REQUIRE(stat(path.c_str(), &st) == 0);
		id = st.st_ino; // a cgroup v2 directory's inode number is its id
	}
	CgroupDir(const CgroupDir &) = delete;
	CgroupDir &operator=(const CgroupDir &) = delete;
	~CgroupDir() { CHECK(rmdir(path.c_str()) == 0); }

	/// Moves the process in; false if the kernel refused (no assertion: a
	/// forked child calls it too).
	bool join(pid_t pid) const
	{
		std::ofstream procs(path + "/cgroup.procs");
		procs << pid << std::flush;
		return procs.good();
	}
	void enter(pid_t pid) const { REQUIRE(join(pid)); }
};

std::string test_cgroup_root()
{
	const std::string root = detail::cgroup2_mount();
	REQUIRE(!root.empty());
	return root + "/udpintercept-test-" + std::to_string(getpid());
}

} // namespace

TEST_CASE("the cgroup filter keeps the tasks of a cgroup v2 directory and of those below it", "[filters]")
{
	// base/a holds a process and a directory, base/a/b a process, base/c another.
	const CgroupDir base(test_cgroup_root());
	const CgroupDir a(base.path + "/a"), b(a.path + "/b"), c(base.path + "/c");
	Udp sink(AF_INET);
	sink.bind("127.0.0.1");
	for (const CgroupDir *filter : {&base, &a, &b}) {
		CAPTURE(filter->path);
		Child in_a(sink.local(), 3, [] {}), in_b(sink.local(), 4, [] {}),
			in_c(sink.local(), 5, [] {});
		a.enter(in_a.pid);
		b.enter(in_b.pid);
		c.enter(in_c.pid);
		const auto pid_of = [](const Child &child) { return static_cast<std::uint32_t>(child.pid); };
		// Each process's cgroup, and the datagrams it sends, where the filter keeps it.
		std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> expected;
		if (filter != &b)
			expected[pid_of(in_a)] = {a.id, 3};
		expected[pid_of(in_b)] = {b.id, 4};
		if (filter == &base)
			expected[pid_of(in_c)] = {c.id, 5};

		Options o;
		o.cgroup = filter->path;
		Recorder rec(o);
		own_traffic(sink.local());
		for (Child *child : {&in_a, &in_b, &in_c})
			REQUIRE(child->run() == 0);
		rec.stop();
		std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> seen;
		for (const auto &[flow, e] : rec.last_by_flow()) {
			auto &[cgroup, tx] = seen[e.pid];
			cgroup = e.cgroup_id;
			tx += e.tx_packets;
		}
		CHECK(seen == expected);
	}
}

TEST_CASE("the cgroup filter holds where the tracer runs in a cgroup namespace", "[filters]")
{
	// The tracer's process makes base/ns its cgroup namespace's root and
	// mounts that namespace's cgroup v2 tree, where the filter's directory,
	// base/ns/d, is /d: one level below the mount's root, three below the
	// machine's. A process in base/ns/d/e is kept, one in base/ns is not.
	const CgroupDir base(test_cgroup_root());
	const CgroupDir ns(base.path + "/ns"), d(ns.path + "/d"), e(d.path + "/e");
	Udp sink(AF_INET);
	sink.bind("127.0.0.1");
	Child in_e(sink.local(), 3, [] {}), in_ns(sink.local(), 4, [] {});
	e.enter(in_e.pid);
	ns.enter(in_ns.pid);
	char mount_point[] = "/tmp/udpintercept-cgroupns-XXXXXX";
	REQUIRE(mkdtemp(mount_point) != nullptr);

	int ready[2], done[2];
	REQUIRE(pipe(ready) == 0);
	REQUIRE(pipe2(done, O_NONBLOCK) == 0);
	const pid_t tracer = fork();
	REQUIRE(tracer >= 0);
	if (tracer == 0) {
		// No Catch assertions here: the exit status says what went wrong.
		close(ready[0]);
		close(done[1]);
		if (!ns.join(getpid()))
			_exit(10);
		if (unshare(CLONE_NEWCGROUP | CLONE_NEWNS) != 0 ||
		    mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
		    mount("cgroup2", mount_point, "cgroup2", 0, nullptr) != 0)
			_exit(11);
		std::map<std::uint64_t, Event> last; // by socket
		try {
			Options o;
			o.cgroup = std::string(mount_point) + "/d";
			Tracer t(testutil::with_test_backend(o),
				 [&](const Event &ev) { last[ev.socket_id] = ev; });
			if (write(ready[1], "r", 1) != 1)
				_exit(12);
			char ch;
			while (read(done[0], &ch, 1) < 0)
				t.poll(std::chrono::milliseconds(10));
			t.stop();
		} catch (...) {
			_exit(13);
		}
		std::uint64_t tx = 0;
		for (const auto &[socket, ev] : last) {
			if (ev.pid != static_cast<std::uint32_t>(in_e.pid) || ev.cgroup_id != e.id)
				_exit(14);
			tx += ev.tx_packets;
		}
		_exit(tx == 3 ? 0 : 15);
	}
	close(ready[1]);
	close(done[0]);
	// Closing `done` stops the tracer, also when an assertion below fails:
	// it then leaves its cgroup before the directories are removed.
	struct Stop {
		int done;
		pid_t pid;
		int status = -1;
		void operator()()
		{
			if (done < 0)
				return;
			close(done);
			done = -1;
			waitpid(pid, &status, 0);
		}
		~Stop() { (*this)(); }
	} stop{done[1], tracer};
	char ch;
	const bool attached = read(ready[0], &ch, 1) == 1;
	close(ready[0]);
	if (attached) {
		REQUIRE(in_e.run() == 0);
		REQUIRE(in_ns.run() == 0);
	}
	stop();
	CHECK(rmdir(mount_point) == 0);
	CHECK(attached);
	REQUIRE(WIFEXITED(stop.status));
	CHECK(WEXITSTATUS(stop.status) == 0);
}

TEST_CASE("a drop passes the cgroup filter when the socket's last user is below its directory", "[filters]")
{
	const CgroupDir base(test_cgroup_root());
	const CgroupDir a(base.path + "/a"), b(a.path + "/b");
	Options o;
	o.cgroup = base.path;
	Recorder rec(o);

	Udp receiver(AF_INET), sender(AF_INET);
	receiver.bind("127.0.0.1");
	sender.bind("127.0.0.1");
	const int smallest = 1; // the kernel raises it to its minimum: a few datagrams fill it
	REQUIRE(setsockopt(receiver.fd(), SOL_SOCKET, SO_RCVBUF, &smallest, sizeof(smallest)) == 0);
	// The child, in base/a/b, reads one datagram on the receiver it shares,
	// which makes it the socket's last user, says so, and waits to be let go.
	int read_one[2], let_go[2];
	REQUIRE(pipe(read_one) == 0);
	REQUIRE(pipe(let_go) == 0);
	const pid_t child = fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		close(read_one[0]);
		close(let_go[1]);
		char ch;
		if (read(let_go[0], &ch, 1) != 1) // entered its cgroup
			_exit(3);
		char buf[64];
		if (recv(receiver.fd(), buf, sizeof(buf), 0) != 32 || write(read_one[1], "r", 1) != 1)
			_exit(4);
		_exit(read(let_go[0], &ch, 1) == 0 ? 0 : 5);
	}
	close(read_one[1]);
	close(let_go[0]);
	b.enter(child);
	REQUIRE(write(let_go[1], "g", 1) == 1);
	sender.send_to(receiver.local(), 32);
	char ch;
	REQUIRE(read(read_one[0], &ch, 1) == 1);
	// The parent's sends are outside the filter; the drops they cause are the child's.
	for (int i = 0; i < 200; i++)
		sender.send_to(receiver.local(), 32);
	testutil::loopback_barrier();
	const std::uint64_t drops = testutil::socket_drops(receiver.fd());
	close(let_go[1]);
	close(read_one[0]);
	int status = 0;
	REQUIRE(waitpid(child, &status, 0) == child);
	REQUIRE(WIFEXITED(status));
	REQUIRE(WEXITSTATUS(status) == 0);
	rec.stop();

	CHECK(drops > 0);
	const auto flows = rec.last_by_flow();
	CHECK(flows.count({endpoint(sender.local()), endpoint(receiver.local())}) == 0);
	const auto it = flows.find({endpoint(receiver.local()), endpoint(sender.local())});
	REQUIRE(it != flows.end());
	CHECK(it->second.rx_packets == 1);
	CHECK(it->second.rx_drops == drops);
	CHECK(it->second.pid == static_cast<std::uint32_t>(child));
	CHECK(it->second.cgroup_id == b.id);
	CHECK(flows.size() == 1);
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
