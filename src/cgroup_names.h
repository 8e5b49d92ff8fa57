// SPDX-License-Identifier: LGPL-2.1-or-later
// From the cgroup id the kernel reports to the cgroup path and the container
// it names. Cgroups and processes are short-lived: a flow's first snapshot
// comes at once, so resolving then and keeping the answer gives later
// snapshots (the close of a container that is gone) the same names.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <udpintercept/event.h>

#include "fd.h"

namespace udpintercept::detail {

/**
 * The bare 64-hex container id a cgroup path names, or "" if it names none.
 * The innermost component that names one wins (a container in a pod, a
 * podman container's `container` sub-cgroup): `docker-<id>.scope`,
 * `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
 * (systemd drivers; the `-conmon-` scopes hold a runtime monitor, not the
 * container), `libpod-<id>` and `crio-<id>` (Podman's and CRI-O's cgroupfs
 * drivers) and a component that is the id itself (the cgroupfs drivers of
 * Docker, `/docker/<id>`, of Kubernetes, `/kubepods/burstable/pod<uid>/<id>`,
 * and containerd's `/<namespace>/<id>`).
 */
std::string container_id_of(std::string_view path);

/**
 * The container id named by the cgroup v1 lines of a /proc/PID/cgroup text
 * ("hierarchy:controllers:path"; the v2 line "0::path" is skipped), or "".
 */
std::string container_id_of_v1(std::string_view proc_cgroup);

/**
 * Cgroup v2 ids to paths (relative to the cgroup2 mount, "/" for its root)
 * and container ids. An id is the inode number of its directory. The first
 * lookup walks the tree, which learns every cgroup there is and watches each
 * directory with inotify; from then on a cgroup made later is learnt from
 * its parent's IN_CREATE, one directory read, not another walk. An id that
 * is then still unknown belonged to a cgroup already removed, and ids are
 * never reused, so it is not looked for again. Where a watch cannot be had
 * (no inotify, the user's watches used up, the event queue overflowed),
 * misses walk the tree again until a walk watches every directory. Not
 * thread-safe: the tracer's thread owns it.
 */
class CgroupNames {
public:
	/**
	 * `root`: the cgroup2 mount (empty: paths are unknown). `proc`: where
	 * /proc is. `v1_fallback`: on hosts with cgroup v1 hierarchies (hybrid
	 * ones, where container runtimes may use v1 only), a process whose v2
	 * path names no container is looked up in its v1 paths. `watch`: learn
	 * new cgroups from inotify watches (false: every miss walks the tree).
	 */
	CgroupNames(std::string root, std::string proc, bool v1_fallback, bool watch = true);

	/// For this machine: its cgroup2 mount, /proc, and v1 if mounted.
	CgroupNames();

	/// The path of cgroup `id`, "" if unknown.
	const std::string &path(std::uint64_t id);

	/// Fills `event.cgroup` and `event.container_id` from its cgroup id and pid.
	void annotate(Event &event);

	/**
	 * Learns the cgroups made since the last look, as a miss would: called
	 * now and then (the tracer's sweeps), it keeps the inotify queue from
	 * filling (and overflowing, which would cost a walk) on a machine whose
	 * cgroups come and go faster than new ones send.
	 */
	void refresh();

	/// Walks of the whole tree so far.
	std::uint64_t walks() const noexcept { return walks_; }

	/// Whether every directory of the tree is watched, so a miss needs no walk.
	bool watching() const noexcept { return watching_; }

	/// Directories watched now.
	std::size_t watches() const noexcept { return watched_.size(); }

	/// Why the tree is not watched whole ("" while it is, or before the first walk).
	const std::string &unwatched_reason() const noexcept { return unwatched_reason_; }

private:
	struct V1Entry {
		std::string container_id;
		std::chrono::steady_clock::time_point read_at;
	};

	void walk();
	int walk_from(const std::string &rel, std::unordered_map<std::uint64_t, std::string> &found);
	void catch_up();
	void stop_watching(std::string reason);
	const std::string &v1_container(std::uint32_t pid, std::uint64_t cgroup_id);

	std::string root_;
	std::string proc_;
	bool v1_fallback_;
	bool watch_;
	std::unordered_map<std::uint64_t, std::string> paths_;
	std::unordered_set<std::uint64_t> gone_;
	// (pid, cgroup id) -> the container of the process's v1 paths, re-read
	// when older than a second so that a reused pid is not misnamed.
	std::unordered_map<std::uint64_t, std::unordered_map<std::uint32_t, V1Entry>> v1_;
	std::size_t v1_entries_ = 0;
	std::uint64_t walks_ = 0;
	// inotify: each watched directory's path by watch descriptor.
	UniqueFd inotify_;
	std::unordered_map<int, std::string> watched_;
	bool watching_ = false;
	std::string unwatched_reason_;
};

/// Whether /proc/self/cgroup lists any cgroup v1 hierarchy.
bool has_cgroup_v1();

} // namespace udpintercept::detail
