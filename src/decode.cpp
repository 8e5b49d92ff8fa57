// SPDX-License-Identifier: LGPL-2.1-or-later
#include "decode.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace udpintercept::detail {

namespace {

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
	e.rx_drops = flow.rx_drops;
	e.socket_id = key.sock_id;
	return e;
}

} // namespace udpintercept::detail
