// SPDX-License-Identifier: LGPL-2.1-or-later
// Where a Tracer's constructor spends its time: the library's log lines
// (Options::log, one at the end of each stage) cut the span into stages, and
// the bpf() calls inside the load are sorted into map creation, program
// verification, BTF and libbpf's feature probes, apart from libbpf's own
// parse of the kernel's BTF. A stage is wall-clock time: programs verified on
// two threads at once count once there, and each its own in `objects`.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "libbpf_clock.h"

namespace bench {

struct LogLine {
	std::chrono::steady_clock::time_point at;
	std::string text;
};

struct Stage {
	std::string name;
	double ms = 0;
};

/// One object the load made: a map or a program, and what the kernel took for it.
struct LoadedObject {
	bool is_map = false;
	std::string name;
	std::uint64_t count = 0; ///< a map's entries, a program's instructions
	double ms = 0;
};

struct Startup {
	std::vector<Stage> stages; ///< in order; they add up to the total
	std::vector<LoadedObject> objects;
	double total_ms = 0;
	/// The flow table's BPF_MAP_CREATE, wherever it ran (beside the start,
	/// or in the load on one CPU): what the kernel took, and when it
	/// returned (ms after the constructor was called); 0 and 0 if not seen.
	double flow_table_ms = 0, flow_table_done_ms = 0;
};

/// Splits [begin, end] by the log lines and the bpf() calls made in between.
Startup split_startup(std::chrono::steady_clock::time_point begin, std::chrono::steady_clock::time_point end,
		      const std::vector<LogLine> &log, const std::vector<BpfCall> &calls);

} // namespace bench
