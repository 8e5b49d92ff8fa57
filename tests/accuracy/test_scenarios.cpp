// SPDX-License-Identifier: LGPL-2.1-or-later
// Every counting rule of the design's data model, each scenario held to its
// own ledger and to the kernel's UDP counters.
#include "oracle.h"

#include <netinet/udp.h>
#include <sys/wait.h>
#include <thread>

using namespace std::chrono_literals;
using accuracy::Ledger;
using accuracy::MibCheck;
using testutil::Recorder;
using testutil::SockAddr;
using testutil::Udp;

namespace {

// Both families, as the scenarios run each where it applies.
struct Fam {
	int af;
	const char *loopback;
};
const Fam kFamilies[] = {{AF_INET, "127.0.0.1"}, {AF_INET6, "::1"}};

Udp bound(const Fam &f)
{
	Udp s(f.af);
	s.bind(f.loopback);
	return s;
}

} // namespace

TEST_CASE("connected client and server", "[accuracy]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
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
		});
}

TEST_CASE("unconnected socket with several peers, both ways", "[accuracy]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
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
		});
}

TEST_CASE("a server reading with recv() learns each peer from the datagram", "[accuracy][recv]")
{
	// From the first datagram: the tracepoint backend notes arrivals from the start.
	auto options = accuracy::own_process();
	options.recv_peers_from_start = true;
	for (const auto &f : kFamilies)
		accuracy::run(
			[&](Ledger &l, Recorder &) {
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
			},
			accuracy::MibCheck::both_sides, options);
}

TEST_CASE("sendmmsg and recvmmsg count each message", "[accuracy][mmsg]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
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
			REQUIRE(sendmmsg(tx.fd(), msgs, kMsgs, 0) == kMsgs);
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
			REQUIRE(recvmmsg(rx.fd(), rmsgs, kMsgs, MSG_WAITFORONE, nullptr) == kMsgs);
			for (int i = 0; i < kMsgs; i++)
				l.received(rx.local(), tx.local(), rmsgs[i].msg_len);
		});
}

TEST_CASE("MSG_PEEK counts nothing; the read after it counts once", "[accuracy][peek]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
			Udp rx = bound(f), tx = bound(f);
			tx.send_to(rx.local(), 40);
			l.sent(tx.local(), rx.local(), 40);
			REQUIRE(rx.recv(65536, MSG_PEEK) == 40);
			REQUIRE(rx.recv(65536, MSG_PEEK) == 40);
			SockAddr from;
			l.received(rx.local(), tx.local(), rx.recv_from(from));
			// A zero-length datagram peeked, then read.
			tx.send_to(rx.local(), 0);
			l.sent(tx.local(), rx.local(), 0);
			REQUIRE(rx.recv(65536, MSG_PEEK) == 0);
			l.received(rx.local(), tx.local(), rx.recv_from(from));
		});
}

TEST_CASE("a short buffer counts the bytes copied, or the full length under MSG_TRUNC", "[accuracy][trunc]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
			Udp rx = bound(f), tx = bound(f);
			rx.connect(tx.local()); // recv() on a connected socket: the peer is the socket's
			tx.send_to(rx.local(), 500);
			tx.send_to(rx.local(), 500);
			l.sent(tx.local(), rx.local(), 500);
			l.sent(tx.local(), rx.local(), 500);
			REQUIRE(rx.recv(100) == 100);
			l.received(rx.local(), tx.local(), 100);
			REQUIRE(rx.recv(100, MSG_TRUNC) == 500);
			l.received(rx.local(), tx.local(), 500);
		});
}

TEST_CASE("zero-length datagrams are datagrams", "[accuracy]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
			Udp rx = bound(f), tx = bound(f);
			for (int i = 0; i < 3; i++) {
				tx.send_to(rx.local(), 0);
				l.sent(tx.local(), rx.local(), 0);
			}
			for (int i = 0; i < 3; i++) {
				SockAddr from;
				l.received(rx.local(), tx.local(), rx.recv_from(from));
			}
		});
}

TEST_CASE("refused sends count nothing: EMSGSIZE and ECONNREFUSED", "[accuracy][refused]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
			Udp tx = bound(f);
			SockAddr closed_port;
			{
				Udp gone = bound(f);
				closed_port = gone.local();
			}
			std::vector<char> huge(70000, 'x');
			errno = 0;
			CHECK(::sendto(tx.fd(), huge.data(), huge.size(), 0, closed_port.sa(),
				       closed_port.len) < 0);
			CHECK(errno == EMSGSIZE);

			tx.connect(closed_port);
			tx.send(10); // accepted; the ICMP port unreachable comes back
			l.sent(tx.local(), closed_port, 10);
			std::this_thread::sleep_for(50ms);
			errno = 0;
			CHECK(::send(tx.fd(), "x", 1, 0) < 0);
			CHECK(errno == ECONNREFUSED);
		});
}

TEST_CASE("connect() to a second peer, then connect(AF_UNSPEC)", "[accuracy][connect]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
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
			REQUIRE(::connect(s.fd(), &unspec, sizeof(unspec)) == 0);
			s.send_to(p3.local(), 13);
			l.sent(s.local(), p3.local(), 13);
			SockAddr from;
			l.received(p1.local(), s_connected, p1.recv_from(from));
			for (int i = 0; i < 2; i++)
				l.received(p2.local(), s_connected, p2.recv_from(from));
			l.received(p3.local(), s.local(), p3.recv_from(from));
		});
}

TEST_CASE("an AF_INET6 socket talking to IPv4-mapped peers is IPv4 traffic", "[accuracy][mapped]")
{
	accuracy::run([&](Ledger &l, Recorder &rec) {
		Udp v4 = bound(kFamilies[0]);
		Udp v6(AF_INET6);
		v6.bind("::");
		const SockAddr mapped = SockAddr::parse("::ffff:127.0.0.1", v4.local().port());
		for (int i = 0; i < 3; i++)
			v6.send_to(mapped, 25);
		SockAddr from;
		for (int i = 0; i < 3; i++) {
			REQUIRE(v4.recv_from(from) == 25);
			v4.send_to(from, 5);
		}
		// The v6 socket's own view of itself and its peer, in the tracer's IPv4 form.
		const SockAddr self = SockAddr::parse("0.0.0.0", v6.local().port());
		for (int i = 0; i < 3; i++) {
			l.sent(self, v4.local(), 25);
			l.received(v4.local(), SockAddr::parse("127.0.0.1", from.port()), 25);
			l.sent(v4.local(), SockAddr::parse("127.0.0.1", from.port()), 5);
			SockAddr back;
			REQUIRE(v6.recv_from(back) == 5);
			l.received(self, v4.local(), 5);
		}
		(void)rec;
	});
}

TEST_CASE("UDP_SEGMENT (GSO) sends count the datagrams on the wire", "[accuracy][gso]")
{
	for (const auto &f : kFamilies)
		accuracy::run(
			[&](Ledger &l, Recorder &) {
				Udp rx = bound(f), tx = bound(f);
				// Per call, through a control message...
				std::vector<char> payload(1000, 'g');
				iovec iov{payload.data(), payload.size()};
				char control[CMSG_SPACE(sizeof(std::uint16_t))] = {};
				msghdr msg{};
				const SockAddr to = rx.local();
				msg.msg_name = const_cast<sockaddr *>(to.sa());
				msg.msg_namelen = to.len;
				msg.msg_iov = &iov;
				msg.msg_iovlen = 1;
				msg.msg_control = control;
				msg.msg_controllen = sizeof(control);
				cmsghdr *cm = CMSG_FIRSTHDR(&msg);
				cm->cmsg_level = SOL_UDP;
				cm->cmsg_type = UDP_SEGMENT;
				cm->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
				const std::uint16_t seg = 100;
				std::memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
				REQUIRE(sendmsg(tx.fd(), &msg, 0) == 1000);
				l.sent(tx.local(), rx.local(), 1000, 10);
				// ...and for the socket, with a short last segment.
				const int sock_seg = 300;
				REQUIRE(setsockopt(tx.fd(), SOL_UDP, UDP_SEGMENT, &sock_seg,
						   sizeof(sock_seg)) == 0);
				tx.send_to(rx.local(), 1000);
				l.sent(tx.local(), rx.local(), 1000, 4);
				for (int i = 0; i < 14; i++) {
					SockAddr from;
					l.received(rx.local(), tx.local(), rx.recv_from(from));
				}
			},
			MibCheck::receive_side);
}

TEST_CASE("a socket shared with a forked child: exact totals, newest process named", "[accuracy][fork]")
{
	const auto everyone = udpintercept::Options{}; // the child too
	accuracy::run(
		[&](Ledger &l, Recorder &rec) {
			Udp rx = bound(kFamilies[0]), tx = bound(kFamilies[0]);
			tx.send_to(rx.local(), 10);
			l.sent(tx.local(), rx.local(), 10);
			const pid_t child = fork();
			REQUIRE(child >= 0);
			if (child == 0) {
				for (int i = 0; i < 4; i++)
					if (::sendto(tx.fd(), "abcdefghij", 10, 0, rx.local().sa(),
						     rx.local().len) != 10)
						_exit(1);
				_exit(0);
			}
			int status = 0;
			REQUIRE(waitpid(child, &status, 0) == child);
			REQUIRE(WIFEXITED(status));
			REQUIRE(WEXITSTATUS(status) == 0);
			for (int i = 0; i < 4; i++)
				l.sent(tx.local(), rx.local(), 10);
			for (int i = 0; i < 5; i++) {
				SockAddr from;
				l.received(rx.local(), tx.local(), rx.recv_from(from));
			}
			rec.stop(); // the final snapshot names the newest change's process
			const auto last =
				rec.of_flow({testutil::endpoint(tx.local()), testutil::endpoint(rx.local())});
			REQUIRE(!last.empty());
			CHECK(last.back().kind == udpintercept::EventKind::final);
			CHECK(last.back().pid == static_cast<std::uint32_t>(child));
		},
		MibCheck::both_sides, everyone);
}

TEST_CASE("many threads on one socket", "[accuracy][threads]")
{
	for (const auto &f : kFamilies)
		accuracy::run([&](Ledger &l, Recorder &) {
			Udp rx = bound(f), tx = bound(f);
			int rcvbuf = 4 << 20;
			REQUIRE(setsockopt(rx.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) ==
				0); // past rmem_max: nothing may drop
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
		});
}

TEST_CASE("sockets living across the tracer's start are counted from then on", "[accuracy][lifetime]")
{
	testutil::enter_fresh_netns();
	Udp rx = bound(kFamilies[1]), tx = bound(kFamilies[1]);
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
	accuracy::run([&](Ledger &l, Recorder &rec) {
		Udp rx = bound(kFamilies[0]);
		int rcvbuf = 8 << 20;
		REQUIRE(setsockopt(rx.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) ==
			0); // past rmem_max: nothing may drop
		// Thousands; the kernel matrix, under emulation, sets fewer.
		const int kSockets = std::getenv("UDPI_STORM_SOCKETS")
					     ? std::atoi(std::getenv("UDPI_STORM_SOCKETS"))
					     : 3000;
		for (int i = 0; i < kSockets; i++) {
			// Distinct ports, so that no two sockets share a flow's name.
			Udp s(AF_INET);
			s.bind("127.0.0.1", static_cast<std::uint16_t>(20000 + i));
			s.send_to(rx.local(), 8);
			l.sent(s.local(), rx.local(), 8);
			SockAddr from;
			l.received(rx.local(), s.local(), rx.recv_from(from));
			if (i % 500 == 0)
				rec.pump(1ms);
		}
		rec.pump(500ms);
		std::size_t closes = 0;
		for (const auto &e : rec.events)
			closes += e.kind == udpintercept::EventKind::close;
		CHECK(closes == static_cast<std::size_t>(kSockets));
		// Only the receiver's flows are open; then it closes too.
		CHECK(rec.tracer().stats().flows_active == static_cast<std::uint64_t>(kSockets));
		rx.close();
		rec.pump(500ms);
		CHECK(rec.tracer().stats().flows_active == 0);
	});
}
