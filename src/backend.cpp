// SPDX-License-Identifier: LGPL-2.1-or-later
#include "backend.h"

#include <array>
#include <bpf/btf.h>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace udpintercept::detail {

bool KernelFeatures::has_type(std::string_view name, int kind) const
{
	return vmlinux_ && btf__find_by_name_kind(vmlinux_, std::string(name).c_str(), kind) >= 0;
}

bool KernelFeatures::has_function(std::string_view name) const
{
	return has_type(name, BTF_KIND_FUNC);
}

std::string cgroup2_mount()
{
	std::ifstream mounts("/proc/self/mounts");
	std::string line;
	while (std::getline(mounts, line)) {
		std::istringstream fields(line);
		std::string dev, dir, type;
		fields >> dev >> dir >> type;
		if (type == "cgroup2")
			return dir;
	}
	return {};
}

namespace {

// sock_sendmsg_nosec()/sock_recvmsg_nosec() call trace_sock_{send,recv}_length
// since Linux 6.3 (include/trace/events/sock.h). Every raw tracepoint
// leaves a btf_trace_<name> typedef in the kernel's BTF.
Availability probe_tracepoint(const KernelFeatures &k)
{
	for (const char *tp : {"btf_trace_sock_send_length", "btf_trace_sock_recv_length"})
		if (!k.has_type(tp, BTF_KIND_TYPEDEF))
			return {false, std::string("the kernel has no ") + (tp + 10) +
					       " tracepoint (it arrived in Linux 6.3)"};
	if (cgroup2_mount().empty())
		return {false, "cgroup v2 is not mounted (the peer and close hooks attach to its root)"};
	return {true, "sock_send_length/sock_recv_length tracepoints and cgroup v2 are present"};
}

Availability probe_fentry(const KernelFeatures &)
{
	return {false, "the fentry backend is not part of this build yet"};
}

Availability probe_kprobe(const KernelFeatures &)
{
	return {false, "the kprobe backend is not part of this build yet"};
}

constexpr std::array<std::string_view, 9> kTracepointPrograms = {
	"tp_send_length", "tp_recv_length", "cg_sendmsg4",  "cg_sendmsg6",     "cg_recvmsg4",
	"cg_recvmsg6",    "cg_connect4",    "cg_connect6", "cg_sock_release",
};

// Preference of `auto`: fentry first (a trampoline is the cheapest hook and
// sees every argument), then the tracepoint backend (stable ABI hooks, cheap
// raw tracepoints), then kprobes (a trap per call, and kretprobes can miss
// returns under many blocked threads).
const std::array<BackendSpec, 3> kBackends = {{
	{Backend::fentry, {}, probe_fentry, false},
	{Backend::tracepoint, kTracepointPrograms, probe_tracepoint, true},
	{Backend::kprobe, {}, probe_kprobe, false},
}};

} // namespace

std::span<const BackendSpec> backend_table()
{
	return kBackends;
}

const BackendSpec &backend_spec(Backend backend)
{
	for (const auto &spec : kBackends)
		if (spec.backend == backend)
			return spec;
	throw std::logic_error("no backend_spec for auto");
}

} // namespace udpintercept::detail
