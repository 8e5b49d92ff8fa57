// SPDX-License-Identifier: LGPL-2.1-or-later
#include "map_memory.h"

#include <algorithm>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <set>
#include <unistd.h>

namespace bench {

std::vector<MapMemory> maps_of_this_process()
{
	std::vector<MapMemory> out;
	std::set<std::uint32_t> seen;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return out;
	while (dirent *e = readdir(d)) {
		char link[256] = {};
		const std::string path = std::string("/proc/self/fd/") + e->d_name;
		if (readlink(path.c_str(), link, sizeof(link) - 1) <= 0 ||
		    std::strstr(link, "bpf-map") == nullptr)
			continue;
		const int fd = std::atoi(e->d_name);
		bpf_map_info info{};
		__u32 len = sizeof(info);
		if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || !seen.insert(info.id).second)
			continue;
		MapMemory m;
		m.id = info.id;
		m.name = info.name;
		const char *type = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type));
		m.type = type ? type : std::to_string(info.type);
		m.max_entries = info.max_entries;
		m.key_size = info.key_size;
		m.value_size = info.value_size;
		m.flags = info.map_flags;
		std::ifstream fdinfo(std::string("/proc/self/fdinfo/") + e->d_name);
		std::string key;
		while (fdinfo >> key)
			if (key == "memlock:")
				fdinfo >> m.bytes;
		out.push_back(std::move(m));
	}
	closedir(d);
	std::sort(out.begin(), out.end(),
		  [](const MapMemory &a, const MapMemory &b) { return a.bytes > b.bytes; });
	return out;
}

} // namespace bench
