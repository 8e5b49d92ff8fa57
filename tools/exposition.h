// SPDX-License-Identifier: LGPL-2.1-or-later
// The CLI's Prometheus exposition: FlowMetrics' series and the tracer's own
// figures as metric families, collected on the HTTP server's threads.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <udpintercept/metrics.h>
#include <udpintercept/tracer.h>

namespace udpintercept::cli {

/// What the tracer says of itself, as of its thread's last refresh.
struct TracerFigures {
	Stats stats;
	std::string backend; ///< "" until attached
	CgroupNaming cgroups;
};

/**
 * The metric families of one scrape. The flow counters come from
 * FlowMetrics (thread-safe itself); the tracer's figures are handed over by
 * the tracer's thread through update(), since Tracer is not thread-safe.
 */
class Exposition : public prometheus::Collectable {
public:
	/// `flows` must outlive the exposition.
	Exposition(const FlowMetrics &flows, std::string version);

	/// From the tracer's thread.
	void update(TracerFigures figures);

	/// From the HTTP server's threads.
	std::vector<prometheus::MetricFamily> Collect() const override;

private:
	const FlowMetrics &flows_;
	const std::string version_;
	mutable std::mutex mutex_;
	TracerFigures figures_;
};

} // namespace udpintercept::cli
