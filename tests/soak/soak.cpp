// SPDX-License-Identifier: LGPL-2.1-or-later
// The soak: hours of traffic by hand, minutes in CI, through one tracer
// (the library, in this process, so that its memory can be watched).
//
//   soak [--seconds S] [--endpoints N] [--bulk-rate D]
//
// Three kinds of traffic at once, in a fresh network namespace:
//   - a DNS-like server that never closes, hearing one query from a new
//     client endpoint (its own address from 127.16.0.1 up, a new socket)
//     every millisecond until N endpoints have spoken: its flows end only by
//     expiry, and the table's room comes from expiring the longest idle;
//   - IPv6 clients opened, used for a few exchanges and closed, continuously;
//   - long-lived IPv4 and IPv6 pairs sending D datagrams a second in all.
// Every flow's totals (each expired part, its close or its final) are held
// to what the generator did: a DNS endpoint's query and answer sizes follow
// from its address, an IPv6 client's answers are one byte longer than its
// questions, the pairs keep a ledger. At the end: every flow exact, nothing
// untracked, the flow and socket tables empty once every socket has closed,
// and the process's memory and the maps' memory flat after the warm-up.
// Exit 0 if all holds, 1 if not, 2 for bad arguments, 77 without root (1 in
// CI).
#include <udpintercept/tracer.h>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <bpf/bpf.h>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "map_entries.h"
#include "testutil.h"

using namespace udpintercept;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testutil::SockAddr;
using testutil::Udp;

namespace {

struct Config {
	std::chrono::seconds duration{60};
	std::uint64_t endpoints = 0; // 0: one per millisecond of the duration
	std::uint64_t bulk_rate = 20000;
};

int failures = 0;

void fail(const std::string &what)
{
	if (failures++ < 20)
		std::printf("FAIL: %s\n", what.c_str());
}

struct Totals {
	std::uint64_t tx_bytes = 0, tx_packets = 0, rx_bytes = 0, rx_packets = 0;
	bool operator==(const Totals &) const = default;
	void add(const Totals &o)
	{
		tx_bytes += o.tx_bytes;
		tx_packets += o.tx_packets;
		rx_bytes += o.rx_bytes;
		rx_packets += o.rx_packets;
	}
	bool within(const Totals &o) const
	{
		return tx_bytes <= o.tx_bytes && tx_packets <= o.tx_packets && rx_bytes <= o.rx_bytes &&
		       rx_packets <= o.rx_packets;
	}
	std::string text() const
	{
		return "tx " + std::to_string(tx_packets) + "/" + std::to_string(tx_bytes) + " rx " +
		       std::to_string(rx_packets) + "/" + std::to_string(rx_bytes);
	}
};

Totals totals_of(const Event &e)
{
	return {e.tx_bytes, e.tx_packets, e.rx_bytes, e.rx_packets};
}

// --- the DNS-like server's clients: everything follows from the index ---

// 127.16.0.0 to 127.255.255.254, skipping .0 and .255 in the last byte: 15,605,760 endpoints,
// four hours and a third at one a millisecond. Endpoint i takes the address of i modulo that
// (with its sizes): by then the flows of the one before at that address ended hours ago.
constexpr std::uint32_t kDnsBase = 0x7f100000, kDnsEnd = 0x80000000; // 127.16.0.0, 128.0.0.0
constexpr std::uint64_t kDnsEndpoints = std::uint64_t(kDnsEnd - kDnsBase) / 256 * 254;

std::uint32_t dns_host(std::uint64_t i)
{
	return kDnsBase + static_cast<std::uint32_t>((i / 254) << 8 | (i % 254 + 1));
}

std::optional<std::uint64_t> dns_index(const Address &a)
{
	if (a.family != Family::ipv4)
		return std::nullopt;
	const std::uint32_t host = std::uint32_t(a.bytes[12]) << 24 | std::uint32_t(a.bytes[13]) << 16 |
				   std::uint32_t(a.bytes[14]) << 8 | a.bytes[15];
	if (host < kDnsBase || host >= kDnsEnd)
		return std::nullopt;
	const std::uint32_t off = host - kDnsBase, last = off & 0xff;
	if (last == 0 || last == 255)
		return std::nullopt;
	return std::uint64_t(off >> 8) * 254 + (last - 1);
}

std::size_t dns_query(std::uint64_t i)
{
	return 20 + i % 100;
}

std::size_t dns_answer(std::uint64_t i)
{
	return 40 + i % 300;
}

// --- what the generator did, shared with the checker at the end ---

struct Generated {
	std::atomic<std::uint64_t> dns_done{0}, dns_failed{0};
	std::atomic<std::uint64_t> churn_sockets{0}, datagrams{0}, sockets{0};
	Totals churn;                          // IPv6 clients' side, summed (written by its thread only)
	std::map<std::uint16_t, Totals> pairs; // by the sender's local port (the pairs' thread only)
	std::uint16_t dns_port = 0, churn_port = 0;
	std::vector<std::uint16_t> pair_receivers;
};

void dns_server(const Config &cfg, Generated &g, std::atomic<bool> &stop, Udp &server,
		Clock::time_point start)
{
	const auto to = server.local();
	const auto period = std::chrono::duration<double>(cfg.duration) / static_cast<double>(cfg.endpoints);
	std::vector<char> buf(512, 'q');
	for (std::uint64_t i = 0; i < cfg.endpoints && !stop; i++) {
		// One new endpoint per period: the server's rate, not the machine's.
		std::this_thread::sleep_until(
			start + std::chrono::duration_cast<Clock::duration>(period * double(i)));
		const std::uint64_t e = i % kDnsEndpoints; // its address and sizes
		Udp client(AF_INET);
		g.sockets++;
		sockaddr_in a{};
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(dns_host(e));
		if (bind(client.fd(), reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
			g.dns_failed++;
			continue;
		}
		SockAddr from;
		from.len = sizeof(from.ss);
		char in[1024];
		const bool ok =
			sendto(client.fd(), buf.data(), dns_query(e), 0, to.sa(), to.len) ==
				ssize_t(dns_query(e)) &&
			recvfrom(server.fd(), in, sizeof(in), 0, reinterpret_cast<sockaddr *>(&from.ss),
				 &from.len) == ssize_t(dns_query(e)) &&
			sendto(server.fd(), buf.data(), dns_answer(e), 0, from.sa(), from.len) ==
				ssize_t(dns_answer(e)) &&
			recv(client.fd(), in, sizeof(in), 0) == ssize_t(dns_answer(e));
		(ok ? g.dns_done : g.dns_failed)++;
		g.datagrams += 2;
	}
}

void churn6(Generated &g, std::atomic<bool> &stop, Udp &server)
{
	const auto to = server.local();
	char buf[2048] = {};
	for (std::uint64_t j = 0; !stop; j++) {
		Udp client(AF_INET6);
		g.sockets++;
		g.churn_sockets++;
		client.connect(to);
		const std::size_t z = 1 + j % 1000, k = 1 + j % 8;
		for (std::size_t n = 0; n < k; n++) {
			SockAddr from;
			from.len = sizeof(from.ss);
			if (send(client.fd(), buf, z, 0) != ssize_t(z) ||
			    recvfrom(server.fd(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr *>(&from.ss),
				     &from.len) != ssize_t(z) ||
			    sendto(server.fd(), buf, z + 1, 0, from.sa(), from.len) != ssize_t(z + 1) ||
			    recv(client.fd(), buf, sizeof(buf), 0) != ssize_t(z + 1)) {
				fail("an IPv6 exchange failed");
				return;
			}
			g.churn.add({z, 1, z + 1, 1});
			g.datagrams += 2;
		}
		std::this_thread::sleep_for(2ms); // a few hundred sockets a second
	}
}

void pairs(const Config &cfg, Generated &g, std::atomic<bool> &stop, std::vector<Udp> &senders,
	   std::vector<Udp> &receivers, Clock::time_point start)
{
	const double per_second = double(cfg.bulk_rate);
	char buf[1500] = {};
	for (std::uint64_t n = 0; !stop; n++) {
		std::this_thread::sleep_until(start +
					      std::chrono::duration_cast<Clock::duration>(
						      std::chrono::duration<double>(double(n) / per_second)));
		const std::size_t p = n % senders.size(), size = 64 + n % 1000;
		if (send(senders[p].fd(), buf, size, 0) != ssize_t(size) ||
		    recv(receivers[p].fd(), buf, sizeof(buf), 0) != ssize_t(size)) {
			fail("a pair's datagram failed");
			return;
		}
		g.pairs[senders[p].local().port()].add({size, 1, size, 1});
		g.datagrams++;
	}
}

// --- the tracer's side ---

struct Checker {
	explicit Checker(const Generated &generated) : g(generated) {}

	const Generated &g;
	std::unordered_map<std::uint64_t, Totals> dns_server_parts,
		dns_client_parts; // ended, not yet complete
	std::uint64_t dns_server_exact = 0, dns_client_exact = 0;
	Totals churn_clients, churn_servers;
	std::uint64_t churn_flows = 0;
	// Each IPv6 flow's lives summed, by its socket and its peer's port: an
	// expiry may end one life between a question and its answer, and the
	// next life carries the rest.
	std::map<std::pair<std::uint64_t, std::uint16_t>, Totals> churn_lives;
	std::map<std::uint16_t, Totals> pair_sent, pair_received; // by the sender's port
	std::uint64_t ends = 0, finals = 0, expires = 0, other = 0;

	// Whether an IPv6 flow's lives so far pair each question with its answer, one byte longer.
	bool churn_consistent(const std::pair<std::uint64_t, std::uint16_t> &flow, const Totals &t) const
	{
		const bool server = flow.second != g.churn_port;
		return server ? t.tx_packets == t.rx_packets && t.tx_bytes == t.rx_bytes + t.tx_packets
			      : t.tx_packets == t.rx_packets && t.rx_bytes == t.tx_bytes + t.rx_packets;
	}

	// The IPv6 flows whose lives together do not pair each question with its
	// answer, one byte longer, named on stderr (the first few).
	std::uint64_t churn_inconsistent() const
	{
		std::uint64_t bad = 0;
		for (const auto &[flow, t] : churn_lives) {
			const bool server = flow.second != g.churn_port;
			if (!churn_consistent(flow, t) && ++bad <= 5)
				std::fprintf(stderr, "soak: IPv6 %s flow of socket %llu, peer port %u: %s\n",
					     server ? "server" : "client",
					     static_cast<unsigned long long>(flow.first), flow.second,
					     t.text().c_str());
		}
		return bad;
	}

	void on_event(const Event &e)
	{
		if (e.kind == EventKind::connect || e.kind == EventKind::update)
			return;
		ends++;
		finals += e.kind == EventKind::final;
		expires += e.kind == EventKind::expire;
		const Totals t = totals_of(e);
		// A DNS client's address names it (its port may equal any other's).
		const auto client = dns_index(e.local.address), peer = dns_index(e.remote.address);
		if (client || peer) {
			const bool server = !client;
			const std::uint64_t i = client ? *client : *peer;
			if ((server ? e.local.port : e.remote.port) != g.dns_port) {
				fail("a DNS endpoint's flow with another port: " +
				     e.local.address.to_string() + ":" + std::to_string(e.local.port) +
				     " -> " + e.remote.address.to_string() + ":" +
				     std::to_string(e.remote.port));
				return;
			}
			auto &parts = server ? dns_server_parts : dns_client_parts;
			Totals &sum = parts[i];
			sum.add(t);
			const Totals expected = server ? Totals{dns_answer(i), 1, dns_query(i), 1}
						       : Totals{dns_query(i), 1, dns_answer(i), 1};
			if (sum == expected) {
				parts.erase(i);
				(server ? dns_server_exact : dns_client_exact)++;
			} else if (!sum.within(expected)) {
				fail("DNS endpoint " + std::to_string(i) +
				     (server ? " server side " : " client side ") + sum.text() +
				     ", expected " + expected.text());
				parts.erase(i);
			}
			return;
		}
		if (e.family == Family::ipv6 &&
		    (e.local.port == g.churn_port || e.remote.port == g.churn_port)) {
			const bool server = e.local.port == g.churn_port;
			const auto flow = std::make_pair(e.socket_id, e.remote.port);
			auto life = churn_lives.try_emplace(flow).first;
			life->second.add(t);
			// Lives that add up to whole exchanges need no keeping: whatever lives
			// follow must then add up on their own. So hours of clients, a few
			// hundred a second, do not grow this process (the RSS it holds flat).
			if (churn_consistent(flow, life->second))
				churn_lives.erase(life);
			churn_flows++;
			(server ? churn_servers : churn_clients).add(t);
			return;
		}
		for (std::size_t p = 0; p < g.pair_receivers.size(); p++) {
			if (e.local.port == g.pair_receivers[p]) {
				pair_received[e.remote.port].add(t);
				return;
			}
			if (e.remote.port == g.pair_receivers[p]) {
				pair_sent[e.local.port].add(t);
				return;
			}
		}
		if (other++ < 5)
			std::printf("no scenario: %s %s:%u -> %s:%u %s\n",
				    std::string(to_string(e.kind)).c_str(),
				    e.local.address.to_string().c_str(), e.local.port,
				    e.remote.address.to_string().c_str(), e.remote.port, t.text().c_str());
	}
};

long rss_kib()
{
	std::ifstream status("/proc/self/status");
	for (std::string line; std::getline(status, line);)
		if (line.rfind("VmRSS:", 0) == 0)
			return std::stol(line.substr(6));
	return -1;
}

// The tracer's maps, found among this process's fds by name.
struct Maps {
	int flows = -1, socks = -1;
	std::uint64_t memlock = 0; // bytes: this process's preallocated BPF maps and ring buffer
	// Bytes of maps allocated on use (local storage, the tracepoint backend's
	// per-socket arrival rings): they follow the sockets and tasks the
	// programs meet, not the tracer's own growth; printed, not held flat.
	std::uint64_t on_use = 0;
	int rx_rings = -1;
};

// Each map once: the loader makes the maps in one BPF object and loads the programs in
// others that share them, and each object holds a descriptor of every map.
Maps our_maps()
{
	Maps m;
	std::set<std::uint32_t> seen;
	DIR *d = opendir("/proc/self/fdinfo");
	while (dirent *e = readdir(d)) {
		if (e->d_name[0] == '.')
			continue;
		std::ifstream info(std::string("/proc/self/fdinfo/") + e->d_name);
		bool is_map = false;
		std::uint64_t memlock = 0;
		for (std::string line; std::getline(info, line);) {
			is_map |= line.rfind("map_id:", 0) == 0;
			if (line.rfind("memlock:", 0) == 0)
				memlock = std::stoull(line.substr(8));
		}
		if (!is_map)
			continue;
		const int fd = std::atoi(e->d_name);
		bpf_map_info info_{};
		__u32 len = sizeof(info_);
		if (bpf_obj_get_info_by_fd(fd, &info_, &len) != 0 || !seen.insert(info_.id).second)
			continue;
		if (info_.map_flags & BPF_F_NO_PREALLOC)
			m.on_use += memlock;
		else
			m.memlock += memlock;
		if (std::string(info_.name) == "rx_rings")
			m.rx_rings = fd;
		if (std::string(info_.name) == "flows")
			m.flows = fd;
		else if (std::string(info_.name) == "socks")
			m.socks = fd;
	}
	closedir(d);
	return m;
}

constexpr const char *kUsage =
	"usage: soak [--seconds S] [--endpoints N] [--bulk-rate D]\n"
	"Hours of traffic by hand, minutes in CI, through one tracer in this process, in a\n"
	"fresh network namespace: a DNS-like server hearing a new client endpoint every\n"
	"millisecond, IPv6 clients opened and closed continuously, and long-lived pairs.\n"
	"Every flow's totals are held to the generator's ledger; at the end nothing is\n"
	"untracked or left in the tables, and memory is flat after the warm-up.\n"
	"\n"
	"  --seconds S     how long the traffic runs (default 60)\n"
	"  --endpoints N   DNS client endpoints in all (default one a millisecond of S)\n"
	"  --bulk-rate D   datagrams a second the long-lived pairs send in all (default 20000)\n"
	"\n"
	"Exit status: 0 if all holds, 1 if not, 2 for bad arguments, 77 without root (1 with CI=true).\n";

// argv's options into cfg; false, with a message, if they are not soak's.
bool parse_args(int argc, char **argv, Config &cfg)
{
	for (int i = 1; i < argc; i += 2) {
		const std::string opt = argv[i];
		std::uint64_t *field = nullptr;
		std::uint64_t seconds = 0;
		if (opt == "--seconds")
			field = &seconds;
		else if (opt == "--endpoints")
			field = &cfg.endpoints;
		else if (opt == "--bulk-rate")
			field = &cfg.bulk_rate;
		else {
			std::fprintf(stderr, "soak: unknown option '%s' (soak --help says how to run it)\n",
				     opt.c_str());
			return false;
		}
		char *end = nullptr;
		const char *value = i + 1 < argc ? argv[i + 1] : "";
		errno = 0;
		*field = std::strtoull(value, &end, 10);
		if (!*value || *end || errno || value[0] == '-' || *field == 0) {
			std::fprintf(stderr, "soak: %s wants a positive whole number, not '%s'\n",
				     opt.c_str(), value);
			return false;
		}
		if (field == &seconds)
			cfg.duration = std::chrono::seconds(seconds);
	}
	return true;
}

} // namespace

int main(int argc, char **argv)
{
	Config cfg;
	if (testutil::asks_for_help(argc, argv)) {
		std::fputs(kUsage, stdout);
		return 0;
	}
	if (!parse_args(argc, argv, cfg))
		return 2;
	testutil::require_root_or_skip(argv[0]);
	if (!cfg.endpoints)
		cfg.endpoints = static_cast<std::uint64_t>(cfg.duration.count()) * 1000;
	testutil::enter_fresh_netns();

	Generated g;
	Udp dns(AF_INET), churn_server(AF_INET6);
	dns.bind("127.0.0.1");
	churn_server.bind("::1");
	g.dns_port = dns.local().port();
	g.churn_port = churn_server.local().port();
	std::vector<Udp> senders, receivers;
	for (const char *ip : {"127.0.0.1", "127.0.0.1", "::1", "::1"}) {
		receivers.emplace_back(ip[0] == ':' ? AF_INET6 : AF_INET);
		receivers.back().bind(ip);
		senders.emplace_back(ip[0] == ':' ? AF_INET6 : AF_INET);
		senders.back().connect(receivers.back().local());
		g.pair_receivers.push_back(receivers.back().local().port());
	}

	Checker checker(g);
	Options options;
	options.pid = static_cast<std::uint32_t>(getpid()); // this process's traffic: the tables are its own
	// Receivers here use recv() without an address (the DNS clients, on
	// short-lived unconnected sockets whose addresses the kernel reuses):
	// their senders come from the arrival notes, exact by default.
	Tracer tracer(options, [&](const Event &e) { checker.on_event(e); });
	std::printf("soak: %lld s, %llu DNS endpoints (one every %.3f ms), pairs at %llu datagrams/s, %s "
		    "backend\n",
		    static_cast<long long>(cfg.duration.count()),
		    static_cast<unsigned long long>(cfg.endpoints),
		    1000.0 * double(cfg.duration.count()) / double(cfg.endpoints),
		    static_cast<unsigned long long>(cfg.bulk_rate),
		    std::string(to_string(tracer.backend())).c_str());

	const auto start = Clock::now();
	std::atomic<bool> stop{false}, dns_stop{false};
	std::thread dns_thread(dns_server, std::cref(cfg), std::ref(g), std::ref(dns_stop), std::ref(dns),
			       start);
	std::thread churn_thread(churn6, std::ref(g), std::ref(stop), std::ref(churn_server));
	std::thread pairs_thread(pairs, std::cref(cfg), std::ref(g), std::ref(stop), std::ref(senders),
				 std::ref(receivers), start);

	// Samples every tenth of the run (at least every 5 s); the second half is after warm-up.
	const auto sample_every = std::max<Clock::duration>(cfg.duration / 10, 1s);
	const auto deadline = start + cfg.duration;
	const auto hard_deadline = start + cfg.duration * 3 / 2; // the DNS server may lag behind its pace
	auto next_sample = start;
	long rss_warm = -1, rss_max_after = 0;
	std::uint64_t memlock_warm = 0, memlock_after = 0;
	bool warm = false;
	while (Clock::now() < hard_deadline &&
	       (Clock::now() < deadline || g.dns_done + g.dns_failed < cfg.endpoints)) {
		tracer.poll(100ms);
		if (Clock::now() >= deadline)
			stop = true;
		if (Clock::now() < next_sample)
			continue;
		next_sample += sample_every;
		const auto s = tracer.stats();
		const long rss = rss_kib();
		const auto maps = our_maps();
		const double t = std::chrono::duration<double>(Clock::now() - start).count();
		if (!warm && Clock::now() >= start + cfg.duration / 2) {
			warm = true;
			rss_warm = rss;
			memlock_warm = maps.memlock;
		} else if (warm) {
			rss_max_after = std::max(rss_max_after, rss);
			memlock_after = std::max(memlock_after, maps.memlock);
		}
		std::printf(
			"t=%5.0f s  endpoints %llu  sockets %llu  datagrams %llu  flows_active %llu  "
			"expired %llu (early %llu)  lost %llu  untracked %llu  RSS %ld KiB  maps %llu KiB "
			"(+ on use %llu KiB)\n",
			t, static_cast<unsigned long long>(g.dns_done.load()),
			static_cast<unsigned long long>(g.sockets.load()),
			static_cast<unsigned long long>(g.datagrams.load()),
			static_cast<unsigned long long>(s.flows_active),
			static_cast<unsigned long long>(s.expired),
			static_cast<unsigned long long>(s.expired_early),
			static_cast<unsigned long long>(s.lost),
			static_cast<unsigned long long>(s.untracked_packets), rss,
			static_cast<unsigned long long>(maps.memlock / 1024),
			static_cast<unsigned long long>(maps.on_use / 1024));
		std::fflush(stdout);
	}
	stop = true;
	dns_stop = true;
	dns_thread.join();
	churn_thread.join();
	pairs_thread.join();
	const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

	// Every socket closed: the tables empty themselves (closes end the flows
	// of every socket, the DNS server's expiring-or-not ones included).
	senders.clear();
	receivers.clear();
	churn_server.close();
	dns.close();
	const auto maps = our_maps();
	const auto empty_by = Clock::now() + 60s;
	std::uint64_t flows_left = 0, socks_left = 0;
	do {
		tracer.poll(100ms);
		flows_left = testutil::map_entries(maps.flows, sizeof(std::uint64_t) * 4);
		socks_left = testutil::map_entries(maps.socks, sizeof(std::uint64_t));
	} while ((flows_left || socks_left || tracer.stats().flows_active) && Clock::now() < empty_by);
	// The arrival rings (tracepoint backend, attached on demand) are keyed by
	// socket address: said, for the record, how many outlive their sockets.
	if (const int rings = maps.rx_rings >= 0 ? maps.rx_rings : our_maps().rx_rings; rings >= 0)
		std::printf(
			"soak: arrival rings left once every socket closed: %llu\n",
			static_cast<unsigned long long>(testutil::map_entries(rings, sizeof(std::uint64_t))));
	const auto before_stop = tracer.stats();
	const std::uint64_t finals_before = checker.finals;
	tracer.stop();
	const auto s = tracer.stats();

	std::printf("soak: %.0f s: %llu DNS endpoints (%llu failed), %llu sockets, %llu datagrams; %llu "
		    "flows ended "
		    "(%llu expired, %llu of them early; %llu finals at stop), %llu snapshots (%llu lost), "
		    "RSS %ld KiB "
		    "after warm-up, at most %ld KiB after, maps %llu KiB\n",
		    seconds, static_cast<unsigned long long>(g.dns_done.load()),
		    static_cast<unsigned long long>(g.dns_failed.load()),
		    static_cast<unsigned long long>(g.sockets.load()),
		    static_cast<unsigned long long>(g.datagrams.load()),
		    static_cast<unsigned long long>(checker.ends), static_cast<unsigned long long>(s.expired),
		    static_cast<unsigned long long>(s.expired_early),
		    static_cast<unsigned long long>(checker.finals - finals_before),
		    static_cast<unsigned long long>(s.events), static_cast<unsigned long long>(s.lost),
		    rss_warm, rss_max_after, static_cast<unsigned long long>(memlock_warm / 1024));

	// What the generator did, the tracer reported: every flow exact.
	if (g.dns_done != cfg.endpoints)
		fail("the DNS server heard " + std::to_string(g.dns_done) + " endpoints of " +
		     std::to_string(cfg.endpoints) + " (" + std::to_string(g.dns_failed) + " failed)");
	if (checker.dns_server_exact != g.dns_done || checker.dns_client_exact != g.dns_done)
		fail("DNS flows exact: server side " + std::to_string(checker.dns_server_exact) +
		     ", client side " + std::to_string(checker.dns_client_exact) + ", of " +
		     std::to_string(g.dns_done) + " (" +
		     std::to_string(checker.dns_server_parts.size() + checker.dns_client_parts.size()) +
		     " incomplete)");
	if (const std::uint64_t bad = checker.churn_inconsistent())
		fail(std::to_string(bad) + " IPv6 flows whose answers and questions disagree");
	if (!(checker.churn_clients == g.churn) ||
	    !(checker.churn_servers ==
	      Totals{g.churn.rx_bytes, g.churn.rx_packets, g.churn.tx_bytes, g.churn.tx_packets}))
		fail("IPv6 clients: traced " + checker.churn_clients.text() + ", servers " +
		     checker.churn_servers.text() + ", ledger " + g.churn.text());
	for (const auto &[port, t] : g.pairs) {
		const Totals sent{t.tx_bytes, t.tx_packets, 0, 0}, received{0, 0, t.rx_bytes, t.rx_packets};
		if (!(checker.pair_sent[port] == sent) || !(checker.pair_received[port] == received))
			fail("pair from port " + std::to_string(port) + ": traced " +
			     checker.pair_sent[port].text() + " and " + checker.pair_received[port].text() +
			     ", ledger " + t.text());
	}
	if (checker.other)
		fail(std::to_string(checker.other) + " flows of no scenario");
	// Nothing lost uncounted, nothing left.
	if (s.flows_untracked || s.sockets_untracked || s.insert_failures)
		fail("untracked: flows " + std::to_string(s.flows_untracked) + ", sockets " +
		     std::to_string(s.sockets_untracked) + "; insert failures " +
		     std::to_string(s.insert_failures));
	if (flows_left || socks_left || before_stop.flows_active)
		fail("left in the tables once every socket closed: " + std::to_string(flows_left) +
		     " flows, " + std::to_string(socks_left) + " sockets (flows_active " +
		     std::to_string(before_stop.flows_active) + ")");
	if (checker.finals != finals_before)
		fail("finals at stop for flows that should have ended: " +
		     std::to_string(checker.finals - finals_before));
	// Flat after warm-up: the table is full and churning by then; 8 MiB is
	// what a leak of 40 bytes per DNS endpoint would pass in a CI run.
	if (rss_warm < 0 || rss_max_after - rss_warm > 8192)
		fail("RSS grew after warm-up: " + std::to_string(rss_warm) + " -> " +
		     std::to_string(rss_max_after) + " KiB");
	// The tables are preallocated; what the kernel reports for them follows the entries in use.
	if (memlock_after > memlock_warm + (1u << 20))
		fail("map memory grew after warm-up: " + std::to_string(memlock_warm) + " -> " +
		     std::to_string(memlock_after));
	std::printf("soak: %s\n",
		    failures ? "FAILED" : "every flow exact, nothing untracked or left, memory flat");
	return failures ? 1 : 0;
}
