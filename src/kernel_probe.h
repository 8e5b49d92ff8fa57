// SPDX-License-Identifier: LGPL-2.1-or-later
// What the running kernel offers, found by probing its BTF and asking the
// verifier, never by its version number.
#pragma once

#include <string>
#include <string_view>

struct btf;

namespace udpintercept::detail {

/// What the kernel's BTF says, looked up by name.
class KernelFeatures {
public:
	explicit KernelFeatures(const btf *vmlinux) : vmlinux_(vmlinux) {}
	/// A type of that name and BTF kind is in the kernel's BTF.
	bool has_type(std::string_view name, int kind) const;
	/// The kernel has a function of that name (a BTF FUNC: traceable, not inlined away).
	bool has_function(std::string_view name) const;
	/// The number of arguments of a raw tracepoint, or -1 if the kernel has none of that name.
	int tracepoint_arity(std::string_view name) const;
	/// The BTF id of the kernel function of that name, or a negative errno.
	int function_id(std::string_view name) const;

private:
	const btf *vmlinux_;
};

struct Availability {
	bool available = false;
	std::string why; ///< what was found, or what is missing
};

/// Whether each backend's hooks exist on this kernel (the trial load decides the rest).
Availability probe_fentry_backend(const KernelFeatures &kernel);
Availability probe_kprobe_backend(const KernelFeatures &kernel);
Availability probe_tracepoint_backend(const KernelFeatures &kernel);

/**
 * Whether the kernel lets this process load a BPF trampoline program (an
 * fexit program on udp_sendmsg that only returns): 0, or the errno of the
 * refusal (a security policy, the lockdown, an architecture without
 * trampolines). A millisecond, where a refused trial load of the whole
 * object costs tens (its maps are made before its programs are refused).
 */
int trampoline_refusal(const KernelFeatures &kernel);

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
