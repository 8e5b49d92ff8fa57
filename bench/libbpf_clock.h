// SPDX-License-Identifier: LGPL-2.1-or-later
// Times, while recording, every bpf() system call the process makes (which
// command, on which map or program, how long the kernel took) and every
// parse of the kernel's BTF. libbpf makes its bpf() calls through libc's
// syscall() and parses the BTF in btf__load_vmlinux_btf(), both called
// through the PLT: the program linking libbpf_clock.cpp stands in for them
// (it must export its symbols: Meson's export_dynamic), so the library under
// test is measured unchanged.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace bench {

/// BpfCall::cmd of a parse of the kernel's BTF (not a bpf() command).
constexpr int kVmlinuxBtfParse = -1;

struct BpfCall {
	int cmd = 0;             ///< enum bpf_cmd, or kVmlinuxBtfParse
	std::uint32_t type = 0;  ///< map or program type (enum bpf_map_type / bpf_prog_type)
	std::string name;        ///< map or program name; empty for libbpf's and the loader's probes
	std::uint64_t count = 0; ///< max_entries of a map, instructions of a program, bytes of BTF
	std::chrono::steady_clock::time_point start;
	std::chrono::nanoseconds took{0};
	long result = 0;
};

/// Forgets what was recorded and records every bpf() call from now on.
void bpf_calls_record();

/// Stops recording and returns the calls recorded, in order.
std::vector<BpfCall> bpf_calls_take();

/// Whether a call went through the stand-in at all (false: the symbol was
/// not exported, or libbpf calls the kernel another way).
bool bpf_calls_seen();

} // namespace bench
