// SPDX-License-Identifier: LGPL-2.1-or-later
// Startup time (constructor to attached), the memory of many flows, and what
// they cost once quiet: a library user's idle CPU and stats() latency, and,
// with --cli, the command-line tracer's idle CPU and its final snapshots.
//   tracer_scale [--flows N] [--max-flows N] [--starts N] [--idle S] [--cli PATH]
// Prints one table; asserts nothing about time. Exit 77 without root.
#include <udpintercept/tracer.h>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <functional>
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

// CPU seconds (user + system) this process has used.
double own_cpu_s()
{
	rusage ru{};
	getrusage(RUSAGE_SELF, &ru);
	return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU seconds (user + system) another process has used, from /proc/PID/stat.
double cpu_s_of(pid_t pid)
{
	std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
	std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
	const auto paren = text.rfind(')');
	if (paren == std::string::npos)
		return 0;
	std::istringstream fields(text.substr(paren + 2));
	std::string f;
	double utime = 0, stime = 0;
	for (int i = 3; fields >> f; i++) {
		if (i == 14)
			utime = std::stod(f);
		else if (i == 15) {
			stime = std::stod(f);
			break;
		}
	}
	return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One datagram from each of a few unconnected sockets to each of up to
// 50,000 ports nobody listens on (the kernel drops them quietly): `flows`
// flows, then quiet. The sockets stay open, so the flows do.
std::vector<int> make_flows(std::uint32_t flows, const std::function<void()> &every_4096)
{
	const std::uint32_t per_socket = 50000;
	std::vector<int> socks;
	for (std::uint32_t i = 0; i < flows; i++) {
		if (i % per_socket == 0)
			socks.push_back(socket(AF_INET, SOCK_DGRAM, 0));
		sockaddr_in to{};
		to.sin_family = AF_INET;
		to.sin_port = htons(static_cast<std::uint16_t>(10000 + i % per_socket));
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sendto(socks.back(), "x", 1, 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
		if (i % 4096 == 0 && every_4096)
			every_4096();
	}
	return socks;
}

struct CliFigures {
	bool ran = false;
	double idle_cpu_percent = 0;
	std::uint64_t lines = 0, finals = 0;
	int status = -1;
};

// The CLI with --json, its lines counted; `flows` flows made once it traces,
// then `idle_s` quiet seconds measured; then SIGINT and its finals counted.
CliFigures measure_cli(const std::string &cli, std::uint32_t flows, std::uint32_t max_flows, int idle_s)
{
	CliFigures out;
	int pipefd[2];
	if (pipe(pipefd) != 0)
		return out;
	const pid_t pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 1);
		close(pipefd[0]);
		close(pipefd[1]);
		const std::string mf = std::to_string(max_flows);
		execl(cli.c_str(), cli.c_str(), "--json", "--max-flows", mf.c_str(), "--pid",
		      std::to_string(getppid()).c_str(), static_cast<char *>(nullptr));
		_exit(127);
	}
	close(pipefd[1]);
	std::atomic<std::uint64_t> lines{0}, finals{0};
	std::thread reader([&] {
		FILE *f = fdopen(pipefd[0], "r");
		char *line = nullptr;
		size_t cap = 0;
		while (getline(&line, &cap, f) > 0) {
			lines++;
			if (std::strstr(line, "\"event\":\"final\""))
				finals++;
		}
		free(line);
		fclose(f);
	});
	// Traced once the first flow shows up.
	const int probe = socket(AF_INET, SOCK_DGRAM, 0);
	sockaddr_in to{};
	to.sin_family = AF_INET;
	to.sin_port = htons(9);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 300 && lines == 0; i++) {
		sendto(probe, "x", 1, 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
	}
	const auto socks = make_flows(flows, {});
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
	while (lines < flows + 1 && std::chrono::steady_clock::now() < deadline)
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
	std::this_thread::sleep_for(std::chrono::seconds(1)); // the last sweeps settle
	const double before = cpu_s_of(pid);
	std::this_thread::sleep_for(std::chrono::seconds(idle_s));
	out.idle_cpu_percent = 100.0 * (cpu_s_of(pid) - before) / idle_s;
	const std::uint64_t before_stop = lines;
	kill(pid, SIGINT);
	int status = 0;
	waitpid(pid, &status, 0);
	reader.join();
	out.ran = true;
	out.lines = before_stop;
	out.finals = finals;
	out.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	for (int fd : socks)
		close(fd);
	close(probe);
	return out;
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
	std::uint32_t flows = 100000, max_flows = 0;
	int starts = 5, idle_s = 10;
	std::string cli;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!std::strcmp(argv[i], "--flows"))
			flows = static_cast<std::uint32_t>(std::stoul(argv[i + 1]));
		else if (!std::strcmp(argv[i], "--max-flows"))
			max_flows = static_cast<std::uint32_t>(std::stoul(argv[i + 1]));
		else if (!std::strcmp(argv[i], "--starts"))
			starts = std::stoi(argv[i + 1]);
		else if (!std::strcmp(argv[i], "--idle"))
			idle_s = std::stoi(argv[i + 1]);
		else if (!std::strcmp(argv[i], "--cli"))
			cli = argv[i + 1];
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
		options.max_flows = max_flows ? max_flows : std::max<std::uint32_t>(65536, flows + flows / 4);
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

		const auto socks = make_flows(flows, [&] { tracer.process(); });
		for (int i = 0; i < 20; i++)
			tracer.poll(std::chrono::milliseconds(50));
		const auto s = tracer.stats();

		// Quiet from here: what the flows cost a library user polling every 100 ms.
		const double cpu0 = own_cpu_s();
		const auto idle_end = std::chrono::steady_clock::now() + std::chrono::seconds(idle_s);
		while (std::chrono::steady_clock::now() < idle_end)
			tracer.poll(std::chrono::milliseconds(100));
		const double idle_cpu_percent = 100.0 * (own_cpu_s() - cpu0) / idle_s;
		std::vector<double> stats_us;
		for (int i = 0; i < 101; i++) {
			const auto t0 = std::chrono::steady_clock::now();
			(void)tracer.stats();
			stats_us.push_back(std::chrono::duration<double, std::micro>(
						   std::chrono::steady_clock::now() - t0)
						   .count());
		}
		std::sort(stats_us.begin(), stats_us.end());
		const std::uint64_t events_before_stop = events;
		tracer.stop();
		const std::uint64_t finals = events - events_before_stop;
		for (int fd : socks)
			close(fd);

		CliFigures c;
		if (!cli.empty())
			c = measure_cli(cli, flows, options.max_flows, idle_s);

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
		std::printf("%-44s %12llu\n", "full sweeps", static_cast<unsigned long long>(s.full_sweeps));
		std::printf("%-44s %12.2f\n", "library, idle CPU % of a core (poll 100 ms)",
			    idle_cpu_percent);
		std::printf("%-44s %12.1f\n", "library, stats() median us", stats_us[stats_us.size() / 2]);
		std::printf("%-44s %12.1f\n", "library, stats() max us", stats_us.back());
		std::printf("%-44s %12llu\n", "library, final snapshots at stop()",
			    static_cast<unsigned long long>(finals));
		if (c.ran) {
			std::printf("%-44s %12.2f\n", "CLI, idle CPU % of a core", c.idle_cpu_percent);
			std::printf("%-44s %12llu\n", "CLI, lines before SIGINT",
				    static_cast<unsigned long long>(c.lines));
			std::printf("%-44s %12llu\n", "CLI, final snapshots",
				    static_cast<unsigned long long>(c.finals));
			std::printf("%-44s %12d\n", "CLI, exit status", c.status);
		}
		const bool cli_ok = !c.ran || (c.finals >= flows && c.status == 0);
		return s.flows_active >= flows && s.flows_untracked == 0 && finals >= flows && cli_ok ? 0 : 1;
	} catch (const udpintercept::Error &e) {
		std::fprintf(stderr, "tracer_scale: %s\n", e.what());
		return 1;
	}
}
