// SPDX-License-Identifier: LGPL-2.1-or-later
// Several consumer threads at once, built with ThreadSanitizer together with
// the shim's sources (see meson.build): any data race fails the test.
//
//   queue  the EventQueue alone, no privileges: one producer, four
//          consumers, a small queue that sheds; every event reaches exactly
//          one consumer or is counted as shed, in order; close() from a
//          signal handler wakes every consumer
//   shim   the whole shim, as root: four threads in DequeuePerfEvent() while
//          real traffic runs in a fresh network namespace; every snapshot
//          reaches exactly one of them, totals are exact, cleanup() wakes
//          them all
//
// usage: compat_threads_tsan queue|shim
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

#include "event_queue.h"
#include "testutil.h"
#include "udpEvent.h"

namespace {

using Clock = std::chrono::steady_clock;

int failures = 0;

#define CHECK(cond, ...)                                                                                     \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                            \
			std::fprintf(stderr, __VA_ARGS__);                                                   \
			std::fputc('\n', stderr);                                                            \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

bool zeroed(const udp_event_t &event)
{
	const udp_event_t zero{};
	return std::memcmp(&event, &zero, sizeof(event)) == 0;
}

// ---- queue ----

udpevent::EventQueue *g_queue = nullptr;

void close_from_handler(int)
{
	g_queue->close();
}

void queue_sheds_oldest()
{
	udpevent::EventQueue q;
	q.reopen(4);
	for (std::uint64_t i = 1; i <= 10; i++) {
		udp_event_t e{};
		e.tx_b = i;
		CHECK(q.push(e), "push %llu refused", static_cast<unsigned long long>(i));
	}
	CHECK(q.size() == 4 && q.shed() == 6, "size %zu shed %llu after 10 pushes into 4", q.size(),
	      static_cast<unsigned long long>(q.shed()));
	for (std::uint64_t i = 7; i <= 10; i++) {
		const udp_event_t e = q.pop();
		CHECK(e.tx_b == i, "popped %llu, expected %llu (the oldest are shed)",
		      static_cast<unsigned long long>(e.tx_b), static_cast<unsigned long long>(i));
	}
	q.close();
	udp_event_t e{};
	e.tx_b = 1;
	CHECK(!q.push(e), "push after close() accepted");
	CHECK(zeroed(q.pop()), "pop after close() not zeroed");
}

int queue_mode()
{
	queue_sheds_oldest();

	constexpr int kConsumers = 4;
	constexpr std::uint64_t kEvents = 200000;
	udpevent::EventQueue q;
	q.reopen(64);
	std::vector<std::vector<std::uint64_t>> got(kConsumers);
	std::vector<std::thread> consumers;
	for (int i = 0; i < kConsumers; i++)
		consumers.emplace_back([&q, &got, i] {
			for (;;) {
				const udp_event_t e = q.pop();
				if (zeroed(e))
					return;
				got[static_cast<size_t>(i)].push_back(e.tx_b);
			}
		});
	for (std::uint64_t i = 1; i <= kEvents; i++) {
		udp_event_t e{};
		e.tx_b = i;
		e.pid = 1;
		q.push(e);
		if (i % 1024 == 0)
			sched_yield();
	}
	const auto deadline = Clock::now() + std::chrono::seconds(30);
	while (q.size() > 0 && Clock::now() < deadline)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	q.close();
	for (auto &t : consumers)
		t.join();

	std::set<std::uint64_t> all;
	std::size_t received = 0;
	for (int i = 0; i < kConsumers; i++) {
		const auto &mine = got[static_cast<size_t>(i)];
		received += mine.size();
		for (size_t j = 0; j < mine.size(); j++) {
			CHECK(all.insert(mine[j]).second, "event %llu reached two consumers",
			      static_cast<unsigned long long>(mine[j]));
			if (j > 0 && mine[j] <= mine[j - 1]) {
				CHECK(false, "consumer %d got %llu after %llu", i,
				      static_cast<unsigned long long>(mine[j]),
				      static_cast<unsigned long long>(mine[j - 1]));
				break;
			}
		}
		std::printf("consumer %d: %zu events\n", i, mine.size());
	}
	CHECK(received + q.shed() == kEvents, "received %zu + shed %llu != %llu pushed", received,
	      static_cast<unsigned long long>(q.shed()), static_cast<unsigned long long>(kEvents));
	std::printf("%llu events: %zu received, %llu shed\n", static_cast<unsigned long long>(kEvents),
		    received, static_cast<unsigned long long>(q.shed()));

	// close() from a signal handler, on one of the blocked consumers' threads.
	udpevent::EventQueue blocked;
	blocked.reopen(8);
	g_queue = &blocked;
	struct sigaction sa = {};
	sa.sa_handler = close_from_handler;
	sigaction(SIGUSR1, &sa, nullptr);
	std::atomic<int> woken{0};
	std::vector<std::thread> sleepers;
	for (int i = 0; i < kConsumers; i++)
		sleepers.emplace_back([&] {
			if (zeroed(blocked.pop()))
				woken++;
		});
	std::this_thread::sleep_for(std::chrono::milliseconds(200));
	pthread_kill(sleepers[1].native_handle(), SIGUSR1);
	const auto until = Clock::now() + std::chrono::seconds(5);
	while (woken.load() < kConsumers && Clock::now() < until)
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	if (woken.load() < kConsumers) {
		std::fprintf(stderr, "FAIL: close() from a signal handler woke %d of %d consumers\n",
			     woken.load(), kConsumers);
		std::_Exit(1);
	}
	for (auto &t : sleepers)
		t.join();

	if (!failures)
		std::printf("ok: the queue under %d consumers\n", kConsumers);
	return failures ? 1 : 0;
}

// ---- shim ----

constexpr int kPairs = 8;
constexpr int kRounds = 100;
constexpr std::uint16_t kBasePort = 41000;

struct FlowKey {
	std::uint16_t family, sport, dport;
	bool operator<(const FlowKey &o) const
	{
		return std::tie(family, sport, dport) < std::tie(o.family, o.sport, o.dport);
	}
};

struct Totals {
	std::uint64_t tx_b = 0, rx_b = 0, tx_pkts = 0, rx_pkts = 0;
	bool operator==(const Totals &) const = default;
};

// One pair: a connected client and an unconnected server on loopback,
// kRounds requests of `request` bytes and as many replies of `reply` bytes.
bool pair_traffic(int family, std::uint16_t server_port, std::uint16_t client_port, size_t request,
		  size_t reply)
{
	char buf[2048] = {};
	sockaddr_storage server_addr{}, client_addr{};
	socklen_t len;
	if (family == AF_INET) {
		auto make = [](sockaddr_storage &ss, std::uint16_t port) {
			auto *sin = reinterpret_cast<sockaddr_in *>(&ss);
			sin->sin_family = AF_INET;
			sin->sin_port = htons(port);
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		};
		make(server_addr, server_port);
		make(client_addr, client_port);
		len = sizeof(sockaddr_in);
	} else {
		auto make = [](sockaddr_storage &ss, std::uint16_t port) {
			auto *sin6 = reinterpret_cast<sockaddr_in6 *>(&ss);
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(port);
			sin6->sin6_addr = in6addr_loopback;
		};
		make(server_addr, server_port);
		make(client_addr, client_port);
		len = sizeof(sockaddr_in6);
	}
	const int server = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	const int client = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	const timeval timeout{5, 0};
	for (int fd : {server, client})
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	if (bind(server, reinterpret_cast<sockaddr *>(&server_addr), len) != 0 ||
	    bind(client, reinterpret_cast<sockaddr *>(&client_addr), len) != 0 ||
	    connect(client, reinterpret_cast<sockaddr *>(&server_addr), len) != 0) {
		std::perror("socket setup");
		return false;
	}
	bool ok = true;
	for (int i = 0; i < kRounds && ok; i++) {
		sockaddr_storage peer{};
		socklen_t peer_len = sizeof(peer);
		ok = send(client, buf, request, 0) == static_cast<ssize_t>(request) &&
		     recvfrom(server, buf, sizeof(buf), 0, reinterpret_cast<sockaddr *>(&peer), &peer_len) ==
			     static_cast<ssize_t>(request) &&
		     sendto(server, buf, reply, 0, reinterpret_cast<sockaddr *>(&peer), peer_len) ==
			     static_cast<ssize_t>(reply) &&
		     recv(client, buf, sizeof(buf), 0) == static_cast<ssize_t>(reply);
	}
	if (!ok)
		std::perror("traffic");
	close(client);
	close(server);
	return ok;
}

int shim_mode()
{
	testutil::require_root_or_skip("compat threads (shim)");
	try {
		testutil::enter_fresh_netns();
	} catch (const std::exception &e) {
		std::fprintf(stderr, "FAIL: %s\n", e.what());
		return 1;
	}
	// The backend under test (UDPI_TEST_BACKEND, as in every root tier).
	setenv("UDPEVENT_BACKEND", testutil::test_backend().c_str(), 1);
	// A snapshot per operation: thousands of events spread over the consumers.
	setenv("UDPEVENT_INTERVAL_MS", "0", 1);
	setenv("UDPEVENT_QUEUE_SIZE", "262144", 1);
	// Only this process: a busy host must not crowd the queue.
	setenv("UDPEVENT_PID", std::to_string(getpid()).c_str(), 1);

	// Expected totals, flow by flow. Even pairs are IPv4, odd ones IPv6.
	std::map<FlowKey, Totals> expected;
	for (int p = 0; p < kPairs; p++) {
		const std::uint16_t family = p % 2 ? 10 : 2;
		const auto server = static_cast<std::uint16_t>(kBasePort + 2 * p);
		const auto client = static_cast<std::uint16_t>(server + 1);
		const std::uint64_t request = 40 + static_cast<std::uint64_t>(p),
				    reply = 300 + static_cast<std::uint64_t>(p);
		expected[{family, client, server}] = {kRounds * request, kRounds * reply, kRounds, kRounds};
		expected[{family, server, client}] = {kRounds * reply, kRounds * request, kRounds, kRounds};
	}

	AddProbe();
	if (!getStatus()) {
		std::fprintf(stderr, "FAIL: AddProbe() did not attach: %s\n",
			     udpEvent_lastError() ? udpEvent_lastError() : "?");
		return 1;
	}

	constexpr int kConsumers = 4;
	const auto pid = static_cast<std::uint32_t>(getpid());
	struct Inbox {
		std::mutex mutex;
		std::vector<udp_event_t> events; // guarded by mutex
		Clock::time_point returned;      // written before `done`
		std::atomic<bool> done{false};
	};
	std::vector<Inbox> inboxes(kConsumers);
	std::vector<std::thread> consumers;
	for (int i = 0; i < kConsumers; i++)
		consumers.emplace_back([&, i] {
			Inbox &box = inboxes[static_cast<size_t>(i)];
			for (;;) {
				const udp_event_t e = DequeuePerfEvent();
				if (zeroed(e))
					break;
				if (e.pid != pid)
					continue; // the host's own traffic
				std::lock_guard lock(box.mutex);
				box.events.push_back(e);
			}
			box.returned = Clock::now();
			box.done.store(true);
		});

	std::atomic<bool> traffic_ok{true};
	std::vector<std::thread> generators;
	for (int g = 0; g < 2; g++)
		generators.emplace_back([&, g] {
			for (int p = g; p < kPairs; p += 2) {
				const auto server = static_cast<std::uint16_t>(kBasePort + 2 * p);
				if (!pair_traffic(p % 2 ? AF_INET6 : AF_INET, server,
						  static_cast<std::uint16_t>(server + 1),
						  40 + static_cast<size_t>(p), 300 + static_cast<size_t>(p)))
					traffic_ok = false;
			}
		});
	for (auto &t : generators)
		t.join();
	CHECK(traffic_ok.load(), "the traffic failed");

	// Wait for every flow's totals (the close snapshots bring them).
	const auto totals_seen = [&] {
		std::map<FlowKey, Totals> best;
		for (auto &box : inboxes) {
			std::lock_guard lock(box.mutex);
			for (const udp_event_t &e : box.events) {
				Totals &t = best[{e.family, e.SPT, e.DPT}];
				t.tx_b = std::max<std::uint64_t>(t.tx_b, e.tx_b);
				t.rx_b = std::max<std::uint64_t>(t.rx_b, e.rx_b);
				t.tx_pkts = std::max<std::uint64_t>(t.tx_pkts, e.txPkts);
				t.rx_pkts = std::max<std::uint64_t>(t.rx_pkts, e.rxPkts);
			}
		}
		return best;
	};
	const auto deadline = Clock::now() + std::chrono::seconds(60);
	std::map<FlowKey, Totals> best;
	for (;;) {
		best = totals_seen();
		bool all = true;
		for (const auto &[key, totals] : expected)
			all = all && best.count(key) && best[key] == totals;
		if (all || Clock::now() > deadline)
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
	}
	for (const auto &[key, totals] : expected) {
		const Totals got = best.count(key) ? best[key] : Totals{};
		CHECK(got == totals,
		      "flow family %u %u -> %u: tx %llu/%llu rx %llu/%llu, expected tx %llu/%llu rx "
		      "%llu/%llu",
		      key.family, key.sport, key.dport, static_cast<unsigned long long>(got.tx_pkts),
		      static_cast<unsigned long long>(got.tx_b), static_cast<unsigned long long>(got.rx_pkts),
		      static_cast<unsigned long long>(got.rx_b),
		      static_cast<unsigned long long>(totals.tx_pkts),
		      static_cast<unsigned long long>(totals.tx_b),
		      static_cast<unsigned long long>(totals.rx_pkts),
		      static_cast<unsigned long long>(totals.rx_b));
	}

	const auto t0 = Clock::now();
	cleanup();
	const auto until = t0 + std::chrono::seconds(5);
	bool all_done = false;
	while (!all_done && Clock::now() < until) {
		all_done = true;
		for (auto &box : inboxes)
			all_done = all_done && box.done.load();
		if (!all_done)
			std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
	if (!all_done) {
		std::fprintf(stderr, "FAIL: consumers still blocked 5 s after cleanup()\n");
		std::_Exit(1);
	}
	for (auto &t : consumers)
		t.join();

	// Each snapshot reached exactly one consumer: with a snapshot per
	// operation no two carry the same counters for the same flow.
	std::set<std::tuple<std::uint16_t, std::uint16_t, std::uint16_t, std::uint64_t, std::uint64_t,
			    std::uint32_t, std::uint32_t, std::uint64_t>>
		seen;
	size_t total = 0;
	for (int i = 0; i < kConsumers; i++) {
		Inbox &box = inboxes[static_cast<size_t>(i)];
		const auto ms =
			std::chrono::duration_cast<std::chrono::milliseconds>(box.returned - t0).count();
		CHECK(ms < 1000, "consumer %d returned %lld ms after cleanup()", i,
		      static_cast<long long>(ms));
		for (const udp_event_t &e : box.events) {
			if (!expected.count({e.family, e.SPT, e.DPT}))
				continue;
			total++;
			CHECK(seen.insert({e.family, e.SPT, e.DPT, e.tx_b, e.rx_b, e.txPkts, e.rxPkts,
					   e.EventTime})
				      .second,
			      "a snapshot of %u -> %u reached two consumers", e.SPT, e.DPT);
		}
		std::printf("consumer %d: %zu events of this process\n", i, box.events.size());
	}
	CHECK(udpEvent_shedCount() == 0, "%llu events shed with a queue of 262144", udpEvent_shedCount());
	std::printf("%zu snapshots of the %zu flows\n", total, expected.size());
	if (!failures)
		std::printf("ok: %d consumers, every snapshot once, exact totals\n", kConsumers);
	return failures ? 1 : 0;
}

} // namespace

int main(int argc, char **argv)
{
	const std::string_view mode = argc > 1 ? argv[1] : "";
	if (mode == "queue")
		return queue_mode();
	if (mode == "shim")
		return shim_mode();
	std::fprintf(stderr, "usage: %s queue|shim\n", argv[0]);
	return 2;
}
