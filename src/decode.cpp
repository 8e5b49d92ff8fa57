// SPDX-License-Identifier: LGPL-2.1-or-later
#include "decode.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <ctime>

namespace udpintercept::detail {

// The layout of everything that crosses the kernel boundary, checked here so
// that a change to bpf/udpintercept.h that moves a field fails the build.
static_assert(sizeof(udpi_flow_key) == 32);
static_assert(offsetof(udpi_flow_key, sock_id) == 0);
static_assert(offsetof(udpi_flow_key, raddr) == 8);
static_assert(offsetof(udpi_flow_key, rport) == 24);
static_assert(offsetof(udpi_flow_key, family) == 26);
static_assert(sizeof(udpi_flow) == 120);
static_assert(offsetof(udpi_flow, tx_bytes) == 0);
static_assert(offsetof(udpi_flow, rx_packets) == 24);
static_assert(offsetof(udpi_flow, last_ns) == 32);
static_assert(offsetof(udpi_flow, changes) == 56);
static_assert(offsetof(udpi_flow, last_tick) == 64);
static_assert(offsetof(udpi_flow, pid) == 72);
static_assert(offsetof(udpi_flow, netns) == 80);
static_assert(offsetof(udpi_flow, lport) == 84);
static_assert(offsetof(udpi_flow, laddr) == 88);
static_assert(offsetof(udpi_flow, comm) == 104);
static_assert(sizeof(udpi_record) == 160);
static_assert(UDPI_REC_DEFERRED == 5);
static_assert(offsetof(udpi_record, key) == 8);
static_assert(offsetof(udpi_record, flow) == 40);
static_assert(sizeof(udpi_sock) == 16);
static_assert(sizeof(udpi_peer_stash) == 32);
static_assert(UDPI_STAT_MAX == 10);

namespace {

std::int64_t ts_ns(const timespec &ts)
{
	return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool v4_mapped(const std::uint8_t *b)
{
	static constexpr std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	return std::memcmp(b, prefix, sizeof(prefix)) == 0;
}

bool all_zero(const std::uint8_t *b)
{
	return std::all_of(b, b + 16, [](std::uint8_t c) { return c == 0; });
}

} // namespace

std::uint64_t monotonic_ns() noexcept
{
	timespec ts{};
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<std::uint64_t>(ts_ns(ts));
}

void WallClock::calibrate() noexcept
{
	std::int64_t best_gap = INT64_MAX;
	for (int i = 0; i < 8; i++) {
		timespec m1{}, r{}, m2{};
		clock_gettime(CLOCK_MONOTONIC, &m1);
		clock_gettime(CLOCK_REALTIME, &r);
		clock_gettime(CLOCK_MONOTONIC, &m2);
		const std::int64_t gap = ts_ns(m2) - ts_ns(m1);
		if (gap < best_gap) {
			best_gap = gap;
			offset_ns_ = ts_ns(r) - (ts_ns(m1) + gap / 2);
		}
	}
}

WallTime WallClock::from_monotonic(std::uint64_t mono_ns) const noexcept
{
	return WallTime(std::chrono::nanoseconds(static_cast<std::int64_t>(mono_ns) + offset_ns_));
}

Address decode_address(const std::uint8_t *bytes, Family family) noexcept
{
	Address a;
	a.family = family;
	std::memcpy(a.bytes.data(), bytes, 16);
	if (family == Family::ipv4 && all_zero(bytes)) {
		// The IPv4 wildcard of an AF_INET6 socket is ::, shown as 0.0.0.0.
		a.bytes[10] = a.bytes[11] = 0xff;
	} else if (family == Family::ipv6 && v4_mapped(bytes)) {
		a.family = Family::ipv4;
	}
	return a;
}

Event decode(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow, const WallClock &clock)
{
	Event e;
	e.kind = kind;
	e.family = key.family == UDPI_AF_INET6 ? Family::ipv6 : Family::ipv4;
	e.time = clock.from_monotonic(flow.last_ns);
	e.pid = flow.pid;
	e.uid = flow.uid;
	e.comm.assign(flow.comm, strnlen(flow.comm, sizeof(flow.comm)));
	e.cgroup_id = flow.cgroup_id;
	e.netns = flow.netns;
	e.local.address = decode_address(flow.laddr, v4_mapped(flow.laddr) ? Family::ipv4 : e.family);
	e.local.port = flow.lport;
	e.remote.address = decode_address(key.raddr, e.family);
	e.remote.port = key.rport;
	e.tx_bytes = flow.tx_bytes;
	e.tx_packets = flow.tx_packets;
	e.rx_bytes = flow.rx_bytes;
	e.rx_packets = flow.rx_packets;
	e.socket_id = key.sock_id;
	return e;
}

} // namespace udpintercept::detail
