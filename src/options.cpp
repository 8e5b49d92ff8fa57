// SPDX-License-Identifier: LGPL-2.1-or-later
#include <udpintercept/error.h>
#include <udpintercept/options.h>

#include <cerrno>
#include <fmt/format.h>

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

} // namespace

void Options::validate() const
{
	if (interval.count() < 0)
		invalid(fmt::format("interval must be 0 (a snapshot per operation) or positive, not {} ms",
				    interval.count()));
	if (interval > std::chrono::hours(24))
		invalid("interval must be at most 24 hours");
	if (pid && *pid == 0)
		invalid("pid filter must be a process id, not 0");
	if (port && *port == 0)
		invalid("port filter must be 1-65535, not 0");
	if (cgroup && (cgroup->empty() || cgroup->front() != '/'))
		invalid(fmt::format(
			"cgroup filter must be an absolute path to a cgroup v2 directory, not '{}'",
			*cgroup));
	if (max_flows < 16 || max_flows > (1u << 24))
		invalid(fmt::format("max_flows must be between 16 and 16777216, not {}", max_flows));
	if (max_sockets < 16 || max_sockets > (1u << 24))
		invalid(fmt::format("max_sockets must be between 16 and 16777216, not {}", max_sockets));
	if (!power_of_two(ring_buffer_bytes) || ring_buffer_bytes < 4096 || ring_buffer_bytes > (1u << 30))
		invalid(fmt::format("ring_buffer_bytes must be a power of two between 4096 and 1 GiB, not {}",
				    ring_buffer_bytes));
}

} // namespace udpintercept
