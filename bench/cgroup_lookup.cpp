// SPDX-License-Identifier: LGPL-2.1-or-later
// What naming a new cgroup costs the tracer's thread: a tree of cgroups is
// made under the cgroup v2 mount, then new ones one at a time, each looked up
// by its id as a flow from it would be. Side by side in one run, alternating
// rounds: cgroups learnt from inotify watches (the library's way) and a walk
// of the whole tree for each (its way where no watch can be had).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <getopt.h>
#include <string>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <vector>

#include <fmt/core.h>

#include "args.h"
#include "cgroup_names.h"
#include "kernel_probe.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kProgram = "cgroup_lookup";

constexpr std::string_view kHelp = R"(Usage: cgroup_lookup [OPTION]...
Measure what naming a new cgroup costs: make a tree of cgroups under the
cgroup v2 mount, then new ones one at a time, each looked up by its id.
Side by side, in alternating rounds: learnt from inotify watches, and a
walk of the whole tree for each. Needs root (it makes cgroups), and removes
what it made.

  --cgroups N   cgroups in the tree, 50 to a parent (default 1000)
  --new N       new cgroups looked up a round (default 50)
  --rounds N    rounds of each way (default 5)
  --help        this text

Prints, per way: the first lookup (one walk, with the watches if any) and the
lookup of a new cgroup, medians over rounds of each round's median.
)";

double median(std::vector<double> v)
{
	std::sort(v.begin(), v.end());
	return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::uint64_t inode(const std::string &path)
{
	struct stat st {};
	if (stat(path.c_str(), &st) != 0)
		throw std::system_error(errno, std::generic_category(), "stat " + path);
	return st.st_ino;
}

struct Round {
	double first_ms;
	double new_us; // median over the round's new cgroups
	std::uint64_t walks;
};

Round measure(const std::string &mount, const std::string &top, bool watch, unsigned fresh, unsigned round)
{
	udpintercept::detail::CgroupNames names(mount, "/proc", false, watch);
	const auto t0 = Clock::now();
	if (names.path(inode(mount + top)) != top)
		throw std::runtime_error("the tree's top was not found by its id");
	const double first_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
	std::vector<double> each;
	for (unsigned i = 0; i < fresh; i++) {
		const std::string rel = fmt::format("{}/s0/new-{}-{}-{}", top, watch ? "w" : "n", round, i);
		fs::create_directory(mount + rel);
		const std::uint64_t id = inode(mount + rel);
		const auto t = Clock::now();
		const std::string &got = names.path(id);
		each.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
		if (got != rel)
			throw std::runtime_error("a new cgroup was not named: " + rel);
	}
	return {first_ms, median(each), names.walks()};
}

void remove_tree(const std::string &dir)
{
	std::error_code ec;
	std::vector<fs::path> dirs;
	for (auto it = fs::recursive_directory_iterator(dir, ec);
	     !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
		if (it->is_directory(ec))
			dirs.push_back(it->path());
	// Deepest first: cgroupfs removes an empty cgroup with rmdir (its files go with it).
	std::sort(dirs.begin(), dirs.end(), [](const fs::path &a, const fs::path &b) {
		return std::distance(a.begin(), a.end()) > std::distance(b.begin(), b.end());
	});
	for (const auto &d : dirs)
		rmdir(d.c_str());
	rmdir(dir.c_str());
}

} // namespace

int main(int argc, char **argv)
{
	unsigned cgroups = 1000, fresh = 50, rounds = 5;
	static const option kOptions[] = {{"cgroups", required_argument, nullptr, 'c'},
					  {"new", required_argument, nullptr, 'n'},
					  {"rounds", required_argument, nullptr, 'r'},
					  {"help", no_argument, nullptr, 'h'},
					  {nullptr, 0, nullptr, 0}};
	for (int c; (c = getopt_long(argc, argv, ":", kOptions, nullptr)) != -1;) {
		switch (c) {
		case 'c':
			cgroups = bench::parse_number<unsigned>(kProgram, optarg, "cgroups", 1, 100000);
			break;
		case 'n':
			fresh = bench::parse_number<unsigned>(kProgram, optarg, "new", 1, 10000);
			break;
		case 'r':
			rounds = bench::parse_number<unsigned>(kProgram, optarg, "rounds", 1, 100);
			break;
		case 'h':
			fmt::print("{}", kHelp);
			return 0;
		default:
			bench::option_error(kProgram, c, argv);
		}
	}
	bench::no_operands(kProgram, argc, argv);
	if (geteuid() != 0) {
		fmt::print(stderr, "{}: making cgroups needs root\n", kProgram);
		return 77;
	}
	const std::string mount = udpintercept::detail::cgroup2_mount();
	if (mount.empty()) {
		fmt::print(stderr, "{}: no cgroup v2 mount here\n", kProgram);
		return 1;
	}
	const std::string top = fmt::format("/udpi-cgroup-lookup-{}", getpid());
	int rc = 0;
	try {
		for (unsigned i = 0; i < cgroups; i++)
			fs::create_directories(fmt::format("{}{}/s{}/c{}", mount, top, i / 50, i));
		std::vector<Round> watched, walked;
		for (unsigned r = 0; r < rounds; r++) {
			watched.push_back(measure(mount, top, true, fresh, r));
			walked.push_back(measure(mount, top, false, fresh, r));
		}
		const auto row = [&](const char *way, const std::vector<Round> &rs) {
			std::vector<double> first, each;
			for (const auto &x : rs) {
				first.push_back(x.first_ms);
				each.push_back(x.new_us);
			}
			fmt::print("| {:<34} | {:>15.1f} | {:>24.1f} | {:>13} |\n", way, median(first),
				   median(each), rs.back().walks);
		};
		fmt::print(
			"cgroup_lookup: {} cgroups under {}{}, {} new ones a round, {} rounds of each way\n",
			cgroups, mount, top, fresh, rounds);
		fmt::print("| {:<34} | {:>15} | {:>24} | {:>13} |\n", "way", "first lookup ms",
			   "a new cgroup's lookup µs", "walks a round");
		fmt::print("|{:-<36}|{:->16}:|{:->25}:|{:->14}:|\n", "", "", "", "");
		row("inotify watches (the library's)", watched);
		row("a walk each (no watch to be had)", walked);
	} catch (const std::exception &e) {
		fmt::print(stderr, "{}: {}\n", kProgram, e.what());
		rc = 1;
	}
	remove_tree(mount + top);
	return rc;
}
