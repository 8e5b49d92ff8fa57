// SPDX-License-Identifier: LGPL-2.1-or-later
// Nothing is lost without being counted: identities between what was done,
// what was delivered and what was counted as dropped or untracked.
#include <catch2/catch.hpp>

#include "recorder.h"

using namespace udpintercept;
using namespace std::chrono_literals;
using testutil::endpoint;
using testutil::Recorder;
using testutil::Udp;

TEST_CASE("a stalled consumer: every snapshot is delivered or counted lost, and the totals stay exact",
	  "[loss]")
{
	Options o;
	o.interval = 0ms;           // a snapshot per operation...
	o.ring_buffer_bytes = 4096; // ...into room for a few dozen
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	Udp a(AF_INET), b(AF_INET);
	a.bind("127.0.0.1");
	b.bind("127.0.0.1");
	const int rcvbuf = 8 << 20; // the socket keeps every datagram: only the tracer may drop
	REQUIRE(setsockopt(b.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) == 0);
	a.connect(b.local());
	constexpr int kOps = 3000;
	for (int i = 0; i < kOps; i++) // nobody reads the ring buffer meanwhile
		a.send(16);
	for (int i = 0; i < kOps; i++)
		b.recv_from();
	const testutil::FlowName tx_name{endpoint(a.local()), endpoint(b.local())},
		rx_name{endpoint(b.local()), endpoint(a.local())};
	// The full sweep the losses asked for finds both flows' last changes.
	CHECK(rec.pump_until([&] {
		const auto tx = rec.last_of(tx_name), rx = rec.last_of(rx_name);
		const auto s = rec.tracer().stats();
		return tx && tx->tx_packets == kOps && rx && rx->rx_packets == kOps &&
		       s.records_received == s.records_sent;
	}));

	auto s = rec.tracer().stats();
	CHECK(s.lost > 0);
	// Every send and receive, the connect, and the updates that delivered
	// what the lost snapshots carried (found by a full sweep).
	CHECK(s.full_sweeps > 0);
	CHECK(s.records_sent + s.lost == 2 * kOps + 1 + s.flushes);
	CHECK(s.records_received == s.records_sent);

	rec.stop();
	const auto flows = rec.last_by_flow();
	const auto &tx = flows.at({endpoint(a.local()), endpoint(b.local())});
	CHECK(tx.tx_packets == kOps);
	CHECK(tx.tx_bytes == 16 * kOps);
	const auto &rx = flows.at({endpoint(b.local()), endpoint(a.local())});
	CHECK(rx.rx_packets == kOps);
	CHECK(rx.rx_bytes == 16 * kOps);
}

TEST_CASE("a full flow table counts the flows, datagrams and bytes it could not admit", "[loss]")
{
	Options o;
	o.max_flows = 16;
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	Udp hub(AF_INET);
	hub.bind("127.0.0.1");
	std::vector<Udp> peers;
	constexpr int kPeers = 40;
	std::uint64_t bytes = 0;
	for (int i = 0; i < kPeers; i++) {
		peers.emplace_back(AF_INET);
		peers.back().bind("127.0.0.1");
		hub.send_to(peers.back().local(), 10 + i);
		bytes += 10 + i;
	}
	rec.stop();

	std::uint64_t tracked_flows = 0, tracked_packets = 0, tracked_bytes = 0;
	for (const auto &[name, e] : rec.last_by_flow()) {
		tracked_flows++;
		tracked_packets += e.tx_packets;
		tracked_bytes += e.tx_bytes;
	}
	const auto s = rec.tracer().stats();
	CHECK(tracked_flows <= 16);
	CHECK(s.flows_untracked > 0);
	CHECK(tracked_flows + s.flows_untracked == kPeers); // one operation per flow
	CHECK(tracked_packets + s.untracked_packets == kPeers);
	CHECK(tracked_bytes + s.untracked_bytes == bytes);
	CHECK(s.insert_failures == 0);
}

TEST_CASE("closes beyond a full ring buffer and a full closed map still end their flows, as deferred closes",
	  "[loss]")
{
	Options o;
	o.ring_buffer_bytes = 4096; // room for a few dozen records
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	// More short-lived sockets than the kernel's `closed` map (16,384) holds,
	// while nobody reads the ring buffer: each sends one datagram to a port
	// nobody listens on (no receiving flow) and closes.
	Udp sink(AF_INET);
	sink.bind("127.0.0.1");
	const auto to = sink.local();
	sink.close(); // the port is nobody's now
	constexpr int kSockets = 20000;
	for (int i = 0; i < kSockets; i++) {
		Udp s(AF_INET);
		s.send_to(to, 8);
	}
	const auto closes = [&] {
		int n = 0;
		for (const auto &e : rec.events)
			n += e.kind == EventKind::close && endpoint(e.remote) == endpoint(to) &&
			     e.tx_packets == 1;
		return n;
	};
	// The closed map's closes come at the next sweep; the rest with the full
	// sweep their loss asked for, which finds the sockets gone from the
	// kernel's socket table (without it they would wait for the flow timeout).
	const bool all_closed = rec.pump_until([&] { return closes() == kSockets; }, 20s);
	const auto s = rec.tracer().stats();
	INFO(closes() << " closes of one datagram, " << s.flows_active << " flows active, " << s.full_sweeps
		      << " full sweeps, " << s.closes_deferred << " deferred closes");
	CHECK(all_closed);
	CHECK(s.closes_deferred > 16384);
	CHECK(s.full_sweeps > 0);
	CHECK(s.flows_active == 0);
	CHECK(s.flows_untracked == 0);
}
