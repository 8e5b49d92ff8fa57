// SPDX-License-Identifier: LGPL-2.1-or-later
// Every counting rule of the design's data model, each scenario (see
// scenarios.cpp) held to its own ledger and to the kernel's UDP counters.
#include "oracle.h"
#include "scenarios.h"

#include <bpf/btf.h>
#include <linux/btf.h>

using namespace std::chrono_literals;
using testutil::Recorder;
using testutil::SockAddr;
using testutil::Udp;

namespace {

// The accuracy tier's own checks at the points a scenario marks.
class RecorderObserver : public scenarios::Observer {
public:
	explicit RecorderObserver(Recorder &rec) : rec_(rec) {}

	void pump(std::chrono::milliseconds d) override { rec_.pump(d); }

	bool notes_arrivals() const override
	{
		return rec_.tracer().backend() == udpintercept::Backend::tracepoint;
	}

	void forked_sender(const SockAddr &from, const SockAddr &to, pid_t child) override
	{
		rec_.stop(); // the final snapshot names the newest change's process
		const auto last = rec_.of_flow({testutil::endpoint(from), testutil::endpoint(to)});
		REQUIRE(!last.empty());
		CHECK(last.back().kind == udpintercept::EventKind::final);
		CHECK(last.back().pid == static_cast<std::uint32_t>(child));
	}

	void storm_sent(int sockets) override
	{
		rec_.pump(500ms);
		std::size_t closes = 0;
		for (const auto &e : rec_.events)
			closes += e.kind == udpintercept::EventKind::close;
		CHECK(closes == static_cast<std::size_t>(sockets));
		// Only the receiver's flows are open; then it closes too.
		CHECK(rec_.tracer().stats().flows_active == static_cast<std::uint64_t>(sockets));
	}

	void storm_closed() override
	{
		rec_.pump(500ms);
		CHECK(rec_.tracer().stats().flows_active == 0);
	}

	// A drop runs in the context that delivered the datagram (here the
	// sender's): the flow is charged to the socket's last user instead.
	void drops_only(const SockAddr &local, const SockAddr &remote) override
	{
		const testutil::FlowName name{testutil::endpoint(local), testutil::endpoint(remote)};
		REQUIRE(rec_.pump_until([&] { return rec_.last_of(name).has_value(); }));
		const auto e = *rec_.last_of(name);
		CHECK(e.rx_drops > 0);
		CHECK(e.rx_packets == 0);
		CHECK(e.pid == static_cast<std::uint32_t>(getpid()));
		CHECK(e.comm == testutil::own_comm());
	}

private:
	Recorder &rec_;
};

// The scenario in a fresh network namespace under a tracer, once per family.
void run_scenario(const std::string &name)
{
	const auto &s = scenarios::named(name);
	// This process only, unless a child of it sends too; from the first
	// datagram where recv() must learn peers.
	udpintercept::Options options =
		s.whole_process_tree ? udpintercept::Options{} : accuracy::own_process();
	for (const auto &f : s.families) {
		CAPTURE(f.loopback);
		accuracy::run(
			[&](accuracy::Ledger &l, Recorder &rec) {
				RecorderObserver o(rec);
				s.body(l, o, f);
			},
			s.check, options);
	}
}

} // namespace

TEST_CASE("connected client and server", "[accuracy]")
{
	run_scenario("connected client and server");
}

TEST_CASE("unconnected socket with several peers, both ways", "[accuracy]")
{
	run_scenario("unconnected socket with several peers, both ways");
}

TEST_CASE("a server reading with recv() learns each peer from the datagram", "[accuracy][recv]")
{
	run_scenario("a server reading with recv() learns each peer from the datagram");
}

TEST_CASE("sendmmsg and recvmmsg count each message", "[accuracy][mmsg]")
{
	run_scenario("sendmmsg and recvmmsg count each message");
}

TEST_CASE("MSG_PEEK counts nothing; the read after it counts once", "[accuracy][peek]")
{
	run_scenario("MSG_PEEK counts nothing; the read after it counts once");
}

TEST_CASE("a short buffer counts the bytes copied, or the full length under MSG_TRUNC", "[accuracy][trunc]")
{
	run_scenario("a short buffer counts the bytes copied, or the full length under MSG_TRUNC");
}

TEST_CASE("zero-length datagrams are datagrams", "[accuracy]")
{
	run_scenario("zero-length datagrams are datagrams");
}

TEST_CASE("refused sends count nothing: EMSGSIZE and ECONNREFUSED", "[accuracy][refused]")
{
	run_scenario("refused sends count nothing: EMSGSIZE and ECONNREFUSED");
}

TEST_CASE("connect() to a second peer, then connect(AF_UNSPEC)", "[accuracy][connect]")
{
	run_scenario("connect() to a second peer, then connect(AF_UNSPEC)");
}

TEST_CASE("an AF_INET6 socket talking to IPv4-mapped peers is IPv4 traffic", "[accuracy][mapped]")
{
	run_scenario("an AF_INET6 socket talking to IPv4-mapped peers is IPv4 traffic");
}

TEST_CASE("UDP_SEGMENT (GSO) sends count the datagrams on the wire", "[accuracy][gso]")
{
	run_scenario("UDP_SEGMENT (GSO) sends count the datagrams on the wire");
}

TEST_CASE("a UDP_GRO receiver counts each coalesced datagram as its segments", "[accuracy][gso]")
{
	run_scenario("a UDP_GRO receiver counts each coalesced datagram as its segments");
}

TEST_CASE("a socket shared with a forked child: exact totals, newest process named", "[accuracy][fork]")
{
	run_scenario("a socket shared with a forked child: exact totals, newest process named");
}

TEST_CASE("a receiver reading only with recv() knows every sender from the first datagram",
	  "[accuracy][recv]")
{
	run_scenario("a receiver reading only with recv() knows every sender from the first datagram");
}

TEST_CASE("more datagrams queued unread than a ring of notes holds, then read with recv()",
	  "[accuracy][recv]")
{
	run_scenario("more datagrams queued unread than a ring of notes holds, then read with recv()");
}

TEST_CASE("a socket that read with recvfrom() for long, then recv(), stays exact", "[accuracy][recv]")
{
	run_scenario("a socket that read with recvfrom() for long, then recv(), stays exact");
}

TEST_CASE("a socket connected with other senders' datagrams queued reads each as its sender's",
	  "[accuracy][recv][connect]")
{
	run_scenario("a socket connected with other senders' datagrams queued reads each as its sender's");
}

TEST_CASE("connected sockets report the local address getsockname() gives", "[accuracy][connect]")
{
	run_scenario("connected sockets report the local address getsockname() gives");
}

TEST_CASE("a multicast group on lo: each member's flows exact", "[accuracy][recv][multicast]")
{
	run_scenario("a multicast group on lo: each member's flows exact");
}

TEST_CASE("a broadcast to two receivers: each receiver's flows exact", "[accuracy][recv][broadcast]")
{
	run_scenario("a broadcast to two receivers: each receiver's flows exact");
}

TEST_CASE("an SO_REUSEPORT group of four sockets: each socket's flows exact", "[accuracy][recv][reuseport]")
{
	run_scenario("an SO_REUSEPORT group of four sockets: each socket's flows exact");
}

TEST_CASE("many threads on one socket", "[accuracy][threads]")
{
	run_scenario("many threads on one socket");
}

TEST_CASE("a thread for each datagram: every thread's first send and receive counted", "[accuracy][threads]")
{
	run_scenario("a thread for each datagram: every thread's first send and receive counted");
}

TEST_CASE("sockets living across the tracer's start are counted from then on", "[accuracy][lifetime]")
{
	testutil::enter_fresh_netns();
	Udp rx = scenarios::bound(scenarios::kIpv6), tx = scenarios::bound(scenarios::kIpv6);
	tx.send_to(rx.local(), 50); // before tracing
	rx.recv_from();
	accuracy::Counts seen;
	{
		Recorder rec;
		const auto before = accuracy::Mib::read();
		tx.send_to(rx.local(), 60);
		rx.recv_from();
		const auto after = accuracy::Mib::read();
		rec.stop();
		CHECK(after.out6 - before.out6 == 1);
		const auto flows = rec.last_by_flow();
		const auto &out = flows.at({testutil::endpoint(tx.local()), testutil::endpoint(rx.local())});
		CHECK(out.kind == udpintercept::EventKind::final);
		CHECK(out.tx_packets == 1);
		CHECK(out.tx_bytes == 60);
	}
	{
		// A new tracer starts from zero again; the close is reported with what it saw.
		Recorder rec;
		tx.send_to(rx.local(), 70);
		rx.recv_from();
		const std::string t = testutil::endpoint(tx.local()), r = testutil::endpoint(rx.local());
		tx.close();
		rec.pump(200ms);
		const auto flows = rec.last_by_flow();
		CHECK(flows.at({t, r}).kind == udpintercept::EventKind::close);
		CHECK(flows.at({t, r}).tx_bytes == 70);
		rec.stop();
	}
}

TEST_CASE("a socket storm: every short-lived socket reported, the flow table back to empty",
	  "[accuracy][storm]")
{
	run_scenario("a socket storm: every short-lived socket reported, the flow table back to empty");
}

TEST_CASE("a small receive buffer flooded by two senders per family: every sender's drops exact",
	  "[accuracy][drops]")
{
	run_scenario("a small receive buffer flooded by two senders per family: every sender's drops exact");
}

TEST_CASE("receives that return no datagram count none: a failed copy, a shutdown(SHUT_RD)",
	  "[accuracy][recv]")
{
	run_scenario("receives that return no datagram count none: a failed copy, a shutdown(SHUT_RD)");
}

TEST_CASE("the same read with recv(): each datagram's sender known past hundreds of drops in a row",
	  "[accuracy][drops][recv]")
{
	run_scenario(
		"the same read with recv(): each datagram's sender known past hundreds of drops in a row");
}

TEST_CASE("a socket whose reader stopped is flooded; another's deep queue read with recv() "
	  "stays exact",
	  "[accuracy][drops][recv]")
{
	run_scenario("a socket whose reader stopped is flooded; another's deep queue read with "
		     "recv() stays exact");
}

TEST_CASE("a socket filter that drops everything: each sender's drops exact", "[accuracy][drops]")
{
	run_scenario("a socket filter that drops everything: each sender's drops exact");
}

TEST_CASE("damaged datagrams found by recvmsg() and by poll(): each sender's drops exact",
	  "[accuracy][drops]")
{
	run_scenario("damaged datagrams found by recvmsg() and by poll(): each sender's drops exact");
}

namespace {

// Whether the kernel gives drops a reason (5.17+), which tells a datagram
// no socket listened for (NoPorts) from the others.
bool kernel_has_drop_reasons()
{
	std::unique_ptr<btf, void (*)(btf *)> vmlinux(btf__load_vmlinux_btf(), btf__free);
	if (!vmlinux)
		return false;
	const int id = btf__find_by_name_kind(vmlinux.get(), "skb_drop_reason", BTF_KIND_ENUM);
	if (id < 0)
		return false;
	const btf_type *t = btf__type_by_id(vmlinux.get(), id);
	const struct btf_enum *e = btf_enum(t);
	for (int i = 0; i < btf_vlen(t); i++, e++)
		if (std::string(btf__name_by_offset(vmlinux.get(), e->name_off)) ==
		    "SKB_DROP_REASON_NO_SOCKET")
			return true;
	return false;
}

} // namespace

TEST_CASE("datagrams to a port no socket listens on count in no_listener, as the kernel's NoPorts",
	  "[accuracy][drops][no_listener]")
{
	testutil::enter_fresh_netns();
	std::uint16_t port;
	{
		Udp gone = scenarios::bound(scenarios::kIpv4);
		port = gone.local().port();
	}
	// They belong to no process: the port is what the tracer is told to watch.
	udpintercept::Options options;
	options.port = port;
	Recorder rec(options);
	const auto before = accuracy::Mib::read();
	Udp s4 = scenarios::bound(scenarios::kIpv4), s6 = scenarios::bound(scenarios::kIpv6);
	for (int i = 0; i < 5; i++)
		s4.send_to(SockAddr::parse("127.0.0.1", port), 10);
	for (int i = 0; i < 3; i++)
		s6.send_to(SockAddr::parse("::1", port), 10);
	const auto after = accuracy::Mib::read();
	CHECK((after.v4 - before.v4).no_ports == 5);
	CHECK((after.v6 - before.v6).no_ports == 3);
	const std::uint64_t want = kernel_has_drop_reasons() ? 8 : 0;
	rec.pump_until([&] { return rec.tracer().stats().no_listener >= want; });
	rec.stop();
	CHECK(rec.tracer().stats().no_listener == want);
	// The senders' own flows are there, with what they sent.
	const auto flows = rec.last_by_flow();
	CHECK(flows.at({testutil::endpoint(s4.local()), "127.0.0.1:" + std::to_string(port)}).tx_packets ==
	      5);
	CHECK(flows.at({testutil::endpoint(s6.local()), "::1:" + std::to_string(port)}).tx_packets == 3);
}

TEST_CASE("drops on a socket no process was seen using are charged to pid 0 and no command",
	  "[accuracy][drops]")
{
	testutil::enter_fresh_netns();
	Udp r = scenarios::bound(scenarios::kIpv6), s = scenarios::bound(scenarios::kIpv6);
	const int small = 4096;
	REQUIRE(setsockopt(r.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0);
	// No task filter: a socket with no known user passes none.
	Recorder rec;
	for (int i = 0; i < 100; i++)
		s.send_to(r.local(), 200);
	testutil::loopback_barrier();
	const std::uint64_t drops = testutil::socket_drops(r.fd());
	REQUIRE(drops > 0);
	rec.stop();
	const auto e = rec.last_of({testutil::endpoint(r.local()), testutil::endpoint(s.local())});
	REQUIRE(e);
	CHECK(e->rx_drops == drops);
	CHECK(e->rx_packets == 0);
	CHECK(e->pid == 0);
	CHECK(e->uid == 0);
	CHECK(e->comm.empty());
	// The sender's flow is its own.
	const auto out = rec.last_of({testutil::endpoint(s.local()), testutil::endpoint(r.local())});
	REQUIRE(out);
	CHECK(out->pid == static_cast<std::uint32_t>(getpid()));
}
