// SPDX-License-Identifier: LGPL-2.1-or-later
#include "scenarios.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <cstring>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <thread>

using namespace std::chrono_literals;
using accuracy::Ledger;
using accuracy::MibCheck;
using testutil::SockAddr;
using testutil::Udp;

namespace scenarios {

namespace {

const std::vector<Fam> kBoth = {kIpv4, kIpv6};

void expect(bool ok, const std::string &what)
{
	if (!ok)
		throw Failure(what + (errno ? std::string(" (errno: ") + std::strerror(errno) + ")" : ""));
}

void connected(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f), client = bound(f);
	client.connect(server.local());
	for (int i = 0; i < 9; i++) {
		client.send(100 + i);
		l.sent(client.local(), server.local(), 100 + i);
	}
	for (int i = 0; i < 9; i++) {
		SockAddr from;
		l.received(server.local(), client.local(), server.recv_from(from));
	}
}

void several_peers(Ledger &l, Observer &, const Fam &f)
{
	Udp hub = bound(f);
	std::vector<Udp> peers;
	for (int i = 0; i < 4; i++)
		peers.push_back(bound(f));
	for (int round = 0; round < 3; round++)
		for (std::size_t i = 0; i < peers.size(); i++) {
			hub.send_to(peers[i].local(), 20 + i);
			l.sent(hub.local(), peers[i].local(), 20 + i);
			SockAddr from;
			l.received(peers[i].local(), hub.local(), peers[i].recv_from(from));
			peers[i].send_to(hub.local(), 7);
			l.sent(peers[i].local(), hub.local(), 7);
			l.received(hub.local(), peers[i].local(), hub.recv_from(from));
		}
}

void recv_learns_peers(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f);
	Udp a = bound(f), b = bound(f);
	for (int i = 0; i < 5; i++) {
		a.send_to(server.local(), 30);
		l.sent(a.local(), server.local(), 30);
		b.send_to(server.local(), 31);
		l.sent(b.local(), server.local(), 31);
	}
	// Queued in arrival order, read without asking for the sender.
	for (int i = 0; i < 5; i++) {
		l.received(server.local(), a.local(), server.recv());
		l.received(server.local(), b.local(), server.recv());
	}
	// And one that arrives while the reader is blocked.
	std::thread late([&] {
		std::this_thread::sleep_for(50ms);
		b.send_to(server.local(), 32);
	});
	l.received(server.local(), b.local(), server.recv());
	late.join();
	l.sent(b.local(), server.local(), 32);
}

void mmsg(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	constexpr int kMsgs = 8;
	char payload[kMsgs][64];
	iovec iov[kMsgs];
	mmsghdr msgs[kMsgs] = {};
	const SockAddr to = rx.local();
	for (int i = 0; i < kMsgs; i++) {
		iov[i] = {payload[i], static_cast<size_t>(10 + i)};
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = const_cast<sockaddr *>(to.sa());
		msgs[i].msg_hdr.msg_namelen = to.len;
	}
	expect(sendmmsg(tx.fd(), msgs, kMsgs, 0) == kMsgs, "sendmmsg sends every message");
	for (int i = 0; i < kMsgs; i++)
		l.sent(tx.local(), rx.local(), 10 + i);

	char in[kMsgs][64];
	iovec riov[kMsgs];
	mmsghdr rmsgs[kMsgs] = {};
	sockaddr_storage from[kMsgs];
	for (int i = 0; i < kMsgs; i++) {
		riov[i] = {in[i], sizeof(in[i])};
		rmsgs[i].msg_hdr.msg_iov = &riov[i];
		rmsgs[i].msg_hdr.msg_iovlen = 1;
		rmsgs[i].msg_hdr.msg_name = &from[i];
		rmsgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	expect(recvmmsg(rx.fd(), rmsgs, kMsgs, MSG_WAITFORONE, nullptr) == kMsgs,
	       "recvmmsg reads every message");
	for (int i = 0; i < kMsgs; i++)
		l.received(rx.local(), tx.local(), rmsgs[i].msg_len);
}

void peek(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	tx.send_to(rx.local(), 40);
	l.sent(tx.local(), rx.local(), 40);
	expect(rx.recv(65536, MSG_PEEK) == 40, "MSG_PEEK sees the datagram");
	expect(rx.recv(65536, MSG_PEEK) == 40, "MSG_PEEK sees it again");
	SockAddr from;
	l.received(rx.local(), tx.local(), rx.recv_from(from));
	// A zero-length datagram peeked, then read.
	tx.send_to(rx.local(), 0);
	l.sent(tx.local(), rx.local(), 0);
	expect(rx.recv(65536, MSG_PEEK) == 0, "MSG_PEEK sees a zero-length datagram");
	l.received(rx.local(), tx.local(), rx.recv_from(from));
}

void truncated(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	rx.connect(tx.local()); // recv() on a connected socket: the peer is the socket's
	tx.send_to(rx.local(), 500);
	tx.send_to(rx.local(), 500);
	l.sent(tx.local(), rx.local(), 500);
	l.sent(tx.local(), rx.local(), 500);
	expect(rx.recv(100) == 100, "a short buffer gets what fits");
	l.received(rx.local(), tx.local(), 100);
	expect(rx.recv(100, MSG_TRUNC) == 500, "MSG_TRUNC returns the full length");
	l.received(rx.local(), tx.local(), 500);
}

void zero_length(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	for (int i = 0; i < 3; i++) {
		tx.send_to(rx.local(), 0);
		l.sent(tx.local(), rx.local(), 0);
	}
	for (int i = 0; i < 3; i++) {
		SockAddr from;
		l.received(rx.local(), tx.local(), rx.recv_from(from));
	}
}

void refused(Ledger &l, Observer &, const Fam &f)
{
	Udp tx = bound(f);
	SockAddr closed_port;
	{
		Udp gone = bound(f);
		closed_port = gone.local();
	}
	std::vector<char> huge(70000, 'x');
	errno = 0;
	const ssize_t sent =
		::sendto(tx.fd(), huge.data(), huge.size(), 0, closed_port.sa(), closed_port.len);
	expect(sent < 0 && errno == EMSGSIZE, "a 70000-byte datagram is refused with EMSGSIZE");

	tx.connect(closed_port);
	tx.send(10); // accepted; the ICMP port unreachable comes back
	l.sent(tx.local(), closed_port, 10);
	std::this_thread::sleep_for(50ms);
	errno = 0;
	const ssize_t again = ::send(tx.fd(), "x", 1, 0);
	expect(again < 0 && errno == ECONNREFUSED, "the next send is refused with ECONNREFUSED");
}

void reconnect(Ledger &l, Observer &, const Fam &f)
{
	Udp s = bound(f), p1 = bound(f), p2 = bound(f), p3 = bound(f);
	const SockAddr s_connected = s.local(); // AF_UNSPEC gives the ephemeral port back
	s.connect(p1.local());
	s.send(11);
	l.sent(s.local(), p1.local(), 11);
	s.connect(p2.local());
	s.send(12);
	s.send(12);
	l.sent(s.local(), p2.local(), 12);
	l.sent(s.local(), p2.local(), 12);
	sockaddr unspec{};
	unspec.sa_family = AF_UNSPEC;
	expect(::connect(s.fd(), &unspec, sizeof(unspec)) == 0, "connect(AF_UNSPEC)");
	s.send_to(p3.local(), 13);
	l.sent(s.local(), p3.local(), 13);
	SockAddr from;
	l.received(p1.local(), s_connected, p1.recv_from(from));
	for (int i = 0; i < 2; i++)
		l.received(p2.local(), s_connected, p2.recv_from(from));
	l.received(p3.local(), s.local(), p3.recv_from(from));
}

void mapped(Ledger &l, Observer &, const Fam &)
{
	Udp v4 = bound(kIpv4);
	Udp v6(AF_INET6);
	v6.bind("::");
	const SockAddr to = SockAddr::parse("::ffff:127.0.0.1", v4.local().port());
	for (int i = 0; i < 3; i++)
		v6.send_to(to, 25);
	SockAddr from;
	for (int i = 0; i < 3; i++) {
		expect(v4.recv_from(from) == 25, "the IPv4 socket receives the mapped datagram");
		v4.send_to(from, 5);
	}
	// The v6 socket's own view of itself and its peer, in the tracer's IPv4 form.
	const SockAddr self = SockAddr::parse("0.0.0.0", v6.local().port());
	for (int i = 0; i < 3; i++) {
		l.sent(self, v4.local(), 25);
		l.received(v4.local(), SockAddr::parse("127.0.0.1", from.port()), 25);
		l.sent(v4.local(), SockAddr::parse("127.0.0.1", from.port()), 5);
		SockAddr back;
		expect(v6.recv_from(back) == 5, "the IPv6 socket receives the answer");
		l.received(self, v4.local(), 5);
	}
}

void gso(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	// Per call, through a control message...
	const SockAddr to = rx.local();
	gso_send(tx, &to, 1000, 100);
	l.sent(tx.local(), rx.local(), 1000, 10);
	// ...and for the socket, with a short last segment.
	const int sock_seg = 300;
	expect(setsockopt(tx.fd(), SOL_UDP, UDP_SEGMENT, &sock_seg, sizeof(sock_seg)) == 0,
	       "setsockopt(UDP_SEGMENT)");
	tx.send_to(rx.local(), 1000);
	l.sent(tx.local(), rx.local(), 1000, 4);
	for (int i = 0; i < 14; i++) {
		SockAddr from;
		l.received(rx.local(), tx.local(), rx.recv_from(from));
	}
}

#ifndef UDP_GRO
#define UDP_GRO 104 /* linux/udp.h */
#endif

// One receive on a UDP_GRO socket into a buffer of 64 KiB, with or without the
// sender's address; its bytes, and in *segment the segment size the kernel
// reports for a coalesced datagram (0 for a single one).
std::size_t gro_receive(Udp &rx, bool with_address, SockAddr &from, std::uint16_t *segment)
{
	std::vector<char> buf(65536);
	iovec iov{buf.data(), buf.size()};
	char control[CMSG_SPACE(sizeof(int))] = {};
	msghdr msg{};
	from.len = sizeof(from.ss);
	msg.msg_name = with_address ? &from.ss : nullptr;
	msg.msg_namelen = with_address ? from.len : 0;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);
	const ssize_t n = recvmsg(rx.fd(), &msg, 0);
	expect(n >= 0, "recvmsg on the UDP_GRO socket");
	*segment = 0;
	for (cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
			int size = 0;
			std::memcpy(&size, CMSG_DATA(cm), sizeof(size));
			*segment = static_cast<std::uint16_t>(size);
		}
	return static_cast<std::size_t>(n);
}

// A socket with UDP_GRO set receives a GSO send's segments as one datagram
// where loopback keeps them together (6.x; a NIC's GRO coalesces them
// likewise): one receive returns them all, and they count as the datagrams on
// the wire, as the send did. Where the kernel splits them before they reach
// the socket (5.10's loopback), each is a datagram of its own. Unconnected and
// connected receivers, reading with and without the sender's address, single
// datagrams between the coalesced ones (the connected socket's first one
// queued before its first coalesced one).
void gro(Ledger &l, Observer &, const Fam &f)
{
	const int on = 1;
	std::size_t coalesced = 0;
	for (const bool connected : {false, true}) {
		Udp rx = bound(f), tx = bound(f);
		expect(setsockopt(rx.fd(), SOL_UDP, UDP_GRO, &on, sizeof(on)) == 0, "setsockopt(UDP_GRO)");
		const SockAddr to = rx.local();
		if (connected) {
			rx.connect(tx.local());
			tx.connect(to);
		}
		const SockAddr *dest = connected ? nullptr : &to;
		struct Sent {
			std::size_t bytes;
			std::uint16_t segment; // 0: a single datagram
		};
		const std::vector<Sent> sends = {{40, 0}, {1000, 100}, {30, 0}, {650, 200}, {20, 0}};
		std::size_t total = 0;
		for (const Sent &s : sends) {
			if (s.segment) {
				gso_send(tx, dest, s.bytes, s.segment);
				l.sent(tx.local(), to, s.bytes, (s.bytes + s.segment - 1) / s.segment);
			} else if (connected) {
				tx.send(s.bytes);
				l.sent(tx.local(), to, s.bytes);
			} else {
				tx.send_to(to, s.bytes);
				l.sent(tx.local(), to, s.bytes);
			}
			total += s.bytes;
		}
		testutil::loopback_barrier();
		for (std::size_t got = 0, i = 0; got < total; i++) {
			SockAddr from;
			std::uint16_t segment = 0;
			const std::size_t n = gro_receive(rx, i % 2 == 0, from, &segment);
			expect(n > 0, "each receive returns a datagram");
			const std::size_t segments = segment && n > segment ? (n + segment - 1) / segment : 1;
			coalesced += segments > 1;
			l.received(to, tx.local(), n, segments);
			got += n;
		}
	}
	std::printf("UDP_GRO (%s): %zu coalesced receives\n", f.loopback, coalesced);
}

void forked(Ledger &l, Observer &o, const Fam &)
{
	Udp rx = bound(kIpv4), tx = bound(kIpv4);
	tx.send_to(rx.local(), 10);
	l.sent(tx.local(), rx.local(), 10);
	const pid_t child = fork();
	expect(child >= 0, "fork");
	if (child == 0) {
		for (int i = 0; i < 4; i++)
			if (::sendto(tx.fd(), "abcdefghij", 10, 0, rx.local().sa(), rx.local().len) != 10)
				_exit(1);
		_exit(0);
	}
	int status = 0;
	expect(waitpid(child, &status, 0) == child, "waitpid");
	expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child sent its four datagrams");
	for (int i = 0; i < 4; i++)
		l.sent(tx.local(), rx.local(), 10);
	for (int i = 0; i < 5; i++) {
		SockAddr from;
		l.received(rx.local(), tx.local(), rx.recv_from(from));
	}
	o.forked_sender(tx.local(), rx.local(), child);
}

void threads(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	int rcvbuf = 4 << 20;
	expect(setsockopt(rx.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) == 0,
	       "SO_RCVBUFFORCE past rmem_max: nothing may drop");
	constexpr int kThreads = 8, kEach = 100;
	std::vector<std::thread> senders;
	for (int t = 0; t < kThreads; t++)
		senders.emplace_back([&, t] {
			for (int i = 0; i < kEach; i++)
				tx.send_to(rx.local(), 16 + t);
		});
	for (auto &t : senders)
		t.join();
	for (int t = 0; t < kThreads; t++)
		for (int i = 0; i < kEach; i++)
			l.sent(tx.local(), rx.local(), 16 + t);
	std::atomic<int> left{kThreads * kEach};
	std::atomic<std::uint64_t> bytes{0};
	std::vector<std::thread> readers;
	for (int t = 0; t < 4; t++)
		readers.emplace_back([&] {
			while (left.fetch_sub(1) > 0)
				bytes += rx.recv_from();
		});
	for (auto &t : readers)
		t.join();
	for (int i = 0; i < kThreads * kEach - 1; i++)
		l.received(rx.local(), tx.local(), 0);
	l.received(rx.local(), tx.local(), bytes.load());
}

// Short-lived threads, two at a time, each sending or reading one datagram:
// every operation is its thread's first, for which the tracepoint backend's
// hooks have the kernel allocate the thread's storage.
void thread_per_datagram(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), tx = bound(f);
	int rcvbuf = 4 << 20;
	expect(setsockopt(rx.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) == 0,
	       "SO_RCVBUFFORCE past rmem_max: nothing may drop");
	constexpr int kDatagrams = 400;
	for (int n = 0; n < kDatagrams; n += 2) {
		std::thread a([&] { tx.send_to(rx.local(), 30); }), b([&] { tx.send_to(rx.local(), 31); });
		a.join();
		b.join();
		l.sent(tx.local(), rx.local(), 30);
		l.sent(tx.local(), rx.local(), 31);
	}
	for (int n = 0; n < kDatagrams; n += 2) {
		std::size_t got[2] = {};
		std::thread a([&] { got[0] = rx.recv_from(); }), b([&] { got[1] = rx.recv_from(); });
		a.join();
		b.join();
		l.received(rx.local(), tx.local(), got[0]);
		l.received(rx.local(), tx.local(), got[1]);
	}
}

void storm(Ledger &l, Observer &o, const Fam &)
{
	Udp rx = bound(kIpv4);
	int rcvbuf = 8 << 20;
	expect(setsockopt(rx.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) == 0,
	       "SO_RCVBUFFORCE past rmem_max: nothing may drop");
	// Thousands; the kernel matrix, under emulation, sets fewer.
	const int kSockets =
		std::getenv("UDPI_STORM_SOCKETS") ? std::atoi(std::getenv("UDPI_STORM_SOCKETS")) : 3000;
	for (int i = 0; i < kSockets; i++) {
		// Distinct ports, so that no two sockets share a flow's name.
		Udp s(AF_INET);
		s.bind("127.0.0.1", static_cast<std::uint16_t>(20000 + i));
		s.send_to(rx.local(), 8);
		l.sent(s.local(), rx.local(), 8);
		SockAddr from;
		l.received(rx.local(), s.local(), rx.recv_from(from));
		if (i % 500 == 0)
			o.pump(1ms);
	}
	o.storm_sent(kSockets);
	rx.close();
	o.storm_closed();
}

// A receiver that reads only with recv() while senders queue datagrams, and
// the tracer attached just before: every sender's flow exact from its first
// datagram (the arrival hook is in place from the start).
void recv_only_senders(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f);
	std::vector<Udp> senders;
	for (int i = 0; i < 5; i++)
		senders.push_back(bound(f));
	for (int round = 0; round < 4; round++)
		for (std::size_t i = 0; i < senders.size(); i++) {
			senders[i].send_to(server.local(), 40 + i);
			l.sent(senders[i].local(), server.local(), 40 + i);
		}
	// One sender's queue is read before the next round arrives, the rest after.
	for (int round = 0; round < 4; round++)
		for (std::size_t i = 0; i < senders.size(); i++)
			l.received(server.local(), senders[i].local(), server.recv());
}

// Deeper queues than one socket's ring of notes holds (a syslog or statsd
// receiver under load), read with recv() only.
void deep_queue(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f);
	const int rcvbuf = 16 << 20;
	expect(setsockopt(server.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) == 0,
	       "a receive buffer for the whole burst");
	std::vector<Udp> senders;
	for (int i = 0; i < 4; i++)
		senders.push_back(bound(f));
	constexpr int kQueued = 2000;
	for (int n = 0; n < kQueued; n++) {
		Udp &from = senders[n % senders.size()];
		from.send_to(server.local(), 16 + n % 7);
		l.sent(from.local(), server.local(), 16 + n % 7);
	}
	for (int n = 0; n < kQueued; n++)
		l.received(server.local(), senders[n % senders.size()].local(), server.recv());
}

// A socket that reads its senders' addresses for long, then turns to recv()
// with datagrams of two senders queued.
void recvfrom_then_recv(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f), a = bound(f), b = bound(f);
	for (int i = 0; i < 300; i++) {
		a.send_to(server.local(), 20);
		l.sent(a.local(), server.local(), 20);
		SockAddr from;
		l.received(server.local(), a.local(), server.recv_from(from));
	}
	for (int i = 0; i < 3; i++) {
		a.send_to(server.local(), 21);
		l.sent(a.local(), server.local(), 21);
		b.send_to(server.local(), 22);
		l.sent(b.local(), server.local(), 22);
	}
	for (int i = 0; i < 3; i++) {
		l.received(server.local(), a.local(), server.recv());
		l.received(server.local(), b.local(), server.recv());
	}
}

// A socket that connect()s with other senders' datagrams still queued reads
// them with recv(): each is its sender's, not the new peer's; then its
// peer's.
void connect_with_queue(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f), a = bound(f), b = bound(f), c = bound(f);
	for (int i = 0; i < 2; i++) {
		a.send_to(server.local(), 23);
		l.sent(a.local(), server.local(), 23);
		b.send_to(server.local(), 24);
		l.sent(b.local(), server.local(), 24);
	}
	const SockAddr self = server.local();
	server.connect(c.local());
	for (int i = 0; i < 2; i++) {
		l.received(self, a.local(), server.recv());
		l.received(self, b.local(), server.recv());
	}
	c.send_to(self, 25);
	l.sent(c.local(), self, 25);
	l.received(self, c.local(), server.recv());
}

// The endpoint as the tracer names it: IPv4-mapped addresses are IPv4.
SockAddr as_traced(const SockAddr &a)
{
	const std::string ip = a.ip();
	if (a.family() == AF_INET6 && ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos)
		return SockAddr::parse(ip.substr(7), a.port());
	return a;
}

// One exchange on a connected socket; the ledger names its local end as
// getsockname() does after connect(), which the tracer must report too.
void exchange(Ledger &l, Udp &client, Udp &server, std::size_t bytes)
{
	client.send(bytes);
	const SockAddr self = as_traced(client.local());
	l.sent(self, server.local(), bytes);
	SockAddr from;
	const std::size_t got = server.recv_from(from);
	expect(as_traced(from).ip() == self.ip(), "the server sees the client's address");
	l.received(server.local(), self, got);
	server.send_to(from, bytes / 2);
	l.sent(server.local(), self, bytes / 2);
	l.received(self, server.local(), client.recv());
}

// Connected sockets made the common ways: bound to the wildcard, then
// connect() (as dig does); bound by connect() itself; and, for IPv4, an
// IPv6 socket connected to an IPv4-mapped peer.
void connected_ways(Ledger &l, Observer &, const Fam &f)
{
	Udp server = bound(f);
	Udp wildcard(f.af);
	wildcard.bind(f.af == AF_INET ? "0.0.0.0" : "::");
	wildcard.connect(server.local());
	Udp autobound(f.af);
	autobound.connect(server.local());
	for (int i = 0; i < 3; i++) {
		exchange(l, wildcard, server, 30 + i);
		exchange(l, autobound, server, 40 + i);
	}
	if (f.af != AF_INET)
		return;
	Udp mapped(AF_INET6);
	mapped.bind("::");
	mapped.connect(SockAddr::parse("::ffff:127.0.0.1", server.local().port()));
	for (int i = 0; i < 3; i++)
		exchange(l, mapped, server, 50 + i);
}

// lo with IFF_MULTICAST, which a fresh namespace's loopback lacks.
void loopback_multicast()
{
	const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ifreq ifr{};
	std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	expect(fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0, "lo's flags");
	ifr.ifr_flags |= IFF_MULTICAST;
	expect(ioctl(fd, SIOCSIFFLAGS, &ifr) == 0, "multicast on lo");
	close(fd);
}

// Receivers of one port with SO_REUSEADDR: one bound to the wildcard, one to
// the address the datagrams go to, so that each socket's flows have names
// of their own (getsockname() tells them apart).
std::vector<Udp> shared_port_receivers(const char *destination, std::uint16_t &port)
{
	std::vector<Udp> out;
	for (const char *address : {"0.0.0.0", destination}) {
		Udp r(AF_INET);
		const int one = 1;
		expect(setsockopt(r.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0, "SO_REUSEADDR");
		r.bind(address, port);
		port = r.local().port();
		out.push_back(std::move(r));
	}
	return out;
}

// A multicast group on lo with two members: each member's flow from the
// sender exact, read with recv().
void multicast(Ledger &l, Observer &, const Fam &)
{
	loopback_multicast();
	std::uint16_t port = 0;
	auto members = shared_port_receivers("239.1.2.3", port);
	const SockAddr group = SockAddr::parse("239.1.2.3", port);
	ip_mreq mreq{};
	inet_pton(AF_INET, "239.1.2.3", &mreq.imr_multiaddr);
	inet_pton(AF_INET, "127.0.0.1", &mreq.imr_interface);
	for (auto &m : members)
		expect(setsockopt(m.fd(), IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) == 0,
		       "joining the group on lo");
	Udp sender = bound(kIpv4);
	const in_addr lo = mreq.imr_interface;
	const int loop = 1;
	expect(setsockopt(sender.fd(), IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof(lo)) == 0, "IP_MULTICAST_IF");
	expect(setsockopt(sender.fd(), IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof(loop)) == 0,
	       "IP_MULTICAST_LOOP");
	for (int i = 0; i < 5; i++) {
		sender.send_to(group, 60 + i);
		l.sent(sender.local(), group, 60 + i);
	}
	for (auto &m : members)
		for (int i = 0; i < 5; i++)
			l.received(m.local(), sender.local(), m.recv());
}

// A broadcast on lo's 127.255.255.255 to two receivers sharing a port.
void broadcast(Ledger &l, Observer &, const Fam &)
{
	std::uint16_t port = 0;
	auto receivers = shared_port_receivers("127.255.255.255", port);
	const SockAddr to = SockAddr::parse("127.255.255.255", port);
	Udp sender = bound(kIpv4);
	const int one = 1;
	expect(setsockopt(sender.fd(), SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) == 0, "SO_BROADCAST");
	for (int i = 0; i < 5; i++) {
		sender.send_to(to, 70 + i);
		l.sent(sender.local(), to, 70 + i);
	}
	for (auto &r : receivers)
		for (int i = 0; i < 5; i++)
			l.received(r.local(), sender.local(), r.recv());
}

// An SO_REUSEPORT group of four sockets: the kernel spreads the senders over
// them; each socket reads with recv() and learns who sent what from the
// payload (the sender's index), the tracer from the datagram.
void reuseport(Ledger &l, Observer &, const Fam &f)
{
	std::vector<Udp> group;
	std::uint16_t port = 0;
	for (int i = 0; i < 4; i++) {
		Udp r(f.af);
		const int one = 1;
		expect(setsockopt(r.fd(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0, "SO_REUSEPORT");
		r.bind(f.loopback, port);
		port = r.local().port();
		group.push_back(std::move(r));
	}
	std::vector<Udp> senders;
	for (int i = 0; i < 12; i++)
		senders.push_back(bound(f));
	int sent = 0;
	for (int round = 0; round < 3; round++)
		for (std::size_t i = 0; i < senders.size(); i++) {
			std::vector<char> payload(20 + i, static_cast<char>(i));
			expect(sendto(senders[i].fd(), payload.data(), payload.size(), 0,
				      group[0].local().sa(),
				      group[0].local().len) == static_cast<ssize_t>(payload.size()),
			       "sendto the group");
			l.sent(senders[i].local(), group[0].local(), payload.size());
			sent++;
		}
	// Every datagram is queued by now (loopback_barrier(): a busy machine delivers later).
	testutil::loopback_barrier();
	int received = 0;
	for (auto &r : group)
		for (;;) {
			char buf[256];
			const ssize_t n = ::recv(r.fd(), buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 0)
				break;
			const auto who = static_cast<std::size_t>(static_cast<unsigned char>(buf[0]));
			expect(who < senders.size(), "a payload names its sender");
			l.received(r.local(), senders[who].local(), static_cast<std::uint64_t>(n));
			received++;
		}
	expect(received == sent, "every datagram was read by one socket of the group");
}

// One receiver of each family with a small buffer, and its senders.
struct Flooded {
	Udp sock;
	std::vector<Udp> senders;
	std::vector<std::uint64_t> sent, read;
};

// Reads what is queued on r without waiting, by sender: with recvfrom(), or
// with recv() (`with_address` false), the sender then known by the size it
// sends (100 + its index).
void drain(Ledger &l, Flooded &r, bool with_address)
{
	for (;;) {
		char buf[2048];
		SockAddr from;
		from.len = sizeof(from.ss);
		const ssize_t n = with_address ? ::recvfrom(r.sock.fd(), buf, sizeof(buf), MSG_DONTWAIT,
							    reinterpret_cast<sockaddr *>(&from.ss), &from.len)
					       : ::recv(r.sock.fd(), buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			expect(errno == EAGAIN, "reading until the queue is empty");
			errno = 0;
			return;
		}
		std::size_t who = 0;
		while (who < r.senders.size() && (with_address ? r.senders[who].local().port() != from.port()
							       : static_cast<std::size_t>(n) != 100 + who))
			who++;
		expect(who < r.senders.size(), "a queued datagram came from one of the senders");
		l.received(r.sock.local(), r.senders[who].local(), static_cast<std::uint64_t>(n));
		r.read[who]++;
	}
}

// An IPv4 and an IPv6 receiver with small receive buffers, flooded by two
// senders each, the families interleaved, and read in between: each
// sender's drops are what it sent less what was read from it. A third
// sender sends only while the buffers are full: its flows are drops only.
// Read with recvfrom(), or with recv() (`with_address` false): then each
// datagram's sender is known only from its arrival note, and those of the
// dropped datagrams, hundreds in a row, are passed over.
void rcvbuf_overflow_read(Ledger &l, Observer &o, bool with_address)
{
	const std::uint64_t softnet_before = testutil::softnet_dropped();
	const accuracy::Mib before = accuracy::Mib::read();
	std::vector<Flooded> rx;
	for (const Fam &f : kBoth) {
		Flooded r{bound(f), {}, {}, {}};
		const int small = 4096;
		expect(setsockopt(r.sock.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0,
		       "SO_RCVBUF");
		for (int i = 0; i < 3; i++)
			r.senders.push_back(bound(f));
		r.sent.assign(3, 0);
		r.read.assign(3, 0);
		// Served one request before the flood: the socket's drops have an owner.
		r.senders[0].send_to(r.sock.local(), 12);
		l.sent(r.senders[0].local(), r.sock.local(), 12);
		SockAddr from;
		l.received(r.sock.local(), r.senders[0].local(), r.sock.recv_from(from));
		rx.push_back(std::move(r));
	}
	const auto flood = [&](int rounds, std::size_t first, std::size_t last) {
		for (int i = 0; i < rounds; i++)
			for (auto &r : rx)
				for (std::size_t s = first; s <= last; s++) {
					r.senders[s].send_to(r.sock.local(), 100 + s);
					l.sent(r.senders[s].local(), r.sock.local(), 100 + s);
					r.sent[s]++;
				}
	};
	// Each flood delivered before the next step: on a busy machine loopback
	// delivers after sendto() returns, and not always in order.
	flood(150, 0, 1);
	testutil::loopback_barrier();
	flood(40, 2, 2); // the buffers are full: none of these gets in
	testutil::loopback_barrier();
	for (auto &r : rx)
		drain(l, r, with_address);
	flood(150, 0, 1);
	testutil::loopback_barrier();
	for (auto &r : rx)
		drain(l, r, with_address);

	std::uint64_t drops = 0;
	for (auto &r : rx) {
		expect(r.read[2] == 0, "the third sender's datagrams all found the buffer full");
		for (std::size_t s = 0; s < r.senders.size(); s++) {
			l.dropped(r.sock.local(), r.senders[s].local(), r.sent[s] - r.read[s]);
			drops += r.sent[s] - r.read[s];
		}
		l.socket_dropped(testutil::socket_drops(r.sock.fd()));
	}
	const accuracy::Mib after = accuracy::Mib::read();
	expect(drops > 0 &&
		       (after.v4 - before.v4).rcvbuf_errors + (after.v6 - before.v6).rcvbuf_errors == drops,
	       "the kernel counted every datagram not read in RcvbufErrors");
	expect(testutil::softnet_dropped() == softnet_before,
	       "no datagram was lost before reaching UDP (/proc/net/softnet_stat)");
	for (auto &r : rx)
		o.drops_only(r.sock.local(), r.senders[2].local());
}

// Receives that return no datagram, read with recv() on an unconnected
// socket, so that each datagram's sender is known from its arrival note: a
// copy to the application that fails (EFAULT: the kernel took the datagram
// off the queue and dropped it), and receives after shutdown(SHUT_RD), which
// return 0 once the queue is empty. A zero-length datagram is one.
void no_datagram(Ledger &l, Observer &, const Fam &f)
{
	Udp rx = bound(f), a = bound(f), b = bound(f);
	a.send_to(rx.local(), 10);
	l.sent(a.local(), rx.local(), 10);
	b.send_to(rx.local(), 20);
	l.sent(b.local(), rx.local(), 20);
	testutil::loopback_barrier();
	errno = 0;
	void *const unmapped = reinterpret_cast<void *>(4096);
	expect(::recv(rx.fd(), unmapped, 100, 0) < 0 && errno == EFAULT,
	       "a receive into an unmapped buffer fails with EFAULT");
	errno = 0;
	l.dropped_in_copy(a.local(), 1);
	expect(rx.recv() == 20, "the next receive reads the second datagram");
	l.received(rx.local(), b.local(), 20);

	a.send_to(rx.local(), 0);
	l.sent(a.local(), rx.local(), 0);
	b.send_to(rx.local(), 30);
	l.sent(b.local(), rx.local(), 30);
	testutil::loopback_barrier();
	expect(rx.recv() == 0, "a zero-length datagram");
	l.received(rx.local(), a.local(), 0);
	// ENOTCONN on an unconnected socket, and done all the same.
	::shutdown(rx.fd(), SHUT_RD);
	errno = 0;
	expect(rx.recv() == 30, "what was queued is read after shutdown(SHUT_RD)");
	l.received(rx.local(), b.local(), 30);
	for (int i = 0; i < 3; i++)
		expect(rx.recv() == 0, "a receive after shutdown(SHUT_RD) returns no datagram");
	a.send_to(rx.local(), 40);
	l.sent(a.local(), rx.local(), 40);
	testutil::loopback_barrier();
	expect(rx.recv() == 40, "a datagram that came after the shutdown is read");
	l.received(rx.local(), a.local(), 40);
	l.socket_dropped(testutil::socket_drops(rx.fd()));
}

// A socket whose reader has stopped, flooded with more datagrams than the
// notes spilled beyond a ring can number (65,536) while it drops nearly all
// of them; then another socket's queue, deeper than a ring, read with
// recv(): each datagram's sender is still known from its note. A tracer
// that takes senders from the datagrams themselves needs no such flood
// (it costs the kernel matrix's emulated guests seconds per backend).
void stopped_reader(Ledger &l, Observer &o, const Fam &f)
{
	const std::uint64_t softnet_before = testutil::softnet_dropped();
	Udp stuck = bound(f), flooder = bound(f);
	const int small = 4096;
	expect(setsockopt(stuck.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0, "SO_RCVBUF");
	// Read once before it stopped: its drops have an owner.
	flooder.send_to(stuck.local(), 8);
	l.sent(flooder.local(), stuck.local(), 8);
	l.received(stuck.local(), flooder.local(), stuck.recv());
	const std::uint64_t kFlood = o.notes_arrivals() ? 70'000 : 5'000;
	for (std::uint64_t i = 0; i < kFlood; i++) {
		flooder.send_to(stuck.local(), 8);
		l.sent(flooder.local(), stuck.local(), 8);
	}
	testutil::loopback_barrier();

	deep_queue(l, o, f); // another socket's 2,000 datagrams, 1,936 notes beyond its ring

	std::uint64_t read = 0;
	for (;;) {
		char buf[64];
		const ssize_t n = ::recv(stuck.fd(), buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			expect(errno == EAGAIN, "reading until the queue is empty");
			errno = 0;
			break;
		}
		l.received(stuck.local(), flooder.local(), static_cast<std::uint64_t>(n));
		read++;
	}
	expect(read > 0 && read < kFlood / 100, "the small buffer queued a few datagrams, dropped the rest");
	l.dropped(stuck.local(), flooder.local(), kFlood - read);
	l.socket_dropped(testutil::socket_drops(stuck.fd()));
	expect(testutil::softnet_dropped() == softnet_before,
	       "no datagram was lost before reaching UDP (/proc/net/softnet_stat)");
}

void rcvbuf_overflow(Ledger &l, Observer &o, const Fam &)
{
	rcvbuf_overflow_read(l, o, true);
}

void rcvbuf_overflow_recv(Ledger &l, Observer &o, const Fam &)
{
	rcvbuf_overflow_read(l, o, false);
}

// A socket filter that drops everything (SO_ATTACH_FILTER), then none.
void filtered(Ledger &l, Observer &, const Fam &f)
{
	Udp r = bound(f), a = bound(f), b = bound(f);
	// The receiver answers first: its drops have an owner.
	r.send_to(a.local(), 5);
	l.sent(r.local(), a.local(), 5);
	SockAddr from;
	l.received(a.local(), r.local(), a.recv_from(from));
	sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
	const sock_fprog prog{1, drop_all};
	expect(setsockopt(r.fd(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0,
	       "SO_ATTACH_FILTER");
	for (int i = 0; i < 7; i++) {
		a.send_to(r.local(), 30);
		l.sent(a.local(), r.local(), 30);
		b.send_to(r.local(), 31);
		l.sent(b.local(), r.local(), 31);
	}
	l.dropped(r.local(), a.local(), 7);
	l.dropped(r.local(), b.local(), 7);
	// Dropped before the filter goes (a busy machine delivers after sendto() returns).
	testutil::loopback_barrier();
	const int none = 0;
	expect(setsockopt(r.fd(), SOL_SOCKET, SO_DETACH_FILTER, &none, sizeof(none)) == 0,
	       "SO_DETACH_FILTER");
	a.send_to(r.local(), 32);
	l.sent(a.local(), r.local(), 32);
	l.received(r.local(), a.local(), r.recv_from(from));
	expect(from.port() == a.local().port(), "the filter dropped everything it saw");
	l.socket_dropped(testutil::socket_drops(r.fd()));
}

std::uint16_t checksum_fold(std::uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return static_cast<std::uint16_t>(~sum);
}

std::uint32_t checksum_add(std::uint32_t sum, const void *data, std::size_t len)
{
	const auto *p = static_cast<const std::uint8_t *>(data);
	for (std::size_t i = 0; i + 1 < len; i += 2)
		sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
	if (len % 2)
		sum += static_cast<std::uint32_t>(p[len - 1] << 8);
	return sum;
}

// A datagram from `from` to `to` with a wrong UDP checksum, handed to lo
// below IP (a packet socket), as a damaged frame from a network would
// arrive: no checksum offload vouches for it, and at 200 bytes of payload
// the kernel leaves the check to the socket's reader.
void send_damaged(const SockAddr &from, const SockAddr &to)
{
	std::vector<std::uint8_t> payload(200, 'c');
	udphdr uh{};
	uh.source = htons(from.port());
	uh.dest = htons(to.port());
	uh.len = htons(static_cast<std::uint16_t>(sizeof(uh) + payload.size()));
	std::vector<std::uint8_t> packet;
	std::uint32_t pseudo = 0;
	int proto;
	if (to.family() == AF_INET) {
		const auto &s = reinterpret_cast<const sockaddr_in *>(&from.ss)->sin_addr;
		const auto &d = reinterpret_cast<const sockaddr_in *>(&to.ss)->sin_addr;
		iphdr ip{};
		ip.version = 4;
		ip.ihl = 5;
		ip.ttl = 64;
		ip.protocol = IPPROTO_UDP;
		ip.tot_len = htons(static_cast<std::uint16_t>(sizeof(ip) + ntohs(uh.len)));
		ip.saddr = s.s_addr;
		ip.daddr = d.s_addr;
		ip.check = htons(checksum_fold(checksum_add(0, &ip, sizeof(ip))));
		pseudo = checksum_add(checksum_add(0, &s, 4), &d, 4) + IPPROTO_UDP + ntohs(uh.len);
		packet.assign(reinterpret_cast<std::uint8_t *>(&ip),
			      reinterpret_cast<std::uint8_t *>(&ip + 1));
		proto = ETH_P_IP;
	} else {
		const auto &s = reinterpret_cast<const sockaddr_in6 *>(&from.ss)->sin6_addr;
		const auto &d = reinterpret_cast<const sockaddr_in6 *>(&to.ss)->sin6_addr;
		ip6_hdr ip6{};
		ip6.ip6_flow = htonl(6u << 28);
		ip6.ip6_plen = uh.len;
		ip6.ip6_nxt = IPPROTO_UDP;
		ip6.ip6_hlim = 64;
		ip6.ip6_src = s;
		ip6.ip6_dst = d;
		pseudo = checksum_add(checksum_add(0, &s, 16), &d, 16) + IPPROTO_UDP + ntohs(uh.len);
		packet.assign(reinterpret_cast<std::uint8_t *>(&ip6),
			      reinterpret_cast<std::uint8_t *>(&ip6 + 1));
		proto = ETH_P_IPV6;
	}
	const std::uint16_t right = checksum_fold(
		checksum_add(checksum_add(pseudo, &uh, sizeof(uh)), payload.data(), payload.size()));
	uh.check = htons(static_cast<std::uint16_t>(right ^ 0x0101));
	packet.insert(packet.end(), reinterpret_cast<std::uint8_t *>(&uh),
		      reinterpret_cast<std::uint8_t *>(&uh + 1));
	packet.insert(packet.end(), payload.begin(), payload.end());

	const int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(proto));
	expect(fd >= 0, "a packet socket");
	sockaddr_ll ll{};
	ll.sll_family = AF_PACKET;
	ll.sll_protocol = htons(static_cast<std::uint16_t>(proto));
	ll.sll_ifindex = static_cast<int>(if_nametoindex("lo"));
	ll.sll_halen = ETH_ALEN;
	const ssize_t n =
		::sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr *>(&ll), sizeof(ll));
	::close(fd);
	expect(n == static_cast<ssize_t>(packet.size()), "a damaged datagram handed to lo");
}

// Datagrams whose checksum is wrong, found when the application reads them
// (recvmsg) and when it polls: each is a drop of its sender's flow.
void damaged(Ledger &l, Observer &, const Fam &f)
{
	// A frame handed to lo below IP carries no route: IPv4 then takes
	// 127.0.0.0/8 only with route_localnet, and a local source only with
	// accept_local (the namespace is the scenario's own).
	for (const char *knob : {"route_localnet", "accept_local"})
		std::ofstream(std::string("/proc/sys/net/ipv4/conf/lo/") + knob) << "1\n";
	const accuracy::Mib before = accuracy::Mib::read();
	Udp r = bound(f), a = bound(f), b = bound(f);
	// The receiver answers first: its drops have an owner.
	r.send_to(a.local(), 6);
	l.sent(r.local(), a.local(), 6);
	SockAddr from;
	l.received(a.local(), r.local(), a.recv_from(from));

	// Found by recvmsg(): three damaged ones queued ahead of a good one.
	send_damaged(b.local(), r.local());
	send_damaged(a.local(), r.local());
	send_damaged(b.local(), r.local());
	// Queued ahead of the good one, whichever CPU each was sent from.
	testutil::loopback_barrier();
	a.send_to(r.local(), 40);
	l.sent(a.local(), r.local(), 40);
	l.received(r.local(), a.local(), r.recv_from(from));
	expect(from.port() == a.local().port(), "recvmsg skipped the damaged datagrams");
	l.dropped(r.local(), b.local(), 2, true);
	l.dropped(r.local(), a.local(), 1, true);

	// Found by poll(), which checks the datagrams at the head of the queue.
	send_damaged(b.local(), r.local());
	send_damaged(b.local(), r.local());
	testutil::loopback_barrier();
	a.send_to(r.local(), 41);
	l.sent(a.local(), r.local(), 41);
	pollfd p{r.fd(), POLLIN, 0};
	expect(::poll(&p, 1, 10000) == 1 && (p.revents & POLLIN), "poll finds the good datagram");
	expect(testutil::socket_drops(r.fd()) == 5, "poll dropped the damaged datagrams ahead of it");
	l.dropped(r.local(), b.local(), 2, true);
	l.received(r.local(), a.local(), r.recv_from(from));
	l.socket_dropped(testutil::socket_drops(r.fd()));

	// Found by poll() with nothing good behind it, and the socket closed
	// without another receive: a client that gave up waiting.
	Udp q = bound(f);
	q.send_to(a.local(), 7);
	l.sent(q.local(), a.local(), 7);
	l.received(a.local(), q.local(), a.recv_from(from));
	send_damaged(b.local(), q.local());
	testutil::loopback_barrier();
	pollfd none{q.fd(), POLLIN, 0};
	expect(::poll(&none, 1, 0) == 0, "poll finds nothing to read behind the damaged datagram");
	expect(testutil::socket_drops(q.fd()) == 1, "poll dropped the damaged datagram");
	l.dropped(q.local(), b.local(), 1, true);
	l.socket_dropped(1);
	q.close();

	const accuracy::Mib after = accuracy::Mib::read();
	expect((after.v4 - before.v4).csum_errors + (after.v6 - before.v6).csum_errors == 6,
	       "the kernel counted each damaged datagram in InCsumErrors");
}

// The scenarios above once per family, in one run: under emulation (the
// kernel matrix) loading the tracer costs more than the traffic.
void filtered_both(Ledger &l, Observer &o, const Fam &)
{
	for (const Fam &f : kBoth)
		filtered(l, o, f);
}

void damaged_both(Ledger &l, Observer &o, const Fam &)
{
	for (const Fam &f : kBoth)
		damaged(l, o, f);
}

} // namespace

// A GSO send of `bytes` in segments of `segment`, through a control message.
void gso_send(Udp &tx, const SockAddr *to, std::size_t bytes, std::uint16_t segment)
{
	std::vector<char> payload(bytes, 'c');
	iovec iov{payload.data(), payload.size()};
	char control[CMSG_SPACE(sizeof(std::uint16_t))] = {};
	msghdr msg{};
	if (to) {
		msg.msg_name = const_cast<sockaddr *>(to->sa());
		msg.msg_namelen = to->len;
	}
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);
	cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(segment));
	std::memcpy(CMSG_DATA(cm), &segment, sizeof(segment));
	expect(sendmsg(tx.fd(), &msg, 0) == static_cast<ssize_t>(bytes), "a UDP_SEGMENT send");
}

Udp bound(const Fam &f)
{
	Udp s(f.af);
	s.bind(f.loopback);
	return s;
}

const std::vector<Scenario> &all()
{
	static const std::vector<Scenario> kAll = {
		{"connected client and server", kBoth, MibCheck::both_sides, false, connected},
		{"unconnected socket with several peers, both ways", kBoth, MibCheck::both_sides, false,
		 several_peers},
		{"a server reading with recv() learns each peer from the datagram", kBoth,
		 MibCheck::both_sides, false, recv_learns_peers},
		{"sendmmsg and recvmmsg count each message", kBoth, MibCheck::both_sides, false, mmsg},
		{"MSG_PEEK counts nothing; the read after it counts once", kBoth, MibCheck::both_sides, false,
		 peek},
		{"a short buffer counts the bytes copied, or the full length under MSG_TRUNC", kBoth,
		 MibCheck::both_sides, false, truncated},
		{"zero-length datagrams are datagrams", kBoth, MibCheck::both_sides, false, zero_length},
		{"refused sends count nothing: EMSGSIZE and ECONNREFUSED", kBoth, MibCheck::both_sides, false,
		 refused},
		{"connect() to a second peer, then connect(AF_UNSPEC)", kBoth, MibCheck::both_sides, false,
		 reconnect},
		{"an AF_INET6 socket talking to IPv4-mapped peers is IPv4 traffic",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 mapped},
		// GSO: OutDatagrams counts a segmented send once on some kernels.
		{"UDP_SEGMENT (GSO) sends count the datagrams on the wire", kBoth, MibCheck::receive_side,
		 false, gso},
		// GRO: InDatagrams counts a coalesced receive once as well.
		{"a UDP_GRO receiver counts each coalesced datagram as its segments", kBoth,
		 MibCheck::neither, false, gro},
		{"a socket shared with a forked child: exact totals, newest process named",
		 {kIpv4},
		 MibCheck::both_sides,
		 true,
		 forked},
		{"a receiver reading only with recv() knows every sender from the first datagram", kBoth,
		 MibCheck::both_sides, false, recv_only_senders},
		{"more datagrams queued unread than a ring of notes holds, then read with recv()", kBoth,
		 MibCheck::both_sides, false, deep_queue},
		{"a socket that read with recvfrom() for long, then recv(), stays exact", kBoth,
		 MibCheck::both_sides, false, recvfrom_then_recv},
		{"a socket connected with other senders' datagrams queued reads each as its sender's", kBoth,
		 MibCheck::both_sides, false, connect_with_queue},
		{"connected sockets report the local address getsockname() gives", kBoth,
		 MibCheck::both_sides, false, connected_ways},
		{"a multicast group on lo: each member's flows exact",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 multicast},
		{"a broadcast to two receivers: each receiver's flows exact",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 broadcast},
		{"an SO_REUSEPORT group of four sockets: each socket's flows exact", kBoth,
		 MibCheck::both_sides, false, reuseport},
		{"many threads on one socket", kBoth, MibCheck::both_sides, false, threads},
		{"a thread for each datagram: every thread's first send and receive counted", kBoth,
		 MibCheck::both_sides, false, thread_per_datagram},
		{"a socket storm: every short-lived socket reported, the flow table back to empty",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 storm},
		// Each of these runs both families in one run (the first interleaved).
		{"a small receive buffer flooded by two senders per family: every sender's drops exact",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 rcvbuf_overflow},
		{"receives that return no datagram count none: a failed copy, a shutdown(SHUT_RD)", kBoth,
		 MibCheck::both_sides, false, no_datagram},
		{"the same read with recv(): each datagram's sender known past hundreds of drops in a row",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 rcvbuf_overflow_recv},
		{"a socket whose reader stopped is flooded; another's deep queue read with "
		 "recv() stays exact",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 stopped_reader},
		{"a socket filter that drops everything: each sender's drops exact",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 filtered_both},
		{"damaged datagrams found by recvmsg() and by poll(): each sender's drops exact",
		 {kIpv4},
		 MibCheck::both_sides,
		 false,
		 damaged_both},
	};
	return kAll;
}

const Scenario &named(const std::string &name)
{
	for (const auto &s : all())
		if (s.name == name)
			return s;
	throw std::invalid_argument("no scenario named '" + name + "'");
}

} // namespace scenarios
