// SPDX-License-Identifier: LGPL-2.1-or-later
#include <catch2/catch.hpp>

#include <udpintercept/event.h>
#include <udpintercept/options.h>

#include "testutil.h"

using namespace udpintercept;

namespace {

Event sample()
{
	Event e;
	e.kind = EventKind::close;
	e.time = WallTime(std::chrono::nanoseconds(1795824072394162199LL));
	e.pid = 5840;
	e.uid = 1000;
	e.comm = "py\"th\\on\x01";
	e.cgroup_id = 7;
	e.cgroup = "/system.slice/docker-"
		   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
	e.container_id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	e.netns = 4026531833u;
	e.family = Family::ipv6;
	e.local.address.family = Family::ipv6;
	e.local.address.bytes[15] = 1; // ::1
	e.local.port = 5000;
	e.remote.address = e.local.address;
	e.remote.port = 6000;
	e.tx_bytes = 385;
	e.tx_packets = 5;
	e.rx_bytes = 0;
	e.rx_packets = 0;
	e.rx_drops = 3;
	return e;
}

} // namespace

TEST_CASE("JSON carries exactly the data model's field names", "[format]")
{
	const auto obj = testutil::parse_json_line(to_json(sample()));
	std::vector<std::string> names;
	for (const auto &kv : obj)
		names.push_back(kv.first);
	std::vector<std::string> expected = {
		"event",  "time_ns",      "time",       "pid",      "uid",        "comm",    "cgroup_id",
		"cgroup", "container_id", "netns",      "family",   "saddr",      "sport",   "daddr",
		"dport",  "tx_bytes",     "tx_packets", "rx_bytes", "rx_packets", "rx_drops"};
	std::sort(expected.begin(), expected.end());
	CHECK(names == expected);
	CHECK(obj.at("event") == "close");
	CHECK(obj.at("time_ns") == "1795824072394162199");
	CHECK(obj.at("time") == "2026-11-28T00:01:12.394162199Z");
	CHECK(obj.at("comm") == "py\"th\\on\x01");
	CHECK(obj.at("family") == "ipv6");
	CHECK(obj.at("cgroup") == sample().cgroup);
	CHECK(obj.at("container_id") == sample().container_id);
	CHECK(obj.at("saddr") == "::1");
	CHECK(obj.at("sport") == "5000");
	CHECK(obj.at("dport") == "6000");
	CHECK(obj.at("tx_bytes") == "385");
	CHECK(obj.at("tx_packets") == "5");
	CHECK(obj.at("rx_drops") == "3");
	Event expired = sample();
	expired.kind = EventKind::expire;
	CHECK(testutil::parse_json_line(to_json(expired)).at("event") == "expire");
	CHECK_THAT(to_text(expired), Catch::Contains(" expire "));
	CHECK(to_string(EventKind::expire) == "expire");
}

TEST_CASE("times format as RFC 3339 UTC with nanoseconds", "[format]")
{
	CHECK(format_time(WallTime(std::chrono::nanoseconds(0))) == "1970-01-01T00:00:00.000000000Z");
	CHECK(format_time(WallTime(std::chrono::nanoseconds(1000000001LL))) ==
	      "1970-01-01T00:00:01.000000001Z");
}

TEST_CASE("the text form names the event, the process and both endpoints", "[format]")
{
	const std::string line = to_text(sample());
	CHECK(line.find("close") != std::string::npos);
	CHECK(line.find("5840") != std::string::npos);
	CHECK(line.find("[::1]:5000") != std::string::npos);
	CHECK(line.find("[::1]:6000") != std::string::npos);
	CHECK(line.find("5/385") != std::string::npos);
	CHECK(line.find("0/0        3 ") != std::string::npos); // received, then the drops
	CHECK(line.find('\x01') == std::string::npos);          // control characters never reach a terminal
	CHECK(line.find(" 0123456789ab") != std::string::npos); // the container, shortened as docker does
	CHECK(text_header().find("RX drops CONTAINER") != std::string::npos);
}

TEST_CASE("JSON strings stay valid UTF-8 whatever bytes a comm or a cgroup path holds", "[format]")
{
	Event e = sample();
	e.comm = "caf\xc3\xa9\xff";          // é, then a byte that is not UTF-8
	e.cgroup = "/a\"b\\c\n\xed\xa0\x80"; // a surrogate's encoding is not UTF-8 either
	e.container_id.clear();
	const std::string json = to_json(e);
	CHECK(json.find("\"comm\":\"caf\xc3\xa9\xef\xbf\xbd\"") != std::string::npos);
	CHECK(json.find("\"cgroup\":\"/a\\\"b\\\\c\\u000a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"") !=
	      std::string::npos);
	CHECK(json.find("\"container_id\":\"\"") != std::string::npos);
	const auto obj = testutil::parse_json_line(json);
	CHECK(obj.at("container_id").empty());
	const std::string line = to_text(e);
	CHECK(line.substr(line.size() - 2) == " -"); // no container
}

TEST_CASE("backend names round-trip", "[options]")
{
	for (Backend b : {Backend::automatic, Backend::fentry, Backend::kprobe, Backend::tracepoint})
		CHECK(parse_backend(to_string(b)) == b);
	CHECK(!parse_backend("kretprobe"));
	CHECK(!parse_backend(""));
}
