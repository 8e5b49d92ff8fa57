// SPDX-License-Identifier: LGPL-2.1-or-later
// Startup time (constructor to attached) and the memory of many active flows:
//   tracer_scale [--flows N] [--starts N]
// Prints one table; asserts nothing about time. Exit 77 without root.
#include <udpintercept/tracer.h>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <vector>

namespace {

// Sum of `memlock` over this process's BPF map file descriptors: exactly its maps.
std::uint64_t bpf_map_bytes()
{
	std::uint64_t total = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0;
	while (dirent *e = readdir(d)) {
		char link[256] = {};
		const std::string fd = std::string("/proc/self/fd/") + e->d_name;
		if (readlink(fd.c_str(), link, sizeof(link) - 1) <= 0 ||
		    std::strstr(link, "bpf-map") == nullptr)
			continue;
		std::ifstream info(std::string("/proc/self/fdinfo/") + e->d_name);
		std::string key;
		std::uint64_t value;
		while (info >> key) {
			if (key == "memlock:" && info >> value)
				total += value;
		}
	}
	closedir(d);
	return total;
}

std::uint64_t rss_kib()
{
	std::ifstream status("/proc/self/status");
	std::string key;
	while (status >> key) {
		std::uint64_t v;
		if (key == "VmRSS:" && status >> v)
			return v;
	}
	return 0;
}

bool fresh_netns()
{
	if (unshare(CLONE_NEWNET) != 0)
		return false;
	const int fd = socket(AF_INET, SOCK_DGRAM, 0);
	ifreq ifr{};
	std::strcpy(ifr.ifr_name, "lo");
	ioctl(fd, SIOCGIFFLAGS, &ifr);
	ifr.ifr_flags |= IFF_UP;
	const bool ok = ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
	close(fd);
	return ok;
}

} // namespace

int main(int argc, char **argv)
{
	std::uint32_t flows = 100000;
	int starts = 5;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!std::strcmp(argv[i], "--flows"))
			flows = static_cast<std::uint32_t>(std::stoul(argv[i + 1]));
		else if (!std::strcmp(argv[i], "--starts"))
			starts = std::stoi(argv[i + 1]);
	}
	if (geteuid() != 0) {
		std::fprintf(stderr, "tracer_scale: skipped: needs root to load BPF\n");
		return 77;
	}
	if (!fresh_netns()) {
		std::perror("tracer_scale: a fresh network namespace");
		return 1;
	}

	try {
		udpintercept::Options options;
		options.max_flows = std::max<std::uint32_t>(65536, flows + flows / 4);
		options.max_sockets = 65536;

		std::vector<double> ms;
		for (int i = 0; i < starts; i++) {
			const auto t0 = std::chrono::steady_clock::now();
			udpintercept::Tracer t(options);
			ms.push_back(std::chrono::duration<double, std::milli>(
					     std::chrono::steady_clock::now() - t0)
					     .count());
		}
		std::sort(ms.begin(), ms.end());

		std::uint64_t events = 0;
		udpintercept::Tracer tracer(options, [&](const udpintercept::Event &) { events++; });
		const std::uint64_t idle_maps = bpf_map_bytes(), idle_rss = rss_kib();

		// Flows: two unconnected sockets, each sending one datagram to each of
		// up to 50,000 ports nobody listens on (the kernel drops them quietly).
		const int per_socket = 50000;
		std::vector<int> socks;
		for (std::uint32_t i = 0; i < flows; i++) {
			if (i % per_socket == 0)
				socks.push_back(socket(AF_INET, SOCK_DGRAM, 0));
			sockaddr_in to{};
			to.sin_family = AF_INET;
			to.sin_port = htons(static_cast<std::uint16_t>(10000 + i % per_socket));
			to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			sendto(socks.back(), "x", 1, 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
			if (i % 4096 == 0)
				tracer.process();
		}
		for (int i = 0; i < 20; i++)
			tracer.poll(std::chrono::milliseconds(50));
		const auto s = tracer.stats();
		utsname u{};
		uname(&u);
		std::printf("tracer_scale: kernel %s, %d starts, %u flows\n", u.release, starts, flows);
		std::printf("%-44s %12s\n", "measure", "value");
		std::printf("%-44s %12.1f\n", "constructor to attached, median ms", ms[ms.size() / 2]);
		std::printf("%-44s %12.1f\n", "constructor to attached, min ms", ms.front());
		std::printf("%-44s %12.1f\n", "constructor to attached, max ms", ms.back());
		std::printf("%-44s %12u\n", "flow table size (max_flows)", options.max_flows);
		std::printf("%-44s %12llu\n", "flows in the kernel's table",
			    static_cast<unsigned long long>(s.flows_active));
		std::printf("%-44s %12.1f\n", "BPF map memory, MiB", bpf_map_bytes() / 1048576.0);
		std::printf("%-44s %12.1f\n", "BPF map memory before the flows, MiB", idle_maps / 1048576.0);
		std::printf("%-44s %12.1f\n", "process RSS, MiB", rss_kib() / 1024.0);
		std::printf("%-44s %12.1f\n", "process RSS before the flows, MiB", idle_rss / 1024.0);
		std::printf("%-44s %12llu\n", "snapshots delivered", static_cast<unsigned long long>(events));
		std::printf("%-44s %12llu\n", "lost", static_cast<unsigned long long>(s.lost));
		std::printf("%-44s %12llu\n", "untracked flows",
			    static_cast<unsigned long long>(s.flows_untracked));
		for (int fd : socks)
			close(fd);
		return s.flows_active >= flows && s.flows_untracked == 0 ? 0 : 1;
	} catch (const udpintercept::Error &e) {
		std::fprintf(stderr, "tracer_scale: %s\n", e.what());
		return 1;
	}
}
