// SPDX-License-Identifier: LGPL-2.1-or-later
// Which BPF programs make up each backend, and how the kernel is probed for
// them. A table, not an if-ladder: adding a backend is adding a row.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include <udpintercept/options.h>

struct btf;

namespace udpintercept::detail {

/// What the kernel offers, found once per Tracer.
struct KernelFeatures {
	explicit KernelFeatures(const btf *vmlinux) : vmlinux_(vmlinux) {}
	/// A type of that name and BTF kind is in the kernel's BTF.
	bool has_type(std::string_view name, int kind) const;
	/// The kernel has a function of that name (a BTF FUNC: traceable, not inlined away).
	bool has_function(std::string_view name) const;
	/// The number of arguments of a raw tracepoint, or -1 if the kernel has none of that name.
	int tracepoint_arity(std::string_view name) const;

private:
	const btf *vmlinux_;
};

struct Availability {
	bool available = false;
	std::string why; ///< what was found, or what is missing
};

struct BackendSpec {
	Backend backend;
	/// Names of the BPF programs (functions in bpf/udpintercept.bpf.c) this backend loads.
	std::span<const std::string_view> programs;
	/// Decides from the kernel's BTF, never from its version number.
	Availability (*probe)(const KernelFeatures &);
	/// Programs whose hook is a cgroup: they attach to the cgroup v2 root.
	bool needs_cgroup;
	/// Hooks opened as perf events (kprobes), which kernel.perf_event_paranoid can refuse.
	bool needs_perf_events;
};

/// The tracepoint backend's two ways of counting sends (one of them is loaded):
/// one cgroup_skb/egress program, or sock_send_length with its helpers.
std::span<const std::string_view> egress_send_programs();
std::span<const std::string_view> tracepoint_send_programs();

/// The tracepoint backend's arrival hook: noting each received datagram's
/// sender, attached on demand (see Options::recv_peers_from_start).
std::span<const std::string_view> arrival_programs();

/// Every backend, in the order `auto` prefers them.
std::span<const BackendSpec> backend_table();

/// The row of `backend` (not Backend::automatic).
const BackendSpec &backend_spec(Backend backend);

/**
 * Whether programs of `type` (attached as `attach`) may call `helper` on this
 * kernel: a one-call program is loaded and the verifier's verdict read.
 * (libbpf 1.1's probe takes newer kernels' "program of this type cannot use
 * helper" for a yes.) Needs CAP_BPF.
 */
bool helper_allowed(int type, int attach, int helper);

/// Where cgroup v2 is mounted, from /proc/self/mounts; empty if nowhere.
std::string cgroup2_mount();

} // namespace udpintercept::detail
