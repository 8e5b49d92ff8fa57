// SPDX-License-Identifier: LGPL-2.1-or-later
#include <udpintercept/error.h>
#include <udpintercept/options.h>

#include <cerrno>
#include <fmt/format.h>

#include "parse.h"

namespace udpintercept {

std::string_view to_string(Backend backend) noexcept
{
	switch (backend) {
	case Backend::automatic:
		return "auto";
	case Backend::fentry:
		return "fentry";
	case Backend::kprobe:
		return "kprobe";
	case Backend::tracepoint:
		return "tracepoint";
	}
	return "?";
}

std::optional<Backend> parse_backend(std::string_view name) noexcept
{
	for (Backend b : {Backend::automatic, Backend::fentry, Backend::kprobe, Backend::tracepoint})
		if (name == to_string(b))
			return b;
	return std::nullopt;
}

namespace {

[[noreturn]] void invalid(const std::string &what)
{
	throw Error("options", EINVAL, what);
}

bool power_of_two(std::uint32_t v)
{
	return v && !(v & (v - 1));
}

void check(std::uint64_t value, const detail::Limit &limit, std::string_view field)
{
	if (auto message = detail::out_of_range(value, limit))
		invalid(fmt::format("{} ({})", *message, field));
}

} // namespace

void Options::validate() const
{
	if (interval.count() < 0)
		invalid(fmt::format("interval must be 0 (a snapshot per operation) or positive, not {} ms",
				    interval.count()));
	check(static_cast<std::uint64_t>(interval.count()), detail::kIntervalMs, "Options::interval, ms");
	if (pid)
		check(*pid, detail::kPid, "Options::pid");
	if (uid)
		check(*uid, detail::kUid, "Options::uid");
	if (port)
		check(*port, detail::kPort, "Options::port");
	if (cgroup && (cgroup->empty() || cgroup->front() != '/'))
		invalid(fmt::format(
			"cgroup filter must be an absolute path to a cgroup v2 directory, not '{}'",
			detail::quote(*cgroup)));
	if (flow_timeout.count() < 0)
		invalid(fmt::format("flow_timeout must be 0 (never) or positive, not {} s",
				    flow_timeout.count()));
	check(static_cast<std::uint64_t>(flow_timeout.count()), detail::kFlowTimeoutS,
	      "Options::flow_timeout, s");
	check(max_flows, detail::kMaxFlows, "Options::max_flows");
	check(max_sockets, detail::kMaxSockets, "Options::max_sockets");
	check(ring_buffer_bytes, detail::kRingBuffer, "Options::ring_buffer_bytes");
	if (!power_of_two(ring_buffer_bytes))
		invalid(fmt::format("ring-buffer must be a power of two, not {} (Options::ring_buffer_bytes)",
				    ring_buffer_bytes));
}

} // namespace udpintercept
