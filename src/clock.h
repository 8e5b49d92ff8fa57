// SPDX-License-Identifier: LGPL-2.1-or-later
// The kernel's clock (CLOCK_MONOTONIC, what bpf_ktime_get_ns() reads) and
// its translation to wall-clock time.
#pragma once

#include <cstdint>

#include <udpintercept/event.h>

namespace udpintercept::detail {

/// CLOCK_MONOTONIC now, in nanoseconds.
std::uint64_t monotonic_ns() noexcept;

/**
 * CLOCK_MONOTONIC to wall-clock time. The offset is measured from the
 * tightest of several back-to-back clock pairs and re-measured by
 * calibrate(), so a clock step is followed.
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

} // namespace udpintercept::detail
