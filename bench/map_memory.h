// SPDX-License-Identifier: LGPL-2.1-or-later
// The BPF maps this process holds, each with the memory the kernel charges
// for it (`memlock` in /proc/self/fdinfo) and its name and shape (from the
// kernel's map info).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bench {

struct MapMemory {
	std::uint32_t id = 0;
	std::string name;
	std::string type;
	std::uint32_t max_entries = 0;
	std::uint32_t key_size = 0;
	std::uint32_t value_size = 0;
	std::uint32_t flags = 0;
	std::uint64_t bytes = 0; ///< memlock
};

/// One entry per map (a map held by several descriptors counts once), largest first.
std::vector<MapMemory> maps_of_this_process();

} // namespace bench
