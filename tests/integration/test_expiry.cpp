// SPDX-License-Identifier: LGPL-2.1-or-later
// Flows that outlive their traffic on the real kernel: expired after the
// flow timeout with their totals, removed from the kernel's table, and
// begun anew when the same socket and peer talk again; a table near full
// makes room by expiring its longest-idle flows.
#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <poll.h>
#include <unistd.h>

#include "clock.h"
#include "event_loop.h"
#include "recorder.h"

using namespace udpintercept;
using namespace std::chrono_literals;
using testutil::endpoint;
using testutil::Recorder;
using testutil::SockAddr;
using testutil::Udp;

namespace {

// The bytes sent on a flow over all its lives: each expire ends one, the
// newest snapshot since carries the rest.
std::uint64_t tx_bytes(const std::vector<Event> &events)
{
	std::uint64_t ended = 0, current = 0;
	for (const auto &e : events) {
		if (e.kind == EventKind::expire) {
			ended += e.tx_bytes;
			current = 0;
		} else {
			current = e.tx_bytes;
		}
	}
	return ended + current;
}

} // namespace

TEST_CASE("an idle flow is expired with its totals and leaves the table; talking again starts a new flow",
	  "[flows][expiry]")
{
	Options options;
	options.flow_timeout = 2s;
	options.pid = static_cast<std::uint32_t>(getpid()); // the table holds this test's flows only
	Recorder rec(options);
	Udp client(AF_INET), server(AF_INET);
	server.bind("127.0.0.1");
	for (int i = 0; i < 3; i++) {
		client.send_to(server.local(), 100);
		server.recv_from();
	}
	const testutil::FlowName sent{"0.0.0.0:" + std::to_string(client.local().port()),
				      endpoint(server.local())};
	const auto expired = [&](const testutil::FlowName &f) {
		const auto last = rec.last_of(f);
		return last && last->kind == EventKind::expire;
	};
	REQUIRE(rec.pump_until([&] { return expired(sent); }, 30s));
	CHECK(rec.last_of(sent)->tx_bytes == 300);
	CHECK(rec.last_of(sent)->tx_packets == 3);
	const SockAddr c = client.local();
	const testutil::FlowName received{endpoint(server.local()), "127.0.0.1:" + std::to_string(c.port())};
	REQUIRE(rec.pump_until([&] { return expired(received); }, 30s));
	CHECK(rec.last_of(received)->rx_bytes == 300);
	CHECK(rec.tracer().stats().expired >= 2);
	CHECK(rec.tracer().stats().flows_active == 0);

	client.send_to(server.local(), 7); // the same socket and peer: a new flow from zero
	REQUIRE(rec.pump_until([&] { return rec.last_of(sent)->kind == EventKind::update; }));
	CHECK(rec.last_of(sent)->tx_bytes == 7);
	CHECK(tx_bytes(rec.of_flow(sent)) == 307);
	rec.stop();
	CHECK(rec.last_of(sent)->kind == EventKind::final);
	CHECK(tx_bytes(rec.of_flow(sent)) == 307);
	const auto stats = rec.tracer().stats();
	CHECK(stats.expired_early == 0);
	CHECK(stats.flows_untracked == 0);
}

TEST_CASE("a table near full expires its longest-idle flows early and new flows find room", "[flows][expiry]")
{
	Options options;
	options.max_flows = 64;
	options.pid = static_cast<std::uint32_t>(getpid()); // this test's flows only: the table is small
	Recorder rec(options);
	Udp server(AF_INET);
	server.bind("127.0.0.1");
	// 30 clients: 60 flows, past 90 % of 64; idle from here on.
	std::vector<Udp> first;
	for (int i = 0; i < 30; i++) {
		first.emplace_back(AF_INET);
		first.back().send_to(server.local(), 10);
		server.recv_from();
	}
	// Down to 80 %, in one sweep or more: a flow user space heard of within
	// two intervals stays until it has been quiet that long.
	REQUIRE(rec.pump_until([&] { return rec.tracer().stats().flows_active <= 64 * 8 / 10; }, 30s));
	const auto early = rec.tracer().stats();
	CHECK(early.expired_early > 0);
	CHECK(early.expired == early.expired_early);
	// Room down to 80 %: 6 more clients (12 flows), all tracked.
	std::vector<Udp> second;
	for (int i = 0; i < 6; i++) {
		second.emplace_back(AF_INET);
		second.back().send_to(server.local(), 10);
		server.recv_from();
	}
	rec.stop();
	const auto stats = rec.tracer().stats();
	CHECK(stats.flows_untracked == 0);
	// Every datagram is in exactly one flow's totals, expired or final.
	std::uint64_t sent = 0, received = 0;
	for (const auto &e : rec.events)
		if (e.kind == EventKind::expire || e.kind == EventKind::final) {
			sent += e.tx_packets;
			received += e.rx_packets;
		}
	CHECK(sent == 36);
	CHECK(received == 36);
	std::printf("table of 64: %llu flows expired early\n",
		    static_cast<unsigned long long>(stats.expired_early));
}

// A sweep that stopped at its batch limit (thousands of flows idle at once)
// asks for the next one a wake-up window later: the tracer's fd becomes
// readable and the sweep is due then, not a sweep period (an hour here) later.
TEST_CASE("a sweep asked for soon makes the tracer's fd readable and is due within a wake-up window",
	  "[flows][expiry]")
{
	const int ring = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "sweep_soon", 0, 0, 4096, nullptr);
	REQUIRE(ring >= 0);
	{
		detail::EventLoop loop(ring, std::chrono::hours(1), [](std::span<const std::byte>) {});
		pollfd p{loop.fd(), POLLIN, 0};
		CHECK(::poll(&p, 1, 100) == 0);
		CHECK_FALSE(loop.take_sweep(detail::monotonic_ns()));
		loop.sweep_soon();
		CHECK(::poll(&p, 1, 5000) == 1);
		loop.consume();
		CHECK(loop.take_sweep(detail::monotonic_ns()));
		CHECK_FALSE(loop.take_sweep(detail::monotonic_ns())); // once
		CHECK(::poll(&p, 1, 100) == 0);
	}
	close(ring);
}
