// SPDX-License-Identifier: LGPL-2.1-or-later
// Command-line helpers the benchmark programs share: a usage error exits 2
// with a pointer to --help, and a number is taken whole and within range or
// refused.
#pragma once

#include <charconv>
#include <cstdlib>
#include <getopt.h>
#include <string>
#include <string_view>

#include <fmt/core.h>

namespace bench {

[[noreturn]] inline void usage_error(std::string_view program, const std::string &msg)
{
	fmt::print(stderr, "{0}: {1}\nTry '{0} --help' for more information.\n", program, msg);
	std::exit(2);
}

/// getopt_long()'s ':' (an option without its value) or '?' (an unknown option).
[[noreturn]] inline void option_error(std::string_view program, int c, char **argv)
{
	usage_error(program, c == ':' ? fmt::format("option '{}' needs a value", argv[optind - 1])
				      : fmt::format("unknown option '{}'", argv[optind - 1]));
}

/// The programs take options only: an operand left after them is refused.
inline void no_operands(std::string_view program, int argc, char **argv)
{
	if (optind < argc)
		usage_error(program, fmt::format("unexpected argument '{}'", argv[optind]));
}

template <typename T>
T parse_number(std::string_view program, std::string_view text, std::string_view what, T min, T max)
{
	T value{};
	const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
	if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max)
		usage_error(program, fmt::format("invalid {} '{}': expected a number from {} to {}", what,
						 text, min, max));
	return value;
}

} // namespace bench
