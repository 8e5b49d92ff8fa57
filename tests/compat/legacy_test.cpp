// SPDX-License-Identifier: LGPL-2.1-or-later
// The legacy layout of a snapshot, and the UDPEVENT_* settings. No privileges.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <limits>

#include <arpa/inet.h>

#include "legacy.h"

using namespace udpintercept;
using udpevent::to_legacy;

namespace {

Address parse_address(const char *text)
{
	Address a;
	if (inet_pton(AF_INET, text, a.bytes.data() + 12) == 1) {
		a.family = Family::ipv4;
		a.bytes[10] = a.bytes[11] = 0xff;
	} else {
		REQUIRE(inet_pton(AF_INET6, text, a.bytes.data()) == 1);
		a.family = Family::ipv6;
	}
	return a;
}

Event sample()
{
	Event e;
	e.kind = EventKind::update;
	e.time = WallTime(std::chrono::nanoseconds(1795824529453622914LL));
	e.pid = 4242;
	e.uid = 1000;
	e.comm = "dig";
	e.family = Family::ipv4;
	e.local = {parse_address("10.1.2.3"), 40000};
	e.remote = {parse_address("192.0.2.53"), 53};
	e.tx_bytes = 32;
	e.tx_packets = 1;
	e.rx_bytes = 512;
	e.rx_packets = 2;
	return e;
}

// The CHECK()s read fields as +out.field: a copy, because Catch2 would bind a
// reference to a packed field.
bool nul_terminated(const char *field, size_t size)
{
	return std::memchr(field, '\0', size) != nullptr;
}

} // namespace

TEST_CASE("an IPv4 snapshot in the legacy layout")
{
	const udp_event_t out = to_legacy(sample());
	CHECK(+out.family == 2);
	CHECK(+out.pid == 4242);
	CHECK(+out.UserId == 1000);
	CHECK(+out.EventTime == 1795824529453622914ULL);
	CHECK(+out.SPT == 40000);
	CHECK(+out.DPT == 53);
	CHECK(std::string(out.task) == "dig");
	CHECK(+out.tx_b == 32);
	CHECK(+out.txPkts == 1);
	CHECK(+out.rx_b == 512);
	CHECK(+out.rxPkts == 2);
	CHECK(std::string(out.SADDR) == "10.1.2.3");
	CHECK(std::string(out.DADDR) == "192.0.2.53");
}

TEST_CASE("every kind of snapshot is one legacy event")
{
	for (EventKind kind :
	     {EventKind::connect, EventKind::update, EventKind::close, EventKind::final, EventKind::expire}) {
		Event e = sample();
		e.kind = kind;
		const udp_event_t out = to_legacy(e);
		CHECK(+out.tx_b == 32);
		CHECK(std::string(out.DADDR) == "192.0.2.53");
	}
}

TEST_CASE("IPv6 is family 10, and the longest addresses fit with their NUL")
{
	Event e = sample();
	e.family = Family::ipv6;
	e.local = {parse_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), 1};
	e.remote = {parse_address("2001:db8::53"), 53};
	const udp_event_t out = to_legacy(e);
	CHECK(+out.family == 10);
	CHECK(std::string(out.SADDR) == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
	CHECK(std::string(out.DADDR) == "2001:db8::53");
	CHECK(nul_terminated(out.SADDR, sizeof(out.SADDR)));
	CHECK(nul_terminated(out.DADDR, sizeof(out.DADDR)));
}

TEST_CASE("texts are cut to fit and zero-filled")
{
	Event e = sample();
	e.comm = std::string(40, 'x');
	const udp_event_t out = to_legacy(e);
	CHECK(std::string(out.task) == std::string(15, 'x'));
	CHECK(out.task[15] == '\0');
	// No stale bytes after the text: consumers may copy the whole field.
	for (size_t i = std::strlen(out.SADDR); i < sizeof(out.SADDR); i++)
		CHECK(out.SADDR[i] == '\0');
}

TEST_CASE("packet counts saturate instead of wrapping")
{
	Event e = sample();
	e.tx_packets = (1ULL << 32) + 5;
	e.rx_packets = std::numeric_limits<std::uint32_t>::max();
	e.tx_bytes = 1ULL << 40;
	const udp_event_t out = to_legacy(e);
	CHECK(+out.txPkts == std::numeric_limits<std::uint32_t>::max());
	CHECK(+out.rxPkts == std::numeric_limits<std::uint32_t>::max());
	CHECK(+out.tx_b == 1ULL << 40);
}

TEST_CASE("settings from the environment")
{
	unsetenv("UDPEVENT_INTERVAL_MS");
	unsetenv("UDPEVENT_QUEUE_SIZE");
	unsetenv("UDPEVENT_VERBOSE");
	auto s = udpevent::read_settings();
	CHECK(s.interval == std::chrono::milliseconds(1000));
	CHECK(s.queue_size == udpevent::kDefaultQueueSize);
	CHECK(!s.verbose);

	setenv("UDPEVENT_INTERVAL_MS", "0", 1);
	setenv("UDPEVENT_QUEUE_SIZE", "1024", 1);
	setenv("UDPEVENT_VERBOSE", "1", 1);
	s = udpevent::read_settings();
	CHECK(s.interval == std::chrono::milliseconds(0));
	CHECK(s.queue_size == 1024);
	CHECK(s.verbose);

	// A typo keeps the default rather than meaning 0.
	for (const char *bad : {"", "-1", "1s", "0x10", "99999999999999999999999"}) {
		setenv("UDPEVENT_INTERVAL_MS", bad, 1);
		setenv("UDPEVENT_QUEUE_SIZE", bad, 1);
		s = udpevent::read_settings();
		CHECK(s.interval == std::chrono::milliseconds(1000));
		CHECK(s.queue_size == udpevent::kDefaultQueueSize);
	}
	setenv("UDPEVENT_QUEUE_SIZE", "0", 1);
	CHECK(udpevent::read_settings().queue_size == udpevent::kDefaultQueueSize);
	setenv("UDPEVENT_INTERVAL_MS", "86400001", 1);
	CHECK(udpevent::read_settings().interval == std::chrono::milliseconds(1000));
	unsetenv("UDPEVENT_INTERVAL_MS");
	unsetenv("UDPEVENT_QUEUE_SIZE");
	unsetenv("UDPEVENT_VERBOSE");

	CHECK(udpevent::read_settings().flow_timeout == std::chrono::seconds(300));
	setenv("UDPEVENT_FLOW_TIMEOUT_S", "0", 1);
	CHECK(udpevent::read_settings().flow_timeout == std::chrono::seconds(0));
	setenv("UDPEVENT_FLOW_TIMEOUT_S", "60", 1);
	CHECK(udpevent::read_settings().flow_timeout == std::chrono::seconds(60));
	setenv("UDPEVENT_FLOW_TIMEOUT_S", "-60", 1);
	CHECK(udpevent::read_settings().flow_timeout == std::chrono::seconds(300));
	unsetenv("UDPEVENT_FLOW_TIMEOUT_S");
}

TEST_CASE("the backend from the environment")
{
	unsetenv("UDPEVENT_BACKEND");
	CHECK(udpevent::read_settings().backend == Backend::automatic);
	setenv("UDPEVENT_BACKEND", "kprobe", 1);
	CHECK(udpevent::read_settings().backend == Backend::kprobe);
	setenv("UDPEVENT_BACKEND", "ebpf", 1);
	CHECK(udpevent::read_settings().backend == Backend::automatic);
	unsetenv("UDPEVENT_BACKEND");
}

TEST_CASE("filters from the environment")
{
	for (const char *name : {"UDPEVENT_PID", "UDPEVENT_UID", "UDPEVENT_PORT", "UDPEVENT_FAMILY"})
		unsetenv(name);
	auto s = udpevent::read_settings();
	CHECK(!s.pid);
	CHECK(!s.uid);
	CHECK(!s.port);
	CHECK(!s.family);

	setenv("UDPEVENT_PID", "4242", 1);
	setenv("UDPEVENT_UID", "0", 1);
	setenv("UDPEVENT_PORT", "53", 1);
	setenv("UDPEVENT_FAMILY", "ipv6", 1);
	s = udpevent::read_settings();
	CHECK(s.pid == 4242u);
	CHECK(s.uid == 0u);
	CHECK(s.port == 53);
	CHECK(s.family == Family::ipv6);

	setenv("UDPEVENT_PID", "0", 1);
	setenv("UDPEVENT_PORT", "65536", 1);
	setenv("UDPEVENT_FAMILY", "ip4", 1);
	s = udpevent::read_settings();
	CHECK(!s.pid);
	CHECK(!s.port);
	CHECK(!s.family);
	for (const char *name : {"UDPEVENT_PID", "UDPEVENT_UID", "UDPEVENT_PORT", "UDPEVENT_FAMILY"})
		unsetenv(name);
}
