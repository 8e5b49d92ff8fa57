// SPDX-License-Identifier: LGPL-2.1-or-later
#include "kernel_probe.h"

#include <array>
#include <cerrno>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <cstring>
#include <linux/bpf.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace udpintercept::detail {

bool KernelFeatures::has_type(std::string_view name, int kind) const
{
	return vmlinux_ && btf__find_by_name_kind(vmlinux_, std::string(name).c_str(), kind) >= 0;
}

int KernelFeatures::function_id(std::string_view name) const
{
	return vmlinux_ ? btf__find_by_name_kind(vmlinux_, std::string(name).c_str(), BTF_KIND_FUNC)
			: -ENOENT;
}

int trampoline_refusal(const KernelFeatures &kernel)
{
	const int id = kernel.function_id("udp_sendmsg");
	if (id < 0)
		return -id;
	const bpf_insn insns[] = {
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
		{BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FEXIT,
		    .attach_btf_id = static_cast<__u32>(id));
	const int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, nullptr, "GPL", insns, std::size(insns), &opts);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

bool KernelFeatures::has_function(std::string_view name) const
{
	return has_type(name, BTF_KIND_FUNC);
}

int KernelFeatures::tracepoint_arity(std::string_view name) const
{
	if (!vmlinux_)
		return -1;
	const int id = btf__find_by_name_kind(vmlinux_, ("btf_trace_" + std::string(name)).c_str(),
					      BTF_KIND_TYPEDEF);
	if (id < 0)
		return -1;
	// typedef -> pointer -> function prototype, whose first parameter is the tracepoint's data.
	const btf_type *t = btf__type_by_id(vmlinux_, btf__type_by_id(vmlinux_, id)->type);
	if (!t || !btf_is_ptr(t))
		return -1;
	t = btf__type_by_id(vmlinux_, t->type);
	return t && btf_is_func_proto(t) ? btf_vlen(t) - 1 : -1;
}

bool helper_allowed(int type, int attach, int helper)
{
	// r1..r5 = 0; call helper; r0 = 1; exit. Arguments of the wrong kind are a
	// different complaint from an unknown or forbidden helper.
	const bpf_insn insns[] = {
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_2, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_5, 0, 0, 0},
		{BPF_JMP | BPF_CALL, 0, 0, 0, helper},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
		{BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
	};
	std::string log(16384, '\0');
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = static_cast<bpf_attach_type>(attach),
		    .log_level = 1, .log_size = static_cast<__u32>(log.size()), .log_buf = log.data());
	const int fd = bpf_prog_load(static_cast<bpf_prog_type>(type), nullptr, "GPL", insns,
				     std::size(insns), &opts);
	if (fd >= 0) {
		close(fd);
		return true;
	}
	log.resize(std::strlen(log.c_str()));
	return log.find("unknown func") == std::string::npos &&
	       log.find("invalid func") == std::string::npos &&
	       log.find("cannot use helper") == std::string::npos && !log.empty();
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

// sock_sendmsg_nosec()/sock_recvmsg_nosec() call trace_sock_{send,recv}_length
// since Linux 6.3 (include/trace/events/sock.h). Every raw tracepoint
// leaves a btf_trace_<name> typedef in the kernel's BTF.
Availability probe_tracepoint_backend(const KernelFeatures &k)
{
	for (const char *tp : {"btf_trace_sock_send_length", "btf_trace_sock_recv_length"})
		if (!k.has_type(tp, BTF_KIND_TYPEDEF))
			return {false, std::string("the kernel has no ") + (tp + 10) +
					       " tracepoint (it arrived in Linux 6.3)"};
	if (cgroup2_mount().empty())
		return {false, "cgroup v2 is not mounted (the peer and close hooks attach to its root)"};
	return {true, "sock_send_length/sock_recv_length tracepoints and cgroup v2 are present"};
}

namespace {

// The functions the fentry and kprobe backends hook. A function missing from
// BTF was inlined into every caller or does not exist on this build.
constexpr std::array<std::string_view, 7> kHookedFunctions = {
	"udp_sendmsg",          "udpv6_sendmsg",    "skb_consume_udp",    "ip4_datagram_connect",
	"ip6_datagram_connect", "udp_destroy_sock", "udpv6_destroy_sock",
};

std::string missing_functions(const KernelFeatures &k)
{
	std::string missing;
	for (auto fn : kHookedFunctions)
		if (!k.has_function(fn))
			missing += (missing.empty() ? "" : ", ") + std::string(fn);
	return missing;
}

} // namespace

// Trampolines need BTF for each function; whether the kernel (architecture,
// version, security policy) lets them attach is found by the trial load the
// Tracer does next.
Availability probe_fentry_backend(const KernelFeatures &k)
{
	if (auto missing = missing_functions(k); !missing.empty())
		return {false, "the kernel's BTF lacks " + missing};
	return {true, "BTF has every hooked function (fentry/fexit trampolines)"};
}

// kprobes are created through the kprobe perf PMU (CONFIG_KPROBE_EVENTS).
Availability probe_kprobe_backend(const KernelFeatures &k)
{
	if (access("/sys/bus/event_source/devices/kprobe/type", R_OK) != 0)
		return {false,
			"the kernel has no kprobe support (no kprobe PMU: CONFIG_KPROBES/KPROBE_EVENTS)"};
	if (auto missing = missing_functions(k); !missing.empty())
		return {false, "the kernel's BTF lacks " + missing};
	return {true, "kprobes and every hooked function are present"};
}

} // namespace udpintercept::detail
