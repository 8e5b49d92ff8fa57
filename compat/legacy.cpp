// SPDX-License-Identifier: LGPL-2.1-or-later
#include "legacy.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

namespace udpevent {

namespace {

// A decimal number in [min, max], or nullopt (and a line on stderr) for
// anything else: a typo must not silently mean 0.
std::optional<unsigned long long> env_number(const char *name, unsigned long long min, unsigned long long max)
{
	const char *text = std::getenv(name);
	if (!text)
		return std::nullopt;
	char *end = nullptr;
	errno = 0;
	const unsigned long long value = std::strtoull(text, &end, 10);
	if (*text == '\0' || *text == '-' || *end != '\0' || errno != 0 || value < min || value > max) {
		std::fprintf(stderr,
			     "libudpEvent: ignoring %s='%s': expected a whole number from %llu to %llu\n",
			     name, text, min, max);
		return std::nullopt;
	}
	return value;
}

template <std::size_t N> void copy_text(char (&field)[N], std::string_view text) noexcept
{
	const std::size_t n = std::min(text.size(), N - 1);
	std::memcpy(field, text.data(), n);
	std::memset(field + n, 0, N - n);
}

std::uint32_t saturate(std::uint64_t value) noexcept
{
	return static_cast<std::uint32_t>(
		std::min<std::uint64_t>(value, std::numeric_limits<std::uint32_t>::max()));
}

template <std::size_t N> void copy_address(char (&field)[N], const udpintercept::Address &address) noexcept
{
	try {
		copy_text(field, address.to_string());
	} catch (...) {
		// Out of memory for a 46-byte string: an empty address, not a crash.
		copy_text(field, "");
	}
}

} // namespace

Settings read_settings() noexcept
{
	Settings settings;
	try {
		// The core's own limit: at most 24 hours.
		if (auto ms = env_number("UDPEVENT_INTERVAL_MS", 0, 86400000))
			settings.interval = std::chrono::milliseconds(*ms);
		if (auto size = env_number("UDPEVENT_QUEUE_SIZE", 1, kMaxQueueSize))
			settings.queue_size = static_cast<std::size_t>(*size);
		const char *verbose = std::getenv("UDPEVENT_VERBOSE");
		settings.verbose = verbose && *verbose && std::string_view(verbose) != "0";
		if (const char *backend = std::getenv("UDPEVENT_BACKEND")) {
			if (auto b = udpintercept::parse_backend(backend))
				settings.backend = *b;
			else
				std::fprintf(stderr,
					     "libudpEvent: ignoring UDPEVENT_BACKEND='%s': expected auto, "
					     "fentry, kprobe "
					     "or tracepoint\n",
					     backend);
		}
		// The core's own limits on each filter.
		if (auto pid = env_number("UDPEVENT_PID", 1, 4194304))
			settings.pid = static_cast<std::uint32_t>(*pid);
		if (auto uid = env_number("UDPEVENT_UID", 0, 4294967294u))
			settings.uid = static_cast<std::uint32_t>(*uid);
		if (auto port = env_number("UDPEVENT_PORT", 1, 65535))
			settings.port = static_cast<std::uint16_t>(*port);
		if (const char *family = std::getenv("UDPEVENT_FAMILY")) {
			const std::string_view f(family);
			if (f == "ipv4" || f == "4")
				settings.family = udpintercept::Family::ipv4;
			else if (f == "ipv6" || f == "6")
				settings.family = udpintercept::Family::ipv6;
			else
				std::fprintf(
					stderr,
					"libudpEvent: ignoring UDPEVENT_FAMILY='%s': expected ipv4 or ipv6\n",
					family);
		}
	} catch (...) {
	}
	return settings;
}

udp_event_t to_legacy(const udpintercept::Event &event) noexcept
{
	udp_event_t out{};
	out.family = event.family == udpintercept::Family::ipv6 ? kLegacyInet6 : kLegacyInet;
	out.pid = event.pid;
	out.UserId = event.uid;
	const auto ns = event.time.time_since_epoch().count();
	out.EventTime = ns > 0 ? static_cast<std::uint64_t>(ns) : 0;
	out.SPT = event.local.port;
	out.DPT = event.remote.port;
	copy_text(out.task, event.comm);
	out.rx_b = event.rx_bytes;
	out.tx_b = event.tx_bytes;
	out.rxPkts = saturate(event.rx_packets);
	out.txPkts = saturate(event.tx_packets);
	copy_address(out.SADDR, event.local.address);
	copy_address(out.DADDR, event.remote.address);
	return out;
}

} // namespace udpevent
