// SPDX-License-Identifier: LGPL-2.1-or-later
// Startup time (constructor to attached) and where it goes (with the flow
// table's creation beside it, and what the machine charges for the first
// write to a page, which decides that creation's time), the memory of
// many flows map by map, and what they cost once quiet: a library user's idle
// CPU and stats() latency, how soon they expire once idle together, and,
// with --cli, the command-line tracer's idle CPU and its final snapshots.
//   tracer_scale [--flows N] [--max-flows N] [--starts N] [--idle S] [--cli PATH]
//                [--backend auto|fentry|kprobe|tracepoint]
// Without --max-flows, the flows' memory is measured with the table sized
// exactly for them and with 1.25x headroom. Prints tables; asserts nothing
// about time. Exit 77 without root.
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
#include <getopt.h>
#include <sstream>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "args.h"
#include "libbpf_clock.h"
#include "map_memory.h"
#include "startup_stages.h"

namespace {

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

struct ExpiryFigures {
	std::uint64_t expired = 0;
	double last_s = 0; // from the last flow made to the last expired
	double cpu_s = 0;  // this process's CPU time meanwhile
};

// `flows` flows of this process made at once, then quiet, with a flow timeout
// of a second: when the last of them is expired (a sweep expires 4096; the
// next follows a wake-up window later while flows are due).
ExpiryFigures measure_expiry(const udpintercept::Options &base, std::uint32_t flows)
{
	using clock = std::chrono::steady_clock;
	udpintercept::Options o = base;
	o.flow_timeout = std::chrono::seconds(1);
	o.pid = static_cast<std::uint32_t>(getpid());
	ExpiryFigures out;
	clock::time_point last{};
	udpintercept::Tracer t(o, [&](const udpintercept::Event &e) {
		if (e.kind == udpintercept::EventKind::expire) {
			out.expired++;
			last = clock::now();
		}
	});
	const auto socks = make_flows(flows, [&] { t.process(); });
	const auto made = clock::now();
	const double cpu0 = own_cpu_s();
	const auto deadline = made + std::chrono::seconds(120);
	while (out.expired < flows && clock::now() < deadline)
		t.poll(std::chrono::milliseconds(100));
	out.cpu_s = own_cpu_s() - cpu0;
	out.last_s = std::chrono::duration<double>(last - made).count();
	for (int fd : socks)
		close(fd);
	return out;
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

// One Tracer constructed in a fresh child process, as a program starting up
// meets it (libbpf caches its feature probes per process): its stages and
// objects as lines on `out`.
void one_start(const udpintercept::Options &base, int out)
{
	std::vector<bench::LogLine> log;
	udpintercept::Options options = base;
	options.log = [&log](std::string_view line) {
		log.push_back({std::chrono::steady_clock::now(), std::string(line)});
	};
	bench::bpf_calls_record();
	const auto t0 = std::chrono::steady_clock::now();
	udpintercept::Tracer tracer(options);
	const auto t1 = std::chrono::steady_clock::now();
	const auto calls = bench::bpf_calls_take();
	const auto s = bench::split_startup(t0, t1, log, calls);
	std::string text = "total\t" + std::to_string(s.total_ms) + "\n";
	text += "table\t" + std::to_string(s.flow_table_ms) + "\t" + std::to_string(s.flow_table_done_ms) +
		"\n";
	text += std::string("syscalls\t") + (bench::bpf_calls_seen() ? "1" : "0") + "\n";
	for (const auto &stage : s.stages)
		text += "stage\t" + std::to_string(stage.ms) + "\t" + stage.name + "\n";
	for (const auto &o : s.objects)
		text += std::string("object\t") + (o.is_map ? "map" : "program") + "\t" +
			std::to_string(o.count) + "\t" + std::to_string(o.ms) + "\t" + o.name + "\n";
	for (const auto &l : log) {
		std::string first = l.text.substr(0, l.text.find('\n'));
		text += "log\t" +
			std::to_string(std::chrono::duration<double, std::milli>(l.at - t0).count()) + "\t" +
			first + "\n";
	}
	for (std::size_t done = 0; done < text.size();) {
		const ssize_t n = write(out, text.data() + done, text.size() - done);
		if (n <= 0)
			break;
		done += static_cast<std::size_t>(n);
	}
}

struct StartFigures {
	double total_ms = 0;
	double flow_table_ms = 0, flow_table_done_ms = 0; // 0: its creation was not seen
	bool syscalls_seen = false;
	std::vector<std::pair<std::string, double>> stages;
	// (kind, name, count) -> ms
	std::vector<std::tuple<std::string, std::string, std::uint64_t, double>> objects;
	std::vector<std::pair<double, std::string>> log;
};

std::optional<StartFigures> measure_start(const udpintercept::Options &options)
{
	int pipefd[2];
	if (pipe(pipefd) != 0)
		return std::nullopt;
	const pid_t pid = fork();
	if (pid == 0) {
		close(pipefd[0]);
		int status = 0;
		try {
			one_start(options, pipefd[1]);
		} catch (const std::exception &e) {
			std::fprintf(stderr, "tracer_scale: %s\n", e.what());
			status = 1;
		}
		_exit(status);
	}
	close(pipefd[1]);
	std::string text;
	char buf[4096];
	for (ssize_t n; (n = read(pipefd[0], buf, sizeof(buf))) > 0;)
		text.append(buf, static_cast<std::size_t>(n));
	close(pipefd[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return std::nullopt;
	StartFigures f;
	std::istringstream lines(text);
	for (std::string line; std::getline(lines, line);) {
		std::vector<std::string> col;
		std::istringstream fields(line);
		for (std::string c; std::getline(fields, c, '\t');)
			col.push_back(c);
		if (col.size() >= 2 && col[0] == "total")
			f.total_ms = std::stod(col[1]);
		else if (col.size() >= 3 && col[0] == "table") {
			f.flow_table_ms = std::stod(col[1]);
			f.flow_table_done_ms = std::stod(col[2]);
		} else if (col.size() >= 2 && col[0] == "syscalls")
			f.syscalls_seen = col[1] == "1";
		else if (col.size() >= 3 && col[0] == "stage")
			f.stages.emplace_back(col[2], std::stod(col[1]));
		else if (col.size() >= 5 && col[0] == "object")
			f.objects.emplace_back(col[1], col[4], std::stoull(col[2]), std::stod(col[3]));
		else if (col.size() >= 3 && col[0] == "log")
			f.log.emplace_back(std::stod(col[1]), col[2]);
	}
	return f;
}

double median_of(std::vector<double> v)
{
	if (v.empty())
		return 0;
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

/*
 * What this machine charges for the first write to a page: us per page of a
 * fresh 16 MiB anonymous mapping (median of three), left to the page fault
 * (`populated` false) or with its pages made by mmap() first (MAP_POPULATE:
 * what is left is the first access itself). A preallocated BPF map's
 * creation writes every page of its entries, so where these are high, the
 * flow table's creation is slow.
 */
double first_write_us(bool populated)
{
	constexpr std::size_t kBytes = 16 << 20;
	const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
	std::vector<double> us;
	for (int r = 0; r < 3; r++) {
		void *m = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | (populated ? MAP_POPULATE : 0), -1, 0);
		if (m == MAP_FAILED)
			return 0;
		auto *bytes = static_cast<volatile char *>(m);
		const auto t0 = std::chrono::steady_clock::now();
		for (std::size_t i = 0; i < kBytes; i += page)
			bytes[i] = 1;
		us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
				     .count() /
			     static_cast<double>(kBytes / page));
		munmap(m, kBytes);
	}
	return median_of(us);
}

// One row of the startup table: its median, min and max over the starts.
void print_row(const char *name, const std::vector<double> &ms)
{
	std::printf("%-66s %8.2f %8.2f %8.2f\n", name, median_of(ms), *std::min_element(ms.begin(), ms.end()),
		    *std::max_element(ms.begin(), ms.end()));
}

void print_startup(const std::vector<StartFigures> &starts)
{
	std::vector<double> totals;
	for (const auto &s : starts)
		totals.push_back(s.total_ms);
	std::printf("\nStartup, constructor to attached, %zu starts each in a fresh process (ms):\n",
		    starts.size());
	std::printf("%-66s %8s %8s %8s\n", "stage", "median", "min", "max");
	// Stages in the order of the first start; a stage a start lacks counts 0 there.
	for (const auto &[name, _] : starts.front().stages) {
		std::vector<double> ms;
		for (const auto &s : starts) {
			double v = 0;
			for (const auto &[n, x] : s.stages)
				if (n == name)
					v += x;
			ms.push_back(v);
		}
		print_row(name.c_str(), ms);
	}
	print_row("total", totals);
	if (!starts.front().syscalls_seen)
		std::printf(
			"(no bpf() call was seen: map creation and program verification are inside 'libbpf's "
			"own work')\n");
	// On two CPUs the flow table is made on a thread of its own from the
	// constructor's first step, and the stages wait for it where it is slow;
	// on one, the load makes it.
	std::vector<double> table_ms, table_done_ms;
	for (const auto &s : starts)
		if (s.flow_table_ms > 0) {
			table_ms.push_back(s.flow_table_ms);
			table_done_ms.push_back(s.flow_table_done_ms);
		}
	if (!table_ms.empty()) {
		print_row("the flow table's BPF_MAP_CREATE (inside the stages above)", table_ms);
		print_row("the flow table made, ms after the constructor", table_done_ms);
	}

	// The objects of the successful load, slowest first (medians over the starts).
	std::map<std::pair<std::string, std::string>, std::vector<double>> ms_of;
	std::map<std::pair<std::string, std::string>, std::uint64_t> count_of;
	for (const auto &s : starts)
		for (const auto &[kind, name, count, ms] : s.objects) {
			ms_of[{kind, name}].push_back(ms);
			count_of[{kind, name}] = count;
		}
	std::vector<std::pair<double, std::pair<std::string, std::string>>> order;
	for (const auto &[key, v] : ms_of)
		order.emplace_back(median_of(v), key);
	std::sort(order.rbegin(), order.rend());
	std::printf("\nMaps created and programs verified by the load, median ms each (entries or "
		    "instructions):\n");
	for (const auto &[ms, key] : order)
		std::printf("  %-8s %-18s %10llu %8.2f\n", key.first.c_str(), key.second.c_str(),
			    static_cast<unsigned long long>(count_of[key]), ms);

	// The log of the start with the median total, as it went.
	std::size_t mid = 0;
	for (std::size_t i = 0; i < starts.size(); i++)
		if (starts[i].total_ms == median_of(totals))
			mid = i;
	std::printf("\nThe median start's log (ms since the constructor was called):\n");
	for (const auto &[ms, line] : starts[mid].log)
		std::printf("  %8.2f  %s\n", ms, line.c_str());
}

struct MemoryFigures {
	std::uint32_t max_flows = 0;
	std::vector<bench::MapMemory> before, after;
	udpintercept::Stats stats{};
	std::uint64_t rss_before_kib = 0, rss_after_kib = 0;
};

std::uint64_t total_bytes(const std::vector<bench::MapMemory> &maps)
{
	std::uint64_t sum = 0;
	for (const auto &m : maps)
		sum += m.bytes;
	return sum;
}

void print_memory(const std::vector<MemoryFigures> &runs, std::uint32_t flows)
{
	std::printf(
		"\nBPF maps holding %u active flows, per map (memlock, MiB; the flow table sized as said):\n",
		flows);
	std::printf("%-14s %-18s %6s %6s", "map", "type", "key", "value");
	for (const auto &r : runs)
		std::printf(" %10s %9s", ("entries@" + std::to_string(r.max_flows / 1000) + "k").c_str(),
			    "MiB");
	std::printf("\n");
	for (const auto &m : runs.front().after) {
		std::printf("%-14s %-18s %6u %6u", m.name.c_str(), m.type.c_str(), m.key_size, m.value_size);
		for (const auto &r : runs) {
			const auto it =
				std::find_if(r.after.begin(), r.after.end(),
					     [&](const bench::MapMemory &x) { return x.name == m.name; });
			if (it == r.after.end())
				std::printf(" %10s %9s", "-", "-");
			else
				std::printf(" %10u %9.2f", it->max_entries, it->bytes / 1048576.0);
		}
		std::printf("\n");
	}
	std::printf("%-14s %-18s %6s %6s", "all maps", "", "", "");
	for (const auto &r : runs)
		std::printf(" %10s %9.2f", "", total_bytes(r.after) / 1048576.0);
	std::printf("\n%-14s %-18s %6s %6s", "before flows", "", "", "");
	for (const auto &r : runs)
		std::printf(" %10s %9.2f", "", total_bytes(r.before) / 1048576.0);
	std::printf("\n%-14s %-18s %6s %6s", "flows active", "", "", "");
	for (const auto &r : runs)
		std::printf(" %10llu %9s", static_cast<unsigned long long>(r.stats.flows_active), "");
	std::printf("\n%-14s %-18s %6s %6s", "untracked", "", "", "");
	for (const auto &r : runs)
		std::printf(" %10llu %9s", static_cast<unsigned long long>(r.stats.flows_untracked), "");
	std::printf("\n%-14s %-18s %6s %6s", "RSS MiB", "", "", "");
	for (const auto &r : runs)
		std::printf(" %10.1f %9s", r.rss_after_kib / 1024.0, "");
	std::printf("\n");
}

constexpr const char *kUsage = R"(Usage: tracer_scale [OPTION]...
Measure what udpintercept costs at scale, in a fresh network namespace: the
time from a Tracer's constructor to attached and where it goes (BTF, trial
loads, map creation, verification, attach; the flow table made beside them,
and what a first write to a page costs this machine, which decides how long
that takes), the BPF maps' memory holding many flows (map by map), what a
quiet table of them costs a library user (idle CPU, stats() latency) and,
with --cli, the command-line tracer, and how soon they all expire once idle
together (flow timeout 1 s). Prints tables; asserts nothing about time.
Needs root (exit 77 without).

      --flows N        flows to make (default 100000)
      --max-flows N    size the flow table to N (default: the flows exactly,
                       then with 1.25x headroom, 65536 at least)
      --starts N       starts to time, each in a fresh process (default 5)
      --idle S         seconds of quiet to measure idle costs over (default 10)
      --cli PATH       also measure that udpintercept CLI at the same flows
      --backend NAME   auto (default), fentry, kprobe or tracepoint
  -h, --help           this text
)";

constexpr std::string_view kProgram = "tracer_scale";

} // namespace

int main(int argc, char **argv)
{
	enum { kFlows = 1000, kMaxFlows, kStarts, kIdle, kCli, kBackend };
	static const option longopts[] = {
		{"flows", required_argument, nullptr, kFlows},
		{"max-flows", required_argument, nullptr, kMaxFlows},
		{"starts", required_argument, nullptr, kStarts},
		{"idle", required_argument, nullptr, kIdle},
		{"cli", required_argument, nullptr, kCli},
		{"backend", required_argument, nullptr, kBackend},
		{"help", no_argument, nullptr, 'h'},
		{nullptr, 0, nullptr, 0},
	};
	std::uint32_t flows = 100000, max_flows = 0;
	int starts = 5, idle_s = 10;
	std::string cli;
	auto backend = udpintercept::Backend::automatic;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, nullptr)) != -1) {
		const std::string_view arg = optarg ? optarg : "";
		switch (c) {
		case kFlows:
			flows = bench::parse_number<std::uint32_t>(kProgram, arg, "--flows", 1, 10000000);
			break;
		case kMaxFlows:
			max_flows =
				bench::parse_number<std::uint32_t>(kProgram, arg, "--max-flows", 1, 10000000);
			break;
		case kStarts:
			starts = bench::parse_number<int>(kProgram, arg, "--starts", 1, 1000);
			break;
		case kIdle:
			idle_s = bench::parse_number<int>(kProgram, arg, "--idle", 1, 3600);
			break;
		case kCli:
			cli = arg;
			break;
		case kBackend: {
			const auto b = udpintercept::parse_backend(arg);
			if (!b)
				bench::usage_error(kProgram, fmt::format("unknown backend '{}': expected "
									 "auto, fentry, kprobe or tracepoint",
									 arg));
			backend = *b;
			break;
		}
		case 'h':
			std::fputs(kUsage, stdout);
			return 0;
		default:
			bench::option_error(kProgram, c, argv);
		}
	}
	bench::no_operands(kProgram, argc, argv);
	if (geteuid() != 0) {
		std::fprintf(stderr, "tracer_scale: skipped: needs root to load BPF\n");
		return 77;
	}
	if (!fresh_netns()) {
		std::perror("tracer_scale: a fresh network namespace");
		return 1;
	}

	try {
		// The table exactly as large as the flows, and with the 1.25x headroom a
		// user would give it (65,536 at least, the default); --max-flows: that alone.
		std::vector<std::uint32_t> sizings;
		if (max_flows)
			sizings = {max_flows};
		else
			sizings = {flows, std::max<std::uint32_t>(65536, flows + flows / 4)};
		udpintercept::Options options;
		options.max_flows = sizings.back();
		options.max_sockets = 65536;
		options.backend = backend;

		const double fresh_page_us = first_write_us(false), made_page_us = first_write_us(true);
		std::vector<StartFigures> start_figures;
		for (int i = 0; i < starts; i++) {
			auto f = measure_start(options);
			if (!f)
				throw std::runtime_error("a start in a child process failed (see above)");
			start_figures.push_back(std::move(*f));
		}
		std::vector<double> ms;
		for (const auto &f : start_figures)
			ms.push_back(f.total_ms);
		std::sort(ms.begin(), ms.end());

		// All but the last sizing: the maps' memory with the flows, then closed.
		std::vector<MemoryFigures> memory;
		for (std::size_t i = 0; i + 1 < sizings.size(); i++) {
			udpintercept::Options o = options;
			o.max_flows = sizings[i];
			udpintercept::Tracer t(o);
			MemoryFigures m;
			m.max_flows = sizings[i];
			m.before = bench::maps_of_this_process();
			m.rss_before_kib = rss_kib();
			const auto socks = make_flows(flows, [&] { t.process(); });
			for (int k = 0; k < 20; k++)
				t.poll(std::chrono::milliseconds(50));
			m.stats = t.stats();
			m.after = bench::maps_of_this_process();
			m.rss_after_kib = rss_kib();
			memory.push_back(std::move(m));
			for (int fd : socks)
				close(fd);
		}

		std::uint64_t events = 0;
		udpintercept::Tracer tracer(options, [&](const udpintercept::Event &) { events++; });
		MemoryFigures last;
		last.max_flows = options.max_flows;
		last.before = bench::maps_of_this_process();
		last.rss_before_kib = rss_kib();
		const std::uint64_t idle_maps = total_bytes(last.before), idle_rss = last.rss_before_kib;

		const auto socks = make_flows(flows, [&] { tracer.process(); });
		for (int i = 0; i < 20; i++)
			tracer.poll(std::chrono::milliseconds(50));
		const auto s = tracer.stats();
		last.stats = s;
		last.after = bench::maps_of_this_process();
		last.rss_after_kib = rss_kib();
		memory.push_back(last);

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

		const ExpiryFigures expiry = measure_expiry(options, flows);

		CliFigures c;
		if (!cli.empty())
			c = measure_cli(cli, flows, options.max_flows, idle_s);

		utsname u{};
		uname(&u);
		double load[3] = {};
		getloadavg(load, 3);
		std::printf(
			"tracer_scale: kernel %s, backend %s (asked: %s), %d starts, %u flows, load average "
			"%.2f %.2f %.2f\n",
			u.release, std::string(udpintercept::to_string(tracer.backend())).c_str(),
			std::string(udpintercept::to_string(backend)).c_str(), starts, flows, load[0],
			load[1], load[2]);
		std::printf("%-44s %12s\n", "measure", "value");
		std::printf("%-44s %12.1f\n", "constructor to attached, median ms", ms[ms.size() / 2]);
		std::printf("%-44s %12.1f\n", "constructor to attached, min ms", ms.front());
		std::printf("%-44s %12.1f\n", "constructor to attached, max ms", ms.back());
		std::printf("%-44s %12u\n", "flow table size (max_flows)", options.max_flows);
		std::printf("%-44s %12.2f\n", "first write to a fresh page, us", fresh_page_us);
		std::printf("%-44s %12.2f\n", "first write to a page made by mmap(), us", made_page_us);
		std::printf("%-44s %12llu\n", "flows in the kernel's table",
			    static_cast<unsigned long long>(s.flows_active));
		std::printf("%-44s %12.1f\n", "BPF map memory, MiB", total_bytes(last.after) / 1048576.0);
		std::printf("%-44s %12.1f\n", "BPF map memory before the flows, MiB", idle_maps / 1048576.0);
		std::printf("%-44s %12.1f\n", "process RSS, MiB", last.rss_after_kib / 1024.0);
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
		std::printf("%-44s %12llu\n", "expiry (timeout 1 s): flows expired",
			    static_cast<unsigned long long>(expiry.expired));
		std::printf("%-44s %12.2f\n", "expiry: last expired, s after the last made", expiry.last_s);
		std::printf("%-44s %12.2f\n", "expiry: library CPU s meanwhile", expiry.cpu_s);
		if (c.ran) {
			std::printf("%-44s %12.2f\n", "CLI, idle CPU % of a core", c.idle_cpu_percent);
			std::printf("%-44s %12llu\n", "CLI, lines before SIGINT",
				    static_cast<unsigned long long>(c.lines));
			std::printf("%-44s %12llu\n", "CLI, final snapshots",
				    static_cast<unsigned long long>(c.finals));
			std::printf("%-44s %12d\n", "CLI, exit status", c.status);
		}
		print_startup(start_figures);
		print_memory(memory, flows);
		const bool cli_ok = !c.ran || (c.finals >= flows && c.status == 0);
		return s.flows_active >= flows && s.flows_untracked == 0 && finals >= flows &&
				       expiry.expired == flows && cli_ok
			       ? 0
			       : 1;
	} catch (const std::exception &e) {
		std::fprintf(stderr, "tracer_scale: %s\n", e.what());
		return 1;
	}
}
