// SPDX-License-Identifier: LGPL-2.1-or-later
#include "flow_tracker.h"

#include <algorithm>
#include <cstring>

namespace udpintercept::detail {

namespace {

// Time from `then` to `now`; 0 for a time after now (the kernel's clock, read
// by an operation while a sweep that read `now` runs, is ahead of it).
std::uint64_t elapsed(std::uint64_t now, std::uint64_t then) noexcept
{
	return now > then ? now - then : 0;
}

} // namespace

std::size_t FlowKeyHash::operator()(const udpi_flow_key &k) const noexcept
{
	std::uint64_t h = k.sock_id * 0x9e3779b97f4a7c15ULL;
	std::uint64_t a, b;
	std::memcpy(&a, k.raddr, 8);
	std::memcpy(&b, k.raddr + 8, 8);
	h ^= a + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	h ^= b + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	h ^= (std::uint64_t(k.rport) << 16 | k.family) + (h << 6) + (h >> 2);
	return h;
}

bool FlowKeyEqual::operator()(const udpi_flow_key &a, const udpi_flow_key &b) const noexcept
{
	return std::memcmp(&a, &b, sizeof(a)) == 0;
}

FlowTracker::FlowTracker(KernelFlows &kernel, std::chrono::nanoseconds interval, Deliver deliver,
			 ExpiryPolicy expiry)
    : kernel_(kernel), interval_ns_(static_cast<std::uint64_t>(interval.count())), expiry_(expiry),
      deliver_(std::move(deliver))
{
}

// Known from now on, and heard from now: records arrive in time order, so
// the flow goes to the back of idle_.
FlowTracker::FlowState &FlowTracker::remember(const udpi_flow_key &key, std::uint64_t now_ns)
{
	auto [it, added] = flows_.try_emplace(key);
	FlowState &state = it->second;
	if (added) {
		auto &of_socket = flows_of_socket_[key.sock_id];
		state.socket_pos = of_socket.size();
		of_socket.push_back(key);
		state.idle_pos = idle_.insert(idle_.end(), key);
	} else {
		idle_.splice(idle_.end(), idle_, state.idle_pos);
	}
	state.heard_ns = std::max(state.heard_ns, now_ns);
	return state;
}

// Constant time, whatever the socket's number of flows. A socket that
// close_socket() is ending has left flows_of_socket_ already.
void FlowTracker::forget(const udpi_flow_key &key)
{
	pending_.erase(key);
	const auto it = flows_.find(key);
	if (it == flows_.end())
		return;
	idle_.erase(it->second.idle_pos);
	if (auto s = flows_of_socket_.find(key.sock_id); s != flows_of_socket_.end()) {
		std::vector<udpi_flow_key> &keys = s->second;
		const std::size_t pos = it->second.socket_pos;
		if (pos < keys.size() && FlowKeyEqual{}(keys[pos], key)) {
			if (pos + 1 != keys.size()) {
				keys[pos] = keys.back();
				if (auto moved = flows_.find(keys[pos]); moved != flows_.end())
					moved->second.socket_pos = pos;
			}
			keys.pop_back();
			if (keys.empty())
				flows_of_socket_.erase(s);
		}
	}
	flows_.erase(it);
}

void FlowTracker::deliver(EventKind kind, const udpi_flow_key &key, const udpi_flow &kernel_flow)
{
	udpi_flow flow = kernel_flow;
	if (auto it = flows_.find(key); it != flows_.end()) {
		const Counts &extra = it->second.extra;
		flow.tx_bytes += extra.tx_bytes;
		flow.tx_packets += extra.tx_packets;
		flow.rx_bytes += extra.rx_bytes;
		flow.rx_packets += extra.rx_packets;
		flow.rx_drops += extra.rx_drops;
	}
	counters_.events.fetch_add(1, std::memory_order_relaxed);
	deliver_(kind, key, flow);
}

void FlowTracker::on_record(const Record &record, std::uint64_t now_ns)
{
	counters_.records.fetch_add(1, std::memory_order_relaxed);
	switch (record.kind) {
	case UDPI_REC_NEW:
		expired_.erase(record.key); // the kernel made a new entry: a new flow
		on_snapshot(EventKind::update, record.key, record.flow, now_ns);
		return;
	case UDPI_REC_UPDATE:
		if (!late_operation(record, now_ns))
			on_snapshot(EventKind::update, record.key, record.flow, now_ns);
		return;
	case UDPI_REC_CONNECT:
		if (!late_operation(record, now_ns))
			on_snapshot(EventKind::connect, record.key, record.flow, now_ns);
		return;
	case UDPI_REC_SOCK_CLOSE:
		close_socket(record.key.sock_id, now_ns, now_ns);
		return;
	case UDPI_REC_DEFERRED:
		on_deferred(record.key, record.flow, now_ns);
		return;
	case UDPI_REC_PENDING: {
		if (closed_.count(record.key.sock_id)) {
			if (auto flow = kernel_.lookup(record.key))
				close_flow(record.key, *flow, now_ns);
			return;
		}
		remember(record.key, now_ns);
		auto [it, added] = pending_.try_emplace(record.key, record.last_emit_ns);
		if (!added)
			it->second = std::max<std::uint64_t>(it->second, record.last_emit_ns);
		return;
	}
	case UDPI_REC_WANT_ARRIVALS:
		return;
	}
}

void FlowTracker::on_snapshot(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow,
			      std::uint64_t now_ns)
{
	if (closed_.count(key.sock_id)) {
		// A record that came after its socket's close (another CPU, or a
		// flush): the flow ends now, if it has not already.
		if (auto current = kernel_.lookup(key))
			close_flow(key, *current, now_ns);
		return;
	}
	FlowState &state = remember(key, now_ns);
	// A snapshot taken after a later emission than the one the pending note
	// was about carries every change that note stood for; one from the same
	// emission may not (a change can land after its copy was taken).
	if (auto it = pending_.find(key); it != pending_.end() && flow.last_emit_ns > it->second)
		pending_.erase(it);
	// Never backwards, never the same state twice (a flush and an operation
	// on another CPU can both send one).
	if (kind != EventKind::connect && flow.changes <= state.reported_changes)
		return;
	state.reported_changes = std::max<std::uint64_t>(state.reported_changes, flow.changes);
	deliver(kind, key, flow);
}

// An operation the kernel could not add to its busy table: it enters the
// table from here if the flow is still missing, else its counts ride along
// in user space (the kernel's own additions to an entry cannot be merged
// with a write from user space atomically).
void FlowTracker::on_deferred(const udpi_flow_key &key, const udpi_flow &flow, std::uint64_t now_ns)
{
	counters_.deferred_operations.fetch_add(1, std::memory_order_relaxed);
	add_operation(key, flow, now_ns);
	if (closed_.count(key.sock_id))
		if (auto current = kernel_.lookup(key))
			close_flow(key, *current, now_ns);
}

// Counts that reached user space beside the kernel's entry: they become the
// entry if the flow is missing, else they ride along with it.
void FlowTracker::add_operation(const udpi_flow_key &key, const udpi_flow &flow, std::uint64_t now_ns)
{
	FlowState &state = remember(key, now_ns);
	udpi_flow entry = flow;
	entry.emitted_changes = flow.changes; // reported below, by user space
	entry.last_emit_ns = now_ns;          // the rate limit counts from this snapshot
	entry.pending_for_ns = 0;
	if (kernel_.insert(key, entry)) {
		counters_.flows_inserted.fetch_add(1, std::memory_order_relaxed);
		state.reported_changes = std::max<std::uint64_t>(state.reported_changes, entry.changes);
		deliver(EventKind::update, key, entry);
	} else if (auto current = kernel_.lookup(key)) {
		state.extra.tx_bytes += flow.tx_bytes;
		state.extra.tx_packets += flow.tx_packets;
		state.extra.rx_bytes += flow.rx_bytes;
		state.extra.rx_packets += flow.rx_packets;
		state.extra.rx_drops += flow.rx_drops;
		state.reported_changes = std::max<std::uint64_t>(state.reported_changes, current->changes);
		deliver(EventKind::update, key, *current);
	} else {
		// Neither in the table nor insertable (it filled meanwhile): no
		// flow will carry these counts, so they are counted as untracked,
		// as the kernel counts what its full table turns away.
		counters_.untracked_operations.fetch_add(1, std::memory_order_relaxed);
		counters_.untracked_packets.fetch_add(flow.tx_packets + flow.rx_packets + flow.rx_drops,
						      std::memory_order_relaxed);
		counters_.untracked_bytes.fetch_add(flow.tx_bytes + flow.rx_bytes, std::memory_order_relaxed);
		forget(key);
	}
}

/*
 * A snapshot of an expired flow's removed entry: an operation that found the
 * entry just before user space removed it, and added to it afterwards. The
 * flow was idle for the whole timeout, so that operation was due and sent
 * this snapshot, whose counters go past the expired totals by exactly it. It
 * is the first operation of the flow that follows (the same socket and peer
 * talking again), so it is added there. Snapshots of the entry from before
 * its removal are dropped: `expire` carried their counts.
 */
bool FlowTracker::late_operation(const Record &record, std::uint64_t now_ns)
{
	const auto it = expired_.find(record.key);
	if (it == expired_.end() || flows_.count(record.key))
		return false; // not expired, or a new entry is known (its NEW came first)
	const udpi_flow &was = it->second.flow;
	const udpi_flow &now = record.flow;
	/*
	 * The first snapshot the kernel took of its entry is a new entry's (the
	 * removed one had been reported): a flow born at connect() says CONNECT,
	 * not NEW, and a NEW the full ring buffer lost leaves the next snapshot
	 * the first. So is one with a counter below the removed entry's: a new
	 * entry counts from zero.
	 */
	if (now.emitted_changes == UDPI_NEVER_EMITTED || now.tx_bytes < was.tx_bytes ||
	    now.tx_packets < was.tx_packets || now.rx_bytes < was.rx_bytes ||
	    now.rx_packets < was.rx_packets || now.rx_drops < was.rx_drops) {
		expired_.erase(it);
		return false;
	}
	if (now.changes <= was.changes)
		return true;
	udpi_flow delta = now;
	delta.tx_bytes = now.tx_bytes - was.tx_bytes;
	delta.tx_packets = now.tx_packets - was.tx_packets;
	delta.rx_bytes = now.rx_bytes - was.rx_bytes;
	delta.rx_packets = now.rx_packets - was.rx_packets;
	delta.rx_drops = now.rx_drops - was.rx_drops;
	delta.changes = now.changes - was.changes;
	it->second.flow = now;
	counters_.late_operations.fetch_add(delta.changes, std::memory_order_relaxed);
	add_operation(record.key, delta, now_ns);
	if (closed_.count(record.key.sock_id))
		if (auto current = kernel_.lookup(record.key))
			close_flow(record.key, *current, now_ns);
	return true;
}

void FlowTracker::close_flow(const udpi_flow_key &key, udpi_flow flow, std::uint64_t close_ns)
{
	flow.last_ns = std::max<std::uint64_t>(flow.last_ns, close_ns);
	deliver(EventKind::close, key, flow);
	if (kernel_.erase(key))
		counters_.flows_erased.fetch_add(1, std::memory_order_relaxed);
	forget(key);
}

void FlowTracker::close_socket(std::uint64_t sock_id, std::uint64_t close_ns, std::uint64_t now_ns)
{
	closed_[sock_id] = now_ns;
	auto it = flows_of_socket_.find(sock_id);
	if (it == flows_of_socket_.end())
		return; // none known yet: a record on its way finds the socket closed
	const std::vector<udpi_flow_key> keys = std::move(it->second);
	flows_of_socket_.erase(it);
	for (const auto &key : keys) {
		if (auto flow = kernel_.lookup(key))
			close_flow(key, *flow, close_ns);
		else
			forget(key);
	}
}

void FlowTracker::collect_closed(std::uint64_t now_ns)
{
	for (const auto &[sock_id, when] : kernel_.take_closed()) {
		counters_.closes_deferred.fetch_add(1, std::memory_order_relaxed);
		close_socket(sock_id, when, now_ns);
	}
}

// The kernel lost a record (its ring buffer was full): read the whole table
// once, adopting flows user space has not heard of, ending those of closed
// sockets and noting every flow with unreported changes as pending. A socket
// whose close found both the ring buffer and the `closed` map full is gone
// from the kernel's socket table: its flows end here, as a deferred close.
void FlowTracker::full_sweep(std::uint64_t now_ns)
{
	counters_.full_sweeps.fetch_add(1, std::memory_order_relaxed);
	std::vector<std::pair<udpi_flow_key, udpi_flow>> of_closed;
	std::unordered_set<std::uint64_t> sockets;
	kernel_.for_each([&](const udpi_flow_key &key, const udpi_flow &flow) {
		if (closed_.count(key.sock_id)) {
			of_closed.emplace_back(key, flow);
			return;
		}
		// Known flows keep their place: the expiry asks the kernel anyway.
		if (!flows_.count(key))
			remember(key, now_ns);
		if (flow.changes != flow.emitted_changes)
			pending_.try_emplace(key, flow.last_emit_ns);
		sockets.insert(key.sock_id);
	});
	for (const auto &[key, flow] : of_closed)
		close_flow(key, flow, now_ns);
	// After the flow table: a socket that closes in between is closed either way.
	const auto open = kernel_.open_sockets();
	if (!open)
		return;
	for (std::uint64_t sock_id : sockets) {
		if (open->count(sock_id) || closed_.count(sock_id))
			continue;
		counters_.closes_deferred.fetch_add(1, std::memory_order_relaxed);
		close_socket(sock_id, now_ns, now_ns); // reads each flow again: nothing changes it now
	}
}

void FlowTracker::flush_due(std::uint64_t now_ns)
{
	for (auto it = pending_.begin(); it != pending_.end();) {
		if (elapsed(now_ns, it->second) < interval_ns_) {
			++it;
			continue;
		}
		switch (kernel_.flush(it->first)) {
		case UDPI_FLUSH_NOT_DUE:
			++it;
			break;
		case UDPI_FLUSH_RING_FULL:
			return; // the rest stay pending for the next sweep
		case UDPI_FLUSH_SENT:
			counters_.flushes.fetch_add(1, std::memory_order_relaxed);
			it = pending_.erase(it);
			break;
		default:
			it = pending_.erase(it);
			break;
		}
	}
}

/*
 * Removes the flow if the kernel agrees it has been idle for `min_idle_ns`
 * and an operation on it now would be due (so that one landing as it is
 * removed sends a snapshot: see late_operation()); its totals go out as
 * `expire`. A flow the kernel saw more recently than user space heard of it
 * (its record is on its way) counts as heard now.
 */
FlowTracker::Expiry FlowTracker::expire(const udpi_flow_key &key, std::uint64_t min_idle_ns,
					std::uint64_t now_ns)
{
	const auto flow = kernel_.lookup(key);
	if (!flow) {
		forget(key);
		return Expiry::gone;
	}
	if (elapsed(now_ns, flow->last_ns) < min_idle_ns ||
	    elapsed(now_ns, flow->last_emit_ns) < interval_ns_) {
		remember(key, now_ns);
		return Expiry::active;
	}
	const auto last = kernel_.take(key);
	if (!last) {
		forget(key);
		return Expiry::gone;
	}
	counters_.flows_erased.fetch_add(1, std::memory_order_relaxed);
	counters_.expired.fetch_add(1, std::memory_order_relaxed);
	deliver(EventKind::expire, key, *last);
	forget(key);
	expired_.insert_or_assign(key, Expired{*last, now_ns});
	return Expiry::expired;
}

// Whether the flow user space heard of longest ago has been quiet for `min_idle_ns`.
bool FlowTracker::front_idle(std::uint64_t now_ns, std::uint64_t min_idle_ns) const
{
	return !idle_.empty() && elapsed(now_ns, flows_.at(idle_.front()).heard_ns) >= min_idle_ns;
}

// At most kExpiryBatch flows a sweep, so that a crowd going idle together
// is expired over a few sweeps while the ring buffer keeps being read.
bool FlowTracker::expire_idle(std::uint64_t now_ns)
{
	for (std::size_t n = 0; n < kExpiryBatch; n++) {
		if (!front_idle(now_ns, expiry_.timeout_ns))
			return false;
		const udpi_flow_key key = idle_.front(); // a copy: the expiry erases its node
		expire(key, expiry_.timeout_ns, now_ns);
	}
	return front_idle(now_ns, expiry_.timeout_ns);
}

// Past 90 % of the table, the longest-idle flows go early, down to 80 %
// (over as many sweeps as the batch limit makes it), so that new flows find
// room; a flow heard from within two intervals (at least a second) counts as
// active and stays.
bool FlowTracker::expire_early(std::uint64_t now_ns)
{
	const std::uint64_t high = expiry_.max_flows * 9 / 10, low = expiry_.max_flows * 8 / 10;
	if (flows_.size() >= high)
		shedding_ = true;
	if (!shedding_)
		return false;
	const std::uint64_t min_idle = std::max<std::uint64_t>(2 * interval_ns_, 1'000'000'000);
	const auto due = [&] { return flows_.size() > low && front_idle(now_ns, min_idle); };
	for (std::size_t visits = std::min(flows_.size(), kExpiryBatch); visits > 0; visits--) {
		if (!due()) {
			shedding_ = false; // down to 80 %, or every flow left is active
			return false;
		}
		const udpi_flow_key key = idle_.front(); // a copy: the expiry erases its node
		if (expire(key, min_idle, now_ns) == Expiry::expired)
			counters_.expired_early.fetch_add(1, std::memory_order_relaxed);
	}
	shedding_ = due();
	return shedding_;
}

bool FlowTracker::sweep(std::uint64_t now_ns)
{
	collect_closed(now_ns);
	if (kernel_.take_full_sweep_request())
		full_sweep(now_ns);
	flush_due(now_ns);
	bool more = false;
	if (expiry_.timeout_ns) {
		more = expire_idle(now_ns);
		if (expiry_.max_flows)
			more = expire_early(now_ns) || more;
	}
	// Records of a closed socket still on their way arrive within moments,
	// and a lost one sets off a full sweep at the next sweep, well before.
	std::erase_if(closed_, [&](const auto &kv) { return elapsed(now_ns, kv.second) > kClosedMemoryNs; });
	if (!expired_.empty())
		std::erase_if(expired_, [&](const auto &kv) {
			return elapsed(now_ns, kv.second.when_ns) > kExpiredMemoryNs;
		});
	return more;
}

void FlowTracker::stop(std::uint64_t now_ns)
{
	collect_closed(now_ns);
	std::vector<std::pair<udpi_flow_key, udpi_flow>> all;
	kernel_.for_each(
		[&](const udpi_flow_key &key, const udpi_flow &flow) { all.emplace_back(key, flow); });
	const auto open = kernel_.open_sockets(); // a close lost in the kernel (see full_sweep())
	for (const auto &[key, flow] : all) {
		if (!closed_.count(key.sock_id) && open && !open->count(key.sock_id)) {
			counters_.closes_deferred.fetch_add(1, std::memory_order_relaxed);
			closed_[key.sock_id] = now_ns;
		}
		if (closed_.count(key.sock_id))
			close_flow(key, flow, now_ns);
		else
			deliver(EventKind::final, key, flow);
	}
	flows_.clear();
	flows_of_socket_.clear();
	pending_.clear();
	idle_.clear();
	expired_.clear();
}

} // namespace udpintercept::detail
