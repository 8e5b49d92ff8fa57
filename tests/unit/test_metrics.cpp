// SPDX-License-Identifier: LGPL-2.1-or-later
// FlowMetrics: flows' cumulative snapshots summed into labelled series,
// exact and monotonic, under a series limit and a staleness rule.
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <thread>

#include <udpintercept/error.h>
#include <udpintercept/metrics.h>

using namespace udpintercept;
using namespace std::chrono_literals;

namespace {

const WallTime kT0 = WallTime(std::chrono::nanoseconds(1795824072394162199LL));

Address v4(std::uint8_t last)
{
	Address a;
	a.bytes[10] = a.bytes[11] = 0xff;
	a.bytes[12] = 127;
	a.bytes[15] = last;
	return a;
}

// One snapshot of the flow (socket, peer) with cumulative counters.
Event snap(EventKind kind, std::uint64_t socket, std::uint8_t peer, std::uint64_t tx_bytes,
	   std::uint64_t tx_packets, std::uint64_t rx_bytes = 0, std::uint64_t rx_packets = 0,
	   std::string comm = "dns", WallTime time = kT0)
{
	Event e;
	e.kind = kind;
	e.time = time;
	e.pid = 100;
	e.comm = std::move(comm);
	e.family = Family::ipv4;
	e.local = {v4(1), 40000};
	e.remote = {v4(peer), 53};
	e.socket_id = socket;
	e.cgroup = "/system.slice/dns.service";
	e.tx_bytes = tx_bytes;
	e.tx_packets = tx_packets;
	e.rx_bytes = rx_bytes;
	e.rx_packets = rx_packets;
	return e;
}

const MetricSeries *find(const MetricsSnapshot &s, const std::vector<std::string> &values)
{
	for (const auto &series : s.series)
		if (series.values == values)
			return &series;
	return nullptr;
}

std::string rejection(const MetricsConfig &c)
{
	try {
		c.validate();
		FlowMetrics m(c); // the constructor validates too
		return "";
	} catch (const Error &e) {
		CHECK(e.stage() == "options");
		CHECK(e.code().value() == EINVAL);
		return e.what();
	}
}

} // namespace

TEST_CASE("a series sums its flows' cumulative snapshots; closed flows stay in it", "[metrics]")
{
	FlowMetrics m;
	m.add(snap(EventKind::update, 1, 2, 100, 1));
	m.add(snap(EventKind::update, 1, 2, 250, 3, 40, 2));
	m.add(snap(EventKind::update, 2, 3, 7, 1)); // another flow, same labels
	m.add(snap(EventKind::close, 1, 2, 300, 4, 60, 3));

	auto s = m.snapshot();
	CHECK(s.labels ==
	      std::vector<MetricLabel>{MetricLabel::comm, MetricLabel::family, MetricLabel::container});
	REQUIRE(s.series.size() == 1);
	CHECK(s.series[0].values == std::vector<std::string>{"dns", "ipv4", "/system.slice/dns.service"});
	CHECK(s.series[0].counters == FlowCounters{307, 5, 60, 3});
	CHECK(s.open_flows == 1);

	// A final snapshot that repeats what was reported adds nothing; the
	// closed flow's totals stay.
	m.add(snap(EventKind::final, 2, 3, 7, 1));
	s = m.snapshot();
	CHECK(s.series[0].counters == FlowCounters{307, 5, 60, 3});
	CHECK(s.open_flows == 0);

	// The same socket and peer after the close: a new flow from zero.
	m.add(snap(EventKind::update, 1, 2, 10, 1));
	CHECK(m.snapshot().series[0].counters == FlowCounters{317, 6, 60, 3});

	// An expire ends the flow like a close: its totals stay, and the same
	// socket and peer talking again count from zero.
	m.add(snap(EventKind::expire, 1, 2, 15, 2));
	CHECK(m.snapshot().series[0].counters == FlowCounters{322, 7, 60, 3});
	CHECK(m.snapshot().open_flows == 0);
	m.add(snap(EventKind::update, 1, 2, 4, 1));
	CHECK(m.snapshot().series[0].counters == FlowCounters{326, 8, 60, 3});
}

TEST_CASE("drops are counted like the other counters, also on a flow of drops only", "[metrics]")
{
	FlowMetrics m;
	Event received = snap(EventKind::update, 1, 2, 0, 0, 40, 2);
	received.rx_drops = 5;
	m.add(received);
	// A sender none of whose datagrams got in: its flow carries drops only.
	Event dropped = snap(EventKind::update, 1, 3, 0, 0);
	dropped.rx_drops = 7;
	m.add(dropped);
	dropped.kind = EventKind::close;
	dropped.rx_drops = 9;
	m.add(dropped);
	const auto s = m.snapshot();
	REQUIRE(s.series.size() == 1);
	CHECK(s.series[0].counters == FlowCounters{0, 0, 40, 2, 14});
	CHECK(s.open_flows == 1);
}

TEST_CASE("the container label is the container id, else the cgroup path", "[metrics]")
{
	FlowMetrics m;
	Event e = snap(EventKind::update, 1, 2, 10, 1);
	e.container_id = std::string(64, 'a');
	e.cgroup = "/system.slice/docker-" + e.container_id + ".scope";
	m.add(e);
	Event host = snap(EventKind::update, 2, 2, 20, 1);
	host.cgroup.clear(); // unknown
	m.add(host);
	const auto s = m.snapshot();
	CHECK(find(s, {"dns", "ipv4", std::string(64, 'a')}));
	CHECK(find(s, {"dns", "ipv4", ""}));
}

TEST_CASE("a flow joins a series at its first traffic, by the labels of that snapshot", "[metrics]")
{
	MetricsConfig c;
	c.labels.push_back(MetricLabel::local_port);
	FlowMetrics m(c);
	// connect() bound the port after the hook ran: the connect shows 0.
	Event connect = snap(EventKind::connect, 1, 2, 0, 0);
	connect.local.port = 0;
	m.add(connect);
	CHECK(m.snapshot().series.empty());
	m.add(snap(EventKind::update, 1, 2, 10, 1));
	// A later snapshot by another process does not move the flow's totals.
	m.add(snap(EventKind::update, 1, 2, 30, 2, 0, 0, "worker"));
	const auto s = m.snapshot();
	REQUIRE(s.series.size() == 1);
	CHECK(s.series[0].values ==
	      std::vector<std::string>{"dns", "ipv4", "/system.slice/dns.service", "40000"});
	CHECK(s.series[0].counters == FlowCounters{30, 2, 0, 0});

	// A flow that never carried traffic makes no series.
	m.add(snap(EventKind::connect, 5, 9, 0, 0));
	m.add(snap(EventKind::close, 5, 9, 0, 0));
	CHECK(m.snapshot().series.size() == 1);
	CHECK(m.snapshot().open_flows == 1);
}

TEST_CASE("every label the exposition offers takes its value from the event", "[metrics]")
{
	MetricsConfig c;
	c.labels = {MetricLabel::uid,         MetricLabel::pid,        MetricLabel::netns,
		    MetricLabel::local_addr,  MetricLabel::local_port, MetricLabel::remote_addr,
		    MetricLabel::remote_port, MetricLabel::comm,       MetricLabel::family};
	FlowMetrics m(c);
	Event e = snap(EventKind::update, 1, 9, 10, 1, 0, 0, "bad\xff\xfe");
	e.uid = 1000;
	e.netns = 4026531840u;
	e.family = Family::ipv6;
	e.remote.address.family = Family::ipv6;
	e.remote.address.bytes = {};
	e.remote.address.bytes[15] = 1;
	m.add(e);
	const auto s = m.snapshot();
	REQUIRE(s.series.size() == 1);
	CHECK(s.series[0].values == std::vector<std::string>{"1000", "100", "4026531840", "127.0.0.1",
							     "40000", "::1", "53",
							     "bad\xef\xbf\xbd\xef\xbf\xbd", "ipv6"});
	for (auto l : c.labels)
		CHECK(parse_metric_label(to_string(l)) == l);
	CHECK(to_string(MetricLabel::container) == "container");
	CHECK(!parse_metric_label("daddr"));
	CHECK(!parse_metric_label(""));
}

TEST_CASE("past the series limit, new label values go to one ~other series", "[metrics]")
{
	MetricsConfig c;
	c.max_series = 2;
	FlowMetrics m(c);
	m.add(snap(EventKind::update, 1, 2, 10, 1, 0, 0, "a"));
	m.add(snap(EventKind::update, 2, 2, 20, 1, 0, 0, "b"));
	m.add(snap(EventKind::update, 3, 2, 30, 1, 0, 0, "c")); // a third series: over
	m.add(snap(EventKind::update, 4, 2, 40, 1, 0, 0, "d")); // and a fourth
	m.add(snap(EventKind::update, 5, 2, 5, 1, 0, 0, "a"));  // an existing series takes new flows
	m.add(snap(EventKind::update, 3, 2, 33, 2, 0, 0, "c")); // an overflowed flow stays there
	const auto s = m.snapshot();
	REQUIRE(s.series.size() == 3);
	CHECK(s.overflow_flows == 2);
	CHECK(find(s, {"a", "ipv4", "/system.slice/dns.service"})->counters == FlowCounters{15, 2, 0, 0});
	CHECK(find(s, {"b", "ipv4", "/system.slice/dns.service"})->counters == FlowCounters{20, 1, 0, 0});
	const auto &other = s.series.back();
	CHECK(other.overflow);
	CHECK(other.values == std::vector<std::string>(3, "~other"));
	CHECK(other.counters == FlowCounters{73, 3, 0, 0});
	// The sum over every series is the sum over every flow.
	std::uint64_t total = 0;
	for (const auto &series : s.series)
		total += series.counters.sent_bytes;
	CHECK(total == 10 + 20 + 33 + 40 + 5);
}

TEST_CASE("the staleness rule drops only series without open flows, quiet for long enough", "[metrics]")
{
	MetricsConfig c;
	c.stale_after = 60s;
	FlowMetrics m(c);
	m.add(snap(EventKind::update, 1, 2, 10, 1, 0, 0, "gone", kT0));
	m.add(snap(EventKind::close, 1, 2, 10, 1, 0, 0, "gone", kT0 + 5s));
	m.add(snap(EventKind::update, 2, 2, 10, 1, 0, 0, "open", kT0));
	const auto added = std::chrono::steady_clock::now(); // after every change above

	CHECK(m.drop_stale(added + 59s) == 0);
	CHECK(m.drop_stale(added + 60s) == 1);
	CHECK(m.drop_stale(added + 3600s) == 0); // "open" still has its flow
	auto s = m.snapshot();
	REQUIRE(s.series.size() == 1);
	CHECK(s.series[0].values[0] == "open");
	CHECK(s.dropped_series == 1);

	// Its labels back: a new series from 0, which Prometheus reads as a reset.
	m.add(snap(EventKind::update, 3, 2, 4, 1, 0, 0, "gone", kT0 + 4000s));
	CHECK(find(m.snapshot(), {"gone", "ipv4", "/system.slice/dns.service"})->counters ==
	      FlowCounters{4, 1, 0, 0});
	CHECK(m.drop_stale() == 0); // just changed, and as of now

	c.stale_after = 0s; // never
	FlowMetrics keep(c);
	keep.add(snap(EventKind::close, 1, 2, 10, 1));
	CHECK(keep.drop_stale(std::chrono::steady_clock::now() + std::chrono::hours(24 * 365)) == 0);
}

TEST_CASE("a step of the wall clock neither ages series nor keeps them", "[metrics]")
{
	MetricsConfig c;
	c.stale_after = 60s;
	FlowMetrics m(c);
	// Changes stamped a year before and a year after the instant they are
	// added, as after the wall clock stepped either way.
	const auto year = std::chrono::hours(24 * 365);
	const auto wall_now = WallTime(std::chrono::duration_cast<std::chrono::nanoseconds>(
		std::chrono::system_clock::now().time_since_epoch()));
	m.add(snap(EventKind::close, 1, 2, 10, 1, 0, 0, "past", wall_now - year));
	m.add(snap(EventKind::close, 2, 2, 10, 1, 0, 0, "future", wall_now + year));
	const auto added = std::chrono::steady_clock::now();

	CHECK(m.drop_stale() == 0);
	CHECK(m.drop_stale(added + 59s) == 0);
	CHECK(m.drop_stale(added + 60s) == 2);
	CHECK(m.snapshot().dropped_series == 2);

	// The wall-clock form reads its instant against the wall clock at the
	// call: a minute ahead of it is a minute of the monotonic clock ahead.
	FlowMetrics wall(c);
	wall.add(snap(EventKind::close, 1, 2, 10, 1, 0, 0, "past", wall_now - year));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	CHECK(wall.drop_stale(wall_now + 30s) == 0);
	CHECK(wall.drop_stale(wall_now + 24h) == 1);
#pragma GCC diagnostic pop
}

TEST_CASE("invalid metrics configs are named", "[metrics][options]")
{
	CHECK(rejection(MetricsConfig{}) == "");
	MetricsConfig twice;
	twice.labels = {MetricLabel::comm, MetricLabel::remote_port, MetricLabel::comm};
	CHECK_THAT(rejection(twice), Catch::Contains("comm") && Catch::Contains("twice"));
	MetricsConfig none;
	none.max_series = 0;
	CHECK_THAT(rejection(none), Catch::Contains("max_series"));
	MetricsConfig empty;
	empty.labels.clear(); // one series for everything
	CHECK(rejection(empty) == "");
}

TEST_CASE("snapshots taken while another thread adds are exact and never go down", "[metrics][threads]")
{
	FlowMetrics m;
	constexpr int kFlows = 64, kSteps = 200;
	std::atomic<bool> done{false};
	std::thread feeder([&] {
		for (int step = 1; step <= kSteps; step++)
			for (int f = 0; f < kFlows; f++)
				m.add(snap(step == kSteps ? EventKind::close : EventKind::update, f + 1,
					   static_cast<std::uint8_t>(f % 3 + 2), 10u * step, step, 0, 0,
					   f % 2 ? "odd" : "even"));
		done = true;
	});
	std::uint64_t last = 0;
	int snapshots = 0;
	while (!done || snapshots == 0) {
		std::uint64_t total = 0;
		for (const auto &series : m.snapshot().series)
			total += series.counters.sent_bytes;
		CHECK(total >= last);
		last = total;
		snapshots++;
	}
	feeder.join();
	std::uint64_t bytes = 0, datagrams = 0;
	const auto s = m.snapshot();
	for (const auto &series : s.series) {
		bytes += series.counters.sent_bytes;
		datagrams += series.counters.sent_datagrams;
	}
	CHECK(s.series.size() == 2);
	CHECK(bytes == 10u * kSteps * kFlows);
	CHECK(datagrams == std::uint64_t{kSteps} * kFlows);
	CHECK(s.open_flows == 0);
}
