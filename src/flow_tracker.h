// SPDX-License-Identifier: LGPL-2.1-or-later
// User space's side of the flows: what it has reported of each, which
// flows have changes the kernel held back, and the closes and finals.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <udpintercept/event.h>

#include "kernel_flows.h"
#include "record.h"

namespace udpintercept::detail {

struct FlowKeyHash {
	std::size_t operator()(const udpi_flow_key &k) const noexcept;
};

struct FlowKeyEqual {
	bool operator()(const udpi_flow_key &a, const udpi_flow_key &b) const noexcept;
};

/// What the tracker counts itself; readable from any thread.
struct TrackerCounters {
	std::atomic<std::uint64_t> events{0};              ///< snapshots delivered
	std::atomic<std::uint64_t> records{0};             ///< ring-buffer records handled
	std::atomic<std::uint64_t> deferred_operations{0}; ///< operations the busy table handed over
	/// Closes not received as records: from the `closed` map, or found by a full sweep.
	std::atomic<std::uint64_t> closes_deferred{0};
	std::atomic<std::uint64_t> full_sweeps{0};    ///< reads of the whole flow table
	std::atomic<std::uint64_t> flushes{0};        ///< snapshots the flush program sent
	std::atomic<std::uint64_t> flows_inserted{0}; ///< flows user space put in the table
	std::atomic<std::uint64_t> flows_erased{0};   ///< flows user space took out of it
	std::atomic<std::uint64_t> expired{0};        ///< flows ended by `expire`, early ones included
	std::atomic<std::uint64_t> expired_early{0};  ///< expired before their timeout: the table neared full
	std::atomic<std::uint64_t> late_operations{0}; ///< operations that landed on a flow as it was expired
	/// Operations handed over that no flow could take (the table had filled
	/// meanwhile), and their datagrams and bytes: counted, as the kernel's.
	std::atomic<std::uint64_t> untracked_operations{0};
	std::atomic<std::uint64_t> untracked_packets{0};
	std::atomic<std::uint64_t> untracked_bytes{0};
};

/// When a flow leaves the table without its socket closing.
struct ExpiryPolicy {
	/// A flow with no operation for this long is expired; 0: never (nor early).
	std::uint64_t timeout_ns = 0;
	/// The flow table's size: past 90 % of it, the longest-idle flows are
	/// expired early, down to 80 %; 0: no early expiry.
	std::uint64_t max_flows = 0;
};

/**
 * Turns ring-buffer records into snapshots and keeps every flow reported:
 * snapshots of a flow never go backwards and an unchanged one is not
 * repeated; a flow the kernel noted as pending is flushed once its interval
 * has passed; a socket's close ends all its flows, also those whose first
 * record comes after the close; stop() ends every flow left.
 *
 * Its cost between records is that of the pending flows, not of the table:
 * the whole table is read only when the kernel lost a record and asked for
 * a full sweep, and at stop().
 *
 * Expiry: every operation on a flow reaches user space as a record within
 * about an interval (a snapshot, or a pending note and its flush), so the
 * time a flow's last record arrived bounds its last operation. A flow not
 * heard from for the timeout is looked up in the kernel (its last_ns) and,
 * if idle there too, removed with its totals delivered as `expire`.
 */
class FlowTracker {
public:
	/// Receives each snapshot (the flow with what user space added to it).
	using Deliver = std::function<void(EventKind, const udpi_flow_key &, const udpi_flow &)>;

	FlowTracker(KernelFlows &kernel, std::chrono::nanoseconds interval, Deliver deliver,
		    ExpiryPolicy expiry = {});

	/// One record of the ring buffer (WANT_ARRIVALS is not the tracker's).
	void on_record(const Record &record, std::uint64_t now_ns);

	/// Closes, full sweeps the kernel asked for, the pending flows that are
	/// due, and the expiry of idle flows. True when a batch limit left flows
	/// due for expiry: the next sweep should come soon, not a period later.
	[[nodiscard]] bool sweep(std::uint64_t now_ns);

	/// Every flow still in the kernel's table: `close` if its socket closed, else `final`.
	void stop(std::uint64_t now_ns);

	const TrackerCounters &counters() const noexcept { return counters_; }

	/// Flows with held-back changes waiting for their interval.
	std::size_t pending() const noexcept { return pending_.size(); }

	/// Flows user space knows (in the kernel's table, but for births still on their way).
	std::size_t flows() const noexcept { return flows_.size(); }

	/// Of those, the socket's (what its close would end).
	std::size_t flows_of_socket(std::uint64_t sock_id) const
	{
		const auto it = flows_of_socket_.find(sock_id);
		return it == flows_of_socket_.end() ? 0 : it->second.size();
	}

	/// How long a closed socket's id is remembered, for records of it still on their way.
	static constexpr std::uint64_t kClosedMemoryNs = 2'000'000'000;

	/// Flows a sweep expires at most (idle, and again early), a few
	/// milliseconds of system calls; a sweep that stops there asks for the
	/// next one soon (see sweep()).
	static constexpr std::size_t kExpiryBatch = 4096;

	/// How long an expired flow's last state is remembered, for an
	/// operation that landed on it as it was removed.
	static constexpr std::uint64_t kExpiredMemoryNs = 2'000'000'000;

private:
	struct Counts {
		std::uint64_t tx_bytes = 0, tx_packets = 0, rx_bytes = 0, rx_packets = 0, rx_drops = 0;
	};
	struct FlowState {
		std::uint64_t reported_changes = 0;
		Counts extra; // operations the busy kernel table handed to user space after the flow existed
		std::uint64_t heard_ns = 0;                  // when a record of the flow last arrived
		std::list<udpi_flow_key>::iterator idle_pos; // its place in idle_
		std::size_t socket_pos = 0;                  // its place in flows_of_socket_[sock_id]
	};
	enum class Expiry { expired, active, gone };

	FlowState &remember(const udpi_flow_key &key, std::uint64_t now_ns);
	void forget(const udpi_flow_key &key);
	bool late_operation(const Record &record, std::uint64_t now_ns);
	void add_operation(const udpi_flow_key &key, const udpi_flow &flow, std::uint64_t now_ns);
	Expiry expire(const udpi_flow_key &key, std::uint64_t min_idle_ns, std::uint64_t now_ns);
	bool front_idle(std::uint64_t now_ns, std::uint64_t min_idle_ns) const;
	// Each true when its batch limit stopped it with more flows due.
	bool expire_idle(std::uint64_t now_ns);
	bool expire_early(std::uint64_t now_ns);
	void deliver(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow);
	void on_snapshot(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow,
			 std::uint64_t now_ns);
	void on_deferred(const udpi_flow_key &key, const udpi_flow &flow, std::uint64_t now_ns);
	void close_flow(const udpi_flow_key &key, udpi_flow flow, std::uint64_t close_ns);
	void close_socket(std::uint64_t sock_id, std::uint64_t close_ns, std::uint64_t now_ns);
	void collect_closed(std::uint64_t now_ns);
	void full_sweep(std::uint64_t now_ns);
	void flush_due(std::uint64_t now_ns);

	KernelFlows &kernel_;
	std::uint64_t interval_ns_;
	ExpiryPolicy expiry_;
	bool shedding_ = false; // expiring early: past 90 % of the table, until 80 %
	Deliver deliver_;
	TrackerCounters counters_;

	std::unordered_map<udpi_flow_key, FlowState, FlowKeyHash, FlowKeyEqual> flows_;
	// A socket's flows, in no order: a flow leaves by swapping with the last
	// (a server socket has one per peer, hundreds of thousands of them).
	std::unordered_map<std::uint64_t, std::vector<udpi_flow_key>> flows_of_socket_;
	// Closed sockets: id -> when user space learnt of the close.
	std::unordered_map<std::uint64_t, std::uint64_t> closed_;
	// Flows with held-back changes: key -> the kernel's last_emit_ns when noted.
	std::unordered_map<udpi_flow_key, std::uint64_t, FlowKeyHash, FlowKeyEqual> pending_;
	// Every known flow, the least recently heard first: records arrive in
	// time order, so moving a flow to the back on each keeps the order, and
	// a sweep looks at the front only (a quiet table costs nothing).
	std::list<udpi_flow_key> idle_;
	// Expired flows: key -> their state when removed, and when.
	struct Expired {
		udpi_flow flow;
		std::uint64_t when_ns;
	};
	std::unordered_map<udpi_flow_key, Expired, FlowKeyHash, FlowKeyEqual> expired_;
};

} // namespace udpintercept::detail
