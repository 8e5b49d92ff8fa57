// SPDX-License-Identifier: LGPL-2.1-or-later
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <cstring>
#include <ctime>

#include "decode.h"

using namespace udpintercept;

namespace {

void put_v4(__u8 *addr, const char *ip)
{
	std::memset(addr, 0, 16);
	addr[10] = addr[11] = 0xff;
	REQUIRE(inet_pton(AF_INET, ip, addr + 12) == 1);
}

void put_v6(__u8 *addr, const char *ip)
{
	REQUIRE(inet_pton(AF_INET6, ip, addr) == 1);
}

} // namespace

TEST_CASE("an IPv4 record decodes to an IPv4 event", "[decode]")
{
	udpi_flow_key key{};
	udpi_flow flow{};
	key.sock_id = 42;
	key.family = UDPI_AF_INET;
	key.rport = 53;
	put_v4(key.raddr, "192.0.2.7");
	put_v4(flow.laddr, "127.0.0.1");
	flow.lport = 40000;
	flow.tx_bytes = 861;
	flow.tx_packets = 7;
	flow.rx_bytes = 5;
	flow.rx_packets = 1;
	flow.rx_drops = 9;
	flow.pid = 1234;
	flow.uid = 1000;
	flow.netns = 4026531840u;
	flow.cgroup_id = 99;
	flow.last_ns = 5'000'000'000ULL;
	std::memcpy(flow.comm, "dig", 4);

	detail::WallClock clock;
	const Event e = detail::decode(EventKind::update, key, flow, clock);
	CHECK(e.family == Family::ipv4);
	CHECK(e.remote.address.to_string() == "192.0.2.7");
	CHECK(e.remote.port == 53);
	CHECK(e.local.address.to_string() == "127.0.0.1");
	CHECK(e.local.port == 40000);
	CHECK(e.tx_bytes == 861);
	CHECK(e.tx_packets == 7);
	CHECK(e.rx_bytes == 5);
	CHECK(e.rx_packets == 1);
	CHECK(e.rx_drops == 9);
	CHECK(e.pid == 1234);
	CHECK(e.uid == 1000);
	CHECK(e.comm == "dig");
	CHECK(e.netns == 4026531840u);
	CHECK(e.cgroup_id == 99);
	CHECK(e.socket_id == 42);
	CHECK(e.time.time_since_epoch().count() == 5'000'000'000LL + clock.offset_ns());
}

TEST_CASE("IPv6 peers keep IPv6; the v4 wildcard of a v6 socket shows as 0.0.0.0", "[decode]")
{
	udpi_flow_key key{};
	udpi_flow flow{};
	key.family = UDPI_AF_INET6;
	put_v6(key.raddr, "2001:db8::53");
	put_v6(flow.laddr, "::1");
	detail::WallClock clock;
	Event e = detail::decode(EventKind::final, key, flow, clock);
	CHECK(e.family == Family::ipv6);
	CHECK(e.remote.address.to_string() == "2001:db8::53");
	CHECK(e.local.address.to_string() == "::1");

	key.family = UDPI_AF_INET; // v4 traffic on an AF_INET6 socket bound to ::
	put_v4(key.raddr, "10.1.2.3");
	std::memset(flow.laddr, 0, 16);
	e = detail::decode(EventKind::close, key, flow, clock);
	CHECK(e.family == Family::ipv4);
	CHECK(e.local.address.to_string() == "0.0.0.0");
	CHECK(e.remote.address.to_string() == "10.1.2.3");
}

TEST_CASE("a comm that fills all 16 bytes is not read past its end", "[decode]")
{
	udpi_flow_key key{};
	udpi_flow flow{};
	key.family = UDPI_AF_INET;
	std::memset(flow.comm, 'x', sizeof(flow.comm));
	detail::WallClock clock;
	CHECK(detail::decode(EventKind::update, key, flow, clock).comm == std::string(16, 'x'));
}

TEST_CASE("the wall clock offset matches CLOCK_REALTIME - CLOCK_MONOTONIC", "[decode][clock]")
{
	detail::WallClock clock;
	timespec r{}, m{};
	clock_gettime(CLOCK_MONOTONIC, &m);
	clock_gettime(CLOCK_REALTIME, &r);
	const long long mono = m.tv_sec * 1000000000LL + m.tv_nsec;
	const long long real = r.tv_sec * 1000000000LL + r.tv_nsec;
	const long long err = clock.from_monotonic(mono).time_since_epoch().count() - real;
	CHECK(std::llabs(err) < 1000000); // within a millisecond, whatever the machine's load
}
