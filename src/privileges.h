// SPDX-License-Identifier: LGPL-2.1-or-later
// What the tracer needs from the process: capabilities, RLIMIT_MEMLOCK on
// older kernels, tracefs for return probes; and what it can give back once
// attached.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

union bpf_attr;

namespace udpintercept::detail {

/// The bpf() system call made directly, not through libbpf: for a forked
/// child, which may make raw system calls only, and for a thread beside
/// libbpf's work (its lazily cached feature probes are not for two threads).
long sys_bpf(int cmd, bpf_attr *attr) noexcept;

// Capability numbers of linux/capability.h: CAP_PERFMON and CAP_BPF arrived
// in Linux 5.8, after the headers some C libraries still ship.
constexpr int kCapDacOverride = 1;
constexpr int kCapNetAdmin = 12;
constexpr int kCapSysAdmin = 21;
constexpr int kCapSysResource = 24;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

/// Whether the calling thread has `cap` in its effective set.
bool has_capability(int cap);

/// What a backend asks of the kernel that takes privileges.
struct PrivilegeNeeds {
	bool cgroup_programs = false; ///< attached to the cgroup v2 root: CAP_NET_ADMIN
	bool perf_events = false;     ///< kprobes, opened as perf events
};

/**
 * What a backend needs that the calling thread lacks, by name: CAP_BPF and
 * CAP_PERFMON (both stood in for by CAP_SYS_ADMIN, as the kernel allows) to
 * load tracing programs, CAP_NET_ADMIN for cgroup programs, and CAP_SYS_ADMIN
 * for perf events where kernel.perf_event_paranoid keeps them from
 * CAP_PERFMON (see perf_events_denial()). Empty if the capabilities cannot be
 * read (the kernel then has its say).
 */
std::vector<std::string> missing_capabilities(const PrivilegeNeeds &needs);

/// Throws Error (stage "privileges", EPERM) naming what `backend` lacks, if anything.
void check_privileges(std::string_view backend, const PrivilegeNeeds &needs);

/**
 * Why this process may not open perf events, or empty if it may: a
 * kernel.perf_event_paranoid above 2 with the patch Debian's (and Android's)
 * kernels carry, which then refuses every perf event to a process without
 * CAP_SYS_ADMIN (measured: Debian's 5.10 and 6.1 refuse them with
 * CAP_PERFMON). Found by opening a software event on this process, which
 * level 2 allows to anyone.
 */
std::string perf_events_denial();

/**
 * Raises RLIMIT_MEMLOCK's soft limit to its hard limit, which needs no
 * privilege. Kernels before 5.11 charge every BPF map and program to it (and
 * libbpf's own raise to infinity needs CAP_SYS_RESOURCE); later kernels
 * charge the memory cgroup instead and ignore it.
 */
void raise_memlock_limit() noexcept;

/**
 * Why the kernel refused (EPERM or EACCES) although the process holds the
 * capabilities: RLIMIT_MEMLOCK on a kernel that charges BPF memory to it
 * (tried in a child process), the kernel lockdown, kernel.perf_event_paranoid,
 * else a security policy. One sentence that says what to do.
 */
std::string explain_denial();

/**
 * Why return probes cannot be made through tracefs's kprobe_events (where
 * they get room for many concurrent calls): not writable by this process,
 * mounted read-only, or not mounted and no CAP_SYS_ADMIN to mount it.
 * Empty if kprobe_events is writable.
 */
std::string tracefs_denial();

/**
 * Whether this kernel lets a process without CAP_BPF use BPF map fds it
 * already holds (tried in a child that drops every capability and looks up
 * the first key of `map_fd`). Kernels before 6.5 refuse every bpf() call
 * without it while kernel.unprivileged_bpf_disabled is set; so a yes counts
 * only while that sysctl is set, for the admin could set it later.
 */
bool maps_usable_without_cap_bpf(int map_fd);

/**
 * Keeps only `caps` in the calling thread's effective, permitted and
 * inheritable sets and empties its ambient set. Capabilities are per
 * thread: threads made earlier keep theirs. Throws Error on failure.
 */
void keep_only_capabilities(const std::vector<int> &caps);

/// The names of the calling thread's effective capabilities among those above, for logs.
std::string effective_capability_names();

} // namespace udpintercept::detail
