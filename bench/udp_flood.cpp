// SPDX-License-Identifier: LGPL-2.1-or-later
// udp_flood: a bounded loopback UDP flood that keeps its own ledger, so that
// bench/run_bench can measure throughput and check a tracer's counters
// against what really happened, flow by flow.
#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <getopt.h>
#include <netinet/in.h>
#include <sched.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "args.h"

namespace {

constexpr const char *kUsage = R"(Usage: udp_flood [OPTION]...
Send UDP datagrams over loopback for a fixed time from one thread and receive
them in another thread of the same process, then print one JSON line with
the ledger: what was sent and received, per flow, and the ports used.

  -s, --size BYTES     payload of each datagram (default 64)
  -t, --seconds S      how long to send (default 2); the receiver then drains
  -f, --family FAMILY  ipv4 (127.0.0.1, default) or ipv6 (::1)
      --sockets N      N sender sockets, round robin, all to one receiver:
                       N flows (default 1)
      --flows N        one sender socket to N receiver sockets: N flows
                       (default 1); cannot be combined with --sockets
  -w, --window N       at most N datagrams in flight between sender and
                       receiver (default 1024; 0 = no limit, the sender
                       then outruns the receiver and the kernel drops)
      --send CALL      how datagrams are sent: sendto (default: unconnected
                       sockets, the address with each datagram), send (each
                       sender socket connect()ed to its receiver; not with
                       --flows), sendmmsg (unconnected, --batch datagrams
                       per call, each with its address), oneshot (a new
                       socket for each datagram: socket(), connect(), send(),
                       close(), as a client that opens a socket a query
                       does; one receiver, which reads with recvfrom or
                       recvmmsg; the ledger then counts by port, which the
                       sockets of a run share as the kernel reuses them)
      --recv CALL      how they are received: recvfrom (default: the sender's
                       address with each datagram), recv (no address asked
                       for, on unconnected sockets: the sender's index
                       travels in the payload, so --size must be 2 or more
                       with several senders), recvmmsg (up to --batch
                       datagrams per call, each with its sender's address)
  -b, --batch N        datagrams per sendmmsg/recvmmsg call (default 32)
      --cpus S,R       run the sender thread on CPU S and the receiver thread
                       on CPU R (default: wherever the scheduler puts them,
                       which may move them, or put both on one CPU, between
                       runs)
  -h, --help           this text

The JSON line carries: sent/sent_bytes (datagrams and bytes the kernel
accepted), received/received_bytes, elapsed (seconds from the first send to
the last datagram received), rate (received datagrams per second), the calls
used, the ports, and "flows": one entry per (local port, remote port) with
the counters a tracer should report for it. sender_cpu_s and receiver_cpu_s
are each thread's CPU time (with the softirq work done in its context: on
loopback a send delivers its datagram before it returns), and
sender_window_wait_s the time the sender waited for the window: a sender
that hardly waits bounds the rate, one that waits long is held back by the
receiver.
)";

[[noreturn]] void usage_error(const std::string &msg)
{
	bench::usage_error("udp_flood", msg);
}

[[noreturn]] void die(const std::string &what)
{
	fmt::print(stderr, "udp_flood: {}: {}\n", what, std::strerror(errno));
	std::exit(1);
}

template <typename T> T parse_number(std::string_view text, const char *what, T min, T max)
{
	return bench::parse_number<T>("udp_flood", text, what, min, max);
}

enum class SendCall { sendto, send, sendmmsg, oneshot };
enum class RecvCall { recvfrom, recv, recvmmsg };

constexpr const char *name_of(SendCall c)
{
	switch (c) {
	case SendCall::sendto:
		return "sendto";
	case SendCall::send:
		return "send";
	case SendCall::sendmmsg:
		return "sendmmsg";
	case SendCall::oneshot:
		return "oneshot";
	}
	return "?";
}

constexpr const char *name_of(RecvCall c)
{
	return c == RecvCall::recvfrom ? "recvfrom" : c == RecvCall::recv ? "recv" : "recvmmsg";
}

struct Config {
	std::size_t size = 64;
	double seconds = 2;
	int family = AF_INET;
	unsigned sockets = 1;
	unsigned flows = 1;
	std::uint64_t window = 1024;
	SendCall send = SendCall::sendto;
	RecvCall recv = RecvCall::recvfrom;
	unsigned batch = 32;
	int sender_cpu = -1; ///< --cpus; -1: not pinned
	int receiver_cpu = -1;
};

// recv() gives no address: the sender's index leads each datagram's payload
// (little-endian), so the receiver's ledger does not depend on the tracer.
constexpr std::size_t kTagBytes = 2;

Config parse(int argc, char **argv)
{
	enum { kSockets = 1000, kFlows, kSend, kRecv, kCpus };
	static const option longopts[] = {
		{"size", required_argument, nullptr, 's'},
		{"seconds", required_argument, nullptr, 't'},
		{"family", required_argument, nullptr, 'f'},
		{"sockets", required_argument, nullptr, kSockets},
		{"flows", required_argument, nullptr, kFlows},
		{"window", required_argument, nullptr, 'w'},
		{"send", required_argument, nullptr, kSend},
		{"recv", required_argument, nullptr, kRecv},
		{"batch", required_argument, nullptr, 'b'},
		{"cpus", required_argument, nullptr, kCpus},
		{"help", no_argument, nullptr, 'h'},
		{nullptr, 0, nullptr, 0},
	};
	Config cfg;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":s:t:f:w:b:h", longopts, nullptr)) != -1) {
		const std::string_view arg = optarg ? optarg : "";
		switch (c) {
		case 's':
			cfg.size = parse_number<std::size_t>(arg, "size", 0, 65000);
			break;
		case 't':
			cfg.seconds = parse_number<double>(arg, "seconds", 0.001, 3600);
			break;
		case 'f':
			if (arg == "ipv4" || arg == "4")
				cfg.family = AF_INET;
			else if (arg == "ipv6" || arg == "6")
				cfg.family = AF_INET6;
			else
				usage_error(fmt::format("invalid family '{}': expected ipv4 or ipv6", arg));
			break;
		case kSockets:
			cfg.sockets = parse_number<unsigned>(arg, "--sockets", 1, 4096);
			break;
		case kFlows:
			cfg.flows = parse_number<unsigned>(arg, "--flows", 1, 4096);
			break;
		case 'w':
			cfg.window = parse_number<std::uint64_t>(arg, "window", 0, 1u << 20);
			break;
		case kSend:
			if (arg == "sendto")
				cfg.send = SendCall::sendto;
			else if (arg == "send")
				cfg.send = SendCall::send;
			else if (arg == "sendmmsg")
				cfg.send = SendCall::sendmmsg;
			else if (arg == "oneshot")
				cfg.send = SendCall::oneshot;
			else
				usage_error(fmt::format(
					"invalid --send '{}': expected sendto, send, sendmmsg or oneshot",
					arg));
			break;
		case kRecv:
			if (arg == "recvfrom")
				cfg.recv = RecvCall::recvfrom;
			else if (arg == "recv")
				cfg.recv = RecvCall::recv;
			else if (arg == "recvmmsg")
				cfg.recv = RecvCall::recvmmsg;
			else
				usage_error(fmt::format(
					"invalid --recv '{}': expected recvfrom, recv or recvmmsg", arg));
			break;
		case 'b':
			cfg.batch = parse_number<unsigned>(arg, "batch", 1, 1024);
			break;
		case kCpus: {
			const std::size_t comma = arg.find(',');
			if (comma == std::string_view::npos)
				usage_error(fmt::format(
					"invalid --cpus '{}': expected SENDER,RECEIVER (two CPU numbers)",
					arg));
			cfg.sender_cpu =
				parse_number<int>(arg.substr(0, comma), "sender CPU", 0, CPU_SETSIZE - 1);
			cfg.receiver_cpu =
				parse_number<int>(arg.substr(comma + 1), "receiver CPU", 0, CPU_SETSIZE - 1);
			break;
		}
		case 'h':
			fmt::print("{}", kUsage);
			std::exit(0);
		default:
			bench::option_error("udp_flood", c, argv);
		}
	}
	bench::no_operands("udp_flood", argc, argv);
	if (cfg.sockets > 1 && cfg.flows > 1)
		usage_error("--sockets and --flows cannot be combined: pick many senders or many receivers");
	if (cfg.send == SendCall::send && cfg.flows > 1)
		usage_error("--send send connects each sender socket to one receiver: it cannot be combined "
			    "with --flows (use sendto or sendmmsg)");
	if (cfg.send == SendCall::oneshot && (cfg.sockets > 1 || cfg.flows > 1))
		usage_error(
			"--send oneshot opens its own sockets, to one receiver: it cannot be combined with "
			"--sockets or --flows");
	if (cfg.send == SendCall::oneshot && cfg.recv == RecvCall::recv)
		usage_error("--send oneshot needs the senders' ports: use --recv recvfrom or recvmmsg");
	if (cfg.recv == RecvCall::recv && cfg.sockets > 1 && cfg.size < kTagBytes)
		usage_error("--recv recv with several senders needs --size 2 or more: the receiver learns "
			    "the sender from the payload");
	const bool batched = cfg.send == SendCall::sendmmsg || cfg.recv == RecvCall::recvmmsg;
	if (batched && cfg.window && cfg.window < cfg.batch)
		usage_error("--window must hold at least one --batch");
	return cfg;
}

struct Address {
	sockaddr_storage ss{};
	socklen_t len = 0;
};

Address loopback(int family, std::uint16_t port)
{
	Address a;
	if (family == AF_INET) {
		auto *sin = reinterpret_cast<sockaddr_in *>(&a.ss);
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a.len = sizeof(*sin);
	} else {
		auto *sin6 = reinterpret_cast<sockaddr_in6 *>(&a.ss);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_loopback;
		a.len = sizeof(*sin6);
	}
	return a;
}

std::uint16_t port_of(const sockaddr_storage &ss)
{
	if (ss.ss_family == AF_INET)
		return ntohs(reinterpret_cast<const sockaddr_in *>(&ss)->sin_port);
	return ntohs(reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_port);
}

// A socket bound to loopback with a kernel-chosen port. Senders are bound
// too, so that their ports are known before the first send and the ledger
// can be keyed by port from the start.
// A new UDP socket, bound (or connected) to `a`; its local port in *port.
int udp_socket(int family, int (*call)(int, const sockaddr *, socklen_t), const Address &a,
	       std::uint16_t *port)
{
	const int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (call(fd, reinterpret_cast<const sockaddr *>(&a.ss), a.len) != 0)
		die(call == bind ? "bind to loopback" : "connect");
	sockaddr_storage ss{};
	socklen_t len = sizeof(ss);
	if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0)
		die("getsockname");
	*port = port_of(ss);
	return fd;
}

int bound_socket(int family, std::uint16_t *port)
{
	return udp_socket(family, bind, loopback(family, 0), port);
}

// Room for the whole window, so that the flow control, not the kernel,
// limits the sender and no datagram is dropped: a drop would be counted
// as sent and never received. FORCE works as root; otherwise the
// rmem_max-capped size is the best there is.
void grow_receive_buffer(int fd)
{
	const int bytes = 8 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) != 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

struct Count {
	std::uint64_t packets = 0;
	std::uint64_t bytes = 0;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t)
{
	return std::chrono::duration<double>(Clock::now() - t).count();
}

// CPU time of the calling thread, with the softirq work the kernel did in its
// context (on loopback a send delivers the datagram, with the receive side's
// hooks, before it returns).
double thread_cpu_seconds()
{
	timespec ts{};
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct Flood {
	Config cfg;
	std::vector<int> send_fds, recv_fds;
	std::vector<std::uint16_t> send_ports, recv_ports;
	std::vector<Address> dests;
	// Sender index + 1 by source port: the receiver's ledger lookup.
	std::vector<std::uint16_t> sender_of_port = std::vector<std::uint16_t>(65536, 0);
	// One payload per sender socket, tagged with its index (see kTagBytes).
	std::vector<std::vector<char>> payloads;

	// Ledger, indexed [receiver * senders + sender]; with --send oneshot by
	// the sender's port instead (65,536 entries each).
	std::vector<Count> tx, rx;
	std::uint64_t send_errors = 0;
	int first_send_errno = 0;
	std::uint64_t foreign = 0; // datagrams from ports (or with tags) that are not ours

	// The receiver publishes its count for the sender's flow control; each
	// side writes its own cache line.
	alignas(64) std::atomic<std::uint64_t> received{0};
	alignas(64) std::atomic<bool> sender_done{false};
	std::atomic<std::uint64_t> sent_total{0};
	std::atomic<bool> receiver_ready{false};
	Clock::time_point start, last_receive, send_end;
	// Each thread's CPU time over its loop, and how long the sender waited for
	// the window: the figures that say which of the two bounds the rate.
	double sender_cpu = 0, sender_wait = 0, receiver_cpu = 0;

	std::size_t flow_index(std::size_t receiver, std::size_t sender) const
	{
		return receiver * send_fds.size() + sender;
	}

	void setup()
	{
		for (unsigned i = 0; i < cfg.sockets; i++) {
			if (!oneshot()) { // which opens a socket for each datagram
				std::uint16_t port;
				send_fds.push_back(bound_socket(cfg.family, &port));
				send_ports.push_back(port);
				sender_of_port[port] = static_cast<std::uint16_t>(i + 1);
			}
			std::vector<char> payload(std::max<std::size_t>(cfg.size, 1), 'u');
			if (cfg.size >= kTagBytes) {
				payload[0] = static_cast<char>(i & 0xff);
				payload[1] = static_cast<char>(i >> 8);
			}
			payloads.push_back(std::move(payload));
		}
		for (unsigned i = 0; i < cfg.flows; i++) {
			std::uint16_t port;
			recv_fds.push_back(bound_socket(cfg.family, &port));
			grow_receive_buffer(recv_fds.back());
			recv_ports.push_back(port);
			dests.push_back(loopback(cfg.family, port));
		}
		// --send send: the peer is the socket's, set once (parse() allows one receiver).
		if (cfg.send == SendCall::send)
			for (int fd : send_fds)
				if (connect(fd, reinterpret_cast<const sockaddr *>(&dests[0].ss),
					    dests[0].len) != 0)
					die("connect");
		const std::size_t entries = oneshot() ? 65536 : send_fds.size() * recv_fds.size();
		tx.resize(entries);
		rx.resize(entries);
	}

	bool oneshot() const { return cfg.send == SendCall::oneshot; }

	// --send oneshot: one datagram from a socket of its own, closed at once.
	bool send_oneshot(const std::vector<char> &payload)
	{
		std::uint16_t port;
		const int fd = udp_socket(cfg.family, connect, dests[0], &port);
		const ssize_t n = send(fd, payload.data(), cfg.size, 0);
		if (n >= 0) {
			Count &c = tx[port];
			c.packets++;
			c.bytes += static_cast<std::size_t>(n);
		} else {
			send_failed();
		}
		close(fd);
		return n >= 0;
	}

	void sent_one(std::size_t receiver, std::size_t sender, std::size_t bytes)
	{
		Count &c = tx[flow_index(receiver, sender)];
		c.packets++;
		c.bytes += bytes;
	}

	void send_failed()
	{
		if (!first_send_errno)
			first_send_errno = errno;
		send_errors++;
	}

	void send_loop()
	{
		const std::size_t nsend = send_fds.size(), nrecv = recv_fds.size();
		const std::size_t per_call = cfg.send == SendCall::sendmmsg ? cfg.batch : 1;
		std::vector<mmsghdr> msgs(per_call);
		std::vector<iovec> iovs(per_call);
		const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
						      std::chrono::duration<double>(cfg.seconds));
		std::size_t si = 0, ri = 0;
		std::uint64_t sent = 0, seen_received = 0;
		bool running = true;
		while (running) {
			for (int round = 0; round < 64; round++) {
				// Wait for the receiver only when the window looks full: the
				// shared counter is read as rarely as possible.
				if (cfg.window && sent + per_call - seen_received > cfg.window) {
					const Clock::time_point waiting = Clock::now();
					unsigned spins = 0;
					while ((seen_received = received.load(std::memory_order_acquire)),
					       sent + per_call - seen_received > cfg.window) {
						if (++spins % 64 == 0) {
							if (Clock::now() >= deadline) {
								sender_wait += seconds_since(waiting);
								goto out;
							}
							sched_yield();
						}
					}
					sender_wait += seconds_since(waiting);
				}
				std::vector<char> &payload = payloads[si];
				switch (cfg.send) {
				case SendCall::sendto: {
					const Address &d = dests[ri];
					const ssize_t n =
						sendto(send_fds[si], payload.data(), cfg.size, 0,
						       reinterpret_cast<const sockaddr *>(&d.ss), d.len);
					if (n >= 0) {
						sent_one(ri, si, static_cast<std::size_t>(n));
						sent++;
					} else {
						send_failed();
					}
					break;
				}
				case SendCall::send: {
					const ssize_t n = send(send_fds[si], payload.data(), cfg.size, 0);
					if (n >= 0) {
						sent_one(0, si, static_cast<std::size_t>(n));
						sent++;
					} else {
						send_failed();
					}
					break;
				}
				case SendCall::oneshot:
					sent += send_oneshot(payload);
					break;
				case SendCall::sendmmsg: {
					// One call from one socket; with several receivers each
					// message goes to the next.
					for (std::size_t j = 0; j < per_call; j++) {
						Address &d = dests[(ri + j) % nrecv];
						iovs[j] = {payload.data(), cfg.size};
						msgs[j] = {};
						msgs[j].msg_hdr.msg_name = &d.ss;
						msgs[j].msg_hdr.msg_namelen = d.len;
						msgs[j].msg_hdr.msg_iov = &iovs[j];
						msgs[j].msg_hdr.msg_iovlen = 1;
					}
					const int k = sendmmsg(send_fds[si], msgs.data(),
							       static_cast<unsigned>(per_call), 0);
					if (k < 0) {
						send_failed();
						break;
					}
					for (int j = 0; j < k; j++)
						sent_one((ri + static_cast<std::size_t>(j)) % nrecv, si,
							 msgs[j].msg_len);
					sent += static_cast<std::uint64_t>(k);
					if (nrecv > 1)
						ri = (ri + static_cast<std::size_t>(k)) % nrecv;
					break;
				}
				}
				if (nsend > 1)
					si = si + 1 == nsend ? 0 : si + 1;
				else if (nrecv > 1 && cfg.send != SendCall::sendmmsg)
					ri = ri + 1 == nrecv ? 0 : ri + 1;
			}
			running = Clock::now() < deadline;
		}
	out:
		send_end = Clock::now();
		sent_total.store(sent, std::memory_order_relaxed);
		sender_done.store(true, std::memory_order_release);
	}

	// Returns false when the receiver should stop: everything sent arrived, or
	// the sender is done and nothing came for a while (a datagram was lost).
	bool keep_receiving(std::uint64_t got, Clock::time_point idle_since) const
	{
		if (!sender_done.load(std::memory_order_acquire))
			return true;
		if (got >= sent_total.load(std::memory_order_relaxed))
			return false;
		return Clock::now() - idle_since < std::chrono::milliseconds(300);
	}

	void account(std::size_t receiver, std::uint16_t sender_plus_one, std::size_t bytes)
	{
		if (!sender_plus_one) {
			foreign++;
			return;
		}
		Count &c = rx[flow_index(receiver, sender_plus_one - 1u)];
		c.packets++;
		c.bytes += bytes;
	}

	// A datagram with its sender's address: by sender, or with --send oneshot by port.
	void account_from(std::size_t receiver, const sockaddr_storage &from, std::size_t bytes)
	{
		if (!oneshot()) {
			account(receiver, sender_of_port[port_of(from)], bytes);
			return;
		}
		Count &c = rx[port_of(from)];
		c.packets++;
		c.bytes += bytes;
	}

	std::uint16_t sender_of(const char *payload, std::size_t n) const
	{
		if (send_fds.size() == 1)
			return 1;
		if (n < kTagBytes)
			return 0;
		const unsigned index = static_cast<unsigned char>(payload[0]) |
				       static_cast<unsigned>(static_cast<unsigned char>(payload[1])) << 8;
		return index < send_fds.size() ? static_cast<std::uint16_t>(index + 1) : 0;
	}

	// What one receive call needs: a buffer per datagram of a batch.
	struct Scratch {
		std::vector<std::vector<char>> bufs;
		std::vector<sockaddr_storage> names;
		std::vector<iovec> iovs;
		std::vector<mmsghdr> msgs;

		explicit Scratch(std::size_t batch)
		    : bufs(batch, std::vector<char>(65536)), names(batch), iovs(batch), msgs(batch)
		{
		}
	};

	// One receive call on receiver i: the datagrams it consumed, or -1 with
	// errno when none was there (timeout, MSG_DONTWAIT) or a signal came.
	int receive(std::size_t i, int flags, Scratch &s)
	{
		const int fd = recv_fds[i];
		switch (cfg.recv) {
		case RecvCall::recvfrom: {
			socklen_t len = sizeof(s.names[0]);
			const ssize_t n = recvfrom(fd, s.bufs[0].data(), s.bufs[0].size(), flags,
						   reinterpret_cast<sockaddr *>(&s.names[0]), &len);
			if (n < 0)
				return -1;
			account_from(i, s.names[0], static_cast<std::size_t>(n));
			return 1;
		}
		case RecvCall::recv: {
			const ssize_t n = recv(fd, s.bufs[0].data(), s.bufs[0].size(), flags);
			if (n < 0)
				return -1;
			account(i, sender_of(s.bufs[0].data(), static_cast<std::size_t>(n)),
				static_cast<std::size_t>(n));
			return 1;
		}
		case RecvCall::recvmmsg: {
			for (std::size_t j = 0; j < s.msgs.size(); j++) {
				s.iovs[j] = {s.bufs[j].data(), s.bufs[j].size()};
				s.msgs[j] = {};
				s.msgs[j].msg_hdr.msg_name = &s.names[j];
				s.msgs[j].msg_hdr.msg_namelen = sizeof(s.names[j]);
				s.msgs[j].msg_hdr.msg_iov = &s.iovs[j];
				s.msgs[j].msg_hdr.msg_iovlen = 1;
			}
			// MSG_WAITFORONE: blocks for the first datagram only, then takes
			// what is queued, as batching receivers do.
			const int k = recvmmsg(fd, s.msgs.data(), static_cast<unsigned>(s.msgs.size()),
					       flags | MSG_WAITFORONE, nullptr);
			if (k <= 0)
				return -1;
			for (int j = 0; j < k; j++)
				account_from(i, s.names[j], s.msgs[j].msg_len);
			return k;
		}
		}
		return -1;
	}

	void receive_loop()
	{
		Scratch scratch(cfg.recv == RecvCall::recvmmsg ? cfg.batch : 1);
		std::uint64_t got = 0;
		auto idle_since = Clock::now();
		auto last = idle_since;

		// A timeout lets the receiver notice the end of the flood.
		const timeval tv{0, 50000};
		for (int fd : recv_fds)
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

		if (recv_fds.size() == 1) {
			// The common case: blocking calls on one socket.
			receiver_ready.store(true, std::memory_order_release);
			for (;;) {
				const int k = receive(0, 0, scratch);
				if (k > 0) {
					got += static_cast<std::uint64_t>(k);
					received.store(got, std::memory_order_release);
					last = Clock::now();
					continue;
				}
				if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
					die(name_of(cfg.recv));
				if (got)
					idle_since = last;
				if (!keep_receiving(got, idle_since))
					break;
			}
			last_receive = last;
			return;
		}

		const int ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0)
			die("epoll_create1");
		for (std::size_t i = 0; i < recv_fds.size(); i++) {
			epoll_event ev{};
			ev.events = EPOLLIN;
			ev.data.u64 = i;
			if (epoll_ctl(ep, EPOLL_CTL_ADD, recv_fds[i], &ev) != 0)
				die("epoll_ctl");
		}
		receiver_ready.store(true, std::memory_order_release);
		std::vector<epoll_event> ready(recv_fds.size());
		for (;;) {
			const int n = epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 50);
			if (n < 0 && errno != EINTR)
				die("epoll_wait");
			for (int j = 0; j < n; j++) {
				const std::size_t i = ready[j].data.u64;
				for (;;) {
					const int k = receive(i, MSG_DONTWAIT, scratch);
					if (k < 0) {
						if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
							die(name_of(cfg.recv));
						break;
					}
					got += static_cast<std::uint64_t>(k);
					received.store(got, std::memory_order_release);
					last = Clock::now();
				}
			}
			if (got)
				idle_since = last;
			if (n <= 0 && !keep_receiving(got, idle_since))
				break;
		}
		close(ep);
		last_receive = last;
	}

	// The calling thread onto cpu (--cpus), or left where it is (-1).
	static void pin_to(int cpu, const char *thread)
	{
		if (cpu < 0)
			return;
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) != 0)
			die(fmt::format("--cpus: the {} thread on CPU {}", thread, cpu));
	}

	void run()
	{
		std::thread receiver([this] {
			pin_to(cfg.receiver_cpu, "receiver");
			const double cpu = thread_cpu_seconds();
			receive_loop();
			receiver_cpu = thread_cpu_seconds() - cpu;
		});
		pin_to(cfg.sender_cpu, "sender");
		while (!receiver_ready.load(std::memory_order_acquire))
			std::this_thread::yield();
		start = Clock::now();
		const double cpu = thread_cpu_seconds();
		send_loop();
		sender_cpu = thread_cpu_seconds() - cpu;
		receiver.join();
	}

	void report() const
	{
		Count sent, got;
		for (const auto &c : tx) {
			sent.packets += c.packets;
			sent.bytes += c.bytes;
		}
		for (const auto &c : rx) {
			got.packets += c.packets;
			got.bytes += c.bytes;
		}
		const Clock::time_point end = got.packets ? last_receive : send_end;
		const double elapsed = std::chrono::duration<double>(end - start).count();
		const double send_seconds = std::chrono::duration<double>(send_end - start).count();

		// One entry per (local socket, remote port), as a tracer reports flows;
		// with --send oneshot per (local port, remote port), each port's sockets together.
		std::vector<std::string> flows;
		std::vector<std::uint16_t> sender_ports = send_ports;
		for (std::size_t p = 0; oneshot() && p < tx.size(); p++) {
			const Count &t = tx[p], &g = rx[p];
			if (t.packets) {
				sender_ports.push_back(static_cast<std::uint16_t>(p));
				flows.push_back(fmt::format(
					"{{\"local_port\":{},\"remote_port\":{},\"tx_packets\":{},"
					"\"tx_bytes\":{},\"rx_packets\":0,\"rx_bytes\":0}}",
					p, recv_ports[0], t.packets, t.bytes));
			}
			if (g.packets)
				flows.push_back(
					fmt::format("{{\"local_port\":{},\"remote_port\":{},\"tx_packets\":0,"
						    "\"tx_bytes\":0,\"rx_packets\":{},\"rx_bytes\":{}}}",
						    recv_ports[0], p, g.packets, g.bytes));
		}
		for (std::size_t r = 0; !oneshot() && r < recv_fds.size(); r++)
			for (std::size_t s = 0; s < send_fds.size(); s++) {
				const Count &t = tx[flow_index(r, s)], &g = rx[flow_index(r, s)];
				if (t.packets)
					flows.push_back(fmt::format(
						"{{\"local_port\":{},\"remote_port\":{},\"tx_packets\":{},"
						"\"tx_bytes\":{},\"rx_packets\":0,\"rx_bytes\":0}}",
						send_ports[s], recv_ports[r], t.packets, t.bytes));
				if (g.packets)
					flows.push_back(fmt::format(
						"{{\"local_port\":{},\"remote_port\":{},\"tx_packets\":0,"
						"\"tx_bytes\":0,\"rx_packets\":{},\"rx_bytes\":{}}}",
						recv_ports[r], send_ports[s], g.packets, g.bytes));
			}
		fmt::print(
			"{{\"pid\":{},\"family\":\"{}\",\"size\":{},\"seconds\":{},\"sockets\":{},"
			"\"flows_requested\":{},\"window\":{},\"send_call\":\"{}\",\"recv_call\":\"{}\","
			"\"batch\":{},\"sent\":{},\"sent_bytes\":{},"
			"\"send_errors\":{},\"send_errno\":{},\"received\":{},\"received_bytes\":{},"
			"\"foreign\":{},\"send_seconds\":{:.6f},\"elapsed\":{:.6f},\"rate\":{:.1f},"
			"\"sender_cpu_s\":{:.6f},\"sender_window_wait_s\":{:.6f},\"receiver_cpu_s\":{:.6f},"
			"\"sender_ports\":[{}],\"receiver_ports\":[{}],\"flows\":[{}]}}\n",
			getpid(), cfg.family == AF_INET ? "ipv4" : "ipv6", cfg.size, cfg.seconds, cfg.sockets,
			cfg.flows, cfg.window, name_of(cfg.send), name_of(cfg.recv), cfg.batch, sent.packets,
			sent.bytes, send_errors, first_send_errno, got.packets, got.bytes, foreign,
			send_seconds, elapsed, elapsed > 0 ? got.packets / elapsed : 0.0, sender_cpu,
			sender_wait, receiver_cpu, fmt::join(sender_ports, ","), fmt::join(recv_ports, ","),
			fmt::join(flows, ","));
		std::fflush(stdout);
	}
};

} // namespace

int main(int argc, char **argv)
{
	Flood flood;
	flood.cfg = parse(argc, argv);
	// Bounded whatever happens: a stuck flood must not hang a benchmark run.
	alarm(static_cast<unsigned>(flood.cfg.seconds) + 30);
	flood.setup();
	flood.run();
	flood.report();
	for (int fd : flood.send_fds)
		close(fd);
	for (int fd : flood.recv_fds)
		close(fd);
	return 0;
}
