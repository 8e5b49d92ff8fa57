// SPDX-License-Identifier: LGPL-2.1-or-later
#include "privileges.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/perf_event.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <udpintercept/error.h>

#include "kernel_probe.h"

namespace udpintercept::detail {

namespace {

struct CapSets {
	__user_cap_data_struct data[2]{};
	bool ok = false;
};

CapSets current_caps()
{
	CapSets c;
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	c.ok = syscall(SYS_capget, &hdr, c.data) == 0;
	return c;
}

bool effective(const CapSets &c, int cap)
{
	return c.data[cap / 32].effective & (1u << (cap % 32));
}

constexpr std::array<std::pair<int, const char *>, 6> kNames = {{
	{kCapDacOverride, "CAP_DAC_OVERRIDE"},
	{kCapNetAdmin, "CAP_NET_ADMIN"},
	{kCapSysAdmin, "CAP_SYS_ADMIN"},
	{kCapSysResource, "CAP_SYS_RESOURCE"},
	{kCapPerfmon, "CAP_PERFMON"},
	{kCapBpf, "CAP_BPF"},
}};

std::string read_first_line(const char *path)
{
	std::ifstream in(path);
	std::string line;
	std::getline(in, line);
	return line;
}

// Runs `probe` in a child process and returns its exit status (-1 if it
// could not run). The child makes raw system calls only, so forking a
// process with other threads is safe.
template <typename F> int in_child(F probe)
{
	const pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(probe());
	int status = 0;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Whether this kernel charges BPF memory to RLIMIT_MEMLOCK. Memory cgroup
// accounting replaced the rlimit in Linux 5.11 ("bpf: eliminate rlimit-based
// memory accounting"), the release that brought bpf_ktime_get_coarse_ns(): a
// kernel that knows the helper does not charge the rlimit, which a
// two-instruction load tells. Otherwise (an older kernel, or one that refuses
// every load) a one-entry map is created under a limit of zero, in a child
// (a fork() cost an auto start 2.5-4.5 ms beside the maps being made).
bool kernel_charges_memlock()
{
	if (helper_allowed(BPF_PROG_TYPE_SOCKET_FILTER, 0, BPF_FUNC_ktime_get_coarse_ns))
		return false;
	return in_child([] {
		       const rlimit zero{0, 0};
		       if (syscall(SYS_prlimit64, 0, RLIMIT_MEMLOCK, &zero, nullptr) != 0)
			       return 2;
		       bpf_attr attr{};
		       attr.map_type = BPF_MAP_TYPE_ARRAY;
		       attr.key_size = 4;
		       attr.value_size = 8;
		       attr.max_entries = 1;
		       const long fd = sys_bpf(BPF_MAP_CREATE, &attr);
		       if (fd >= 0)
			       return 0;
		       return errno == EPERM ? 1 : 2;
	       }) == 1;
}

std::string kib(rlim_t bytes)
{
	return bytes == RLIM_INFINITY ? "unlimited" : fmt::format("{} KiB", bytes / 1024);
}

} // namespace

long sys_bpf(int cmd, bpf_attr *attr) noexcept
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

bool has_capability(int cap)
{
	const CapSets c = current_caps();
	return c.ok && effective(c, cap);
}

std::vector<std::string> missing_capabilities(const PrivilegeNeeds &needs)
{
	const CapSets c = current_caps();
	if (!c.ok)
		return {};
	const bool admin = effective(c, kCapSysAdmin);
	std::vector<std::string> missing;
	if (!admin && !effective(c, kCapBpf))
		missing.emplace_back("CAP_BPF");
	if (!admin && !effective(c, kCapPerfmon))
		missing.emplace_back("CAP_PERFMON");
	if (needs.cgroup_programs && !effective(c, kCapNetAdmin))
		missing.emplace_back("CAP_NET_ADMIN");
	if (needs.perf_events && !admin && !perf_events_denial().empty())
		missing.emplace_back("CAP_SYS_ADMIN");
	return missing;
}

void check_privileges(std::string_view backend, const PrivilegeNeeds &needs)
{
	auto missing = missing_capabilities(needs);
	if (missing.empty())
		return;
	const auto admin = std::find(missing.begin(), missing.end(), "CAP_SYS_ADMIN");
	const bool perf_events = admin != missing.end();
	if (perf_events)
		missing.erase(admin);
	std::string message =
		"udpintercept needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (run as root, or grant "
		"those capabilities)";
	if (!missing.empty())
		message +=
			fmt::format("; this process lacks {} (the {} backend needs CAP_BPF{} CAP_PERFMON{})",
				    fmt::join(missing, ", "), backend, needs.cgroup_programs ? "," : " and",
				    needs.cgroup_programs ? " and CAP_NET_ADMIN" : "");
	if (perf_events)
		message += fmt::format("; the {} backend also needs CAP_SYS_ADMIN on this kernel, for perf "
				       "events: {}",
				       backend, perf_events_denial());
	throw Error("privileges", EPERM, message);
}

std::string perf_events_denial()
{
	perf_event_attr attr{};
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_SOFTWARE;
	attr.config = PERF_COUNT_SW_DUMMY;
	attr.disabled = 1;
	attr.exclude_kernel = 1;
	attr.exclude_hv = 1;
	const long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (fd >= 0) {
		close(static_cast<int>(fd));
		return {};
	}
	if (errno != EACCES && errno != EPERM)
		return {}; // not a question of privileges: the attach will say
	const std::string paranoid = read_first_line("/proc/sys/kernel/perf_event_paranoid");
	return fmt::format("kernel.perf_event_paranoid is {}, and this kernel then refuses perf events to "
			   "processes without CAP_SYS_ADMIN: lower it to 2 (sysctl "
			   "kernel.perf_event_paranoid=2) or run as root",
			   paranoid.empty() ? "unknown" : paranoid);
}

void raise_memlock_limit() noexcept
{
	rlimit rl{};
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_MEMLOCK, &rl);
	}
}

std::string explain_denial()
{
	rlimit rl{};
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && kernel_charges_memlock())
		return fmt::format(
			"this kernel charges BPF maps and programs to RLIMIT_MEMLOCK (kernels before 5.11) "
			"and the limit is {} (hard limit {}): raise it (ulimit -l unlimited; "
			"LimitMEMLOCK=infinity in a systemd unit) or grant CAP_SYS_RESOURCE",
			kib(rl.rlim_cur), kib(rl.rlim_max));
	// "none [integrity] confidentiality": the selected mode is bracketed.
	const std::string lockdown = read_first_line("/sys/kernel/security/lockdown");
	const auto open = lockdown.find('['), close = lockdown.find(']');
	if (open != std::string::npos && close != std::string::npos && close > open &&
	    lockdown.substr(open + 1, close - open - 1) != "none")
		return fmt::format("the kernel is locked down ({} mode), which forbids it",
				   lockdown.substr(open + 1, close - open - 1));
	if (const std::string perf = perf_events_denial(); !perf.empty())
		return "perf events are refused: " + perf;
	return "a kernel lockdown or security policy (an LSM or seccomp) forbids it";
}

std::string tracefs_denial()
{
	std::string dir;
	{
		std::ifstream mounts("/proc/self/mounts");
		std::string line;
		while (std::getline(mounts, line)) {
			std::istringstream fields(line);
			std::string dev, mnt, type;
			fields >> dev >> mnt >> type;
			if (type == "tracefs") {
				dir = mnt;
				break;
			}
		}
	}
	if (dir.empty())
		return has_capability(kCapSysAdmin)
			       ? "tracefs is not mounted and could not be mounted"
			       : "tracefs is not mounted, and mounting it needs CAP_SYS_ADMIN (mount -t "
				 "tracefs nodev /sys/kernel/tracing)";
	const std::string events = dir + "/kprobe_events";
	// AT_EACCESS: as the effective ids and capabilities (CAP_DAC_OVERRIDE), which
	// access() would ignore for a process whose real user is not root.
	if (faccessat(AT_FDCWD, events.c_str(), W_OK, AT_EACCESS) == 0)
		return {};
	if (errno == EROFS)
		return fmt::format("{} is read-only in this mount namespace (as systemd's "
				   "ProtectKernelTunables= makes it)",
				   dir);
	if (errno == ENOENT)
		return fmt::format("{} has no kprobe_events (a kernel without CONFIG_KPROBE_EVENTS)", events);
	return fmt::format("{} is not writable by this process (it is root's: run as root or grant "
			   "CAP_DAC_OVERRIDE)",
			   events);
}

bool maps_usable_without_cap_bpf(int map_fd)
{
	// Only a kernel that ignores the sysctl while it is set answers for good.
	const std::string disabled = read_first_line("/proc/sys/kernel/unprivileged_bpf_disabled");
	if (disabled.empty() || disabled == "0")
		return false;
	return in_child([map_fd] {
		       __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
		       __user_cap_data_struct none[2]{};
		       if (syscall(SYS_capset, &hdr, none) != 0)
			       return 2;
		       alignas(8) unsigned char key[512];
		       bpf_attr attr{};
		       attr.map_fd = static_cast<__u32>(map_fd);
		       attr.key = 0;
		       attr.next_key = reinterpret_cast<__u64>(key);
		       if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) == 0 || errno == ENOENT)
			       return 0;
		       return errno == EPERM ? 1 : 2;
	       }) == 0;
}

void keep_only_capabilities(const std::vector<int> &caps)
{
	const CapSets now = current_caps();
	if (!now.ok)
		throw Error("privileges", errno, "cannot read this thread's capabilities");
	__user_cap_data_struct next[2]{};
	for (int cap : caps) {
		const std::uint32_t bit = 1u << (cap % 32);
		next[cap / 32].effective |= now.data[cap / 32].effective & bit;
		next[cap / 32].permitted |= now.data[cap / 32].permitted & bit;
		next[cap / 32].inheritable |= now.data[cap / 32].inheritable & bit;
	}
	// Ambient capabilities would pass to programs this one runs; EINVAL: a
	// kernel before 4.3 has none.
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		throw Error("privileges", errno,
			    fmt::format("cannot clear the ambient capabilities: {}", std::strerror(errno)));
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	if (syscall(SYS_capset, &hdr, next) != 0)
		throw Error("privileges", errno,
			    fmt::format("cannot drop capabilities: {}", std::strerror(errno)));
}

std::string effective_capability_names()
{
	const CapSets c = current_caps();
	std::vector<std::string> names;
	for (const auto &[cap, name] : kNames)
		if (c.ok && effective(c, cap))
			names.emplace_back(name);
	return names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "));
}

} // namespace udpintercept::detail
