// SPDX-License-Identifier: LGPL-2.1-or-later
// Cgroup paths to container ids for every runtime's naming, and the id ->
// path cache over a directory tree made here (a cgroup's id is its
// directory's inode number, which any file system gives).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup_names.h"

using udpintercept::detail::CgroupNames;
using udpintercept::detail::container_id_of;
using udpintercept::detail::container_id_of_v1;

namespace {

const std::string kId = "3f1e0b6c1d2a4e5f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f";
const std::string kOther = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const std::string kPod = "kubepods-burstable-pod5c2b6e0a_0b1c_4d2e_9f3a_0123456789ab.slice";

std::uint64_t inode(const std::filesystem::path &p)
{
	struct stat st {};
	REQUIRE(stat(p.c_str(), &st) == 0);
	return st.st_ino;
}

// The events an inotify queue holds before it overflows (fs.inotify.max_queued_events).
std::size_t inotify_queue_depth()
{
	std::size_t queue = 16384;
	std::ifstream("/proc/sys/fs/inotify/max_queued_events") >> queue;
	REQUIRE(queue <= (1u << 20)); // a queue that deep would take too long to fill here
	return queue;
}

// A scratch directory, removed with what it holds.
class TempDir {
public:
	TempDir()
	{
		char tmpl[] = "/tmp/udpi-cgroup-test.XXXXXX";
		REQUIRE(mkdtemp(tmpl) != nullptr);
		path_ = tmpl;
	}
	~TempDir() { std::filesystem::remove_all(path_); }
	const std::filesystem::path &path() const { return path_; }

private:
	std::filesystem::path path_;
};

} // namespace

TEST_CASE("each runtime's cgroup names its container", "[cgroup]")
{
	const std::vector<std::pair<std::string, std::string>> named = {
		// Docker: systemd driver, cgroupfs driver, rootless.
		{"/system.slice/docker-" + kId + ".scope", kId},
		{"/docker/" + kId, kId},
		{"/user.slice/user-1000.slice/user@1000.service/docker-" + kId + ".scope", kId},
		// containerd through Kubernetes: systemd driver, cgroupfs driver; containerd's own
		// namespaces.
		{"/kubepods.slice/kubepods-burstable.slice/" + kPod + "/cri-containerd-" + kId + ".scope",
		 kId},
		{"/kubepods/burstable/pod5c2b6e0a-0b1c-4d2e-9f3a-0123456789ab/" + kId, kId},
		{"/kubepods/pod5c2b6e0a-0b1c-4d2e-9f3a-0123456789ab/" + kId, kId},
		{"/k8s.io/" + kId, kId},
		// CRI-O: systemd driver, cgroupfs driver.
		{"/kubepods.slice/kubepods-besteffort.slice/" + kPod + "/crio-" + kId + ".scope", kId},
		{"/kubepods/besteffort/pod5c2b6e0a-0b1c-4d2e-9f3a-0123456789ab/crio-" + kId, kId},
		// Podman: systemd driver (root and rootless), a split container, cgroupfs driver.
		{"/machine.slice/libpod-" + kId + ".scope", kId},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + kId + ".scope", kId},
		{"/machine.slice/libpod-" + kId + ".scope/container", kId},
		{"/libpod_parent/libpod-" + kId, kId},
		{"/libpod_parent/libpod-" + kId + "/ctr", kId},
		// The innermost container wins: Docker in Docker.
		{"/docker/" + kOther + "/docker/" + kId, kId},
		{"/system.slice/docker-" + kOther + ".scope/docker/" + kId, kId},
	};
	for (const auto &[path, id] : named) {
		INFO(path);
		CHECK(container_id_of(path) == id);
	}
}

TEST_CASE("cgroups that name no container give no id", "[cgroup]")
{
	for (const std::string &path : {
		     std::string(""),
		     std::string("/"),
		     std::string("/user.slice/user-1000.slice/session-3.scope"),
		     std::string("/system.slice/docker.service"),
		     std::string("/system.slice/containerd.service"),
		     // A pod's slice holds containers; it is not one.
		     "/kubepods.slice/kubepods-burstable.slice/" + kPod,
		     // The monitors of CRI-O and Podman run beside the container, not in it.
		     "/kubepods.slice/kubepods-besteffort.slice/" + kPod + "/crio-conmon-" + kId + ".scope",
		     "/machine.slice/libpod-conmon-" + kId + ".scope",
		     // Not 64 lowercase hex digits.
		     "/docker/" + kId.substr(1),
		     "/docker/" + kId + "0",
		     std::string("/docker/3F1E0B6C1D2A4E5F8A9B0C1D2E3F4A5B6C7D8E9F0A1B2C3D4E5F6A7B8C9D0E1F"),
		     "/docker/" + kId.substr(0, 63) + "g",
		     "/system.slice/podman-" + kId + ".scope",
		     "/system.slice/docker-" + kId + ".service",
		     std::string("/process_api/939f20ee71f6c5cea453c928061745ae"),
	     }) {
		INFO(path);
		CHECK(container_id_of(path) == "");
	}
}

TEST_CASE("a process's cgroup v1 paths name its container on hybrid hosts", "[cgroup]")
{
	CHECK(container_id_of_v1("12:pids:/docker/" + kId + "\n11:memory:/docker/" + kId + "\n0::/\n") ==
	      kId);
	CHECK(container_id_of_v1("9:name=systemd:/system.slice/docker-" + kId + ".scope\n1:cpu:/\n0::/") ==
	      kId);
	// The v2 line is the caller's business (it has the v2 path already).
	CHECK(container_id_of_v1("0::/docker/" + kId + "\n") == "");
	CHECK(container_id_of_v1("4:memory:/process_api/939f20ee71f6c5cea453c928061745ae\n1:cpu:/\n0::/\n") ==
	      "");
	CHECK(container_id_of_v1("") == "");
	CHECK(container_id_of_v1("garbage without colons\n3:pids") == "");
}

TEST_CASE("cgroup ids resolve to paths through one walk, cached", "[cgroup]")
{
	TempDir root;
	namespace fs = std::filesystem;
	const fs::path scope = root.path() / "system.slice" / ("docker-" + kId + ".scope");
	const fs::path session = root.path() / "user.slice" / "session-1.scope";
	fs::create_directories(scope);
	fs::create_directories(session);
	std::ofstream(root.path() / "cgroup.procs") << "";

	CgroupNames names(root.path().string() + "/", "/nonexistent", false);
	CHECK(names.unwatched_reason() == ""); // nothing looked at yet
	CHECK(names.path(inode(root.path())) == "/");
	CHECK(names.walks() == 1);
	CHECK(names.watches() == 5); // the root, two slices, two scopes
	CHECK(names.unwatched_reason() == "");
	CHECK(names.path(inode(scope)) == "/system.slice/docker-" + kId + ".scope");
	CHECK(names.path(inode(session)) == "/user.slice/session-1.scope");
	CHECK(names.walks() == 1); // the first walk learnt them all

	// A cgroup made later is learnt from its parent's watch, with what was made in it.
	REQUIRE(names.watching());
	const fs::path later = root.path() / "later";
	fs::create_directories(later / "a" / "b");
	fs::create_directories(session / "deeper");
	CHECK(names.path(inode(later / "a" / "b")) == "/later/a/b");
	CHECK(names.path(inode(later)) == "/later");
	CHECK(names.path(inode(session / "deeper")) == "/user.slice/session-1.scope/deeper");
	// ... and one made in a cgroup that was itself made later.
	fs::create_directory(later / "a" / "c");
	CHECK(names.path(inode(later / "a" / "c")) == "/later/a/c");
	CHECK(names.walks() == 1);
	CHECK(names.watches() == 10);

	// An id nobody has is not walked for while every directory is watched, and not looked
	// for again; nor is one of a cgroup made and removed before its lookup.
	const std::uint64_t unknown = 0x7fffffff12345678ull;
	CHECK(names.path(unknown) == "");
	CHECK(names.path(unknown) == "");
	fs::create_directory(root.path() / "brief");
	const std::uint64_t brief = inode(root.path() / "brief");
	fs::remove(root.path() / "brief");
	CHECK(names.path(brief) == "");
	CHECK(names.walks() == 1);
	CHECK(names.path(0) == "");
	CHECK(names.walks() == 1);

	// A removed cgroup keeps its path: a flow's close comes after its container is gone.
	// (Last: this file system, unlike cgroupfs, gives a removed directory's inode again.)
	const std::uint64_t scope_id = inode(scope);
	fs::remove(scope);
	CHECK(names.path(scope_id) == "/system.slice/docker-" + kId + ".scope");

	// Without a cgroup2 mount every path is unknown.
	CgroupNames none("", "/nonexistent", false);
	CHECK(none.path(inode(root.path())) == "");
	CHECK_FALSE(none.watching());
	CHECK(none.unwatched_reason() == "no cgroup v2 mount");
}

TEST_CASE("without watches every miss walks the tree", "[cgroup]")
{
	TempDir root;
	namespace fs = std::filesystem;
	CgroupNames names(root.path().string(), "/nonexistent", false, false);
	CHECK(names.path(inode(root.path())) == "/");
	CHECK_FALSE(names.watching());
	CHECK(names.watches() == 0);
	CHECK(names.unwatched_reason() == "watches are off");
	fs::create_directories(root.path() / "later" / "a");
	CHECK(names.path(inode(root.path() / "later" / "a")) == "/later/a");
	CHECK(names.path(inode(root.path() / "later")) == "/later");
	CHECK(names.walks() == 2); // the walk of the first miss learnt both
	const std::uint64_t unknown = 0x7fffffff12345678ull;
	CHECK(names.path(unknown) == "");
	CHECK(names.path(unknown) == ""); // looked for once
	CHECK(names.walks() == 3);
}

TEST_CASE("creations the watches lost are found by walking again", "[cgroup]")
{
	TempDir root;
	namespace fs = std::filesystem;
	CgroupNames names(root.path().string(), "/nonexistent", false);
	CHECK(names.path(inode(root.path())) == "/");
	REQUIRE(names.watching());

	// More creations than the inotify queue holds: it overflows.
	const std::size_t queue = inotify_queue_depth();
	for (std::size_t i = 0; i <= queue; i++)
		fs::create_directory(root.path() / std::to_string(i));
	names.refresh(); // reads the queue, and its overflow
	CHECK_FALSE(names.watching());
	CHECK(names.unwatched_reason() == "the inotify queue overflowed (fs.inotify.max_queued_events)");
	const std::string last = std::to_string(queue);
	CHECK(names.path(inode(root.path() / last)) == "/" + last);
	CHECK(names.walks() == 2);
	CHECK(names.watching()); // the walk watched every directory again
	CHECK(names.unwatched_reason() == "");
	CHECK(names.watches() == queue + 2);

	fs::create_directory(root.path() / "after");
	CHECK(names.path(inode(root.path() / "after")) == "/after");
	CHECK(names.walks() == 2);
}

// In a child: a user namespace of its own whose inotify watch limit is 3, and a tree of 5
// directories. 0: as the test expects; 77: no user namespace to be had; else the failed step.
int watch_limit_steps(const std::filesystem::path &root)
{
	namespace fs = std::filesystem;
	// No REQUIRE here: a failure would unwind into the child's own copy of the test run.
	const auto inode = [](const fs::path &p) {
		struct stat st {};
		return stat(p.c_str(), &st) == 0 ? st.st_ino : 0;
	};
	if (unshare(CLONE_NEWUSER) != 0)
		return 77;
	if (!(std::ofstream("/proc/sys/user/max_inotify_watches") << 3))
		return 2;
	for (const char *d : {"a/b", "c/d"})
		fs::create_directories(root / d);
	CgroupNames names(root.string(), "/nonexistent", false);
	if (names.path(inode(root / "a" / "b")) != "/a/b" || names.walks() != 1)
		return 3;
	if (names.watching() || names.watches() != 3)
		return 4;
	if (names.unwatched_reason() !=
	    "the user's inotify watches are used up (limit 3, the sysctl fs.inotify.max_user_watches)")
		return 5;
	// Some directory is unwatched: a cgroup made later costs a walk, as without watches.
	fs::create_directory(root / "c" / "d" / "e");
	if (names.path(inode(root / "c" / "d" / "e")) != "/c/d/e" || names.walks() != 2)
		return 6;
	return 0;
}

int watch_limit_child(const std::filesystem::path &root)
{
	try {
		return watch_limit_steps(root);
	} catch (...) {
		return 9;
	}
}

TEST_CASE("where the user's inotify watches run out, misses walk and say why", "[cgroup]")
{
	TempDir root;
	const pid_t child = fork();
	REQUIRE(child >= 0);
	if (child == 0)
		_exit(watch_limit_child(root.path()));
	int status = 0;
	REQUIRE(waitpid(child, &status, 0) == child);
	REQUIRE(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77 && geteuid() != 0) {
		WARN("no user namespace for an unprivileged user here: the watch limit is not tried");
		return;
	}
	CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("looked at now and then, the watches keep up with more creations than the queue holds", "[cgroup]")
{
	TempDir root;
	namespace fs = std::filesystem;
	CgroupNames names(root.path().string(), "/nonexistent", false);
	CHECK(names.path(inode(root.path())) == "/");
	// Cgroups come and go, none of them sending, as many as the queue holds (one creation each).
	const std::size_t queue = inotify_queue_depth();
	for (std::size_t i = 0; i < queue; i++) {
		const fs::path come = root.path() / ("come-" + std::to_string(i)); // unlike names: no merging
		fs::create_directory(come);
		fs::remove(come);
		if (i % 1024 == 0)
			names.refresh();
	}
	fs::create_directory(root.path() / "stays");
	names.refresh();
	CHECK(names.watching());
	CHECK(names.path(inode(root.path() / "stays")) == "/stays");
	CHECK(names.walks() == 1);
}

TEST_CASE("annotate fills cgroup and container_id, from v1 paths when v2 names none", "[cgroup]")
{
	TempDir root, proc;
	namespace fs = std::filesystem;
	const fs::path pod = root.path() / "kubepods.slice" / "kubepods-burstable.slice" / kPod;
	const fs::path scope = pod / ("cri-containerd-" + kId + ".scope");
	fs::create_directories(scope);
	fs::create_directories(proc.path() / "4242");
	std::ofstream(proc.path() / "4242" / "cgroup") << "5:pids:/docker/" << kOther << "\n0::/\n";

	udpintercept::Event e;
	e.pid = 4242;
	e.cgroup_id = inode(scope);
	CgroupNames hybrid(root.path().string(), proc.path().string(), true);
	hybrid.annotate(e);
	CHECK(e.cgroup ==
	      "/kubepods.slice/kubepods-burstable.slice/" + kPod + "/cri-containerd-" + kId + ".scope");
	CHECK(e.container_id == kId); // the v2 path names it: v1 is not read

	e.cgroup_id = inode(pod);
	hybrid.annotate(e);
	CHECK(e.cgroup == "/kubepods.slice/kubepods-burstable.slice/" + kPod);
	CHECK(e.container_id == kOther); // from the process's v1 paths

	// The process is gone: the answer it gave stands for its later snapshots.
	fs::remove_all(proc.path() / "4242");
	hybrid.annotate(e);
	CHECK(e.container_id == kOther);

	CgroupNames v2_only(root.path().string(), proc.path().string(), false);
	v2_only.annotate(e);
	CHECK(e.container_id == "");
	CHECK(e.cgroup == "/kubepods.slice/kubepods-burstable.slice/" + kPod);
}
