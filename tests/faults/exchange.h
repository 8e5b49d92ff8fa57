// SPDX-License-Identifier: LGPL-2.1-or-later
// Loopback traffic with a ledger, and the per-flow sums of the CLI's JSON
// lines to hold against it (an `expire` ends one flow of its socket and
// peer; the newest snapshot since carries the rest).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "testutil.h"

namespace faults {

/// A flow as JSON names it: local port -> remote endpoint.
using FlowId = std::string;

struct Totals {
	std::uint64_t tx_bytes = 0, tx_packets = 0, rx_bytes = 0, rx_packets = 0;
	bool operator==(const Totals &) const = default;
};

using Ledger = std::map<FlowId, Totals>;

inline FlowId flow_id(std::uint16_t local_port, const std::string &remote)
{
	return std::to_string(local_port) + "->" + remote;
}

/// `clients` sockets each send `count` datagrams of `bytes` to one server,
/// which reads them all; `together`: the clients all exist at once, and
/// with `keep` they and the server are left open there.
inline Ledger exchange(int clients, int count, std::size_t bytes, bool together = false,
		       std::vector<testutil::Udp> *keep = nullptr)
{
	using testutil::Udp;
	Udp server(AF_INET);
	server.bind("127.0.0.1");
	const auto to = server.local();
	Ledger ledger;
	std::vector<Udp> open, held;
	std::set<std::uint16_t> used;
	// A client's port is one no client of this exchange had: the JSON names a
	// flow by its ports, so two sockets on one port (a closed client's port
	// handed out again, one run in thirty here) would read as one flow. A
	// socket given a used port is held, unused, until the exchange ends.
	const auto fresh_client = [&] {
		for (;;) {
			Udp client(AF_INET);
			client.bind("127.0.0.1");
			if (used.insert(client.local().port()).second)
				return client;
			held.push_back(std::move(client));
		}
	};
	for (int c = 0; c < clients; c++) {
		Udp client = fresh_client();
		for (int i = 0; i < count; i++) {
			client.send_to(to, bytes);
			testutil::SockAddr from;
			server.recv_from(from);
		}
		const auto port = client.local().port();
		auto &tx = ledger[flow_id(port, testutil::endpoint(to))];
		tx.tx_bytes += bytes * static_cast<std::uint64_t>(count);
		tx.tx_packets += static_cast<std::uint64_t>(count);
		auto &rx = ledger[flow_id(to.port(), "127.0.0.1:" + std::to_string(port))];
		rx.rx_bytes += bytes * static_cast<std::uint64_t>(count);
		rx.rx_packets += static_cast<std::uint64_t>(count);
		if (together)
			open.push_back(std::move(client));
	}
	if (keep) {
		keep->push_back(std::move(server));
		for (auto &c : open)
			keep->push_back(std::move(c));
	}
	return ledger;
}

/// Per-flow totals of JSON lines of this network namespace.
inline Ledger sums(const std::vector<std::string> &lines, std::uint32_t netns)
{
	Ledger ended, current;
	for (const auto &line : lines) {
		const auto o = testutil::parse_json_line(line);
		if (std::stoul(o.at("netns")) != netns)
			continue;
		const FlowId id = flow_id(static_cast<std::uint16_t>(std::stoul(o.at("sport"))),
					  o.at("daddr") + ":" + o.at("dport"));
		Totals t{std::stoull(o.at("tx_bytes")), std::stoull(o.at("tx_packets")),
			 std::stoull(o.at("rx_bytes")), std::stoull(o.at("rx_packets"))};
		if (o.at("event") == "expire") {
			auto &e = ended[id];
			e.tx_bytes += t.tx_bytes;
			e.tx_packets += t.tx_packets;
			e.rx_bytes += t.rx_bytes;
			e.rx_packets += t.rx_packets;
			current.erase(id);
		} else {
			current[id] = t;
		}
	}
	for (const auto &[id, t] : current) {
		auto &e = ended[id];
		e.tx_bytes += t.tx_bytes;
		e.tx_packets += t.tx_packets;
		e.rx_bytes += t.rx_bytes;
		e.rx_packets += t.rx_packets;
	}
	return ended;
}

/// The ledger's flows as the tracer summed them (flows it lacks are zero).
inline Ledger of_ledger(const Ledger &traced, const Ledger &ledger)
{
	Ledger out;
	for (const auto &[id, t] : ledger) {
		const auto it = traced.find(id);
		out[id] = it == traced.end() ? Totals{} : it->second;
	}
	return out;
}

/// Sockets opened, used and closed on a thread until it is stopped: traffic
/// for the tests that need some going on, not counted.
class Background {
public:
	Background()
	    : thread_([this] {
		      // Paced: new sockets as fast as the CPU allows made a hundred
		      // restarts under ASan take 175 s on a busy run (82,000 flows a
		      // round to deliver as finals) against 24 s on a quiet one.
		      while (!stop_) {
			      exchange(2, 5, 64);
			      std::this_thread::sleep_for(std::chrono::microseconds(500));
		      }
	      })
	{
	}
	~Background()
	{
		stop_ = true;
		thread_.join();
	}

private:
	std::atomic<bool> stop_{false};
	std::thread thread_;
};

} // namespace faults
