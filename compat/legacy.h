// SPDX-License-Identifier: LGPL-2.1-or-later
// What the legacy ABI adds to the core: its event layout and its settings.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include <udpintercept/event.h>
#include <udpintercept/options.h>

#include "common.h"
#include "parse.h"

namespace udpevent {

/// The legacy address family codes (AF_INET, AF_INET6 on Linux).
inline constexpr std::uint16_t kLegacyInet = 2;
inline constexpr std::uint16_t kLegacyInet6 = 10;

/// The queue size when UDPEVENT_QUEUE_SIZE is not set.
inline constexpr std::size_t kDefaultQueueSize = 8192;
inline constexpr std::size_t kMaxQueueSize = std::size_t{1} << 20;
inline constexpr udpintercept::detail::Limit kQueueSize{"UDPEVENT_QUEUE_SIZE", 1, kMaxQueueSize};
inline constexpr udpintercept::detail::Limit kMaxFlowsVar{
	"UDPEVENT_MAX_FLOWS", udpintercept::detail::kMaxFlows.min, udpintercept::detail::kMaxFlows.max};

/// Settings read from the environment when AddProbe() runs.
struct Settings {
	std::chrono::milliseconds interval{1000};   ///< UDPEVENT_INTERVAL_MS (0: a snapshot per operation)
	std::chrono::seconds flow_timeout{300};     ///< UDPEVENT_FLOW_TIMEOUT_S (0: never)
	std::size_t queue_size = kDefaultQueueSize; ///< UDPEVENT_QUEUE_SIZE
	std::optional<std::uint32_t> max_flows;     ///< UDPEVENT_MAX_FLOWS: the flow table's size
	bool verbose = false; ///< UDPEVENT_VERBOSE: the core's backend decisions on stderr
	udpintercept::Backend backend = udpintercept::Backend::automatic; ///< UDPEVENT_BACKEND

	// In-kernel filters (the legacy library needed a recompile for these).
	std::optional<std::uint32_t> pid;           ///< UDPEVENT_PID: process id of the task
	std::optional<std::uint32_t> uid;           ///< UDPEVENT_UID: user id of the task
	std::optional<std::uint16_t> port;          ///< UDPEVENT_PORT: local or remote port
	std::optional<udpintercept::Family> family; ///< UDPEVENT_FAMILY: ipv4 or ipv6
};

/// Reads the UDPEVENT_* variables; says on stderr which values it ignores, and why.
Settings read_settings() noexcept;

/**
 * One snapshot in the legacy layout. Texts are NUL-terminated and cut to
 * fit; packet counts saturate at UINT32_MAX instead of wrapping.
 */
udp_event_t to_legacy(const udpintercept::Event &event) noexcept;

} // namespace udpevent
