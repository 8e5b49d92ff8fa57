// SPDX-License-Identifier: LGPL-2.1-or-later
// The legacy library's two conversions: the UDPEVENT_* environment (any
// values, the input split at NUL bytes) into settings the core accepts, and
// any Event into the packed legacy struct with its texts terminated and its
// 32-bit counts saturated. The first byte chooses which.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <string>
#include <unistd.h>

#include <udpintercept/error.h>

#include "input.h"
#include "json_check.h"
#include "legacy.h"

using namespace udpintercept;

namespace {

constexpr std::array<const char *, 10> kVariables = {
	"UDPEVENT_INTERVAL_MS", "UDPEVENT_QUEUE_SIZE", "UDPEVENT_BACKEND",
	"UDPEVENT_PID",         "UDPEVENT_UID",        "UDPEVENT_PORT",
	"UDPEVENT_FAMILY",      "UDPEVENT_VERBOSE",    "UDPEVENT_FLOW_TIMEOUT_S",
	"UDPEVENT_UNKNOWN",
};

template <std::size_t N> bool terminated(const char (&field)[N])
{
	return std::memchr(field, 0, N) != nullptr;
}

void environment(fuzzcheck::Input &in)
{
	const std::string rest = in.rest();
	std::size_t start = 0;
	for (const char *name : kVariables) {
		if (start > rest.size()) {
			unsetenv(name);
			continue;
		}
		const std::size_t nul = rest.find('\0', start);
		const std::size_t end = nul == std::string::npos ? rest.size() : nul;
		setenv(name, rest.substr(start, end - start).c_str(), 1);
		start = end + 1;
	}
	// What it says about the values it ignores is not the point here.
	static const int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	const int saved = dup(STDERR_FILENO);
	dup2(devnull, STDERR_FILENO);
	const udpevent::Settings s = udpevent::read_settings();
	dup2(saved, STDERR_FILENO);
	close(saved);

	FUZZ_CHECK(s.queue_size >= 1 && s.queue_size <= udpevent::kMaxQueueSize);
	Options options;
	options.backend = s.backend;
	options.interval = s.interval;
	options.flow_timeout = s.flow_timeout;
	options.pid = s.pid;
	options.uid = s.uid;
	options.port = s.port;
	options.family = s.family;
	try {
		options.validate();
	} catch (const Error &e) {
		std::fprintf(stderr, "settings the core refuses: %s\n", e.what());
		__builtin_trap();
	}
}

void conversion(fuzzcheck::Input &in)
{
	const Event e = in.event();
	const udp_event_t out = udpevent::to_legacy(e);
	FUZZ_CHECK(terminated(out.SADDR));
	FUZZ_CHECK(terminated(out.DADDR));
	FUZZ_CHECK(terminated(out.task));
	FUZZ_CHECK(out.family == udpevent::kLegacyInet || out.family == udpevent::kLegacyInet6);
	const auto saturated = [](std::uint64_t v) {
		return static_cast<std::uint32_t>(
			std::min<std::uint64_t>(v, std::numeric_limits<std::uint32_t>::max()));
	};
	FUZZ_CHECK(out.txPkts == saturated(e.tx_packets));
	FUZZ_CHECK(out.rxPkts == saturated(e.rx_packets));
	FUZZ_CHECK(out.tx_b == e.tx_bytes && out.rx_b == e.rx_bytes);
	FUZZ_CHECK(std::string(out.task) ==
		   e.comm.substr(0, std::min(e.comm.find('\0'), sizeof(out.task) - 1)));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
	fuzzcheck::Input in(data, size);
	if (in.take<std::uint8_t>() & 1)
		environment(in);
	else
		conversion(in);
	return 0;
}
