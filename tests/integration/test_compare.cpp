// SPDX-License-Identifier: LGPL-2.1-or-later
// The same traffic must give the same flows and counters under every
// backend. UDPI_COMPARE_BACKENDS names the backends that must all be there
// (the kernel matrix sets it per kernel); without it, every backend this
// kernel offers is compared.
#include <catch2/catch.hpp>

#include <linux/filter.h>
#include <netinet/udp.h>
#include <regex>
#include <sched.h>
#include <sstream>

#include "recorder.h"

using namespace udpintercept;
using namespace std::chrono_literals;
using testutil::Recorder;
using testutil::SockAddr;
using testutil::Udp;

namespace {

Udp at(const std::string &ip, std::uint16_t port)
{
	Udp s(ip.find(':') == std::string::npos ? AF_INET : AF_INET6);
	s.bind(ip, port);
	return s;
}

// Fixed ports in a fresh namespace: every run names its flows the same way.
void traffic()
{
	Udp c4 = at("127.0.0.1", 41001), s4 = at("127.0.0.1", 41002);
	c4.connect(s4.local());
	for (int i = 0; i < 7; i++)
		c4.send(123);
	for (int i = 0; i < 7; i++)
		s4.recv_from();

	Udp c6 = at("::1", 41003), s6 = at("::1", 41004);
	c6.connect(s6.local());
	for (int i = 0; i < 5; i++)
		c6.send(77);
	for (int i = 0; i < 5; i++)
		s6.recv(); // recv() without an address

	Udp hub = at("127.0.0.1", 41005);
	std::vector<Udp> peers;
	for (std::uint16_t p = 41006; p <= 41008; p++)
		peers.push_back(at("127.0.0.1", p));
	for (std::size_t i = 0; i < peers.size(); i++) {
		for (std::size_t k = 0; k <= i; k++)
			hub.send_to(peers[i].local(), 10 + i);
		for (std::size_t k = 0; k <= i; k++)
			peers[i].send_to(hub.local(), 3);
	}
	for (std::size_t i = 0; i < peers.size(); i++)
		for (std::size_t k = 0; k <= i; k++) {
			peers[i].recv_from();
			REQUIRE(hub.recv() == 3);
		}

	// Peeks, truncation, zero length, an IPv4-mapped peer, GSO.
	Udp v6any(AF_INET6);
	v6any.bind("::", 41009);
	v6any.send_to(SockAddr::parse("::ffff:127.0.0.1", 41002), 40);
	REQUIRE(s4.recv(65536, MSG_PEEK) == 40);
	REQUIRE(s4.recv(10) == 10);
	hub.send_to(s4.local(), 0);
	REQUIRE(s4.recv(65536, MSG_TRUNC) == 0);
	const int seg = 100;
	REQUIRE(setsockopt(hub.fd(), SOL_UDP, UDP_SEGMENT, &seg, sizeof(seg)) == 0);
	hub.send_to(peers[0].local(), 450);
	for (int i = 0; i < 5; i++)
		peers[0].recv_from();

	// Drops: a socket that served one datagram, then filters out everything,
	// from a sender it read and from one it never did.
	Udp filtered = at("127.0.0.1", 41010);
	peers[1].send_to(filtered.local(), 5);
	filtered.recv_from();
	sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
	const sock_fprog prog{1, drop_all};
	REQUIRE(setsockopt(filtered.fd(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0);
	for (int i = 0; i < 3; i++)
		peers[1].send_to(filtered.local(), 6);
	for (int i = 0; i < 2; i++)
		peers[2].send_to(filtered.local(), 7);
}

// Flows with their counters, one line each, sorted: comparable across backends.
std::string run_under(Backend b, bool sends_at_tracepoint = false, std::string *log = nullptr)
{
	testutil::enter_fresh_netns();
	Options o;
	o.backend = b;
	o.sends_at_tracepoint = sends_at_tracepoint;
	o.pid = static_cast<std::uint32_t>(getpid());
	if (log)
		o.log = [log](std::string_view line) { log->append(line).append("\n"); };
	Recorder rec(o);
	traffic();
	rec.stop();
	std::ostringstream out;
	for (const auto &[name, e] : rec.last_by_flow())
		out << to_string(e.family) << ' ' << name.local << " -> " << name.remote << " tx "
		    << e.tx_packets << '/' << e.tx_bytes << " rx " << e.rx_packets << '/' << e.rx_bytes
		    << " drops " << e.rx_drops << ' ' << to_string(e.kind) << '\n';
	out << "peer_unknown " << rec.tracer().stats().peer_unknown << '\n';
	return out.str();
}

bool available(Backend b)
{
	try {
		Options o;
		o.backend = b;
		Tracer t(o);
		return true;
	} catch (const Error &) {
		return false;
	}
}

} // namespace

TEST_CASE("every backend gives the same flows and counters for the same traffic", "[compare]")
{
	std::vector<Backend> backends;
	if (const char *want = std::getenv("UDPI_COMPARE_BACKENDS")) {
		std::istringstream names(want);
		std::string name;
		while (names >> name) {
			const auto b = parse_backend(name);
			REQUIRE(b);
			INFO("backend " << name << " must be available here");
			REQUIRE(available(*b));
			backends.push_back(*b);
		}
	} else {
		for (Backend b : {Backend::fentry, Backend::kprobe, Backend::tracepoint})
			if (available(b))
				backends.push_back(b);
	}
	REQUIRE(!backends.empty());

	const std::string reference = run_under(backends.front());
	INFO("under " << to_string(backends.front()) << ":\n" << reference);
	// 18 flows: both ends of the two connected pairs, the hub and its three peers, the
	// zero-length and IPv4-mapped senders to s4, the filtered socket's two senders both
	// ways; then the peer_unknown line.
	CHECK(std::count(reference.begin(), reference.end(), '\n') == 19);
	CHECK(reference.find("127.0.0.1:41010 -> 127.0.0.1:41007 tx 0/0 rx 1/5 drops 3") !=
	      std::string::npos);
	CHECK(reference.find("127.0.0.1:41010 -> 127.0.0.1:41008 tx 0/0 rx 0/0 drops 2") !=
	      std::string::npos);
	CHECK(reference.find("peer_unknown 0") != std::string::npos);
	for (std::size_t i = 1; i < backends.size(); i++) {
		INFO("backend " << to_string(backends[i]));
		CHECK(run_under(backends[i]) == reference);
	}
}

TEST_CASE("the tracepoint backend's two send paths give the same flows and counters", "[compare]")
{
	if (!available(Backend::tracepoint)) {
		WARN("no tracepoint backend on this kernel");
		return;
	}
	const std::string egress = run_under(Backend::tracepoint);
	INFO("sends at cgroup_skb/egress (or the kernel's only path):\n" << egress);
	CHECK(std::count(egress.begin(), egress.end(), '\n') == 19);
	CHECK(run_under(Backend::tracepoint, true) == egress);
}

TEST_CASE("programs verified on two threads, and maps made beside the start, count as on one CPU",
	  "[compare]")
{
	if (!available(Backend::tracepoint)) {
		WARN("no tracepoint backend on this kernel");
		return;
	}
	cpu_set_t all;
	REQUIRE(sched_getaffinity(0, sizeof(all), &all) == 0);
	std::string two_log, one_log;
	const std::string two = run_under(Backend::tracepoint, false, &two_log);
	cpu_set_t one;
	CPU_ZERO(&one);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &all)) {
			CPU_SET(cpu, &one);
			break;
		}
	REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
	std::string single;
	try {
		single = run_under(Backend::tracepoint, false, &one_log);
	} catch (...) {
		sched_setaffinity(0, sizeof(all), &all);
		throw;
	}
	REQUIRE(sched_setaffinity(0, sizeof(all), &all) == 0);

	constexpr std::string_view kTwoThreads = "(verified on two threads)";
	// The flow table, made on a thread from the start, and the object's other
	// hash maps and ring buffer, made beside it before the load.
	constexpr std::string_view kPremade = " maps made beside the start";
	// The number the pattern's group matches in `log`, or -1.
	const auto number = [](const std::string &log, const std::string &pattern) {
		std::smatch m;
		return std::regex_search(log, m, std::regex(pattern)) ? std::stoi(m[1]) : -1;
	};
	constexpr const char *kCreated = R"(and created (\d+) maps)";
	INFO("on every CPU the process may use:\n" << two_log << "on one CPU:\n" << one_log);
	const int created_alone = number(one_log, kCreated);
	CHECK(created_alone > 2);
	if (CPU_COUNT(&all) >= 2) {
		CHECK(two_log.find(kTwoThreads) != std::string::npos);
		// Made beside the start or by the load, the same maps are made.
		const int premade = number(two_log, R"((\d+))" + std::string(kPremade));
		CHECK(premade > 2);
		CHECK(premade + number(two_log, kCreated) == created_alone);
	} else {
		WARN("this process may run on one CPU only: both loads verified on one thread");
	}
	CHECK(one_log.find(kTwoThreads) == std::string::npos);
	CHECK(one_log.find(kPremade) == std::string::npos);
	CHECK(one_log.find("loaded ") != std::string::npos);
	CHECK(std::count(two.begin(), two.end(), '\n') == 19);
	CHECK(single == two);
}
