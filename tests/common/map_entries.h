// SPDX-License-Identifier: LGPL-2.1-or-later
// This process's BPF maps and programs: finding a map by name, and how many entries it holds.
#pragma once

#include <bpf/bpf.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace testutil {

/// This process's descriptors of BPF objects of one kind (`Info`: bpf_map_info or
/// bpf_prog_info), with what the kernel says of each. The kinds are told apart by the
/// descriptor's link ("anon_inode:bpf-map", "anon_inode:bpf-prog"): programs, maps,
/// links and BTF all answer bpf_obj_get_info_by_fd().
template <typename Info> std::vector<std::pair<int, Info>> own_bpf_objects(const char *link_target)
{
	std::vector<std::pair<int, Info>> out;
	DIR *dir = opendir("/proc/self/fd");
	while (dirent *e = dir ? readdir(dir) : nullptr) {
		const int fd = std::atoi(e->d_name);
		char target[64] = {};
		const std::string link = std::string("/proc/self/fd/") + e->d_name;
		Info info{};
		__u32 len = sizeof(info);
		if (fd > 2 && readlink(link.c_str(), target, sizeof(target) - 1) > 0 &&
		    std::strcmp(target, link_target) == 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			out.emplace_back(fd, info);
	}
	if (dir)
		closedir(dir);
	return out;
}

/// The descriptors of this process's BPF maps (the tracer's).
inline std::vector<std::pair<int, bpf_map_info>> own_maps()
{
	return own_bpf_objects<bpf_map_info>("anon_inode:bpf-map");
}

/// The descriptors of this process's BPF programs.
inline std::vector<std::pair<int, bpf_prog_info>> own_programs()
{
	return own_bpf_objects<bpf_prog_info>("anon_inode:bpf-prog");
}

/// This process's BPF map called `name` (the tracer's), or -1.
inline int own_map(const char *name)
{
	int found = -1;
	for (const auto &[fd, info] : own_maps())
		if (std::strcmp(info.name, name) == 0)
			found = fd;
	return found;
}

inline std::uint64_t map_entries(int fd, std::size_t key_size)
{
	std::vector<char> key(key_size), next(key_size);
	std::uint64_t n = 0;
	const void *prev = nullptr;
	while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
		n++;
		key = next;
		prev = key.data();
	}
	return n;
}

} // namespace testutil
