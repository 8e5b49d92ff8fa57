// SPDX-License-Identifier: LGPL-2.1-or-later
#include "kretprobe.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <linux/perf_event.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>
#include <udpintercept/error.h>

namespace udpintercept::detail {

namespace {

bool append(const std::string &path, const std::string &line)
{
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
	return fd && ::write(fd.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

} // namespace

std::string TracefsKretprobe::tracefs()
{
	// AT_EACCESS: as the effective ids and capabilities (CAP_DAC_OVERRIDE),
	// which access() would ignore for a process whose real user is not root.
	for (const char *dir : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"})
		if (faccessat(AT_FDCWD, (std::string(dir) + "/kprobe_events").c_str(), W_OK, AT_EACCESS) == 0)
			return dir;
	// Not mounted (a bare system): mount it where it belongs.
	if (mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) == 0 &&
	    faccessat(AT_FDCWD, "/sys/kernel/tracing/kprobe_events", W_OK, AT_EACCESS) == 0)
		return "/sys/kernel/tracing";
	return {};
}

int TracefsKretprobe::remove_stale(const std::string &tracefs)
{
	std::ifstream events(tracefs + "/kprobe_events");
	std::vector<std::string> stale;
	for (std::string line; std::getline(events, line);) {
		// "r1024:kprobes/udpi_PID_SERIAL_FUNCTION FUNCTION"
		const auto start = line.find("kprobes/udpi_");
		if (start == std::string::npos)
			continue;
		const std::string name = line.substr(start + 8, line.find(' ', start) - start - 8);
		const std::string pid = name.substr(5, name.find('_', 5) - 5);
		if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos)
			continue;
		if (::kill(std::stoi(pid), 0) == 0 || errno != ESRCH)
			continue;
		stale.push_back(name);
	}
	int removed = 0;
	for (const auto &name : stale)
		removed += append(tracefs + "/kprobe_events", "-:kprobes/" + name + "\n");
	return removed;
}

TracefsKretprobe::TracefsKretprobe(const std::string &function, int maxactive) : tracefs_(tracefs())
{
	static std::atomic<unsigned> serial{0};
	if (tracefs_.empty())
		throw Error("attach", ENOENT, "tracefs is not available for return probes");
	remove_stale(tracefs_);
	event_ = fmt::format("udpi_{}_{}_{}", getpid(), serial++, function);
	if (!append(tracefs_ + "/kprobe_events",
		    fmt::format("r{}:kprobes/{} {}\n", maxactive, event_, function)))
		throw Error("attach", errno,
			    fmt::format("cannot create a return probe on {} through {}/kprobe_events: {}",
					function, tracefs_, std::strerror(errno)));
	std::ifstream idfile(tracefs_ + "/events/kprobes/" + event_ + "/id");
	unsigned long long id = 0;
	if (!(idfile >> id)) {
		append(tracefs_ + "/kprobe_events", "-:kprobes/" + event_ + "\n");
		throw Error("attach", ENOENT, fmt::format("no id for the return probe on {}", function));
	}
	perf_event_attr attr{};
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_TRACEPOINT;
	attr.config = id;
	// A BPF program on a tracepoint event runs on every CPU; cpu 0 only owns the event.
	perf_ = UniqueFd(
		static_cast<int>(syscall(SYS_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)));
	if (!perf_) {
		const int err = errno;
		append(tracefs_ + "/kprobe_events", "-:kprobes/" + event_ + "\n");
		throw Error(
			"attach", err,
			fmt::format("cannot open the return probe on {}: {}", function, std::strerror(err)));
	}
}

int TracefsKretprobe::release_perf_fd() noexcept
{
	return perf_.release();
}

TracefsKretprobe::~TracefsKretprobe()
{
	perf_.reset();
	// The event can only go once nothing uses it: the BPF link was destroyed first.
	append(tracefs_ + "/kprobe_events", "-:kprobes/" + event_ + "\n");
}

} // namespace udpintercept::detail
