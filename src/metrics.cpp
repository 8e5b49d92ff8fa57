// SPDX-License-Identifier: LGPL-2.1-or-later
#include <udpintercept/error.h>
#include <udpintercept/metrics.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <fmt/format.h>
#include <map>
#include <mutex>
#include <unordered_map>

#include "parse.h"
#include "utf8.h"

namespace udpintercept {

namespace {

constexpr std::array<std::pair<MetricLabel, std::string_view>, 10> kLabelNames = {{
	{MetricLabel::comm, "comm"},
	{MetricLabel::family, "family"},
	{MetricLabel::container, "container"},
	{MetricLabel::uid, "uid"},
	{MetricLabel::pid, "pid"},
	{MetricLabel::netns, "netns"},
	{MetricLabel::local_addr, "local_addr"},
	{MetricLabel::local_port, "local_port"},
	{MetricLabel::remote_addr, "remote_addr"},
	{MetricLabel::remote_port, "remote_port"},
}};

// Which snapshots end a flow. No default: a new kind must be decided here.
bool ends_flow(EventKind kind)
{
	switch (kind) {
	case EventKind::connect:
	case EventKind::update:
		return false;
	case EventKind::close:
	case EventKind::final:
	case EventKind::expire:
		return true;
	}
	return false;
}

// Prometheus takes UTF-8 label values; comm and cgroup paths are any bytes.
std::string utf8_value(std::string_view text)
{
	std::string out;
	out.reserve(text.size());
	while (!text.empty()) {
		const std::size_t n = detail::utf8_sequence(text);
		if (n == 0) {
			out += "\xef\xbf\xbd"; // U+FFFD REPLACEMENT CHARACTER
			text.remove_prefix(1);
			continue;
		}
		out.append(text.substr(0, n));
		text.remove_prefix(n);
	}
	return out;
}

std::string label_value(MetricLabel label, const Event &e)
{
	switch (label) {
	case MetricLabel::comm:
		return utf8_value(e.comm);
	case MetricLabel::family:
		return std::string(to_string(e.family));
	case MetricLabel::container:
		return utf8_value(e.container_id.empty() ? e.cgroup : e.container_id);
	case MetricLabel::uid:
		return std::to_string(e.uid);
	case MetricLabel::pid:
		return std::to_string(e.pid);
	case MetricLabel::netns:
		return std::to_string(e.netns);
	case MetricLabel::local_addr:
		return e.local.address.to_string();
	case MetricLabel::local_port:
		return std::to_string(e.local.port);
	case MetricLabel::remote_addr:
		return e.remote.address.to_string();
	case MetricLabel::remote_port:
		return std::to_string(e.remote.port);
	}
	return {};
}

FlowCounters counters_of(const Event &e)
{
	return {e.tx_bytes, e.tx_packets, e.rx_bytes, e.rx_packets, e.rx_drops};
}

void add_to(FlowCounters &sum, const FlowCounters &d)
{
	sum.sent_bytes += d.sent_bytes;
	sum.sent_datagrams += d.sent_datagrams;
	sum.received_bytes += d.received_bytes;
	sum.received_datagrams += d.received_datagrams;
	sum.received_drops += d.received_drops;
}

// What a flow moved since its previous snapshot. Snapshots of one flow never
// go backwards; should a counter still be lower, the key names a new flow.
FlowCounters since(const FlowCounters &before, const FlowCounters &now)
{
	if (now.sent_bytes < before.sent_bytes || now.sent_datagrams < before.sent_datagrams ||
	    now.received_bytes < before.received_bytes ||
	    now.received_datagrams < before.received_datagrams || now.received_drops < before.received_drops)
		return now;
	return {now.sent_bytes - before.sent_bytes, now.sent_datagrams - before.sent_datagrams,
		now.received_bytes - before.received_bytes,
		now.received_datagrams - before.received_datagrams,
		now.received_drops - before.received_drops};
}

struct FlowKey {
	std::uint64_t socket_id;
	Endpoint remote;
	bool operator==(const FlowKey &) const = default;
};

struct FlowKeyHash {
	std::size_t operator()(const FlowKey &k) const noexcept
	{
		std::size_t h = std::hash<std::uint64_t>{}(k.socket_id);
		for (std::uint8_t b : k.remote.address.bytes)
			h = h * 131 + b;
		return h * 131 + k.remote.port;
	}
};

struct SeriesState {
	FlowCounters counters;
	std::uint64_t open_flows = 0;
	std::chrono::steady_clock::time_point last_change{}; // when add() took it
};

} // namespace

std::string_view to_string(MetricLabel label) noexcept
{
	for (const auto &[l, name] : kLabelNames)
		if (l == label)
			return name;
	return "?";
}

std::optional<MetricLabel> parse_metric_label(std::string_view name) noexcept
{
	for (const auto &[l, n] : kLabelNames)
		if (n == name)
			return l;
	return std::nullopt;
}

void MetricsConfig::validate() const
{
	for (auto it = labels.begin(); it != labels.end(); ++it)
		if (std::find(labels.begin(), it, *it) != it)
			throw Error("options", EINVAL,
				    fmt::format("metric label {} is given twice", to_string(*it)));
	if (auto bad = detail::out_of_range(max_series, detail::kMaxSeries))
		throw Error("options", EINVAL, *bad);
	if (stale_after.count() < 0)
		throw Error("options", EINVAL, "stale_after must not be negative");
}

struct __attribute__((visibility("hidden"))) FlowMetrics::Impl {
	struct Flow {
		FlowCounters last;
		SeriesState *series = nullptr; // none until the flow carries traffic
	};

	explicit Impl(MetricsConfig c) : config(std::move(c)) {}

	SeriesState &series_for(const Event &e)
	{
		std::vector<std::string> values;
		values.reserve(config.labels.size());
		for (MetricLabel l : config.labels)
			values.push_back(label_value(l, e));
		if (auto it = series.find(values); it != series.end())
			return it->second;
		if (series.size() >= config.max_series) {
			overflow_flows++;
			if (!overflow)
				overflow = std::make_unique<SeriesState>();
			return *overflow;
		}
		return series.emplace(std::move(values), SeriesState{}).first->second;
	}

	const MetricsConfig config;
	mutable std::mutex mutex;
	// Ordered, so that snapshots come sorted; its nodes stay put, so flows
	// point at their series.
	std::map<std::vector<std::string>, SeriesState> series;
	std::unique_ptr<SeriesState> overflow;
	std::unordered_map<FlowKey, Flow, FlowKeyHash> flows;
	std::uint64_t overflow_flows = 0;
	std::uint64_t dropped_series = 0;
};

FlowMetrics::FlowMetrics(MetricsConfig config)
{
	config.validate();
	impl_ = std::make_unique<Impl>(std::move(config));
}

FlowMetrics::~FlowMetrics() = default;

const MetricsConfig &FlowMetrics::config() const noexcept
{
	return impl_->config;
}

void FlowMetrics::add(const Event &event)
{
	Impl &d = *impl_;
	const std::lock_guard lock(d.mutex);
	const auto [it, inserted] = d.flows.try_emplace(FlowKey{event.socket_id, event.remote});
	Impl::Flow &flow = it->second;
	const FlowCounters now = counters_of(event);
	const FlowCounters delta = since(flow.last, now);
	flow.last = now;
	const bool traffic = delta != FlowCounters{};
	if (!flow.series && traffic) {
		flow.series = &d.series_for(event);
		flow.series->open_flows++;
	}
	if (flow.series) {
		add_to(flow.series->counters, delta);
		if (traffic || ends_flow(event.kind))
			flow.series->last_change = std::chrono::steady_clock::now();
	}
	if (ends_flow(event.kind)) {
		if (flow.series)
			flow.series->open_flows--;
		d.flows.erase(it);
	}
}

MetricsSnapshot FlowMetrics::snapshot() const
{
	const Impl &d = *impl_;
	MetricsSnapshot s;
	s.labels = d.config.labels;
	const std::lock_guard lock(d.mutex);
	s.series.reserve(d.series.size() + 1);
	for (const auto &[values, state] : d.series)
		s.series.push_back(MetricSeries{values, state.counters, false});
	if (d.overflow)
		s.series.push_back(MetricSeries{
			std::vector<std::string>(d.config.labels.size(), std::string(kOverflowLabelValue)),
			d.overflow->counters, true});
	s.overflow_flows = d.overflow_flows;
	s.dropped_series = d.dropped_series;
	s.open_flows = d.flows.size();
	return s;
}

std::size_t FlowMetrics::drop_stale()
{
	return drop_stale(std::chrono::steady_clock::now());
}

std::size_t FlowMetrics::drop_stale(WallTime now)
{
	const auto ahead = now - std::chrono::system_clock::now();
	return drop_stale(std::chrono::steady_clock::now() +
			  std::chrono::duration_cast<std::chrono::steady_clock::duration>(ahead));
}

std::size_t FlowMetrics::drop_stale(std::chrono::steady_clock::time_point now)
{
	Impl &d = *impl_;
	if (d.config.stale_after.count() == 0)
		return 0;
	const std::lock_guard lock(d.mutex);
	const std::size_t dropped = std::erase_if(d.series, [&](const auto &kv) {
		return kv.second.open_flows == 0 && now - kv.second.last_change >= d.config.stale_after;
	});
	d.dropped_series += dropped;
	return dropped;
}

} // namespace udpintercept
