// SPDX-License-Identifier: LGPL-2.1-or-later
#include "exposition.h"

#include <utility>

namespace udpintercept::cli {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type)
{
	MetricFamily f;
	f.name = std::move(name);
	f.help = std::move(help);
	f.type = type;
	return f;
}

// One unlabelled sample: counters and gauges are written alike.
MetricFamily single(std::string name, std::string help, MetricType type, std::uint64_t value)
{
	MetricFamily f = family(std::move(name), std::move(help), type);
	ClientMetric m;
	// Exact below 2^53: 9 PB of bytes, far past any counter here.
	(type == MetricType::Counter ? m.counter.value : m.gauge.value) = static_cast<double>(value);
	f.metric.push_back(std::move(m));
	return f;
}

} // namespace

Exposition::Exposition(const FlowMetrics &flows, std::string version)
    : flows_(flows), version_(std::move(version))
{
}

void Exposition::update(TracerFigures figures)
{
	const std::lock_guard lock(mutex_);
	figures_ = std::move(figures);
}

std::vector<MetricFamily> Exposition::Collect() const
{
	TracerFigures t;
	{
		const std::lock_guard lock(mutex_);
		t = figures_;
	}
	// One snapshot for the flow families, so that they agree with each other.
	const MetricsSnapshot s = flows_.snapshot();

	struct FlowCounter {
		const char *name;
		const char *help;
		std::uint64_t FlowCounters::*field;
	};
	static constexpr FlowCounter kFlowCounters[] = {
		{"udpintercept_sent_bytes_total",
		 "UDP payload bytes the flows with these labels sent (accepted by the kernel), since tracing "
		 "started; closed flows included",
		 &FlowCounters::sent_bytes},
		{"udpintercept_sent_datagrams_total",
		 "UDP datagrams the flows with these labels sent (a UDP_SEGMENT send counts its segments)",
		 &FlowCounters::sent_datagrams},
		{"udpintercept_received_bytes_total",
		 "UDP payload bytes the flows with these labels received (consumed by the application)",
		 &FlowCounters::received_bytes},
		{"udpintercept_received_datagrams_total",
		 "UDP datagrams the flows with these labels received (consumed by the application)",
		 &FlowCounters::received_datagrams},
		{"udpintercept_received_drops_total",
		 "UDP datagrams sent to the flows with these labels that the kernel discarded on their way "
		 "into the socket (receive buffer or protocol memory full, the socket's filter, a bad "
		 "checksum)",
		 &FlowCounters::received_drops},
	};
	std::vector<MetricFamily> out;
	for (const auto &c : kFlowCounters) {
		MetricFamily f = family(c.name, c.help, MetricType::Counter);
		f.metric.reserve(s.series.size());
		for (const auto &series : s.series) {
			ClientMetric m;
			m.label.reserve(s.labels.size());
			for (std::size_t i = 0; i < s.labels.size(); i++)
				m.label.push_back({std::string(to_string(s.labels[i])), series.values[i]});
			m.counter.value = static_cast<double>(series.counters.*c.field);
			f.metric.push_back(std::move(m));
		}
		out.push_back(std::move(f));
	}

	const Stats &st = t.stats;
	out.push_back(single("udpintercept_series",
			     "Flow series in this exposition, the ~other series included (the limit is "
			     "--metrics-max-series)",
			     MetricType::Gauge, s.series.size()));
	out.push_back(single("udpintercept_series_overflow_total",
			     "Flows counted in the ~other series because the series limit was reached",
			     MetricType::Counter, s.overflow_flows));
	out.push_back(single("udpintercept_series_dropped_total",
			     "Series dropped by the staleness rule: no open flow and no change for an hour",
			     MetricType::Counter, s.dropped_series));
	out.push_back(single("udpintercept_flows_active", "Flows in the kernel's flow table",
			     MetricType::Gauge, st.flows_active));
	out.push_back(single("udpintercept_flows_expired_total",
			     "Flows reported as expire and removed from the flow table (idle for the flow "
			     "timeout, or expired early)",
			     MetricType::Counter, st.expired));
	out.push_back(single("udpintercept_flows_expired_early_total",
			     "Flows expired before their timeout because the flow table was past 90 % full",
			     MetricType::Counter, st.expired_early));
	out.push_back(single("udpintercept_snapshots_total", "Flow snapshots the tracer delivered",
			     MetricType::Counter, st.events));
	out.push_back(
		single("udpintercept_snapshots_lost_total",
		       "Snapshots the ring buffer had no room for (counters stay exact: later snapshots "
		       "are cumulative)",
		       MetricType::Counter, st.lost));
	out.push_back(single("udpintercept_closes_deferred_total",
			     "Socket closes that missed the ring buffer, collected from the kernel "
			     "afterwards (their flows' close snapshots came late, not lost)",
			     MetricType::Counter, st.closes_deferred));
	out.push_back(single("udpintercept_untracked_flows_total",
			     "Operations on flows the full flow table could not admit (not in the flow "
			     "counters)",
			     MetricType::Counter, st.flows_untracked));
	out.push_back(single("udpintercept_untracked_datagrams_total", "Datagrams of those operations",
			     MetricType::Counter, st.untracked_packets));
	out.push_back(single("udpintercept_untracked_bytes_total", "Bytes of those operations",
			     MetricType::Counter, st.untracked_bytes));
	out.push_back(single("udpintercept_untracked_sockets_total",
			     "Sockets the full socket table could not admit", MetricType::Counter,
			     st.sockets_untracked));
	out.push_back(
		single("udpintercept_peer_unknown_total",
		       "Receives whose sender could not be known (counted under the unspecified address)",
		       MetricType::Counter, st.peer_unknown));
	out.push_back(single("udpintercept_no_listener_datagrams_total",
			     "UDP datagrams that arrived for a port no socket listened on (the kernel's "
			     "NoPorts; they belong to no process)",
			     MetricType::Counter, st.no_listener));
	out.push_back(single("udpintercept_program_runs_missed_total",
			     "Runs of the tracer's programs the kernel skipped because the program was "
			     "already running on the CPU (what they would have counted is in no flow)",
			     MetricType::Counter, st.program_misses));
	out.push_back(single("udpintercept_cgroup_watching",
			     "1 while inotify watches every directory of the cgroup v2 tree, so that a new "
			     "cgroup is named from its own directory; 0 before the first lookup and while a "
			     "directory could not be watched (then each unknown cgroup walks the tree)",
			     MetricType::Gauge, t.cgroups.watching ? 1 : 0));
	out.push_back(single("udpintercept_cgroup_tree_walks_total",
			     "Walks of the whole cgroup v2 tree to name cgroup ids, the first lookup's "
			     "included",
			     MetricType::Counter, t.cgroups.tree_walks));
	out.push_back(single("udpintercept_cgroup_directories_watched",
			     "Directories of the cgroup v2 tree inotify watches", MetricType::Gauge,
			     t.cgroups.directories_watched));
	if (!t.backend.empty()) {
		MetricFamily info =
			family("udpintercept_build_info",
			       "The udpintercept version and the kernel hooks (backend) it traces with",
			       MetricType::Gauge);
		ClientMetric m;
		m.label = {{"backend", t.backend}, {"version", version_}};
		m.gauge.value = 1;
		info.metric.push_back(std::move(m));
		out.push_back(std::move(info));
	}
	return out;
}

} // namespace udpintercept::cli
