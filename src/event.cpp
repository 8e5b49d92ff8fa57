// SPDX-License-Identifier: LGPL-2.1-or-later
#include <udpintercept/event.h>

#include <arpa/inet.h>
#include <ctime>
#include <fmt/format.h>

#include "utf8.h"

namespace udpintercept {

std::string_view to_string(Family family) noexcept
{
	return family == Family::ipv4 ? "ipv4" : "ipv6";
}

std::string_view to_string(EventKind kind) noexcept
{
	switch (kind) {
	case EventKind::connect:
		return "connect";
	case EventKind::update:
		return "update";
	case EventKind::close:
		return "close";
	case EventKind::final:
		return "final";
	case EventKind::expire:
		return "expire";
	}
	return "?";
}

std::string Address::to_string() const
{
	char buf[INET6_ADDRSTRLEN];

	if (family == Family::ipv4)
		return inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof(buf));
	return inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
}

std::string format_time(WallTime time)
{
	const auto ns = time.time_since_epoch().count();
	std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
	long frac = static_cast<long>(ns % 1000000000);
	if (frac < 0) {
		frac += 1000000000;
		secs -= 1;
	}
	std::tm tm{};
	gmtime_r(&secs, &tm);
	return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1,
			   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

namespace {

// comm and the cgroup path are what a task or an administrator chose: any bytes.
std::string json_string(std::string_view s)
{
	std::string out;
	out.reserve(s.size() + 2);
	out += '"';
	detail::append_json_text(out, s);
	out += '"';
	return out;
}

// For the text form: the command without control characters or spaces.
std::string printable(std::string_view s)
{
	std::string out;
	for (unsigned char c : s)
		out += (c <= 0x20 || c >= 0x7f) ? '?' : static_cast<char>(c);
	return out.empty() ? "-" : out;
}

std::string endpoint_text(const Endpoint &e)
{
	if (e.address.family == Family::ipv6)
		return fmt::format("[{}]:{}", e.address.to_string(), e.port);
	return fmt::format("{}:{}", e.address.to_string(), e.port);
}

} // namespace

std::string to_json(const Event &e)
{
	return fmt::format(
		"{{\"event\":\"{}\",\"time_ns\":{},\"time\":\"{}\",\"pid\":{},\"uid\":{},\"comm\":{},"
		"\"cgroup_id\":{},\"cgroup\":{},\"container_id\":{},\"netns\":{},\"family\":\"{}\","
		"\"saddr\":\"{}\",\"sport\":{},\"daddr\":\"{}\",\"dport\":{},"
		"\"tx_bytes\":{},\"tx_packets\":{},\"rx_bytes\":{},\"rx_packets\":{},\"rx_drops\":{}}}",
		to_string(e.kind), e.time.time_since_epoch().count(), format_time(e.time), e.pid, e.uid,
		json_string(e.comm), e.cgroup_id, json_string(e.cgroup), json_string(e.container_id), e.netns,
		to_string(e.family), e.local.address.to_string(), e.local.port, e.remote.address.to_string(),
		e.remote.port, e.tx_bytes, e.tx_packets, e.rx_bytes, e.rx_packets, e.rx_drops);
}

std::string text_header()
{
	return fmt::format("{:<15} {:<7} {:>7} {:<15} {:<3} {:>23} -> {:<23} {:>13} {:>13} {:>8} {}", "TIME",
			   "EVENT", "PID", "COMM", "FAM", "LOCAL", "REMOTE", "TX pkts/bytes", "RX pkts/bytes",
			   "RX drops", "CONTAINER");
}

std::string to_text(const Event &e)
{
	// Local time of day to the microsecond: the full instant is in --json.
	const auto ns = e.time.time_since_epoch().count();
	std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
	std::tm tm{};
	localtime_r(&secs, &tm);
	// The container as `docker ps` shortens it; the full id and the cgroup are in --json.
	// The id is any bytes an Event was given: printable, so the line stays one line.
	const std::string container =
		e.container_id.empty() ? "-" : printable(std::string_view(e.container_id).substr(0, 12));
	return fmt::format(
		"{:02}:{:02}:{:02}.{:06} {:<7} {:>7} {:<15} {:<3} {:>23} -> {:<23} {:>13} {:>13} {:>8} {}",
		tm.tm_hour, tm.tm_min, tm.tm_sec, (ns % 1000000000) / 1000, to_string(e.kind), e.pid,
		printable(e.comm), e.family == Family::ipv4 ? "ip4" : "ip6", endpoint_text(e.local),
		endpoint_text(e.remote), fmt::format("{}/{}", e.tx_packets, e.tx_bytes),
		fmt::format("{}/{}", e.rx_packets, e.rx_bytes), e.rx_drops, container);
}

} // namespace udpintercept
