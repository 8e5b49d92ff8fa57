// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <udpintercept/event.h>
#include <udpintercept/export.h>

namespace udpintercept {

/// A label of the flow metrics' series: what flows are summed by.
enum class MetricLabel {
	comm,        ///< the command (default)
	family,      ///< "ipv4" or "ipv6" (default)
	container,   ///< the container id, else the cgroup path (default)
	uid,         ///< the user id
	pid,         ///< the process id
	netns,       ///< the network namespace's inode number
	local_addr,  ///< the local address
	local_port,  ///< the local port
	remote_addr, ///< the remote address
	remote_port, ///< the remote port
};

/// The label's name as it appears in the exposition ("comm", "local_port", …).
UDPINTERCEPT_EXPORT std::string_view to_string(MetricLabel label) noexcept;
/// The inverse of to_string(); nullopt for an unknown name.
UDPINTERCEPT_EXPORT std::optional<MetricLabel> parse_metric_label(std::string_view name) noexcept;

/// The label value of the series that takes the traffic past the series limit.
inline constexpr std::string_view kOverflowLabelValue = "~other";

/// How FlowMetrics groups flows into series.
struct UDPINTERCEPT_EXPORT MetricsConfig {
	/**
	 * The labels, in the order they are reported. The default (comm,
	 * family, container) is bounded by the machine's programs and
	 * containers; addresses and ports can multiply without bound, so any
	 * label set stays under max_series.
	 */
	std::vector<MetricLabel> labels{MetricLabel::comm, MetricLabel::family, MetricLabel::container};

	/**
	 * At most this many series (the overflow series aside). A flow whose
	 * label values would open one more is counted in the overflow series,
	 * whose label values are all kOverflowLabelValue.
	 */
	std::size_t max_series = 10000;

	/**
	 * The staleness rule: a series none of whose flows is open, and that
	 * has not changed for this long, is dropped (0: never). Should its
	 * label values come back, the series starts again from 0, which
	 * Prometheus's rate() and increase() read as a counter reset.
	 */
	std::chrono::seconds stale_after{3600};

	/// Throws Error (stage "options") naming the first invalid field.
	void validate() const;
};

/// The counters of a series.
struct FlowCounters {
	std::uint64_t sent_bytes = 0;
	std::uint64_t sent_datagrams = 0;
	std::uint64_t received_bytes = 0;
	std::uint64_t received_datagrams = 0;
	std::uint64_t received_drops =
		0; ///< datagrams the kernel discarded on their way in (Event::rx_drops)
	bool operator==(const FlowCounters &) const = default;
};

/// One series: its label values and the sums of its flows' counters.
struct MetricSeries {
	std::vector<std::string> values; ///< valid UTF-8, in MetricsSnapshot::labels order
	FlowCounters counters;
	bool overflow = false; ///< the series of the flows past the limit (values all "~other")
};

/// The series at one instant.
struct MetricsSnapshot {
	std::vector<MetricLabel> labels;
	std::vector<MetricSeries> series; ///< ordered by values; the overflow series, if any, last
	std::uint64_t overflow_flows = 0; ///< flows counted in the overflow series, ever
	std::uint64_t dropped_series = 0; ///< series dropped by the staleness rule, ever
	std::uint64_t open_flows = 0;     ///< flows seen and not yet closed
};

/**
 * Sums the tracer's flows into series by label values: exact, monotonic
 * counters for an exposition of one's own (the CLI's --metrics is one).
 *
 * Feed it every Event a Tracer delivers. Snapshots are cumulative per
 * flow (a flow is a socket_id and a remote endpoint), so each adds what its
 * flow moved since the previous one; `close` and `final` end the flow, and
 * what it moved stays in its series. A flow belongs to one series, chosen by
 * the label values of its first snapshot that carries traffic. Each counter
 * of a series is the sum of its flows' counters, at every snapshot().
 *
 * add() and snapshot() may be called from different threads (the tracer's
 * and an HTTP server's).
 */
class UDPINTERCEPT_EXPORT FlowMetrics {
public:
	/// Throws Error (stage "options") for an invalid config.
	explicit FlowMetrics(MetricsConfig config = {});
	~FlowMetrics();
	FlowMetrics(const FlowMetrics &) = delete;
	FlowMetrics &operator=(const FlowMetrics &) = delete;

	/// Adds one snapshot.
	void add(const Event &event);

	/// A copy of every series and the overflow count.
	MetricsSnapshot snapshot() const;

	/**
	 * Applies the staleness rule as of now: drops the series without an
	 * open flow whose last change is at least MetricsConfig::stale_after
	 * old. A change is dated when add() takes it, on the monotonic clock,
	 * so a step of the wall clock (NTP, an administrator) neither ages
	 * series nor keeps them. Returns how many it dropped.
	 */
	std::size_t drop_stale();

	/// The same as of `now`, an instant of the monotonic clock add() dates changes by.
	std::size_t drop_stale(std::chrono::steady_clock::time_point now);

	/**
	 * The same as of the wall-clock instant `now`, read against the wall
	 * clock at the call (now - system_clock::now() from this moment).
	 */
	[[deprecated("the wall clock can step: drop_stale()")]] std::size_t drop_stale(WallTime now);

	/// The config it was built with.
	const MetricsConfig &config() const noexcept;

private:
	struct Impl;
	std::unique_ptr<Impl> impl_;
};

} // namespace udpintercept
