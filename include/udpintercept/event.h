// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <udpintercept/export.h>

namespace udpintercept {

/// The family of the traffic: IPv4-mapped IPv6 peers count as IPv4.
enum class Family { ipv4, ipv6 };

/// "ipv4" or "ipv6".
UDPINTERCEPT_EXPORT std::string_view to_string(Family family) noexcept;

/// An IPv4 or IPv6 address. IPv4 is held as ::ffff:a.b.c.d in bytes.
struct UDPINTERCEPT_EXPORT Address {
	Family family = Family::ipv4;
	std::array<std::uint8_t, 16> bytes{}; ///< network byte order

	/// Dotted quad for IPv4, RFC 5952 text for IPv6.
	std::string to_string() const;
	bool operator==(const Address &) const = default;
};

/// An address and a port (host byte order).
struct Endpoint {
	Address address;
	std::uint16_t port = 0;
	bool operator==(const Endpoint &) const = default;
};

/// Why a snapshot was sent.
enum class EventKind {
	connect, ///< connect() set the peer
	update,  ///< counters changed
	close,   ///< the socket was destroyed: final totals
	final,   ///< the tracer is stopping and the flow was still open
	/**
	 * The flow had no operation for Options::flow_timeout (or was among the
	 * longest idle when the flow table neared full): its totals, and it
	 * leaves the table. Like `close`, the flow's last snapshot; the same
	 * socket and peer talking again start a new flow, counted from zero.
	 */
	expire,
};

/// "connect", "update", "close", "final" or "expire".
UDPINTERCEPT_EXPORT std::string_view to_string(EventKind kind) noexcept;

/// Nanosecond wall-clock time.
using WallTime = std::chrono::time_point<std::chrono::system_clock, std::chrono::nanoseconds>;

/**
 * A snapshot of one flow (one local socket talking to one remote endpoint):
 * its cumulative counters since the tracer first saw it, and the task of its
 * newest change. Passed as `const Event&` that is valid during the callback
 * only.
 */
struct Event {
	EventKind kind = EventKind::update;
	WallTime time;               ///< of the newest change (of the close, for `close`)
	std::uint32_t pid = 0;       ///< process id (tgid) of the task of the newest change
	std::uint32_t uid = 0;       ///< its user id
	std::string comm;            ///< its command (at most 15 characters)
	std::uint64_t cgroup_id = 0; ///< its cgroup v2 id
	/// The path of that cgroup under the cgroup v2 mount ("/" for its root,
	/// "" if unknown), resolved when the tracer first met the id.
	std::string cgroup;
	/// The bare 64-hex id of the container the process runs in ("" if none):
	/// from `cgroup` where it names one (Docker, containerd, CRI-O, Podman,
	/// Kubernetes pods, systemd or cgroupfs drivers), else, on hosts with
	/// cgroup v1 hierarchies, from the process's v1 paths.
	std::string container_id;
	std::uint32_t netns = 0; ///< inode number of the socket's network namespace
	Family family = Family::ipv4;
	Endpoint local;  ///< saddr, sport
	Endpoint remote; ///< daddr, dport
	std::uint64_t tx_bytes = 0;
	std::uint64_t tx_packets = 0;
	std::uint64_t rx_bytes = 0;
	std::uint64_t rx_packets = 0;
	/// Datagrams from this peer the kernel discarded on their way into the
	/// socket (receive buffer or protocol memory full, the socket's filter,
	/// a bad checksum found when read): the socket's `drops` in
	/// /proc/net/udp, split by sender.
	std::uint64_t rx_drops = 0;
	std::uint64_t socket_id = 0; ///< the tracer's identity of the local socket (never reused)
};

/// One JSON object with exactly the field names of the design's data model, no newline.
UDPINTERCEPT_EXPORT std::string to_json(const Event &event);

/// One readable line, no newline (see text_header()).
UDPINTERCEPT_EXPORT std::string to_text(const Event &event);

/// Column titles matching to_text().
UDPINTERCEPT_EXPORT std::string text_header();

/// RFC 3339 with nanoseconds, UTC: 2026-11-27T23:59:59.123456789Z.
UDPINTERCEPT_EXPORT std::string format_time(WallTime time);

} // namespace udpintercept
