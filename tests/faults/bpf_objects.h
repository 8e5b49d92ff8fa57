// SPDX-License-Identifier: LGPL-2.1-or-later
// The BPF programs, maps and links a process holds, by id, read from its
// fdinfo (what bpftool's pid column reads where the kernel lets it), and
// whether an id still exists. Ids are not reused until the id space wraps,
// so an id that is gone is that object gone.
#pragma once

#include <bpf/bpf.h>
#include <dirent.h>
#include <fstream>
#include <set>
#include <string>
#include <unistd.h>

namespace faults {

struct BpfObjects {
	std::set<unsigned> progs, maps, links;

	bool empty() const { return progs.empty() && maps.empty() && links.empty(); }
};

inline BpfObjects bpf_objects_of(pid_t pid)
{
	BpfObjects out;
	const std::string dir = "/proc/" + std::to_string(pid) + "/fdinfo";
	DIR *d = opendir(dir.c_str());
	if (!d)
		return out;
	while (dirent *e = readdir(d)) {
		std::ifstream info(dir + "/" + e->d_name);
		for (std::string line; std::getline(info, line);) {
			const auto number = [&] {
				return static_cast<unsigned>(std::stoul(line.substr(line.find(':') + 1)));
			};
			if (line.rfind("prog_id:", 0) == 0)
				out.progs.insert(number());
			else if (line.rfind("map_id:", 0) == 0)
				out.maps.insert(number());
			else if (line.rfind("link_id:", 0) == 0)
				out.links.insert(number());
		}
	}
	closedir(d);
	return out;
}

/// Which of `objects` still exist.
inline BpfObjects still_there(const BpfObjects &objects)
{
	BpfObjects out;
	const auto check = [](const std::set<unsigned> &ids, std::set<unsigned> &alive, int (*get)(__u32)) {
		for (unsigned id : ids) {
			const int fd = get(id);
			if (fd >= 0) {
				alive.insert(id);
				close(fd);
			}
		}
	};
	check(objects.progs, out.progs, bpf_prog_get_fd_by_id);
	check(objects.maps, out.maps, bpf_map_get_fd_by_id);
	check(objects.links, out.links, bpf_link_get_fd_by_id);
	return out;
}

/// Lines of kprobe_events naming a probe of ours (udpi_*), if tracefs is there.
inline std::vector<std::string> kprobe_events_of_ours()
{
	std::vector<std::string> out;
	for (const char *path :
	     {"/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"}) {
		std::ifstream f(path);
		for (std::string line; std::getline(f, line);)
			if (line.find("kprobes/udpi_") != std::string::npos)
				out.push_back(line);
		if (f.is_open() || !out.empty())
			break;
	}
	return out;
}

} // namespace faults
