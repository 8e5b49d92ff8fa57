// SPDX-License-Identifier: LGPL-2.1-or-later
#include "parse.h"

#include <charconv>
#include <fmt/format.h>

#include "utf8.h"

namespace udpintercept::detail {

std::optional<std::uint64_t> parse_whole(std::string_view text, const Limit &limit, std::string *error)
{
	std::uint64_t value = 0;
	const char *end = text.data() + text.size();
	// from_chars takes no sign, no space and no base prefix: exactly a whole number.
	const auto [ptr, ec] = std::from_chars(text.data(), end, value);
	if (text.empty() || ec != std::errc() || ptr != end || value < limit.min || value > limit.max) {
		if (error)
			*error = fmt::format("expected a whole number from {} to {}", limit.min, limit.max);
		return std::nullopt;
	}
	return value;
}

std::optional<Family> parse_family(std::string_view text, std::string *error)
{
	if (text == "ipv4" || text == "4")
		return Family::ipv4;
	if (text == "ipv6" || text == "6")
		return Family::ipv6;
	if (error)
		*error = "expected ipv4 or ipv6";
	return std::nullopt;
}

std::optional<Backend> parse_backend_name(std::string_view text, std::string *error)
{
	if (auto b = parse_backend(text))
		return b;
	if (error)
		*error = "expected auto, fentry, kprobe or tracepoint";
	return std::nullopt;
}

std::optional<std::string> out_of_range(std::uint64_t value, const Limit &limit)
{
	if (value >= limit.min && value <= limit.max)
		return std::nullopt;
	return fmt::format("{} must be from {} to {}, not {}", limit.name, limit.min, limit.max, value);
}

std::string quote(std::string_view text)
{
	constexpr std::size_t kMax = 64;
	const bool cut = text.size() > kMax;
	std::string out = escape_utf8(cut ? text.substr(0, kMax) : text);
	return cut ? out + "..." : out;
}

} // namespace udpintercept::detail
