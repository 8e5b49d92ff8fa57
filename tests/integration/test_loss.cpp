// SPDX-License-Identifier: LGPL-2.1-or-later
// Nothing is lost without being counted: identities between what was done,
// what was delivered and what was counted as dropped or untracked.
#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <sched.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "map_entries.h"
#include "recorder.h"
#include "udpintercept.h"

using namespace udpintercept;
using namespace std::chrono_literals;
using testutil::endpoint;
using testutil::own_map;
using testutil::Recorder;
using testutil::Udp;

TEST_CASE("a stalled consumer: every snapshot is delivered or counted lost, and the totals stay exact",
	  "[loss]")
{
	Options o;
	o.interval = 0ms;           // a snapshot per operation...
	o.ring_buffer_bytes = 4096; // ...into room for a few dozen
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	Udp a(AF_INET), b(AF_INET);
	a.bind("127.0.0.1");
	b.bind("127.0.0.1");
	const int rcvbuf = 8 << 20; // the socket keeps every datagram: only the tracer may drop
	REQUIRE(setsockopt(b.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) == 0);
	a.connect(b.local());
	constexpr int kOps = 3000;
	for (int i = 0; i < kOps; i++) // nobody reads the ring buffer meanwhile
		a.send(16);
	for (int i = 0; i < kOps; i++)
		b.recv_from();
	const testutil::FlowName tx_name{endpoint(a.local()), endpoint(b.local())},
		rx_name{endpoint(b.local()), endpoint(a.local())};
	// The full sweep the losses asked for finds both flows' last changes.
	CHECK(rec.pump_until([&] {
		const auto tx = rec.last_of(tx_name), rx = rec.last_of(rx_name);
		const auto s = rec.tracer().stats();
		return tx && tx->tx_packets == kOps && rx && rx->rx_packets == kOps &&
		       s.records_received == s.records_sent;
	}));

	auto s = rec.tracer().stats();
	CHECK(s.lost > 0);
	// Every send and receive, the connect, and the updates that delivered
	// what the lost snapshots carried (found by a full sweep).
	CHECK(s.full_sweeps > 0);
	CHECK(s.records_sent + s.lost == 2 * kOps + 1 + s.flushes);
	CHECK(s.records_received == s.records_sent);

	rec.stop();
	const auto flows = rec.last_by_flow();
	const auto &tx = flows.at({endpoint(a.local()), endpoint(b.local())});
	CHECK(tx.tx_packets == kOps);
	CHECK(tx.tx_bytes == 16 * kOps);
	const auto &rx = flows.at({endpoint(b.local()), endpoint(a.local())});
	CHECK(rx.rx_packets == kOps);
	CHECK(rx.rx_bytes == 16 * kOps);
}

TEST_CASE("a full flow table counts the flows, datagrams and bytes it could not admit", "[loss]")
{
	Options o;
	o.max_flows = 16;
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	Udp hub(AF_INET);
	hub.bind("127.0.0.1");
	std::vector<Udp> peers;
	constexpr int kPeers = 40;
	std::uint64_t bytes = 0;
	for (int i = 0; i < kPeers; i++) {
		peers.emplace_back(AF_INET);
		peers.back().bind("127.0.0.1");
		hub.send_to(peers.back().local(), 10 + i);
		bytes += 10 + i;
	}
	rec.stop();

	std::uint64_t tracked_flows = 0, tracked_packets = 0, tracked_bytes = 0;
	for (const auto &[name, e] : rec.last_by_flow()) {
		tracked_flows++;
		tracked_packets += e.tx_packets;
		tracked_bytes += e.tx_bytes;
	}
	const auto s = rec.tracer().stats();
	CHECK(tracked_flows <= 16);
	CHECK(s.flows_untracked > 0);
	CHECK(tracked_flows + s.flows_untracked == kPeers); // one operation per flow
	CHECK(tracked_packets + s.untracked_packets == kPeers);
	CHECK(tracked_bytes + s.untracked_bytes == bytes);
	CHECK(s.insert_failures == 0);
}

TEST_CASE("closes beyond a full ring buffer and a full closed map still end their flows, as deferred closes",
	  "[loss]")
{
	Options o;
	o.ring_buffer_bytes = 4096; // room for a few dozen records
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	// More short-lived sockets than the kernel's `closed` map (16,384) holds,
	// while nobody reads the ring buffer: each sends one datagram to a port
	// nobody listens on (no receiving flow) and closes.
	Udp sink(AF_INET);
	sink.bind("127.0.0.1");
	const auto to = sink.local();
	sink.close(); // the port is nobody's now
	constexpr int kSockets = 20000;
	for (int i = 0; i < kSockets; i++) {
		Udp s(AF_INET);
		s.send_to(to, 8);
	}
	const auto closes = [&] {
		int n = 0;
		for (const auto &e : rec.events)
			n += e.kind == EventKind::close && endpoint(e.remote) == endpoint(to) &&
			     e.tx_packets == 1;
		return n;
	};
	// The closed map's closes come at the next sweep; the rest with the full
	// sweep their loss asked for, which finds the sockets gone from the
	// kernel's socket table (without it they would wait for the flow timeout).
	const bool all_closed = rec.pump_until([&] { return closes() == kSockets; }, 20s);
	const auto s = rec.tracer().stats();
	INFO(closes() << " closes of one datagram, " << s.flows_active << " flows active, " << s.full_sweeps
		      << " full sweeps, " << s.closes_deferred << " deferred closes");
	CHECK(all_closed);
	CHECK(s.closes_deferred > 16384);
	CHECK(s.full_sweeps > 0);
	CHECK(s.flows_active == 0);
	CHECK(s.flows_untracked == 0);
}

namespace {

// The socket table's one entry (the test's one socket that has sent), by address.
std::pair<std::uint64_t, udpi_sock> only_socket(int socks)
{
	std::uint64_t key = 0, next = 0;
	std::vector<std::pair<std::uint64_t, udpi_sock>> entries;
	const void *prev = nullptr;
	while (bpf_map_get_next_key(socks, prev, &next) == 0) {
		udpi_sock value{};
		if (bpf_map_lookup_elem(socks, &next, &value) == 0)
			entries.emplace_back(next, value);
		key = next;
		prev = &key;
	}
	REQUIRE(entries.size() == 1);
	return entries.front();
}

/*
 * This thread on the CPU it runs on, until release() or the end of the
 * scope: a socket's memory, freed, goes back to that CPU's free list, which
 * the sockets this thread creates next take from.
 */
class OnOneCpu {
public:
	OnOneCpu()
	{
		cpu_set_t one;
		REQUIRE(sched_getaffinity(0, sizeof(was_), &was_) == 0);
		CPU_ZERO(&one);
		CPU_SET(sched_getcpu(), &one);
		REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
	}
	OnOneCpu(const OnOneCpu &) = delete;
	OnOneCpu &operator=(const OnOneCpu &) = delete;
	~OnOneCpu() { release(); }
	void release()
	{
		if (pinned_)
			sched_setaffinity(0, sizeof(was_), &was_);
		pinned_ = false;
	}

private:
	cpu_set_t was_;
	bool pinned_ = true;
};

/*
 * A socket whose release no program saw, as the kernel sometimes leaves one
 * (it does not always run the cgroup sock_release programs): its entry is
 * taken out of the socket table before it closes, so that the release finds
 * none, and put back after. Its flow was reported; its close was not.
 */
struct UnseenRelease {
	std::uint64_t address = 0;
	udpi_sock sock{};
	testutil::SockAddr to;

	explicit UnseenRelease(Recorder &rec, int family = AF_INET)
	{
		const int socks = own_map("socks");
		REQUIRE(socks >= 0);
		Udp sink(family);
		sink.bind(family == AF_INET ? "127.0.0.1" : "::1");
		to = sink.local();
		sink.close();
		Udp s(family);
		s.send_to(to, 8);
		REQUIRE(rec.pump_until([&] { return closes(rec, EventKind::update) > 0; }, 5s));
		std::tie(address, sock) = only_socket(socks);
		REQUIRE(bpf_map_delete_elem(socks, &address) == 0);
		s.close();
		REQUIRE(bpf_map_update_elem(socks, &address, &sock, BPF_NOEXIST) == 0);
		rec.pump(300ms);
	}
	int closes(const Recorder &rec, EventKind kind) const // snapshots of its flow, of this kind
	{
		int n = 0;
		for (const auto &e : rec.events)
			n += e.kind == kind && endpoint(e.remote) == endpoint(to);
		return n;
	}
};

} // namespace

TEST_CASE("stop() ends the flows of a socket released unseen as closed, not final", "[loss]")
{
	Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	UnseenRelease gone(rec);
	REQUIRE(gone.closes(rec, EventKind::close) == 0); // the release was not seen
	rec.tracer().stop();
	rec.pump(100ms);
	CHECK(gone.closes(rec, EventKind::close) == 1);
	CHECK(gone.closes(rec, EventKind::final) == 0);
	CHECK(rec.tracer().stats().closes_deferred == 1);
}

// Every backend: the tracepoint backend's cgroup/sock_create program, the
// fentry and kprobe backends' hooks on the socket's init (udp_init_sock()).
// Without them the new socket would take the gone one's id, and with it its
// flows (their local address and counts): two sockets' counts merged.
TEST_CASE("a socket created where one released unseen was ends that one's flows", "[loss][backend]")
{
	// Each family's sockets come from a cache of their own, and IPv6 ones
	// start in udpv6_init_sock() where the kernel has it.
	const int family = GENERATE(AF_INET, AF_INET6);
	INFO((family == AF_INET ? "IPv4" : "IPv6"));
	OnOneCpu pinned; // so that a new socket takes a released one's address
	Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	UnseenRelease gone(rec, family);
	REQUIRE(gone.closes(rec, EventKind::close) == 0);
	// Held open, so that each takes another address; a few every 10 ms, as
	// the kernel frees a UDP socket only after an RCU grace period (slow
	// under emulation), and the open files the process may hold are few.
	std::vector<Udp> fresh;
	const bool closed = rec.pump_until(
		[&] {
			for (int i = 0; i < 2 && fresh.size() < 800; i++)
				fresh.emplace_back(family);
			return gone.closes(rec, EventKind::close) == 1;
		},
		20s);
	pinned.release();
	INFO(fresh.size() << " sockets created");
	CHECK(closed);
}

namespace {

// Entries of a map of this process's tracer, by the map's name (-1 without such a map).
long entries_of(const char *name, std::size_t key_size)
{
	const int fd = own_map(name);
	return fd < 0 ? -1 : static_cast<long>(testutil::map_entries(fd, key_size));
}

} // namespace

TEST_CASE("sockets closed while datagrams keep arriving leave no arrival rings or spilled notes (tracepoint "
	  "backend)",
	  "[loss]")
{
	// The kernel unhashes a UDP socket only after its release programs ran.
	// A datagram arriving in between, one noted while the ring is being
	// forgotten, and one spilled while the ring was full and still unread
	// at the close must not leave a ring or a spilled note behind: it would
	// hold memory for good, and a spilled note could give a later socket at
	// that address a dead one's sender.
	Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	o.backend = Backend::tracepoint; // the arrival hook's rings
	Recorder rec(o);
	REQUIRE(entries_of("rx_rings", sizeof(std::uint64_t)) == 0);

	std::atomic<std::uint16_t> port{0};
	std::atomic<bool> done{false};
	std::atomic<std::uint64_t> sent{0};
	std::thread sender([&] {
		Udp s(AF_INET);
		sockaddr_in to{};
		to.sin_family = AF_INET;
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		char payload[32] = {};
		while (!done.load()) {
			to.sin_port = htons(port.load());
			for (int i = 0; i < 64 && to.sin_port; i++)
				if (::sendto(s.fd(), payload, sizeof(payload), 0,
					     reinterpret_cast<sockaddr *>(&to),
					     sizeof(to)) == sizeof(payload))
					sent.fetch_add(1);
		}
	});
	int sockets = 0;
	const timeval wait{1, 0};
	for (; sockets < 3000; sockets++) {
		Udp r(AF_INET);
		r.bind("127.0.0.1");
		setsockopt(r.fd(), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
		port = r.local().port();
		for (int i = 0; i < 3; i++)
			r.recv(); // by recv() without an address: its senders are taken from the notes
		r.close();        // with datagrams still queued, and more on their way
		if (sockets % 100 == 0)
			rec.pump(0ms);
	}
	done = true;
	sender.join();
	rec.pump(300ms);
	INFO(sockets << " sockets closed under " << sent.load() << " datagrams");
	CHECK(entries_of("rx_rings", sizeof(std::uint64_t)) == 0);
	// Before the release marks, the closing flag and the forget of every
	// outstanding number, 3,000 such sockets left 47-66 rings and 36-225
	// spilled notes here.
	CHECK(entries_of("rx_spill", 2 * sizeof(std::uint64_t)) == 0);
}

namespace {

// Whether the map `fd` holds the 64-bit key `key`.
bool holds(int fd, std::uint64_t key)
{
	bpf_map_info info{};
	__u32 len = sizeof(info);
	REQUIRE(bpf_obj_get_info_by_fd(fd, &info, &len) == 0);
	std::vector<char> value(info.value_size);
	return bpf_map_lookup_elem(fd, &key, value.data()) == 0;
}

} // namespace

TEST_CASE("a socket at the address of one closed with spilled notes unread takes none of them for its own "
	  "(tracepoint backend)",
	  "[loss]")
{
	OnOneCpu pinned; // so that a new socket takes a released one's address
	Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	o.backend = Backend::tracepoint; // the arrival hook's rings
	Recorder rec(o);
	const int rings = own_map("rx_rings");
	REQUIRE(rings >= 0);
	Udp x(AF_INET), y(AF_INET); // the first socket's sender, and the second's
	x.bind("127.0.0.1");
	y.bind("127.0.0.1");

	// 66 datagrams: notes 0-63 fill the ring, 64 and 65 spill. Two are read,
	// so 64 are outstanding when the socket closes, two of them spilled.
	std::uint64_t address = 0;
	{
		Udp first(AF_INET);
		first.bind("127.0.0.1");
		for (int i = 0; i < 66; i++)
			x.send_to(first.local(), 8);
		first.recv();
		first.recv();
		std::uint64_t next = 0;
		REQUIRE(bpf_map_get_next_key(rings, nullptr, &address) == 0);
		REQUIRE(bpf_map_get_next_key(rings, &address, &next) != 0); // its ring is the only one
	}

	// New sockets, each given a datagram by y (which begins its ring), held
	// open so that each takes another address, until one is at the first's:
	// the kernel frees a UDP socket's memory a grace period after its close.
	rec.pump(200ms);
	std::vector<Udp> held;
	std::optional<Udp> again;
	const bool reused = rec.pump_until(
		[&] {
			for (int i = 0; i < 2 && !again && held.size() < 800; i++) {
				Udp c(AF_INET);
				c.bind("127.0.0.1");
				y.send_to(c.local(), 8);
				if (holds(rings, address))
					again.emplace(std::move(c));
				else
					held.push_back(std::move(c));
			}
			return again.has_value();
		},
		10s);
	pinned.release();
	INFO(held.size() + 1 << " sockets created");
	REQUIRE(reused);

	// 66 more from y: notes 64-66 spill, where the first socket's were.
	for (int i = 0; i < 66; i++)
		y.send_to(again->local(), 8);
	for (int i = 0; i < 67; i++)
		again->recv();
	const std::string local = endpoint(again->local());
	std::map<std::string, std::uint64_t> from; // the second socket's datagrams, by sender
	REQUIRE(rec.pump_until(
		[&] {
			from.clear();
			std::uint64_t all = 0;
			for (const auto &[name, e] : rec.last_by_flow())
				if (name.local == local) {
					from[name.remote] = e.rx_packets;
					all += e.rx_packets;
				}
			return all == 67;
		},
		5s));
	std::string seen;
	for (const auto &[sender, n] : from)
		seen += " " + sender + ": " + std::to_string(n);
	INFO("the second socket's datagrams by sender:" << seen << "; y is " << endpoint(y.local()));
	CHECK(from == std::map<std::string, std::uint64_t>{{endpoint(y.local()), 67}});
}
