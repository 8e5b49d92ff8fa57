// SPDX-License-Identifier: LGPL-2.1-or-later
// A Tracer that keeps the snapshots of this test's network namespace.
#pragma once

#include <udpintercept/tracer.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "testutil.h"

namespace testutil {

inline std::string endpoint(const udpintercept::Endpoint &e)
{
	return e.address.to_string() + ":" + std::to_string(e.port);
}

/// Options for the backend under test (see test_backend()).
inline udpintercept::Options with_test_backend(udpintercept::Options o)
{
	if (o.backend == udpintercept::Backend::automatic)
		o.backend = udpintercept::parse_backend(test_backend()).value();
	o.sends_at_tracepoint = o.sends_at_tracepoint || test_sends_at_tracepoint();
	return o;
}

class Recorder {
public:
	explicit Recorder(udpintercept::Options options = {})
	    : netns_(current_netns()),
	      tracer_(with_test_backend(std::move(options)), [this](const udpintercept::Event &e) {
		      if (e.netns == netns_)
			      events.push_back(e);
	      })
	{
	}

	/// Delivers whatever arrives during `d` (for tests that show nothing more arrives).
	void pump(std::chrono::milliseconds d)
	{
		const auto end = std::chrono::steady_clock::now() + d;
		while (std::chrono::steady_clock::now() < end)
			tracer_.poll(std::chrono::milliseconds(10));
	}

	/// Delivers snapshots until `done()` holds, or at most `deadline`; whether it held.
	template <typename Done>
	bool pump_until(Done done, std::chrono::milliseconds deadline = std::chrono::seconds(10))
	{
		const auto end = std::chrono::steady_clock::now() + deadline;
		while (!done()) {
			if (std::chrono::steady_clock::now() >= end)
				return false;
			tracer_.poll(std::chrono::milliseconds(10));
		}
		return true;
	}

	/// Stops the tracer: what the kernel queued, then the `final` snapshots, arrive.
	void stop() { tracer_.stop(); }

	/// The newest snapshot of each flow, named by its endpoints. A flow is
	/// grouped by socket and peer: its `connect` snapshot can show the local
	/// port as 0 when connect() was what bound the socket.
	std::map<FlowName, udpintercept::Event> last_by_flow() const
	{
		std::map<FlowName, udpintercept::Event> out;
		for (const auto &[id, evs] : groups())
			out[{endpoint(evs.back().local), endpoint(evs.back().remote)}] = evs.back();
		return out;
	}

	/// The newest snapshot of the flow with these endpoints, if any arrived.
	std::optional<udpintercept::Event> last_of(const FlowName &f) const
	{
		auto evs = of_flow(f);
		if (evs.empty())
			return std::nullopt;
		return evs.back();
	}

	/// Every snapshot of the flow whose newest snapshot has these endpoints.
	std::vector<udpintercept::Event> of_flow(const FlowName &f) const
	{
		for (const auto &[id, evs] : groups())
			if (endpoint(evs.back().local) == f.local && endpoint(evs.back().remote) == f.remote)
				return evs;
		return {};
	}

	udpintercept::Tracer &tracer() { return tracer_; }

	std::vector<udpintercept::Event> events;

private:
	std::map<std::pair<std::uint64_t, std::string>, std::vector<udpintercept::Event>> groups() const
	{
		std::map<std::pair<std::uint64_t, std::string>, std::vector<udpintercept::Event>> g;
		for (const auto &e : events)
			g[{e.socket_id, endpoint(e.remote)}].push_back(e);
		return g;
	}

	std::uint32_t netns_;
	udpintercept::Tracer tracer_;
};

inline udpintercept::WallTime wall_now()
{
	return udpintercept::WallTime(std::chrono::duration_cast<std::chrono::nanoseconds>(
		std::chrono::system_clock::now().time_since_epoch()));
}

} // namespace testutil
