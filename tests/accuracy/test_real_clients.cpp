// SPDX-License-Identifier: LGPL-2.1-or-later
// Real clients and devices people run, on the host (the kernel matrix's
// guests have neither): dig querying a dnsmasq the test starts on a loopback
// port; a GSO send through a bridge and one that waits for its next hop.
#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <regex>
#include <sched.h>
#include <sstream>
#include <sys/wait.h>
#include <thread>

#include "../integration/recorder.h"
#include "ledger.h"
#include "scenarios.h"

using namespace std::chrono_literals;
using testutil::Recorder;

namespace {

// A program's output, run to its end with a deadline.
struct Run {
	int status = -1;
	std::string out;
};

Run run(std::vector<std::string> argv, std::chrono::seconds deadline)
{
	int out[2];
	REQUIRE(pipe2(out, O_CLOEXEC) == 0);
	const pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(out[1], 2);
		std::vector<char *> args;
		for (auto &a : argv)
			args.push_back(a.data());
		args.push_back(nullptr);
		execvp(args[0], args.data());
		_exit(127);
	}
	close(out[1]);
	Run r;
	const auto end = std::chrono::steady_clock::now() + deadline;
	char buf[4096];
	for (;;) {
		pollfd p{out[0], POLLIN, 0};
		if (::poll(&p, 1, 100) > 0) {
			const ssize_t n = read(out[0], buf, sizeof(buf));
			if (n <= 0)
				break;
			r.out.append(buf, static_cast<std::size_t>(n));
		}
		if (std::chrono::steady_clock::now() > end) {
			kill(pid, SIGKILL);
			break;
		}
	}
	close(out[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	return r;
}

// Runs each command in turn; each must succeed.
void run_each(const std::vector<std::vector<std::string>> &commands)
{
	for (const auto &cmd : commands) {
		const Run r = run(cmd, 10s);
		INFO(r.out);
		REQUIRE(r.status == 0);
	}
}

// Whether a UDP socket of this network namespace is bound to 127.0.0.1:port.
bool listening(std::uint16_t port)
{
	std::ifstream udp("/proc/net/udp");
	char want[32];
	std::snprintf(want, sizeof(want), "0100007F:%04X", port);
	std::string line;
	while (std::getline(udp, line))
		if (line.find(want) != std::string::npos)
			return true;
	return false;
}

std::uint64_t size_after(const std::string &text, const std::string &label)
{
	std::smatch m;
	REQUIRE(std::regex_search(text, m, std::regex(label + R"(\s*(\d+))")));
	return std::stoull(m[1]);
}

} // namespace

TEST_CASE("dig querying dnsmasq: both ends' flows with the right addresses and exact bytes",
	  "[accuracy][real-clients][host]")
{
	testutil::enter_fresh_netns();
	constexpr std::uint16_t kPort = 5354;
	udpintercept::Options o;
	o.port = kPort; // both ends: dig's remote port, dnsmasq's local one
	Recorder rec(o);
	const auto before = accuracy::Mib::read();

	const pid_t dnsmasq = fork();
	REQUIRE(dnsmasq >= 0);
	if (dnsmasq == 0) {
		const int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		dup2(null, 2);
		execlp("dnsmasq", "dnsmasq", "--no-daemon", "--port=5354", "--listen-address=127.0.0.1",
		       "--bind-interfaces", "--no-resolv", "--no-hosts", "--address=/example.test/10.1.2.3",
		       "--user=root", "--pid-file=", static_cast<char *>(nullptr));
		_exit(127);
	}
	const auto end = std::chrono::steady_clock::now() + 10s;
	while (!listening(kPort) && std::chrono::steady_clock::now() < end)
		std::this_thread::sleep_for(20ms);
	REQUIRE(listening(kPort));

	// Three queries, each from a new dig: what each says it sent and received.
	std::vector<std::pair<std::uint64_t, std::uint64_t>> sizes;
	for (const char *name : {"a.example.test", "bb.example.test", "ccc.example.test"}) {
		const Run dig = run({"dig", "@127.0.0.1", "-p", std::to_string(kPort), "+qr", "+tries=1",
				     "+time=5", name, "A"},
				    20s);
		INFO(dig.out);
		REQUIRE(dig.status == 0);
		REQUIRE(dig.out.find("10.1.2.3") != std::string::npos);
		sizes.emplace_back(size_after(dig.out, "QUERY SIZE:"),
				   size_after(dig.out, "MSG SIZE  rcvd:"));
	}
	kill(dnsmasq, SIGTERM);
	waitpid(dnsmasq, nullptr, 0);
	const auto after = accuracy::Mib::read();
	rec.stop();

	const auto flows = rec.last_by_flow();
	const std::string server = "127.0.0.1:" + std::to_string(kPort);
	// dig's side: one flow per query, its socket bound to the wildcard then
	// connected, so its local address is the one connect() chose.
	std::vector<udpintercept::Event> clients, servers;
	for (const auto &[name, e] : flows) {
		if (name.remote == server)
			clients.push_back(e);
		else if (name.local == server)
			servers.push_back(e);
	}
	REQUIRE(clients.size() == sizes.size());
	REQUIRE(servers.size() == sizes.size());
	std::sort(clients.begin(), clients.end(),
		  [](const auto &a, const auto &b) { return a.time < b.time; });
	for (std::size_t i = 0; i < clients.size(); i++) {
		const auto &c = clients[i];
		INFO("query " << i << ": dig said " << sizes[i].first << " bytes sent, " << sizes[i].second
			      << " received");
		CHECK(c.local.address.to_string() == "127.0.0.1");
		CHECK(c.local.port != 0);
		CHECK(c.tx_packets == 1);
		CHECK(c.tx_bytes == sizes[i].first);
		CHECK(c.rx_packets == 1);
		CHECK(c.rx_bytes == sizes[i].second);
		// dnsmasq's flow of that client: the same endpoints, the other way.
		const auto s = std::find_if(servers.begin(), servers.end(), [&](const auto &e) {
			return testutil::endpoint(e.remote) == testutil::endpoint(c.local);
		});
		REQUIRE(s != servers.end());
		CHECK(s->comm == "dnsmasq");
		CHECK(s->rx_packets == 1);
		CHECK(s->rx_bytes == sizes[i].first);
		CHECK(s->tx_packets == 1);
		CHECK(s->tx_bytes == sizes[i].second);
	}
	CHECK(after.in4 - before.in4 == 2 * sizes.size());
	CHECK(after.out4 - before.out4 == 2 * sizes.size());
	// No datagram of this namespace went to an unknown peer (the tracer's own
	// peer_unknown counts the machine's sockets on this port too).
	for (const auto &[name, e] : flows)
		CHECK(e.remote.port != 0);
}

// Stacked devices pass one GSO skb through __dev_queue_xmit() once per
// device: here a bridge, then its veth port. The tracepoint backend's
// sock_send_length path (UDPI_TEST_SENDS=tracepoint) takes the segments
// there, and must take them once. The devices are modules in the kernel
// matrix's guests, which load none: a host test.
TEST_CASE("a GSO send through a bridge and its port counts the datagrams on the wire once",
	  "[accuracy][gso][host]")
{
	testutil::enter_fresh_netns();
	const std::vector<std::vector<std::string>> setup = {
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"ip", "link", "set", "v0", "master", "br0"},
		{"ip", "link", "set", "v0", "up"},
		{"ip", "link", "set", "v1", "up"},
		{"ip", "link", "set", "br0", "up"},
		{"ip", "addr", "add", "10.9.0.1/24", "dev", "br0"},
		// A peer known by its address: the bridge floods its unknown MAC to v0.
		{"ip", "neigh", "add", "10.9.0.3", "lladdr", "02:00:00:00:00:03", "dev", "br0", "nud",
		 "permanent"},
	};
	run_each(setup);
	// The bridge forwards through v0 once v0's carrier is up (the veth pair's
	// two ends up, which the kernel's link watch tells it within a second).
	const auto forwarding = [] {
		return run({"bridge", "link", "show", "dev", "v0"}, 10s).out.find("state forwarding") !=
		       std::string::npos;
	};
	const auto end = std::chrono::steady_clock::now() + 10s;
	while (!forwarding() && std::chrono::steady_clock::now() < end)
		std::this_thread::sleep_for(20ms);
	REQUIRE(forwarding());
	udpintercept::Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	testutil::Udp tx(AF_INET);
	tx.bind("10.9.0.1");
	const auto to = testutil::SockAddr::parse("10.9.0.3", 9);
	// v1's received packets, from this namespace's /proc/net/dev (/sys shows
	// the namespace that mounted it).
	const auto v1_received = [] {
		std::ifstream dev("/proc/net/dev");
		std::string line;
		while (std::getline(dev, line)) {
			std::replace(line.begin(), line.end(), ':', ' '); // "    v1:    3716      10 ..."
			std::istringstream in(line);
			std::string name;
			std::uint64_t bytes = 0, packets = 0;
			if (in >> name >> bytes >> packets && name == "v1")
				return packets;
		}
		return std::uint64_t{0};
	};
	const std::uint64_t v1_before = v1_received();
	for (int i = 0; i < 3; i++)
		scenarios::gso_send(tx, &to, 1000, 100);
	const testutil::FlowName flow{testutil::endpoint(tx.local()), "10.9.0.3:9"};
	rec.pump_until([&] { return rec.last_of(flow) && rec.last_of(flow)->tx_bytes == 3000; }, 5s);
	rec.stop();
	REQUIRE(rec.last_of(flow));
	CHECK(rec.last_of(flow)->tx_bytes == 3000);
	CHECK(rec.last_of(flow)->tx_packets == 30);
	// The three sends went out through v0: v1 received them (an skb each, still GSO).
	CHECK(v1_received() - v1_before >= 3);
}

namespace {

// A network namespace made with ip-netns(8), deleted at the end.
struct NamedNetns {
	const std::string name = "udpi-test-" + std::to_string(getpid());

	NamedNetns() { run_each({{"ip", "netns", "add", name}}); }
	NamedNetns(const NamedNetns &) = delete;
	NamedNetns &operator=(const NamedNetns &) = delete;
	~NamedNetns() { run({"ip", "netns", "del", name}, 10s); }
};

// A child in `netns` that receives `count` datagrams on port 9 of any
// address, bound when this returns; its exit status is 0 once they came (1:
// they did not in 10 s).
pid_t receive_in(const NamedNetns &netns, int count)
{
	const std::string path = "/run/netns/" + netns.name;
	int ready[2];
	REQUIRE(pipe2(ready, O_CLOEXEC) == 0);
	const pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		// Only system calls from here on: the parent may have had threads.
		const int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
		if (ns < 0 || setns(ns, CLONE_NEWNET) != 0)
			_exit(2);
		const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		sockaddr_in any{};
		any.sin_family = AF_INET;
		any.sin_port = htons(9);
		const timeval wait{10, 0};
		if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&any), sizeof(any)) != 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) != 0 ||
		    write(ready[1], "r", 1) != 1)
			_exit(3);
		char buf[2048];
		for (int i = 0; i < count; i++)
			if (recv(fd, buf, sizeof(buf), 0) < 0)
				_exit(1);
		_exit(0);
	}
	close(ready[1]);
	char r;
	const bool bound = read(ready[0], &r, 1) == 1;
	close(ready[0]);
	REQUIRE(bound);
	return pid;
}

} // namespace

// The first datagrams to a next hop whose link-layer address is not known
// wait in its neighbour entry's queue, and leave once an ARP reply names it:
// later, from a softirq, after the send returned. The default send path
// counts them as the send passes IP output, before the neighbour; the
// sock_send_length path (UDPI_TEST_SENDS=tracepoint) learns a GSO send's
// segments from __dev_queue_xmit() within the send, so such a send counts as
// one datagram there (the README's limits).
TEST_CASE("a GSO send that waits for its next hop's address counts the datagrams on the wire",
	  "[accuracy][gso][host]")
{
	testutil::enter_fresh_netns();
	const NamedNetns peer;
	const std::vector<std::vector<std::string>> setup = {
		{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", peer.name},
		{"ip", "addr", "add", "10.9.1.1/24", "dev", "v0"},
		{"ip", "link", "set", "v0", "up"},
		{"ip", "-n", peer.name, "link", "set", "v1", "up"},
	};
	run_each(setup);
	// An ARP probe every 100 ms (the third unanswered one drops the queue).
	REQUIRE(bool(std::ofstream("/proc/sys/net/ipv4/neigh/v0/retrans_time_ms") << 100 << std::flush));
	const pid_t receiver = receive_in(peer, 10);
	udpintercept::Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	Recorder rec(o);
	testutil::Udp tx(AF_INET);
	tx.bind("10.9.1.1");
	const auto to = testutil::SockAddr::parse("10.9.1.2", 9);
	scenarios::gso_send(tx, &to, 1000, 100);
	// The peer takes the address only now, so the send has returned well
	// before the ARP reply that lets its datagrams go.
	std::this_thread::sleep_for(30ms);
	run_each({{"ip", "-n", peer.name, "addr", "add", "10.9.1.2/24", "dev", "v1"}});
	int status = -1;
	REQUIRE(waitpid(receiver, &status, 0) == receiver);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0); // the ten datagrams reached the peer
	const testutil::FlowName flow{testutil::endpoint(tx.local()), "10.9.1.2:9"};
	rec.pump_until([&] { return rec.last_of(flow) && rec.last_of(flow)->tx_bytes == 1000; }, 5s);
	rec.stop();
	REQUIRE(rec.last_of(flow));
	CHECK(rec.last_of(flow)->tx_bytes == 1000);
	CHECK(rec.last_of(flow)->tx_packets == (testutil::test_sends_at_tracepoint() ? 1u : 10u));
}
