// SPDX-License-Identifier: LGPL-2.1-or-later
// Return probes with room for many concurrent calls.
#pragma once

#include <string>

#include "fd.h"

namespace udpintercept::detail {

/**
 * A kretprobe created through tracefs's kprobe_events with an explicit
 * maxactive. Those created through the perf kprobe PMU (what libbpf does)
 * get the kernel's default: num_possible_cpus() on kernels built without
 * CONFIG_PREEMPTION, so a third thread inside udp_sendmsg() at once, asleep
 * on a full send buffer say, loses its return silently.
 */
class TracefsKretprobe {
public:
	/// Creates the probe; throws Error (stage "attach") on failure.
	TracefsKretprobe(const std::string &function, int maxactive);
	~TracefsKretprobe();
	TracefsKretprobe(const TracefsKretprobe &) = delete;
	TracefsKretprobe &operator=(const TracefsKretprobe &) = delete;

	/// A perf event of the probe, to attach a BPF program to (ownership passes with it).
	int release_perf_fd() noexcept;

	/// Where tracefs is, mounting it if needed; empty if it cannot be had.
	static std::string tracefs();

	/**
	 * Removes the probes of tracers that died without removing theirs (a
	 * SIGKILL leaves them: only their owner removes them, at its stop). A
	 * probe whose owner's pid is alive stays, and one still in use cannot
	 * be removed (EBUSY). Returns how many were removed.
	 */
	static int remove_stale(const std::string &tracefs);

private:
	std::string tracefs_;
	std::string event_;
	UniqueFd perf_;
};

} // namespace udpintercept::detail
