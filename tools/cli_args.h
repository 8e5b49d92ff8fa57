// SPDX-License-Identifier: LGPL-2.1-or-later
// The command line of udpintercept: what each option means, and the parser
// that turns argv into a configuration or an error (it never exits, so it
// can be tested and fuzzed).
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <string_view>

#include <udpintercept/options.h>

namespace udpintercept::cli {

/// Everything the command line asks for.
struct Config {
	Options options;
	bool json = false;
	bool verbose = false;
	std::chrono::seconds duration{0}; ///< 0: until SIGINT or SIGTERM
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
