// SPDX-License-Identifier: LGPL-2.1-or-later
// Turning kernel records into Events: the only place that reads the shared
// header's structures field by field.
#pragma once

#include <cstdint>
#include <linux/types.h>

#include <udpintercept/event.h>

extern "C" {
#include "udpintercept.h"
}

namespace udpintercept::detail {

/**
 * CLOCK_MONOTONIC (the BPF clock) to wall-clock time. The offset is
 * measured from the tightest of several back-to-back clock pairs and
 * re-measured by calibrate(), so a clock step is followed.
 */
class WallClock {
public:
	WallClock() { calibrate(); }
	void calibrate() noexcept;
	WallTime from_monotonic(std::uint64_t mono_ns) const noexcept;
	std::int64_t offset_ns() const noexcept { return offset_ns_; }

private:
	std::int64_t offset_ns_ = 0;
};

/// CLOCK_MONOTONIC now, in nanoseconds (bpf_ktime_get_ns()'s clock).
std::uint64_t monotonic_ns() noexcept;

/// An address of the shared header (16 bytes, IPv4 as ::ffff:a.b.c.d).
Address decode_address(const std::uint8_t *bytes, Family family) noexcept;

/// The snapshot `flow` of `key` as an Event of `kind`.
Event decode(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow, const WallClock &clock);

} // namespace udpintercept::detail
