// SPDX-License-Identifier: LGPL-2.1-or-later
// The command line of udpintercept: what each option means, and the parser
// that turns argv into a configuration or an error (it never exits, so it
// can be tested and fuzzed).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <udpintercept/metrics.h>
#include <udpintercept/options.h>

namespace udpintercept::cli {

/// Where --metrics serves: a literal address (no host names) and a port.
struct MetricsListen {
	std::string address = "127.0.0.1"; ///< IPv4 dotted quad or IPv6 text, without brackets
	bool ipv6 = false;
	std::uint16_t port = 0; ///< 0: a free port, said on stderr

	/// "127.0.0.1:9100", "[::1]:9100": as civetweb and URLs write it.
	std::string host_port() const;
};

/// Parses --metrics' "[ADDR:]PORT"; nullopt and `*error` if it is not one.
std::optional<MetricsListen> parse_metrics_listen(std::string_view text, std::string *error);

/// Everything the command line asks for.
struct Config {
	Options options;
	bool json = false;
	bool quiet = false; ///< no per-flow lines
	bool verbose = false;
	std::chrono::seconds duration{0};     ///< 0: until SIGINT or SIGTERM
	std::optional<MetricsListen> metrics; ///< --metrics
	MetricsConfig metrics_config;         ///< --metrics-labels, --metrics-max-series
};

/// What to do after parsing.
enum class Action { run, help, version, usage_error };

struct ParseResult {
	Action action = Action::run;
	Config config;     ///< for Action::run
	std::string error; ///< for Action::usage_error: one line, no program name
};

/// Parses the arguments after the program name.
ParseResult parse_args(std::span<const std::string_view> args);

/// The text of --help.
std::string_view usage();

} // namespace udpintercept::cli
