// SPDX-License-Identifier: LGPL-2.1-or-later
// Container identity on real flows: cgroups made under the cgroup v2 mount
// as each container runtime names them (and, on hybrid hosts, a cgroup v1
// one), a child process moved into each sends a datagram, and its flow must
// carry the cgroup path and the container id, also in the close that comes
// after the cgroup is gone.
#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <fstream>
#include <mutex>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cgroup_names.h"
#include "recorder.h"

using namespace std::chrono_literals;
using testutil::Recorder;
using testutil::SockAddr;
using testutil::Udp;
namespace fs = std::filesystem;

namespace {

const std::string kId = "c0ffee00"
			"0123456789abcdef0123456789abcdef0123456789abcdef01234567";
const std::string kPodUid = "5c2b6e0a_0b1c_4d2e_9f3a_0123456789ab";

std::string mount_of(const std::string &type, const std::string &option = "")
{
	std::ifstream mounts("/proc/self/mounts");
	std::string dev, dir, fstype, opts, rest;
	while (mounts >> dev >> dir >> fstype >> opts && std::getline(mounts, rest))
		if (fstype == type &&
		    (option.empty() || ("," + opts + ",").find("," + option + ",") != std::string::npos))
			return dir;
	return {};
}

// A cgroup directory (and its parents under `top`), removed deepest first.
class Cgroup {
public:
	Cgroup(const std::string &mount, const std::string &top, const std::string &rel)
	    : mount_(mount), top_(mount + top), dir_(mount + top + rel), path_(top + rel)
	{
		fs::create_directories(dir_);
	}
	~Cgroup()
	{
		std::error_code ec;
		for (fs::path p = dir_; p.string().size() >= top_.size(); p = p.parent_path())
			fs::remove(p, ec); // cgroupfs removes an empty cgroup with rmdir
	}
	/// The path under the mount, as the tracer reports it.
	const std::string &path() const { return path_; }
	std::string procs() const { return dir_ + "/cgroup.procs"; }

private:
	std::string mount_, top_, dir_, path_;
};

// A child that joins the cgroups, sends one datagram to `to`, and exits
// when told (its socket's close is the flow's last snapshot).
class Sender {
public:
	Sender(const std::vector<std::string> &procs, const SockAddr &to)
	{
		REQUIRE(pipe(go_) == 0);
		pid_ = fork();
		REQUIRE(pid_ >= 0);
		if (pid_ == 0) {
			close(go_[1]);
			for (const auto &p : procs) {
				std::ofstream f(p);
				f << getpid() << std::flush;
				if (!f)
					_exit(3);
			}
			const int s = socket(to.family(), SOCK_DGRAM, 0);
			if (s < 0 || sendto(s, "container", 9, 0, to.sa(), to.len) != 9)
				_exit(4);
			char c;
			(void)!read(go_[0], &c, 1);
			_exit(0);
		}
		close(go_[0]);
	}
	~Sender()
	{
		if (pid_ > 0)
			finish();
	}
	pid_t pid() const { return pid_; }
	/// Lets the child exit, and reaps it; its exit status.
	int finish()
	{
		close(go_[1]);
		int status = 0;
		waitpid(pid_, &status, 0);
		pid_ = -1;
		return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	}

private:
	int go_[2];
	pid_t pid_ = -1;
};

// Polls until `done` or the deadline.
template <typename Pred> bool pump_until(Recorder &rec, Pred done, std::chrono::milliseconds timeout = 10s)
{
	const auto end = std::chrono::steady_clock::now() + timeout;
	while (!done()) {
		if (std::chrono::steady_clock::now() > end)
			return false;
		rec.tracer().poll(10ms);
	}
	return true;
}

// The snapshots of the sender's flow (its pid's) of this kind.
std::vector<udpintercept::Event> of_sender(const Recorder &rec, pid_t pid, udpintercept::EventKind kind)
{
	std::vector<udpintercept::Event> out;
	for (const auto &e : rec.events)
		if (e.pid == static_cast<std::uint32_t>(pid) && e.tx_packets == 1 && e.kind == kind)
			out.push_back(e);
	return out;
}

struct Naming {
	const char *runtime;
	std::string rel; // under the test's own top cgroup
	std::string id;  // what it names
};

} // namespace

TEST_CASE("every runtime's container cgroup names its flows' container", "[cgroups]")
{
	const std::string v2 = mount_of("cgroup2");
	REQUIRE(!v2.empty());
	const std::string top = "/udpi-cgroup-test-" + std::to_string(getpid());
	const std::string pod_slice = "-pod" + kPodUid + ".slice";
	const std::string pod_dir = "/pod" + std::string("5c2b6e0a-0b1c-4d2e-9f3a-0123456789ab");
	const std::vector<Naming> namings = {
		{"docker, systemd driver", "/system.slice/docker-" + kId + ".scope", kId},
		{"docker, cgroupfs driver", "/docker/" + kId, kId},
		{"containerd in kubernetes, systemd driver",
		 "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable" + pod_slice +
			 "/cri-containerd-" + kId + ".scope",
		 kId},
		{"containerd in kubernetes, cgroupfs driver", "/kubepods/besteffort" + pod_dir + "/" + kId,
		 kId},
		{"cri-o, systemd driver",
		 "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort" + pod_slice + "/crio-" +
			 kId + ".scope",
		 kId},
		{"cri-o, cgroupfs driver", "/kubepods/burstable" + pod_dir + "/crio-" + kId, kId},
		{"podman, systemd driver", "/machine.slice/libpod-" + kId + ".scope", kId},
		{"podman, split cgroups", "/machine.slice/libpod-" + kId + ".scope/container", kId},
		{"podman, cgroupfs driver", "/libpod_parent/libpod-" + kId, kId},
		{"a pod's own slice, no container",
		 "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort" + pod_slice, ""},
		{"a login session", "/user.slice/user-1000.slice/session-1.scope", ""},
	};

	Udp server(AF_INET);
	server.bind("127.0.0.1");
	// The receiving side: everything, since the senders are children.
	Recorder rec;
	for (const auto &n : namings) {
		INFO(n.runtime << ": " << n.rel);
		auto cg = std::make_unique<Cgroup>(v2, top, n.rel);
		const std::string path = cg->path();
		Sender child({cg->procs()}, server.local());
		const pid_t pid = child.pid();
		REQUIRE(server.recv_from() == 9);
		REQUIRE(pump_until(
			rec, [&] { return !of_sender(rec, pid, udpintercept::EventKind::update).empty(); }));
		const auto first = of_sender(rec, pid, udpintercept::EventKind::update).front();
		CHECK(first.cgroup == path);
		CHECK(first.container_id == n.id);

		// The container goes, and its cgroup with it, before the tracer
		// hears of the close: the close still names both.
		REQUIRE(child.finish() == 0);
		cg.reset();
		REQUIRE(!fs::exists(v2 + path));
		REQUIRE(pump_until(
			rec, [&] { return !of_sender(rec, pid, udpintercept::EventKind::close).empty(); }));
		const auto close = of_sender(rec, pid, udpintercept::EventKind::close).front();
		CHECK(close.cgroup == path);
		CHECK(close.container_id == n.id);
	}
	// This process's own flow: its cgroup, and no container.
	std::ifstream self("/proc/self/cgroup");
	std::string line, own = "/";
	while (std::getline(self, line))
		if (line.rfind("0::", 0) == 0)
			own = line.substr(3);
	const auto mine = rec.last_by_flow();
	REQUIRE(!mine.empty());
	for (const auto &[name, e] : mine)
		if (e.pid == static_cast<std::uint32_t>(getpid())) {
			CHECK(e.cgroup == own);
			CHECK(e.container_id == "");
		}

	// One walk, at the first lookup: the cgroups made after it were learnt from their
	// parents' watches, and the tree is watched whole.
	const udpintercept::CgroupNaming naming = rec.tracer().cgroup_naming();
	CHECK(naming.watching);
	CHECK(naming.tree_walks == 1);
	CHECK(naming.directories_watched >= 1);
	CHECK(naming.unwatched_reason == "");
}

TEST_CASE("on hybrid hosts a process's cgroup v1 path names its container when v2 names none", "[cgroups]")
{
	// Runtimes on hybrid hosts put containers in the v1 hierarchies only.
	const std::string v1 = mount_of("cgroup", "pids");
	if (v1.empty()) {
		WARN("no cgroup v1 pids hierarchy here (a pure cgroup v2 host): nothing to fall back to");
		return;
	}
	const std::string v2 = mount_of("cgroup2");
	REQUIRE(!v2.empty());
	const std::string top = "/udpi-cgroup-v1-test-" + std::to_string(getpid());
	Udp server(AF_INET);
	server.bind("127.0.0.1");
	Recorder rec;
	auto docker_v1 = std::make_unique<Cgroup>(v1, top, "/docker/" + kId);
	auto plain_v2 = std::make_unique<Cgroup>(v2, top, "/system.slice/containerd.service");
	Sender child({docker_v1->procs(), plain_v2->procs()}, server.local());
	const pid_t pid = child.pid();
	REQUIRE(server.recv_from() == 9);
	REQUIRE(pump_until(rec,
			   [&] { return !of_sender(rec, pid, udpintercept::EventKind::update).empty(); }));
	const auto first = of_sender(rec, pid, udpintercept::EventKind::update).front();
	CHECK(first.cgroup == plain_v2->path()); // the v2 path, which names none
	CHECK(first.container_id == kId);        // the v1 path's
	REQUIRE(child.finish() == 0);
	docker_v1.reset();
	plain_v2.reset();
	REQUIRE(pump_until(rec,
			   [&] { return !of_sender(rec, pid, udpintercept::EventKind::close).empty(); }));
	CHECK(of_sender(rec, pid, udpintercept::EventKind::close).front().container_id == kId);
}

TEST_CASE("cgroups made after the first lookup are named without walking the tree again", "[cgroups]")
{
	const std::string v2 = mount_of("cgroup2");
	REQUIRE(!v2.empty());
	const auto id_of = [&](const std::string &path) {
		struct stat st {};
		REQUIRE(stat((v2 + path).c_str(), &st) == 0);
		return static_cast<std::uint64_t>(st.st_ino);
	};
	udpintercept::detail::CgroupNames names; // the machine's, as the tracer's
	CHECK(names.path(id_of("/")) == "/");
	REQUIRE(names.walks() == 1);
	REQUIRE(names.watching());

	// Containers come and go: each cgroup is heard of through its parent's watch.
	const std::string top = "/udpi-cgroup-watch-" + std::to_string(getpid());
	std::vector<std::unique_ptr<Cgroup>> made;
	for (int i = 0; i < 20; i++) {
		made.push_back(std::make_unique<Cgroup>(v2, top,
							"/kubepods/burstable/pod" + std::to_string(i) + "/" +
								kId.substr(0, 60) +
								std::to_string(1000 + i)));
		INFO(made.back()->path());
		CHECK(names.path(id_of(made.back()->path())) == made.back()->path());
	}
	CHECK(names.path(id_of(top + "/kubepods/burstable")) == top + "/kubepods/burstable");

	// One made and removed before anyone asked: gone, and no walk looks for it.
	std::uint64_t brief = 0;
	{
		Cgroup gone(v2, top, "/brief");
		brief = id_of(gone.path());
	}
	CHECK(names.path(brief) == "");
	// Removed after it was named: it keeps its path (a flow's close comes later).
	const std::string last = made.back()->path();
	const std::uint64_t last_id = id_of(last);
	made.pop_back();
	CHECK(names.path(last_id) == last);
	CHECK(names.walks() == 1);
	CHECK(names.watching());
}

// Until destroyed, this process can open no more files: the limit is the
// lowest free descriptor, which is where the kernel would put the next one.
class NoMoreFiles {
public:
	NoMoreFiles()
	{
		REQUIRE(getrlimit(RLIMIT_NOFILE, &before_) == 0);
		const int lowest_free = fcntl(0, F_DUPFD_CLOEXEC, 0);
		REQUIRE(lowest_free >= 0);
		::close(lowest_free);
		rlimit now = before_;
		now.rlim_cur = static_cast<rlim_t>(lowest_free);
		REQUIRE(setrlimit(RLIMIT_NOFILE, &now) == 0);
	}
	~NoMoreFiles() { setrlimit(RLIMIT_NOFILE, &before_); }
	NoMoreFiles(const NoMoreFiles &) = delete;
	NoMoreFiles &operator=(const NoMoreFiles &) = delete;

private:
	rlimit before_{};
};

TEST_CASE("where the cgroup tree cannot be watched, the log says why and that lookups walk it", "[cgroups]")
{
	// inotify_init1() fails with EMFILE where the user's inotify instances are used up
	// (fs.inotify.max_user_instances, 128 by default) as where its descriptor limit is
	// reached: the second is the one a test can cause without touching the machine's.
	std::mutex m;
	std::vector<std::string> log;
	udpintercept::Options options;
	options.log = [&](std::string_view line) {
		const std::lock_guard lock(m);
		log.emplace_back(line);
	};
	const auto naming_lines = [&] {
		const std::lock_guard lock(m);
		std::vector<std::string> out;
		for (const auto &line : log)
			if (line.rfind("cgroup names: ", 0) == 0)
				out.push_back(line);
		return out;
	};
	Udp server(AF_INET);
	server.bind("127.0.0.1");
	Udp client(AF_INET);
	Recorder rec(options);
	{
		// Nothing is decoded before the first poll: the first cgroup lookup comes after this.
		NoMoreFiles limit;
		client.send_to(server.local(), 9);
		REQUIRE(rec.pump_until([&] { return !naming_lines().empty(); }));
	}
	const auto lines = naming_lines();
	for (const auto &line : lines)
		UNSCOPED_INFO(line);
	REQUIRE(lines.size() == 1);
	CHECK_THAT(lines[0], Catch::StartsWith("cgroup names: inotify_init1: Too many open files; each "
					       "cgroup id not yet known walks the cgroup tree ("));
	const udpintercept::CgroupNaming naming = rec.tracer().cgroup_naming();
	CHECK_FALSE(naming.watching);
	CHECK(naming.tree_walks >= 1);
	CHECK(naming.unwatched_reason == "inotify_init1: Too many open files");
}
