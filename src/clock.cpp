// SPDX-License-Identifier: LGPL-2.1-or-later
#include "clock.h"

#include <climits>
#include <ctime>

namespace udpintercept::detail {

namespace {

std::int64_t ts_ns(const timespec &ts)
{
	return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
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
	// Two's-complement sum: a monotonic time no kernel gives (past 2^63 ns,
	// 292 years of uptime) wraps instead of being undefined.
	return WallTime(std::chrono::nanoseconds(
		static_cast<std::int64_t>(mono_ns + static_cast<std::uint64_t>(offset_ns_))));
}

} // namespace udpintercept::detail
