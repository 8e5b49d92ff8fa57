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
#include <string>
#include <string_view>

#include "parse.h"

namespace udpevent {

namespace {

// A whole number within `limit`, or nullopt (and a line on stderr) for
// anything else: a typo must not silently mean 0.
std::optional<std::uint64_t> env_number(const char *name, const udpintercept::detail::Limit &limit)
{
	const char *text = std::getenv(name);
	if (!text)
		return std::nullopt;
	std::string error;
	const auto value = udpintercept::detail::parse_whole(text, limit, &error);
	if (!value)
		std::fprintf(stderr, "libudpEvent: ignoring %s='%s': %s\n", name,
			     udpintercept::detail::quote(text).c_str(), error.c_str());
	return value;
}

// A setting parsed by `parse` (one of the core's parsers), or nullopt and a line on stderr.
template <typename Parse> auto env_choice(const char *name, Parse parse) -> decltype(parse("", nullptr))
{
	const char *text = std::getenv(name);
	if (!text)
		return std::nullopt;
	std::string error;
	auto value = parse(text, &error);
	if (!value)
		std::fprintf(stderr, "libudpEvent: ignoring %s='%s': %s\n", name,
			     udpintercept::detail::quote(text).c_str(), error.c_str());
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
	namespace detail = udpintercept::detail;
	Settings settings;
	try {
		// The core's own limits and parsers: the CLI and Options::validate() use them too.
		if (auto ms = env_number("UDPEVENT_INTERVAL_MS", detail::kIntervalMs))
			settings.interval = std::chrono::milliseconds(*ms);
		if (auto s = env_number("UDPEVENT_FLOW_TIMEOUT_S", detail::kFlowTimeoutS))
			settings.flow_timeout = std::chrono::seconds(*s);
		if (auto size = env_number("UDPEVENT_QUEUE_SIZE", kQueueSize))
			settings.queue_size = static_cast<std::size_t>(*size);
		if (auto flows = env_number("UDPEVENT_MAX_FLOWS", kMaxFlowsVar))
			settings.max_flows = static_cast<std::uint32_t>(*flows);
		const char *verbose = std::getenv("UDPEVENT_VERBOSE");
		settings.verbose = verbose && *verbose && std::string_view(verbose) != "0";
		if (auto backend = env_choice("UDPEVENT_BACKEND", detail::parse_backend_name))
			settings.backend = *backend;
		if (auto pid = env_number("UDPEVENT_PID", detail::kPid))
			settings.pid = static_cast<std::uint32_t>(*pid);
		if (auto uid = env_number("UDPEVENT_UID", detail::kUid))
			settings.uid = static_cast<std::uint32_t>(*uid);
		if (auto port = env_number("UDPEVENT_PORT", detail::kPort))
			settings.port = static_cast<std::uint16_t>(*port);
		settings.family = env_choice("UDPEVENT_FAMILY", detail::parse_family);
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
