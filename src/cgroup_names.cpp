// SPDX-License-Identifier: LGPL-2.1-or-later
#include "cgroup_names.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kernel_probe.h"

namespace udpintercept::detail {

namespace {

constexpr std::size_t kIdLength = 64;
// Bounds on what is remembered: far more cgroups than a machine holds at
// once, so only a long history of removed ones is ever forgotten.
constexpr std::size_t kMaxPaths = 1 << 16;
constexpr std::size_t kMaxGone = 1 << 16;
constexpr std::size_t kMaxV1Entries = 1 << 14;
constexpr auto kV1Fresh = std::chrono::seconds(1);
// A cgroup is made with mkdir(); cgroup v2 has no rename, but a move is cheap to hear.
constexpr std::uint32_t kWatchMask = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW;

bool is_id(std::string_view s)
{
	if (s.size() != kIdLength)
		return false;
	for (char c : s)
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	return true;
}

// One path component: the id it names, or "".
std::string_view id_of_component(std::string_view c)
{
	// systemd drivers make a transient unit of the container: <runtime>-<id>.scope.
	constexpr std::string_view kScope = ".scope";
	if (c.size() > kScope.size() && c.substr(c.size() - kScope.size()) == kScope)
		c.remove_suffix(kScope.size());
	if (is_id(c))
		return c; // cgroupfs drivers of Docker, containerd and Kubernetes: the id alone
	// cgroupfs drivers of Podman and CRI-O keep the runtime's prefix.
	static constexpr std::array<std::string_view, 4> kRuntimes = {"docker-", "cri-containerd-", "crio-",
								      "libpod-"};
	for (std::string_view prefix : kRuntimes)
		if (c.size() == prefix.size() + kIdLength && c.substr(0, prefix.size()) == prefix &&
		    is_id(c.substr(prefix.size())))
			return c.substr(prefix.size());
	return {};
}

// Why inotify_add_watch() failed, in an operator's words.
std::string watch_failure(int err)
{
	if (err != ENOSPC)
		return fmt::format("inotify_add_watch: {}", std::strerror(err));
	// The limit of this user namespace: fs.inotify.max_user_watches in the initial one.
	std::ifstream in("/proc/sys/user/max_inotify_watches");
	std::string limit;
	in >> limit;
	return fmt::format("the user's inotify watches are used up (limit {}, the sysctl "
			   "fs.inotify.max_user_watches)",
			   limit.empty() ? "unknown" : limit);
}

} // namespace

std::string container_id_of(std::string_view path)
{
	while (!path.empty()) {
		const auto slash = path.rfind('/');
		const std::string_view last = slash == std::string_view::npos ? path : path.substr(slash + 1);
		if (const auto id = id_of_component(last); !id.empty())
			return std::string(id);
		if (slash == std::string_view::npos)
			break;
		path = path.substr(0, slash);
	}
	return {};
}

std::string container_id_of_v1(std::string_view proc_cgroup)
{
	while (!proc_cgroup.empty()) {
		const auto nl = proc_cgroup.find('\n');
		std::string_view line = proc_cgroup.substr(0, nl);
		proc_cgroup = nl == std::string_view::npos ? std::string_view{} : proc_cgroup.substr(nl + 1);
		const auto first = line.find(':');
		const auto second = first == std::string_view::npos ? first : line.find(':', first + 1);
		if (second == std::string_view::npos || line.substr(0, first) == "0")
			continue;
		if (auto id = container_id_of(line.substr(second + 1)); !id.empty())
			return id;
	}
	return {};
}

bool has_cgroup_v1()
{
	std::ifstream in("/proc/self/cgroup");
	std::string line;
	while (std::getline(in, line))
		if (line.rfind("0:", 0) != 0 && !line.empty())
			return true;
	return false;
}

CgroupNames::CgroupNames(std::string root, std::string proc, bool v1_fallback, bool watch)
    : root_(std::move(root)), proc_(std::move(proc)), v1_fallback_(v1_fallback), watch_(watch)
{
	while (root_.size() > 1 && root_.back() == '/')
		root_.pop_back();
}

CgroupNames::CgroupNames() : CgroupNames(cgroup2_mount(), "/proc", has_cgroup_v1()) {}

void CgroupNames::stop_watching(std::string reason)
{
	watching_ = false;
	if (unwatched_reason_.empty())
		unwatched_reason_ = std::move(reason);
}

void CgroupNames::walk()
{
	walks_++;
	watching_ = false;
	unwatched_reason_.clear();
	if (root_.empty()) {
		unwatched_reason_ = "no cgroup v2 mount";
		return;
	}
	if (watch_ && !inotify_) {
		inotify_.reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
		if (!inotify_)
			unwatched_reason_ = fmt::format("inotify_init1: {}", std::strerror(errno));
	} else if (!watch_) {
		unwatched_reason_ = "watches are off";
	}
	// Every directory there is gets its watch (the same descriptor if it had one): a
	// removal whose IN_IGNORED a full queue lost leaves nothing behind.
	watched_.clear();
	std::unordered_map<std::uint64_t, std::string> found;
	const int watch_errno = walk_from("", found);
	watching_ = inotify_ && watch_errno == 0 && !found.empty();
	if (watch_errno != 0)
		unwatched_reason_ = watch_failure(watch_errno);
	else if (found.empty() && unwatched_reason_.empty())
		unwatched_reason_ = fmt::format("cannot read {}", root_);
	if (paths_.size() + found.size() > kMaxPaths)
		paths_.clear(); // forget removed cgroups, keep what exists now
	for (auto &[id, path] : found)
		paths_.insert_or_assign(id, std::move(path));
}

// 0 if every directory it found is watched (or watches are off), else the errno of the first
// that could not be.
int CgroupNames::walk_from(const std::string &rel, std::unordered_map<std::uint64_t, std::string> &found)
{
	int watch_errno = 0;
	// Depth first with an explicit stack: the depth is the tree's, not ours to trust.
	std::vector<std::pair<UniqueFd, std::string>> stack;
	UniqueFd top(::open((root_ + rel).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	struct stat st {};
	if (!top || fstat(top.get(), &st) != 0)
		return 0; // removed already: nothing there to watch
	found[st.st_ino] = rel.empty() ? "/" : rel;
	stack.emplace_back(std::move(top), rel);
	while (!stack.empty()) {
		auto [fd, dir_rel] = std::move(stack.back());
		stack.pop_back();
		// Watched before it is read: a cgroup made meanwhile is in one or the other.
		if (inotify_) {
			const int wd =
				inotify_add_watch(inotify_.get(), (root_ + dir_rel).c_str(), kWatchMask);
			if (wd >= 0)
				watched_.insert_or_assign(wd, dir_rel);
			else if (errno != ENOENT && errno != ENOTDIR && watch_errno == 0)
				watch_errno = errno; // ENOSPC: the user's watches are used up
		}
		DIR *dir = fdopendir(fd.get());
		if (!dir)
			continue;
		fd.release(); // the DIR owns it now
		while (const dirent *d = readdir(dir)) {
			if (d->d_type != DT_DIR && d->d_type != DT_UNKNOWN)
				continue;
			const std::string_view name = d->d_name;
			if (name == "." || name == "..")
				continue;
			// A cgroup removed while we look is simply not found.
			UniqueFd child(openat(dirfd(dir), d->d_name,
					      O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
			if (!child || fstat(child.get(), &st) != 0)
				continue;
			std::string path = dir_rel + "/" + std::string(name);
			found[st.st_ino] = path;
			stack.emplace_back(std::move(child), std::move(path));
		}
		closedir(dir);
	}
	return watch_errno;
}

void CgroupNames::catch_up()
{
	alignas(inotify_event) char buf[16384];
	std::unordered_map<std::uint64_t, std::string> found;
	ssize_t n;
	while ((n = read(inotify_.get(), buf, sizeof buf)) > 0) {
		for (ssize_t off = 0; off < n;) {
			const auto *ev = reinterpret_cast<const inotify_event *>(buf + off);
			off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
			if (ev->mask & IN_Q_OVERFLOW) {
				// Creations were lost: only a walk finds them.
				stop_watching("the inotify queue overflowed (fs.inotify.max_queued_events)");
				continue;
			}
			const auto it = watched_.find(ev->wd);
			if (it == watched_.end())
				continue;
			if (ev->mask & IN_IGNORED) {
				watched_.erase(it); // the directory is gone
				continue;
			}
			if (!(ev->mask & IN_ISDIR) || ev->len == 0)
				continue;
			// A cgroup made under one watched: it (and what was made in it before its watch).
			if (const int err = walk_from(it->second + "/" + ev->name, found); err != 0)
				stop_watching(watch_failure(err));
		}
	}
	if (paths_.size() + found.size() > kMaxPaths) {
		walk(); // forgets removed cgroups and learns the tree again
		return;
	}
	for (auto &[id, path] : found)
		paths_.insert_or_assign(id, std::move(path));
}

void CgroupNames::refresh()
{
	if (watching_)
		catch_up();
}

const std::string &CgroupNames::path(std::uint64_t id)
{
	static const std::string kUnknown;
	if (id == 0)
		return kUnknown;
	if (auto it = paths_.find(id); it != paths_.end())
		return it->second;
	if (gone_.count(id))
		return kUnknown;
	// Watching every directory, a cgroup the watches did not report is gone.
	if (watching_)
		catch_up();
	if (!watching_)
		walk();
	if (auto it = paths_.find(id); it != paths_.end())
		return it->second;
	if (gone_.size() >= kMaxGone)
		gone_.clear();
	gone_.insert(id);
	return kUnknown;
}

const std::string &CgroupNames::v1_container(std::uint32_t pid, std::uint64_t cgroup_id)
{
	const auto now = std::chrono::steady_clock::now();
	auto &entry = v1_[cgroup_id][pid];
	const bool fresh =
		entry.read_at != std::chrono::steady_clock::time_point{} && now - entry.read_at < kV1Fresh;
	if (fresh)
		return entry.container_id;
	if (entry.read_at == std::chrono::steady_clock::time_point{})
		v1_entries_++;
	std::ifstream in(proc_ + "/" + std::to_string(pid) + "/cgroup");
	if (in) {
		std::ostringstream text;
		text << in.rdbuf();
		entry.container_id = container_id_of_v1(text.str());
	}
	// A process that has exited keeps the answer it had: its flows' last
	// snapshots come after it is gone.
	entry.read_at = now;
	if (v1_entries_ > kMaxV1Entries) {
		std::string keep = entry.container_id;
		v1_.clear();
		v1_entries_ = 1;
		auto &again = v1_[cgroup_id][pid];
		again = V1Entry{std::move(keep), now};
		return again.container_id;
	}
	return entry.container_id;
}

void CgroupNames::annotate(Event &event)
{
	event.cgroup = path(event.cgroup_id);
	event.container_id = container_id_of(event.cgroup);
	if (event.container_id.empty() && v1_fallback_ && event.pid != 0)
		event.container_id = v1_container(event.pid, event.cgroup_id);
}

} // namespace udpintercept::detail
