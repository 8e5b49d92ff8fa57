// SPDX-License-Identifier: LGPL-2.1-or-later
// Any argument vector (the input split at NUL bytes) through the CLI's
// parser: it returns, never exits or throws; an error is one line of valid
// UTF-8 (arguments of any bytes are quoted with escapes); a configuration it
// accepts is one the library accepts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <udpintercept/error.h>

#include "cli_args.h"
#include "json_check.h"

using namespace udpintercept;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
	const std::string_view all(reinterpret_cast<const char *>(data), size);
	std::vector<std::string_view> args;
	for (std::size_t start = 0; start <= all.size() && args.size() < 64;) {
		const std::size_t nul = all.find('\0', start);
		const std::size_t end = nul == std::string_view::npos ? all.size() : nul;
		args.push_back(all.substr(start, end - start));
		start = end + 1;
	}
	const cli::ParseResult r = cli::parse_args(args);
	switch (r.action) {
	case cli::Action::usage_error:
		FUZZ_CHECK(!r.error.empty());
		FUZZ_CHECK(r.error.find('\n') == std::string::npos);
		FUZZ_CHECK(fuzzcheck::JsonCheck::utf8_text(r.error));
		break;
	case cli::Action::run:
		try {
			r.config.options.validate();
			r.config.metrics_config.validate();
		} catch (const Error &e) {
			std::fprintf(stderr, "accepted by the CLI, refused by the library: %s\n", e.what());
			__builtin_trap();
		}
		FUZZ_CHECK(!(r.config.quiet && r.config.json));
		break;
	case cli::Action::help:
	case cli::Action::version:
		break;
	}
	return 0;
}
