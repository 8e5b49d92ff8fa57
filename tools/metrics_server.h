// SPDX-License-Identifier: LGPL-2.1-or-later
// The HTTP side of --metrics: prometheus-cpp's Exposer (civetweb) serving the
// exposition at /metrics, and /health for probes and supervisors.
#pragma once

#include <memory>
#include <string>

#include "cli_args.h"
#include "exposition.h"

namespace prometheus {
class Exposer;
}

namespace udpintercept::cli {

/**
 * Serves `exposition` at http://ADDR:PORT/metrics from civetweb's threads,
 * and /health: 200 while set_attached(true), 503 otherwise. One per
 * process (civetweb's request hook has no room for a pointer of ours).
 */
class MetricsServer {
public:
	/// Listens, or throws Error (stage "metrics") with the address and the errno text.
	MetricsServer(const MetricsListen &listen, std::shared_ptr<Exposition> exposition);
	~MetricsServer();
	MetricsServer(const MetricsServer &) = delete;
	MetricsServer &operator=(const MetricsServer &) = delete;

	/// http://ADDR:PORT/metrics with the port it listens on.
	std::string url() const;

	/// Whether the tracer is attached (what /health answers).
	void set_attached(bool attached) noexcept;

private:
	MetricsListen listen_;
	std::shared_ptr<Exposition> exposition_;
	std::unique_ptr<prometheus::Exposer> exposer_; // last: its threads stop first
};

} // namespace udpintercept::cli
