// SPDX-License-Identifier: LGPL-2.1-or-later
// Turning kernel records into Events: the only place that reads the shared
// header's structures field by field.
#pragma once

#include <cstdint>
#include <linux/types.h>

#include <udpintercept/event.h>

#include "clock.h"

extern "C" {
#include "udpintercept.h"
}

namespace udpintercept::detail {

/// An address of the shared header (16 bytes, IPv4 as ::ffff:a.b.c.d).
Address decode_address(const std::uint8_t *bytes, Family family) noexcept;

/// The snapshot `flow` of `key` as an Event of `kind`.
Event decode(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow, const WallClock &clock);

} // namespace udpintercept::detail
