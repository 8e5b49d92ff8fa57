// SPDX-License-Identifier: LGPL-2.1-or-later
#include "startup_stages.h"

#include <algorithm>
#include <linux/bpf.h>
#include <map>
#include <string_view>

namespace bench {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b)
{
	return std::chrono::duration<double, std::milli>(b - a).count();
}

double ms_of(std::chrono::nanoseconds d)
{
	return std::chrono::duration<double, std::milli>(d).count();
}

bool starts_with(std::string_view text, std::string_view prefix)
{
	return text.substr(0, prefix.size()) == prefix;
}

// libbpf names the maps and programs of its feature probes libbpf_*; the
// object's own are named in the skeleton.
bool of_the_object(const BpfCall &c)
{
	return !c.name.empty() && !starts_with(c.name, "libbpf_");
}

// The loader's helper probes (kernel_probe.cpp, helper_allowed): eight
// instructions for a cgroup program type.
bool helper_probe(const BpfCall &c)
{
	return c.cmd == BPF_PROG_LOAD && c.count == 8 &&
	       (c.type == BPF_PROG_TYPE_CGROUP_SKB || c.type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
}

// The log lines of src/loader.cpp that end each stage.
constexpr std::string_view kBtf = "read the kernel's BTF";
constexpr std::string_view kBackend = "backend ";
constexpr std::string_view kOpened = "opened the BPF object";
constexpr std::string_view kRelocating = "relocating against ";
constexpr std::string_view kFailed = " failed its trial load";
constexpr std::string_view kBeside = " maps made beside the start";
constexpr std::string_view kLoaded = "loaded ";
constexpr std::string_view kAttached = "attached ";

// The wall-clock time in [from, to] of each kind of call, `kinds` of them:
// the loader verifies programs on two threads at once, so calls overlap; an
// instant goes to the first kind (the lowest) with a call in flight then.
std::vector<double> wall_by_kind(const std::vector<std::pair<std::size_t, const BpfCall *>> &calls,
				 std::size_t kinds, Clock::time_point from, Clock::time_point to)
{
	std::vector<Clock::time_point> edges = {from, to};
	for (const auto &[_, c] : calls)
		for (const Clock::time_point t : {c->start, c->start + c->took})
			edges.push_back(std::clamp(t, from, to));
	std::sort(edges.begin(), edges.end());
	std::vector<double> out(kinds, 0);
	for (std::size_t i = 0; i + 1 < edges.size(); i++) {
		const Clock::time_point a = edges[i], b = edges[i + 1];
		std::size_t kind = kinds;
		for (const auto &[k, c] : calls)
			if (c->start <= a && c->start + c->took >= b)
				kind = std::min(kind, k);
		if (kind < kinds)
			out[kind] += ms_between(a, b);
	}
	return out;
}

// Stages keep the order they first appear in; equal names add up.
class Stages {
public:
	void add(const std::string &name, double ms)
	{
		const auto [it, fresh] = index_.try_emplace(name, stages_.size());
		if (fresh)
			stages_.push_back({name, 0});
		stages_[it->second].ms += ms;
	}
	std::vector<Stage> take() { return std::move(stages_); }

private:
	std::vector<Stage> stages_;
	std::map<std::string, std::size_t> index_;
};

} // namespace

Startup split_startup(Clock::time_point begin, Clock::time_point end, const std::vector<LogLine> &log,
		      const std::vector<BpfCall> &calls)
{
	Startup out;
	out.total_ms = ms_between(begin, end);
	for (const auto &c : calls)
		if (c.cmd == BPF_MAP_CREATE && c.name == "flows" && c.result >= 0) {
			out.flow_table_ms = ms_of(c.took);
			out.flow_table_done_ms = ms_between(begin, c.start + c.took);
		}

	// A refused backend's trial: from its "opened" line to its "failed" line,
	// or, refused by the one-instruction probe before any object was opened,
	// from the line before to its "failed" line.
	std::vector<std::string> trial_of(log.size());
	for (std::size_t f = 0; f < log.size(); f++) {
		const auto at = log[f].text.find(kFailed);
		if (!starts_with(log[f].text, kBackend) || at == std::string::npos)
			continue;
		const std::string backend = log[f].text.substr(kBackend.size(), at - kBackend.size());
		std::size_t o = f;
		while (o > 0 && log[o].text != kOpened && !starts_with(log[o - 1].text, kBackend) &&
		       !starts_with(log[o - 1].text, kBtf))
			o--;
		const bool whole_object = log[o].text == kOpened;
		for (std::size_t i = whole_object ? o : f; i <= f; i++)
			trial_of[i] = whole_object ? backend : backend + ", one-instruction probe";
	}

	const auto calls_in = [&](Clock::time_point from, Clock::time_point to) {
		std::vector<const BpfCall *> in;
		for (const auto &c : calls)
			if (c.start > from && c.start <= to)
				in.push_back(&c);
		return in;
	};

	Stages stages;
	std::size_t helper_probes = 0, maps = 0, programs = 0, links = 0;
	bool opened = false, loaded = false;
	Clock::time_point from = begin;
	for (std::size_t k = 0; k <= log.size(); k++) {
		const Clock::time_point to = k < log.size() ? log[k].at : end;
		const std::string_view line =
			k < log.size() ? std::string_view(log[k].text) : std::string_view();
		const double ms = ms_between(from, to);
		const auto in = calls_in(from, to);
		if (k < log.size() && !trial_of[k].empty()) {
			double map_ms = 0, parse_ms = 0, prog_ms = 0;
			for (const BpfCall *c : in) {
				if (c->cmd == BPF_MAP_CREATE)
					map_ms += ms_of(c->took);
				else if (c->cmd == kVmlinuxBtfParse)
					parse_ms += ms_of(c->took);
				else if (c->cmd == BPF_PROG_LOAD)
					prog_ms += ms_of(c->took);
			}
			const std::string trial = "trial load of " + trial_of[k] + " (refused): ";
			stages.add(trial + "map creation", map_ms);
			stages.add(trial + "libbpf parses the kernel's BTF", parse_ms);
			stages.add(trial + "program loads", prog_ms);
			stages.add(trial + "the rest (relocations, attach targets)",
				   ms - map_ms - parse_ms - prog_ms);
		} else if (k == log.size()) {
			stages.add("after attach: ring buffer, flow tracker, clock", ms);
		} else if (starts_with(line, kBtf)) {
			stages.add("read the kernel's BTF", ms);
		} else if (starts_with(line, kRelocating)) {
			stages.add("copy out the kernel structures libbpf relocates against", ms);
		} else if (line == kOpened) {
			opened = true;
			stages.add("open the BPF object", ms);
		} else if (starts_with(line, kBackend)) {
			stages.add("look for each backend's hooks in the BTF", ms);
		} else if (starts_with(line, kLoaded)) {
			loaded = true;
			// Kinds, in the order an instant two of them share goes to.
			enum { kProgram, kMap, kBtf, kProbe, kParse, kKinds };
			std::vector<std::pair<std::size_t, const BpfCall *>> kinds;
			for (const BpfCall *c : in) {
				const double t = ms_of(c->took);
				if (c->cmd == kVmlinuxBtfParse) {
					kinds.emplace_back(kParse, c);
				} else if (c->cmd == BPF_MAP_CREATE && of_the_object(*c)) {
					kinds.emplace_back(kMap, c);
					maps++;
					out.objects.push_back({true, c->name, c->count, t});
				} else if (c->cmd == BPF_PROG_LOAD && of_the_object(*c)) {
					kinds.emplace_back(kProgram, c);
					programs++;
					out.objects.push_back({false, c->name, c->count, t});
				} else if (c->cmd == BPF_BTF_LOAD) {
					kinds.emplace_back(kBtf, c);
				} else {
					kinds.emplace_back(kProbe, c);
				}
			}
			const auto wall = wall_by_kind(kinds, kKinds, from, to);
			stages.add("load: map creation", wall[kMap]);
			stages.add("load: program verification", wall[kProgram]);
			stages.add("load: the object's BTF", wall[kBtf]);
			stages.add("load: libbpf's feature probes", wall[kProbe]);
			stages.add("load: libbpf parses the kernel's BTF again", wall[kParse]);
			stages.add("load: libbpf's own work (relocations, ELF)",
				   ms - wall[kMap] - wall[kProgram] - wall[kBtf] - wall[kProbe] -
					   wall[kParse]);
		} else if (starts_with(line, kAttached)) {
			for (const BpfCall *c : in)
				links += c->cmd == BPF_LINK_CREATE || c->cmd == BPF_RAW_TRACEPOINT_OPEN;
			stages.add("attach", ms);
		} else if (line.find(kBeside) != std::string_view::npos) {
			// The constructor makes the object's other maps (and the thread
			// too once the flow table is made), then waits for the table if
			// it must: wall-clock time with a map being made, and the rest.
			std::vector<std::pair<std::size_t, const BpfCall *>> made;
			for (const BpfCall *c : in)
				if (c->cmd == BPF_MAP_CREATE && of_the_object(*c))
					made.emplace_back(0, c);
			const double map_ms = wall_by_kind(made, 1, from, to)[0];
			stages.add("beside the flow table: the other maps made", map_ms);
			stages.add("beside the flow table: configuring, waiting for the table", ms - map_ms);
		} else if (opened && !loaded) {
			for (const BpfCall *c : in)
				helper_probes += helper_probe(*c);
			stages.add("configure: the loader's trial loads", ms);
		} else {
			stages.add("other", ms);
		}
		from = to;
	}
	out.stages = stages.take();
	for (Stage &s : out.stages) {
		if (s.name == "configure: the loader's trial loads")
			s.name += " (" + std::to_string(helper_probes) + ")";
		else if (s.name == "load: map creation")
			s.name += " (" + std::to_string(maps) + " maps)";
		else if (s.name == "load: program verification")
			s.name += " (" + std::to_string(programs) + " programs)";
		else if (s.name == "attach")
			s.name += " (" + std::to_string(links) + " links)";
	}
	return out;
}

} // namespace bench
