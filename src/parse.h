// SPDX-License-Identifier: LGPL-2.1-or-later
// The limits of every option and the parsers of their text forms, in one
// place for Options::validate(), the CLI and the legacy library's
// environment, so that the three never disagree about what is valid.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <udpintercept/options.h>

namespace udpintercept::detail {

/// The range of one numeric option and the name it is known by in messages.
struct Limit {
	std::string_view name;
	std::uint64_t min;
	std::uint64_t max;
};

inline constexpr Limit kIntervalMs{"interval", 0, 86400000};       // 24 hours
inline constexpr Limit kPid{"pid", 1, 4194304};                    // PID_MAX_LIMIT
inline constexpr Limit kUid{"uid", 0, 4294967294u};                // (uid_t)-1 means "no uid"
inline constexpr Limit kPort{"port", 1, 65535};                    // 0 is no port
inline constexpr Limit kMaxFlows{"max-flows", 16, 1u << 24};       // flow table entries
inline constexpr Limit kMaxSockets{"max-sockets", 16, 1u << 24};   // socket table entries
inline constexpr Limit kRingBuffer{"ring-buffer", 4096, 1u << 30}; // bytes, a power of two
inline constexpr Limit kDurationS{"duration", 1, 31536000};        // one year
inline constexpr Limit kMaxSeries{"max_series", 1, 10000000};      // metric series
inline constexpr Limit kFlowTimeoutS{"flow-timeout", 0, 31536000}; // one year; 0: never

/**
 * `text` as a decimal whole number within `limit`: no sign, no spaces, no
 * suffix, nothing empty. On failure, nullopt and `*error` says what was
 * expected (without naming the option: the caller knows how it was given).
 */
std::optional<std::uint64_t> parse_whole(std::string_view text, const Limit &limit, std::string *error);

/// "ipv4"/"4" or "ipv6"/"6"; nullopt and `*error` otherwise.
std::optional<Family> parse_family(std::string_view text, std::string *error);

/// A backend name (see to_string(Backend)); nullopt and `*error` otherwise.
std::optional<Backend> parse_backend_name(std::string_view text, std::string *error);

/// `value` within `limit`, else the message Options::validate() throws with.
std::optional<std::string> out_of_range(std::uint64_t value, const Limit &limit);

/// Text safe to quote in a one-line message: control bytes and invalid
/// UTF-8 are escaped (\xNN), and it is cut at 64 bytes.
std::string quote(std::string_view text);

} // namespace udpintercept::detail
