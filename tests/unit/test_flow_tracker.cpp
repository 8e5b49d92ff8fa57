// SPDX-License-Identifier: LGPL-2.1-or-later
// The flow tracker without a kernel: a fake of the kernel's tables that
// does what the BPF side does (flow.bpf.h, flow.bpf.c's flush program), and
// records handed over in the orders that races produce.
#include <catch2/catch.hpp>

#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "flow_tracker.h"

using namespace udpintercept;
using detail::FlowTracker;
using detail::Record;

namespace {

constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint64_t kInterval = 1000 * kMs;
constexpr std::uint64_t kBoot = 3600'000 * kMs; // the kernel clock at a test's start

udpi_flow_key key_of(std::uint64_t sock, std::uint16_t port)
{
	udpi_flow_key k{};
	k.sock_id = sock;
	k.raddr[10] = k.raddr[11] = 0xff;
	k.raddr[12] = 127;
	k.raddr[15] = 1;
	k.rport = port;
	k.family = UDPI_AF_INET;
	return k;
}

// The kernel's side, as the BPF programs behave.
class FakeKernel final : public detail::KernelFlows {
public:
	std::unordered_map<udpi_flow_key, udpi_flow, detail::FlowKeyHash, detail::FlowKeyEqual> table;
	std::deque<Record> ring;          // records not yet consumed
	std::size_t ring_room = SIZE_MAX; // records the ring buffer can still take
	std::size_t capacity = SIZE_MAX;  // entries the flow table holds
	bool full_sweep_wanted = false;   // .bss full_sweep_wanted
	std::vector<std::pair<std::uint64_t, std::uint64_t>> closed_map;
	std::size_t closed_room = SIZE_MAX; // entries the `closed` map can still take
	// The socket table (`socks`) by id, where a test models it; else unreadable.
	std::optional<std::unordered_set<std::uint64_t>> sockets;
	std::uint64_t now = kBoot;          // bpf_ktime_get_ns()
	std::uint64_t interval = kInterval; // rodata interval_ns
	int for_each_calls = 0, flush_calls = 0, lost = 0, lookup_calls = 0;
	// take() runs this on the entry it removed, after copying it: an
	// operation that found the entry just before its removal (the race of
	// expiry), with the entry's snapshot sent as handle_count() sends it.
	std::function<void(const udpi_flow_key &, udpi_flow &)> late_operation;

	// handle_count(): one operation of `bytes` sent on the flow.
	void send(const udpi_flow_key &key, std::uint64_t bytes)
	{
		if (sockets)
			sockets->insert(key.sock_id);
		bool created = false;
		auto it = table.find(key);
		if (it == table.end()) {
			udpi_flow fresh{};
			fresh.emitted_changes = UDPI_NEVER_EMITTED;
			it = table.emplace(key, fresh).first;
			created = true;
		}
		count(key, it->second, bytes, created);
	}

	// The body of handle_count() on an entry the program holds.
	void count(const udpi_flow_key &key, udpi_flow &f, std::uint64_t bytes, bool created)
	{
		const bool first = f.changes == 0;
		f.tx_bytes += bytes;
		f.tx_packets += 1;
		f.changes += 1;
		f.last_ns = now;
		if (created || first || now - f.last_emit_ns >= interval)
			emit_at(created ? UDPI_REC_NEW : UDPI_REC_UPDATE, key, f);
		else
			note_pending(key, f);
	}

	// handle_close(): one record names the socket, or the `closed` map does,
	// or, with both full, the socket's absence from the socket table.
	void close_socket(std::uint64_t sock_id)
	{
		Record r;
		r.kind = UDPI_REC_SOCK_CLOSE;
		r.key.sock_id = sock_id;
		const bool recorded = push(r);
		const bool noted = recorded || closed_room > 0;
		if (!recorded && noted) {
			closed_map.emplace_back(sock_id, now);
			if (closed_room != SIZE_MAX)
				closed_room--;
		}
		if (sockets)
			sockets->erase(sock_id);
		if (!noted)
			full_sweep_wanted = true;
	}

	// defer(): the busy table refused the flow; the operation goes to user space.
	Record deferred(const udpi_flow_key &key, std::uint64_t bytes)
	{
		Record r;
		r.kind = UDPI_REC_DEFERRED;
		r.key = key;
		r.flow.tx_bytes = bytes;
		r.flow.tx_packets = 1;
		r.flow.changes = 1;
		r.flow.last_ns = now;
		return r;
	}

	std::optional<udpi_flow> lookup(const udpi_flow_key &key) override
	{
		lookup_calls++;
		auto it = table.find(key);
		return it == table.end() ? std::nullopt : std::optional(it->second);
	}
	bool insert(const udpi_flow_key &key, const udpi_flow &flow) override
	{
		return table.size() < capacity && table.emplace(key, flow).second;
	}
	bool erase(const udpi_flow_key &key) override { return table.erase(key) != 0; }
	std::optional<udpi_flow> take(const udpi_flow_key &key) override
	{
		auto it = table.find(key);
		if (it == table.end())
			return std::nullopt;
		udpi_flow removed = it->second;
		const udpi_flow copy = removed;
		table.erase(it);
		if (late_operation)
			late_operation(key, removed);
		return copy;
	}
	void for_each(const std::function<void(const udpi_flow_key &, const udpi_flow &)> &fn) override
	{
		for_each_calls++;
		for (const auto &[k, f] : table)
			fn(k, f);
	}
	udpi_flush_result flush(const udpi_flow_key &key) override
	{
		flush_calls++;
		auto it = table.find(key);
		if (it == table.end())
			return UDPI_FLUSH_GONE;
		udpi_flow &f = it->second;
		if (f.changes == f.emitted_changes)
			return UDPI_FLUSH_CURRENT;
		if (now - f.last_emit_ns < interval)
			return UDPI_FLUSH_NOT_DUE;
		return emit_at(f.changes ? UDPI_REC_UPDATE : UDPI_REC_CONNECT, key, f) ? UDPI_FLUSH_SENT
										       : UDPI_FLUSH_RING_FULL;
	}
	bool take_full_sweep_request() override { return std::exchange(full_sweep_wanted, false); }
	std::vector<std::pair<std::uint64_t, std::uint64_t>> take_closed() override
	{
		return std::exchange(closed_map, {});
	}
	std::optional<std::unordered_set<std::uint64_t>> open_sockets() override { return sockets; }

private:
	bool push(const Record &r)
	{
		if (ring_room == 0)
			return false;
		if (ring_room != SIZE_MAX)
			ring_room--;
		ring.push_back(r);
		return true;
	}
	bool emit_at(udpi_record_kind kind, const udpi_flow_key &key, udpi_flow &f)
	{
		const std::uint64_t before = f.last_emit_ns;
		f.last_emit_ns = now;
		Record r;
		r.kind = kind;
		r.key = key;
		r.flow = f;
		if (!push(r)) {
			lost++;
			full_sweep_wanted = true;
			f.last_emit_ns = before;
			return false;
		}
		f.emitted_changes = f.changes;
		return true;
	}
	void note_pending(const udpi_flow_key &key, udpi_flow &f)
	{
		if (f.pending_for_ns == f.last_emit_ns)
			return;
		f.pending_for_ns = f.last_emit_ns;
		Record r;
		r.kind = UDPI_REC_PENDING;
		r.key = key;
		r.last_emit_ns = f.last_emit_ns;
		if (!push(r))
			full_sweep_wanted = true;
	}
};

struct Delivered {
	EventKind kind;
	udpi_flow_key key;
	udpi_flow flow;
};

// A tracker over a fake kernel, and what it delivered.
struct Harness {
	FakeKernel kernel;
	std::vector<Delivered> out;
	FlowTracker tracker;

	explicit Harness(detail::ExpiryPolicy expiry = {})
	    : tracker(
		      kernel, std::chrono::nanoseconds(kInterval),
		      [this](EventKind kind, const udpi_flow_key &key, const udpi_flow &flow) {
			      out.push_back({kind, key, flow});
		      },
		      expiry)
	{
	}

	// Hands every queued record to the tracker, oldest first.
	void consume()
	{
		while (!kernel.ring.empty()) {
			const Record r = kernel.ring.front();
			kernel.ring.pop_front();
			tracker.on_record(r, kernel.now);
		}
	}
	// Whether the sweep left flows due for the next one (a batch limit).
	bool sweep()
	{
		const bool more = tracker.sweep(kernel.now);
		consume();
		return more;
	}
	// A sweep with records still in the ring buffer (another CPU's, not yet read).
	void sweep_without_consuming() { CHECK_FALSE(tracker.sweep(kernel.now)); }
	// The newest delivered snapshot of the flow.
	const Delivered &last(const udpi_flow_key &key) const
	{
		for (auto it = out.rbegin(); it != out.rend(); ++it)
			if (detail::FlowKeyEqual{}(it->key, key))
				return *it;
		FAIL("no snapshot of the flow");
		return out.back();
	}
};

} // namespace

TEST_CASE("a flow whose changes stop mid-interval is reported once its interval has passed", "[tracker]")
{
	Harness h;
	const auto k = key_of(1, 53);
	h.kernel.send(k, 10); // the first operation: reported at once
	h.kernel.now = kBoot + 100 * kMs;
	h.kernel.send(k, 20); // held back, noted pending once
	h.kernel.now = kBoot + 200 * kMs;
	h.kernel.send(k, 30); // held back, not noted again
	h.consume();
	REQUIRE(h.out.size() == 1);
	CHECK(h.out[0].flow.tx_bytes == 10);
	CHECK(h.tracker.pending() == 1);

	h.kernel.now = kBoot + 500 * kMs;
	h.sweep();
	CHECK(h.out.size() == 1); // not yet due: nothing asked of the kernel
	CHECK(h.kernel.flush_calls == 0);

	h.kernel.now = kBoot + 1001 * kMs;
	h.sweep();
	REQUIRE(h.out.size() == 2);
	CHECK(h.out[1].kind == EventKind::update);
	CHECK(h.out[1].flow.tx_bytes == 60);
	CHECK(h.out[1].flow.tx_packets == 3);
	CHECK(h.tracker.pending() == 0);
	CHECK(h.kernel.for_each_calls == 0); // the table was never read whole
	CHECK(h.tracker.counters().flushes == 1);

	// Later sweeps of a quiet table cost nothing.
	for (int i = 0; i < 10; i++) {
		h.kernel.now += 250 * kMs;
		h.sweep();
	}
	CHECK(h.out.size() == 2);
	CHECK(h.kernel.flush_calls == 1);
	CHECK(h.kernel.for_each_calls == 0);
}

TEST_CASE("an update sent by an operation makes the pending note moot", "[tracker]")
{
	Harness h;
	const auto k = key_of(1, 53);
	h.kernel.send(k, 10);
	h.kernel.now = kBoot + 100 * kMs;
	h.kernel.send(k, 20);
	h.kernel.now = kBoot + 1100 * kMs;
	h.kernel.send(k, 30); // due: the kernel sends it
	h.consume();
	CHECK(h.tracker.pending() == 0);
	h.kernel.now = kBoot + 2200 * kMs;
	h.sweep();
	CHECK(h.kernel.flush_calls == 0);
	REQUIRE(h.out.size() == 2);
	CHECK(h.out[1].flow.tx_bytes == 60);
}

TEST_CASE("a pending note that arrives before the snapshot of the same emission stays", "[tracker]")
{
	// CPU A sets last_emit_ns and is about to copy the flow; CPU B's change,
	// held back by that emission, notes the flow first; CPU C's change lands
	// after A's copy and is not noted again. The note must outlive A's record.
	Harness h;
	const auto k = key_of(1, 53);
	h.kernel.send(k, 10);
	h.consume();
	h.kernel.now = kBoot + 1100 * kMs;
	h.kernel.send(k, 20); // A: an update
	Record update = h.kernel.ring.back();
	h.kernel.ring.pop_back();
	h.kernel.now = kBoot + 1200 * kMs;
	h.kernel.send(k, 30); // B: noted pending
	REQUIRE(h.kernel.ring.size() == 1);
	h.kernel.ring.push_back(update); // the note is read first
	h.consume();
	CHECK(h.last(k).flow.tx_bytes == 30);
	CHECK(h.tracker.pending() == 1);
	h.kernel.now = kBoot + 2200 * kMs;
	h.sweep();
	CHECK(h.last(k).flow.tx_bytes == 60);
}

TEST_CASE("a close read before the flow's first record still ends the flow", "[tracker]")
{
	Harness h;
	const auto k = key_of(7, 123);
	h.kernel.send(k, 10); // CPU 1: the flow's birth...
	Record birth = h.kernel.ring.back();
	h.kernel.ring.pop_back();
	h.kernel.close_socket(7); // ...whose record loses the race to CPU 0's close
	h.kernel.ring.push_back(birth);
	h.consume();
	REQUIRE(h.out.size() == 1);
	CHECK(h.out[0].kind == EventKind::close);
	CHECK(h.out[0].flow.tx_bytes == 10);
	CHECK(h.kernel.table.empty());
	CHECK(h.tracker.counters().flows_erased == 1);
	// Its socket's id is forgotten a while after the close.
	h.kernel.now += detail::FlowTracker::kClosedMemoryNs + 1;
	h.sweep();
	h.tracker.stop(h.kernel.now);
	CHECK(h.out.size() == 1);
}

TEST_CASE("a first record lost in a full ring is adopted by the sweep", "[tracker]")
{
	Harness h;
	const auto k = key_of(3, 99);
	h.kernel.ring_room = 0;
	h.kernel.send(k, 40);
	CHECK(h.kernel.lost == 1);
	h.consume();
	CHECK(h.out.empty());
	h.kernel.ring_room = SIZE_MAX;
	h.kernel.now = kBoot + 10 * kMs;
	h.sweep(); // the kernel asked for a full sweep
	CHECK(h.tracker.counters().full_sweeps == 1);
	REQUIRE(h.out.size() == 1);
	CHECK(h.out[0].kind == EventKind::update);
	CHECK(h.out[0].flow.tx_bytes == 40);
	h.sweep();
	CHECK(h.tracker.counters().full_sweeps == 1);
	CHECK(h.out.size() == 1);
}

TEST_CASE("a close that found the ring full is collected, with the flows of its socket", "[tracker]")
{
	Harness h;
	const auto k = key_of(5, 1000);
	h.kernel.send(k, 8);
	h.consume();
	h.kernel.ring_room = 0;
	h.kernel.close_socket(5);
	h.kernel.ring_room = SIZE_MAX;
	h.sweep();
	CHECK(h.tracker.counters().closes_deferred == 1);
	CHECK(h.last(k).kind == EventKind::close);
	CHECK(h.kernel.table.empty());
}

TEST_CASE("a deferred insert racing the kernel keeps every count", "[tracker]")
{
	Harness h;
	const auto k = key_of(2, 5000);
	// CPU 0's insert was refused as busy and deferred; CPU 1 then created the flow.
	const Record deferred = h.kernel.deferred(k, 100);
	h.kernel.send(k, 7);
	h.consume();
	h.tracker.on_record(deferred, h.kernel.now);
	CHECK(h.tracker.counters().deferred_operations == 1);
	CHECK(h.tracker.counters().flows_inserted == 0); // the kernel's entry won
	CHECK(h.last(k).flow.tx_bytes == 107);
	CHECK(h.last(k).flow.tx_packets == 2);
	h.kernel.now = kBoot + 1500 * kMs;
	h.kernel.send(k, 3);
	h.consume();
	CHECK(h.last(k).flow.tx_bytes == 110);
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(k).kind == EventKind::final);
	CHECK(h.last(k).flow.tx_bytes == 110);
	CHECK(h.last(k).flow.tx_packets == 3);
}

TEST_CASE("a deferred operation of a missing flow enters the table from user space", "[tracker]")
{
	Harness h;
	const auto k = key_of(2, 5001);
	h.tracker.on_record(h.kernel.deferred(k, 100), h.kernel.now);
	CHECK(h.tracker.counters().flows_inserted == 1);
	REQUIRE(h.kernel.table.count(k));
	CHECK(h.last(k).flow.tx_bytes == 100);
	// The kernel counts on from there, within the interval the deferred
	// snapshot opened: held back, then flushed.
	h.kernel.now = kBoot + 10 * kMs;
	h.kernel.send(k, 1);
	h.consume();
	CHECK(h.out.size() == 1);
	CHECK(h.tracker.pending() == 1);
	h.kernel.now = kBoot + 1001 * kMs;
	h.sweep();
	CHECK(h.out.size() == 2);
	CHECK(h.last(k).flow.tx_bytes == 101);
}

TEST_CASE("snapshots of a flow never go backwards and are not repeated", "[tracker]")
{
	Harness h;
	const auto k = key_of(4, 8);
	Record r;
	r.kind = UDPI_REC_UPDATE;
	r.key = k;
	r.flow.changes = 5;
	r.flow.tx_bytes = 50;
	h.tracker.on_record(r, h.kernel.now);
	r.flow.changes = 3; // an older one, from another CPU
	r.flow.tx_bytes = 30;
	h.tracker.on_record(r, h.kernel.now);
	r.flow.changes = 5; // the same state again (a flush and an operation)
	r.flow.tx_bytes = 50;
	h.tracker.on_record(r, h.kernel.now);
	REQUIRE(h.out.size() == 1);
	CHECK(h.out[0].flow.tx_bytes == 50);
}

TEST_CASE("stop ends every flow: close for closed sockets, final for the rest", "[tracker]")
{
	Harness h;
	const auto open = key_of(10, 1), closing = key_of(11, 2);
	h.kernel.send(open, 5);
	h.kernel.send(closing, 6);
	h.consume();
	// The close record is still in the ring when tracing stops; the flow's
	// last change is not reported yet either.
	h.kernel.now = kBoot + 20 * kMs;
	h.kernel.send(open, 1);
	h.kernel.close_socket(11);
	h.consume();
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(open).kind == EventKind::final);
	CHECK(h.last(open).flow.tx_bytes == 6);
	CHECK(h.last(closing).kind == EventKind::close);
	CHECK(h.last(closing).flow.tx_bytes == 6);
}

TEST_CASE("a close that found the ring buffer and the closed map full ends its flows at the full sweep",
	  "[tracker]")
{
	Harness h;
	h.kernel.sockets.emplace();
	const auto open = key_of(10, 1), lost = key_of(11, 2), noted = key_of(12, 3);
	h.kernel.send(open, 5);
	h.kernel.send(lost, 6);
	h.kernel.send(noted, 7);
	h.consume();
	h.kernel.now = kBoot + 10 * kMs;
	h.kernel.send(lost, 1); // held back by the interval: its last change is unreported
	h.kernel.ring_room = 0; // the consumer fell behind
	h.kernel.closed_room = 1;
	h.kernel.close_socket(12); // into the closed map
	h.kernel.close_socket(11); // nowhere: the kernel asks for a full sweep
	REQUIRE(h.kernel.full_sweep_wanted);
	h.kernel.ring_room = SIZE_MAX;
	h.sweep();
	CHECK(h.last(lost).kind == EventKind::close);
	CHECK(h.last(lost).flow.tx_bytes == 7);
	CHECK(h.last(noted).kind == EventKind::close);
	CHECK(h.last(open).kind == EventKind::update);
	CHECK(h.kernel.table.size() == 1); // only the open socket's flow is left
	CHECK(h.tracker.counters().closes_deferred == 2);
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(open).kind == EventKind::final);
}

TEST_CASE("stop ends the flows of a socket whose close was lost with close, not final", "[tracker]")
{
	Harness h;
	h.kernel.sockets.emplace();
	const auto open = key_of(10, 1), lost = key_of(11, 2);
	h.kernel.send(open, 5);
	h.kernel.send(lost, 6);
	h.consume();
	h.kernel.ring_room = 0;
	h.kernel.closed_room = 0;
	h.kernel.close_socket(11);
	h.kernel.ring_room = SIZE_MAX;
	h.tracker.stop(h.kernel.now); // before any sweep
	CHECK(h.last(lost).kind == EventKind::close);
	CHECK(h.last(lost).flow.tx_bytes == 6);
	CHECK(h.last(open).kind == EventKind::final);
	CHECK(h.tracker.counters().closes_deferred == 1);
}

TEST_CASE("a per-operation tracker (interval 0) flushes what a full ring lost at once", "[tracker]")
{
	FakeKernel kernel;
	kernel.interval = 0;
	std::vector<Delivered> out;
	FlowTracker tracker(kernel, std::chrono::nanoseconds(0),
			    [&](EventKind kind, const udpi_flow_key &key, const udpi_flow &flow) {
				    out.push_back({kind, key, flow});
			    });
	const auto k = key_of(1, 2);
	udpi_flow f{};
	f.emitted_changes = 0;
	f.changes = 4;
	f.tx_bytes = 44;
	kernel.table.emplace(k, f); // changes the kernel could not send
	kernel.full_sweep_wanted = true;
	CHECK_FALSE(tracker.sweep(kernel.now));
	REQUIRE(kernel.ring.size() == 1);
	tracker.on_record(kernel.ring.front(), kernel.now);
	REQUIRE(out.size() == 1);
	CHECK(out[0].flow.tx_bytes == 44);
}

namespace {

constexpr std::uint64_t kS = 1000 * kMs;
constexpr std::uint64_t kTimeout = 300 * kS;

// Sums a flow's traffic as a consumer does: each `expire` ends one flow of
// the socket and peer, and the newest snapshot since carries the rest.
std::uint64_t tx_bytes_of(const std::vector<Delivered> &out, const udpi_flow_key &key)
{
	std::uint64_t sum = 0, current = 0;
	for (const auto &d : out) {
		if (!detail::FlowKeyEqual{}(d.key, key))
			continue;
		if (d.kind == EventKind::expire) {
			sum += d.flow.tx_bytes;
			current = 0;
		} else {
			current = d.flow.tx_bytes;
		}
	}
	return sum + current;
}

} // namespace

TEST_CASE("a flow idle for the timeout is expired once with its totals; talking again starts a new one",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(1, 53);
	h.kernel.send(k, 10);
	h.kernel.now += 100 * kMs;
	h.kernel.send(k, 20); // held back
	h.consume();
	h.kernel.now += kS;
	h.sweep(); // flushed
	REQUIRE(h.last(k).flow.tx_bytes == 30);

	// Quiet sweeps until the timeout ask the kernel nothing.
	const int lookups = h.kernel.lookup_calls;
	for (std::uint64_t t = 0; t + kS < kTimeout; t += 250 * kMs) {
		h.kernel.now += 250 * kMs;
		h.sweep();
	}
	CHECK(h.kernel.lookup_calls == lookups);
	CHECK(h.out.size() == 2);

	h.kernel.now += 2 * kS;
	h.sweep();
	REQUIRE(h.out.size() == 3);
	CHECK(h.out[2].kind == EventKind::expire);
	CHECK(h.out[2].flow.tx_bytes == 30);
	CHECK(h.out[2].flow.tx_packets == 2);
	CHECK(h.kernel.table.empty());
	CHECK(h.tracker.flows() == 0);
	CHECK(h.tracker.counters().expired == 1);
	CHECK(h.tracker.counters().flows_erased == 1);
	h.kernel.now += kS;
	h.sweep();
	CHECK(h.out.size() == 3); // reported once

	h.kernel.send(k, 5); // the same socket and peer again: a new flow, from zero
	h.consume();
	REQUIRE(h.out.size() == 4);
	CHECK(h.out[3].kind == EventKind::update);
	CHECK(h.out[3].flow.tx_bytes == 5);
	CHECK(tx_bytes_of(h.out, k) == 35);
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(k).kind == EventKind::final);
	CHECK(tx_bytes_of(h.out, k) == 35);
}

TEST_CASE("a flow the kernel saw after user space last heard of it is not expired", "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(1, 53);
	h.kernel.send(k, 10);
	h.consume();
	h.kernel.now += kTimeout - kS;
	h.kernel.send(k, 1); // its record is still on its way at the sweep
	h.kernel.now += 2 * kS;
	h.sweep_without_consuming();
	CHECK(h.tracker.counters().expired == 0);
	CHECK(h.kernel.table.count(k) == 1);
	h.consume();
	// Quiet from here: expired a timeout after the last operation (plus a sweep).
	h.kernel.now += kTimeout - 3 * kS;
	h.sweep();
	CHECK(h.tracker.counters().expired == 0);
	h.kernel.now += 4 * kS; // it counted as heard at the sweep that found it newer
	h.sweep();
	CHECK(h.last(k).kind == EventKind::expire);
	CHECK(h.last(k).flow.tx_bytes == 11);
}

TEST_CASE("a flow the kernel touched after the sweep read the clock is not expired", "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(2, 99);
	h.kernel.send(k, 100);
	h.consume();
	h.kernel.now += kTimeout + kS;
	const std::uint64_t sweep_now = h.kernel.now; // read before the sweep
	h.kernel.now += 3 * kMs;
	h.kernel.send(k, 5); // lands while the sweep runs: due, its last_ns ahead of sweep_now
	// A second operation that found the entry then, landing as it is removed
	// (not due: the first one's snapshot has just gone).
	bool raced = false;
	h.kernel.late_operation = [&](const udpi_flow_key &key, udpi_flow &removed) {
		raced = true;
		h.kernel.count(key, removed, 7, false);
	};
	CHECK_FALSE(h.tracker.sweep(sweep_now));
	CHECK_FALSE(raced);
	CHECK(h.tracker.counters().expired == 0);
	h.kernel.late_operation = nullptr;
	if (!raced)
		h.kernel.send(k, 7);
	h.consume();
	h.kernel.now += kTimeout + kS;
	h.sweep(); // the held-back 7 bytes go out: heard of then, expired a timeout later
	h.kernel.now += kTimeout + kS;
	h.sweep();
	CHECK(h.last(k).kind == EventKind::expire);
	CHECK(tx_bytes_of(h.out, k) == 112);
	CHECK(h.tracker.counters().expired == 1);
}

// A server socket has one flow per peer: each flow leaves its socket's list
// on its own (expiry, a gone entry), in any order, and the socket's close
// then ends exactly the flows it still has.
TEST_CASE("a socket's flows leave its list one by one in any order; its close ends the rest",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	constexpr std::uint16_t kPeers = 1000;
	for (std::uint16_t p = 1; p <= kPeers; p++)
		h.kernel.send(key_of(7, p), p);
	h.kernel.send(key_of(8, 1), 1); // another socket's flow
	h.consume();
	h.kernel.now += kTimeout / 2;
	// Every third peer talks again: the others go idle first.
	for (std::uint16_t p = 3; p <= kPeers; p += 3)
		h.kernel.send(key_of(7, p), 1);
	h.consume();
	h.kernel.now += kTimeout / 2 + kS;
	for (int i = 0; i < 3; i++) {
		h.sweep();
		h.kernel.now += kS;
	}
	const std::uint64_t expired = h.tracker.counters().expired;
	CHECK(expired == kPeers - kPeers / 3 + 1);
	CHECK(h.tracker.flows() == kPeers / 3);
	CHECK(h.tracker.flows_of_socket(7) == kPeers / 3);
	CHECK(h.tracker.flows_of_socket(8) == 0);
	h.kernel.close_socket(7);
	h.consume();
	std::unordered_map<std::uint16_t, int> closes;
	for (const auto &d : h.out)
		if (d.kind == EventKind::close) {
			CHECK(d.key.sock_id == 7);
			CHECK(d.key.rport % 3 == 0);
			closes[d.key.rport]++;
		}
	CHECK(closes.size() == kPeers / 3);
	for (const auto &[port, n] : closes)
		CHECK(n == 1);
	CHECK(h.tracker.flows() == 0);
	CHECK(h.kernel.table.empty());
}

TEST_CASE("an operation landing on a flow as it is expired starts the next flow, nothing lost",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(2, 99);
	h.kernel.send(k, 100);
	h.consume();
	h.kernel.late_operation = [&](const udpi_flow_key &key, udpi_flow &removed) {
		h.kernel.count(key, removed, 7, false); // due: it sends an update of the removed entry
	};
	h.kernel.now += kTimeout + kS;
	h.sweep();
	h.kernel.late_operation = nullptr;
	CHECK(h.tracker.counters().expired == 1);
	CHECK(h.tracker.counters().late_operations == 1);
	REQUIRE(h.kernel.table.count(k) == 1); // the late operation's flow
	CHECK(h.kernel.table[k].tx_bytes == 7);
	CHECK(tx_bytes_of(h.out, k) == 107);
	// The flow it started goes on from there, and is expired in turn.
	h.kernel.now += 10 * kS;
	h.kernel.send(k, 3);
	h.consume();
	h.kernel.now += 2 * kS;
	h.sweep();
	CHECK(tx_bytes_of(h.out, k) == 110);
	h.kernel.now += kTimeout + kS;
	h.sweep();
	CHECK(h.last(k).kind == EventKind::expire);
	CHECK(tx_bytes_of(h.out, k) == 110);
	CHECK(h.kernel.table.empty());
}

TEST_CASE("a snapshot of an expired entry still on its way adds nothing", "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(3, 7);
	h.kernel.send(k, 40);
	h.consume();
	h.kernel.now += kS;
	h.kernel.send(k, 2);
	REQUIRE(h.kernel.ring.back().kind == UDPI_REC_UPDATE);
	const Record old = h.kernel.ring.back(); // a snapshot of the entry sent before its removal
	h.consume();
	h.kernel.now += kTimeout + kS;
	h.sweep();
	REQUIRE(h.last(k).kind == EventKind::expire);
	h.tracker.on_record(old, h.kernel.now);
	CHECK(h.last(k).kind == EventKind::expire);
	CHECK(tx_bytes_of(h.out, k) == 42);
	CHECK(h.kernel.table.empty());
}

TEST_CASE("an operation landing on an expired flow does not count its drops again", "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(4, 53);
	h.kernel.send(k, 100);
	h.kernel.table[k].rx_drops = 5; // dropped datagrams from the peer, counted in the entry
	h.consume();
	h.kernel.late_operation = [&](const udpi_flow_key &key, udpi_flow &removed) {
		h.kernel.count(key, removed, 7, false);
	};
	h.kernel.now += kTimeout + kS;
	h.sweep();
	h.kernel.late_operation = nullptr;
	CHECK(h.tracker.counters().late_operations == 1);
	const auto expired = std::find_if(h.out.begin(), h.out.end(),
					  [](const Delivered &d) { return d.kind == EventKind::expire; });
	REQUIRE(expired != h.out.end());
	CHECK(expired->flow.rx_drops == 5);
	REQUIRE(h.kernel.table.count(k) == 1); // the late operation's flow: 7 bytes, no drops
	CHECK(h.kernel.table[k].tx_bytes == 7);
	CHECK(h.kernel.table[k].rx_drops == 0);
	CHECK(h.last(k).flow.rx_drops == 0);
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(k).kind == EventKind::final);
	CHECK(h.last(k).flow.rx_drops == 0);
	CHECK(tx_bytes_of(h.out, k) == 107);
}

// handle_connect() on a flow the kernel does not hold: a new entry, reported as CONNECT.
Record connect_new_entry(FakeKernel &kernel, const udpi_flow_key &key)
{
	udpi_flow fresh{};
	fresh.emitted_changes = UDPI_NEVER_EMITTED;
	fresh.last_emit_ns = kernel.now;
	Record r;
	r.kind = UDPI_REC_CONNECT;
	r.key = key;
	r.flow = fresh; // the record carries the entry as it was before the emission
	fresh.emitted_changes = 0;
	kernel.table[key] = fresh;
	return r;
}

TEST_CASE("a flow born again at connect() just after its expiry is a new flow, counted once",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(5, 123);
	h.tracker.on_record(connect_new_entry(h.kernel, k), h.kernel.now);
	REQUIRE(h.last(k).kind == EventKind::connect);
	h.kernel.now += kTimeout + kS;
	h.sweep(); // connected, never used: expired with nothing
	REQUIRE(h.last(k).kind == EventKind::expire);
	REQUIRE(h.kernel.table.empty());

	// Within the time an expired flow is remembered, the socket connects to the same peer again.
	h.kernel.now += kS;
	h.tracker.on_record(connect_new_entry(h.kernel, k), h.kernel.now);
	CHECK(h.last(k).kind == EventKind::connect);
	CHECK(h.tracker.flows() == 1);
	h.kernel.send(k, 40);
	h.consume();
	CHECK(h.last(k).kind == EventKind::update);
	CHECK(h.last(k).flow.tx_bytes == 40);
	CHECK(h.tracker.counters().late_operations == 0);
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(k).kind == EventKind::final);
	CHECK(h.last(k).flow.tx_bytes == 40);
	CHECK(h.last(k).flow.tx_packets == 1);
}

TEST_CASE("a new flow whose first snapshot the ring buffer lost is not taken for a late operation",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto k = key_of(6, 123);
	h.kernel.send(k, 1000);
	h.consume();
	h.kernel.now += kTimeout + kS;
	h.sweep();
	REQUIRE(h.last(k).kind == EventKind::expire);
	h.kernel.now += kS;
	h.kernel.ring_room = 0;
	h.kernel.send(k, 10); // NEW lost
	h.kernel.ring_room = SIZE_MAX;
	h.kernel.now += kInterval;
	h.kernel.send(k, 20); // its first snapshot to arrive, with less than the expired flow had
	h.consume();
	CHECK(h.last(k).kind == EventKind::update);
	CHECK(h.last(k).flow.tx_bytes == 30);
	CHECK(h.tracker.counters().late_operations == 0);
	CHECK(tx_bytes_of(h.out, k) == 1030);
}

TEST_CASE("past 90 % of the table the longest-idle flows are expired early, active ones stay",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 100});
	// 95 flows, one every 100 ms: the oldest are the longest idle.
	for (std::uint16_t i = 0; i < 95; i++) {
		h.kernel.send(key_of(10, static_cast<std::uint16_t>(1000 + i)), 1);
		h.consume();
		h.kernel.now += 100 * kMs;
	}
	h.kernel.now += 200 * kMs;
	h.sweep(); // the newest flows were heard within a second: not expired
	CHECK(h.tracker.flows() == 80);
	CHECK(h.tracker.counters().expired_early == 15);
	CHECK(h.tracker.counters().expired == 15);
	CHECK(h.kernel.table.size() == 80);
	for (std::uint16_t i = 0; i < 15; i++)
		CHECK(h.last(key_of(10, static_cast<std::uint16_t>(1000 + i))).kind == EventKind::expire);
	CHECK(h.kernel.table.count(key_of(10, 1015)) == 1);

	// Every flow active: none goes, however full the table.
	Harness busy({kTimeout, 100});
	for (std::uint16_t i = 0; i < 99; i++)
		busy.kernel.send(key_of(11, static_cast<std::uint16_t>(1000 + i)), 1);
	busy.consume();
	busy.kernel.now += 500 * kMs;
	busy.sweep();
	CHECK(busy.tracker.counters().expired == 0);
	CHECK(busy.tracker.flows() == 99);
}

TEST_CASE("no expiry with a timeout of 0", "[tracker][expiry]")
{
	Harness h({0, 100});
	for (std::uint16_t i = 0; i < 99; i++)
		h.kernel.send(key_of(12, static_cast<std::uint16_t>(1000 + i)), 1);
	h.consume();
	h.kernel.now += 24 * 3600 * kS;
	h.sweep();
	CHECK(h.tracker.counters().expired == 0);
	CHECK(h.kernel.lookup_calls == 0);
}

TEST_CASE("a socket's close after its flow expired ends nothing twice", "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const auto a = key_of(20, 1), b = key_of(20, 2);
	h.kernel.send(a, 1);
	h.consume();
	h.kernel.now += kTimeout / 2;
	h.kernel.send(b, 2);
	h.consume();
	h.kernel.now += kTimeout / 2 + kS;
	h.sweep(); // a expires, b stays
	CHECK(h.last(a).kind == EventKind::expire);
	h.kernel.close_socket(20);
	h.consume();
	CHECK(h.last(b).kind == EventKind::close);
	CHECK(h.out.size() == 4);
	CHECK(h.kernel.table.empty());
}

TEST_CASE("a crowd of flows going idle together is expired over a few sweeps, each asking for the next",
	  "[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	const std::size_t crowd = detail::FlowTracker::kExpiryBatch * 2 + 10;
	for (std::size_t i = 0; i < crowd; i++)
		h.kernel.send(key_of(30 + i / 60000, static_cast<std::uint16_t>(1 + i % 60000)), 1);
	h.consume();
	h.kernel.now += kTimeout + kS;
	CHECK(h.sweep()); // a batch, and more are due
	CHECK(h.tracker.counters().expired == detail::FlowTracker::kExpiryBatch);
	CHECK(h.sweep()); // at once, with no time passed
	CHECK(h.tracker.counters().expired == 2 * detail::FlowTracker::kExpiryBatch);
	CHECK_FALSE(h.sweep());
	CHECK(h.tracker.counters().expired == crowd);
	CHECK(h.kernel.table.empty());
	CHECK_FALSE(h.sweep());
}

TEST_CASE(
	"a batch that expires the last due flow asks for no sweep; one that leaves flows not yet due neither",
	"[tracker][expiry]")
{
	Harness h({kTimeout, 0});
	for (std::size_t i = 0; i < detail::FlowTracker::kExpiryBatch; i++)
		h.kernel.send(key_of(30, static_cast<std::uint16_t>(1 + i)), 1);
	h.consume();
	h.kernel.now += 2 * kS;
	h.kernel.send(key_of(31, 1), 1); // idle two seconds less than the rest
	h.consume();
	h.kernel.now += kTimeout - kS;
	CHECK_FALSE(h.sweep()); // exactly a batch was due
	CHECK(h.tracker.counters().expired == detail::FlowTracker::kExpiryBatch);
	CHECK(h.kernel.table.size() == 1);
}

TEST_CASE("a table past 90 % sheds its idle flows early over a few sweeps, each asking for the next",
	  "[tracker][expiry]")
{
	const std::size_t max_flows = 50'000;
	Harness h({3600 * kS, max_flows});
	const std::size_t n = max_flows - 1;
	for (std::size_t i = 0; i < n; i++)
		h.kernel.send(key_of(40 + i / 60000, static_cast<std::uint16_t>(1 + i % 60000)), 1);
	h.consume();
	h.kernel.now += 3 * kS; // idle beyond the early expiry's two intervals, far from the timeout
	CHECK(h.sweep());
	CHECK(h.tracker.counters().expired_early == detail::FlowTracker::kExpiryBatch);
	CHECK(h.sweep());
	CHECK_FALSE(h.sweep()); // down to 80 %
	CHECK(h.tracker.counters().expired_early == n - max_flows * 8 / 10);
	CHECK(h.tracker.flows() == max_flows * 8 / 10);
	CHECK_FALSE(h.sweep());
}

TEST_CASE("an operation handed over when the table has filled meanwhile is counted as untracked",
	  "[tracker][deferred]")
{
	Harness h;
	const auto held = key_of(7, 1), refused = key_of(8, 2);
	h.kernel.send(held, 10);
	h.consume();
	h.kernel.capacity = h.kernel.table.size(); // full
	h.tracker.on_record(h.kernel.deferred(refused, 33), h.kernel.now);
	CHECK(h.tracker.counters().deferred_operations == 1);
	CHECK(h.tracker.counters().untracked_operations == 1);
	CHECK(h.tracker.counters().untracked_packets == 1);
	CHECK(h.tracker.counters().untracked_bytes == 33);
	CHECK(h.kernel.table.count(refused) == 0);
	CHECK(h.tracker.flows() == 1);
	for (const auto &d : h.out)
		CHECK(!detail::FlowKeyEqual{}(d.key, refused));
	h.tracker.stop(h.kernel.now);
	CHECK(h.last(held).kind == EventKind::final);
}
