// SPDX-License-Identifier: LGPL-2.1-or-later
// The accuracy tier's three-way check: a scenario keeps its own ledger of
// what each flow moved; the kernel's UDP MIB (/proc/net/snmp, snmp6) of a
// fresh network namespace is the oracle nobody here wrote; the tracer's
// final per-flow counters must equal the ledger, and its per-family sums the
// MIB's deltas.
#pragma once

#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "../integration/recorder.h"

namespace accuracy {

struct Counts {
	std::uint64_t tx_packets = 0, tx_bytes = 0, rx_packets = 0, rx_bytes = 0;
	bool operator==(const Counts &) const = default;
};

inline std::ostream &operator<<(std::ostream &os, const Counts &c)
{
	return os << "tx " << c.tx_packets << "/" << c.tx_bytes << " rx " << c.rx_packets << "/"
		  << c.rx_bytes;
}

/// The kernel's UDP datagram counters of the calling thread's namespace.
struct Mib {
	std::uint64_t in4 = 0, out4 = 0, in6 = 0, out6 = 0;

	static Mib read()
	{
		Mib m;
		std::ifstream snmp("/proc/net/snmp");
		std::string names, values;
		while (std::getline(snmp, names) && std::getline(snmp, values)) {
			if (names.rfind("Udp: ", 0) != 0)
				continue;
			std::istringstream n(names), v(values);
			std::string name, value;
			while (n >> name && v >> value) {
				if (name == "InDatagrams")
					m.in4 = std::stoull(value);
				else if (name == "OutDatagrams")
					m.out4 = std::stoull(value);
			}
			break;
		}
		std::ifstream snmp6("/proc/net/snmp6");
		std::string name, value;
		while (snmp6 >> name >> value) {
			if (name == "Udp6InDatagrams")
				m.in6 = std::stoull(value);
			else if (name == "Udp6OutDatagrams")
				m.out6 = std::stoull(value);
		}
		return m;
	}
};

/// What the scenario itself knows each flow moved, by "local" -> "remote".
class Ledger {
public:
	void sent(const testutil::SockAddr &local, const testutil::SockAddr &remote, std::uint64_t bytes,
		  std::uint64_t packets = 1)
	{
		auto &c = flows_[{testutil::endpoint(local), testutil::endpoint(remote)}];
		c.tx_packets += packets;
		c.tx_bytes += bytes;
		(family(remote) == AF_INET ? out4 : out6) += packets;
	}
	void received(const testutil::SockAddr &local, const testutil::SockAddr &remote, std::uint64_t bytes)
	{
		auto &c = flows_[{testutil::endpoint(local), testutil::endpoint(remote)}];
		c.rx_packets += 1;
		c.rx_bytes += bytes;
		(family(remote) == AF_INET ? in4 : in6) += 1;
	}
	const std::map<testutil::FlowName, Counts> &flows() const { return flows_; }

	std::uint64_t in4 = 0, out4 = 0, in6 = 0, out6 = 0;

private:
	// IPv4-mapped peers are IPv4 traffic (and the kernel counts them in Udp:).
	static int family(const testutil::SockAddr &a)
	{
		if (a.family() == AF_INET)
			return AF_INET;
		return a.ip().rfind("::ffff:", 0) == 0 && a.ip().find('.') != std::string::npos ? AF_INET
												: AF_INET6;
	}
	std::map<testutil::FlowName, Counts> flows_;
};

/// How a scenario's figures are held to the oracle.
enum class MibCheck {
	both_sides,   ///< Out and In deltas equal the ledger's and the tracer's
	receive_side, ///< GSO: OutDatagrams counts a segmented send once on some kernels
};

/// This process only: the machine's other UDP users must not reach the tracer's loss counters.
inline udpintercept::Options own_process()
{
	udpintercept::Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	return o;
}

/// Runs `scenario` in a fresh network namespace under a tracer and checks the three identities.
template <typename Scenario>
void run(Scenario scenario, MibCheck check = MibCheck::both_sides,
	 udpintercept::Options options = own_process())
{
	testutil::enter_fresh_netns();
	Ledger ledger;
	std::map<testutil::FlowName, udpintercept::Event> finals;
	{
		testutil::Recorder rec(options);
		const Mib before = Mib::read();
		scenario(ledger, rec);
		const Mib after = Mib::read();
		rec.stop();
		finals = rec.last_by_flow();

		INFO("MIB deltas: in4 " << after.in4 - before.in4 << " out4 " << after.out4 - before.out4
					<< " in6 " << after.in6 - before.in6 << " out6 "
					<< after.out6 - before.out6);
		// 1. The oracle is sound: the ledger agrees with the kernel.
		CHECK(ledger.in4 == after.in4 - before.in4);
		CHECK(ledger.in6 == after.in6 - before.in6);
		if (check == MibCheck::both_sides) {
			CHECK(ledger.out4 == after.out4 - before.out4);
			CHECK(ledger.out6 == after.out6 - before.out6);
		}

		// 3. The tracer's per-family totals equal the kernel's deltas.
		Mib traced;
		for (const auto &[name, e] : finals) {
			if (e.family == udpintercept::Family::ipv4) {
				traced.in4 += e.rx_packets;
				traced.out4 += e.tx_packets;
			} else {
				traced.in6 += e.rx_packets;
				traced.out6 += e.tx_packets;
			}
		}
		CHECK(traced.in4 == after.in4 - before.in4);
		CHECK(traced.in6 == after.in6 - before.in6);
		if (check == MibCheck::both_sides) {
			CHECK(traced.out4 == after.out4 - before.out4);
			CHECK(traced.out6 == after.out6 - before.out6);
		} else {
			CHECK(traced.out4 == ledger.out4);
			CHECK(traced.out6 == ledger.out6);
		}
		CHECK(rec.tracer().stats().peer_unknown == 0);
		INFO("insert failures " << rec.tracer().stats().insert_failures << ", last errno "
					<< rec.tracer().stats().insert_last_errno << ", deferred "
					<< rec.tracer().stats().deferred_operations);
		CHECK(rec.tracer().stats().flows_untracked == 0);
	}

	// 2. The tracer's final per-flow counters equal the ledger, flow for flow.
	std::map<testutil::FlowName, Counts> traced_flows;
	for (const auto &[name, e] : finals)
		if (e.tx_packets || e.rx_packets || e.tx_bytes || e.rx_bytes)
			traced_flows[name] = Counts{e.tx_packets, e.tx_bytes, e.rx_packets, e.rx_bytes};
	std::map<testutil::FlowName, Counts> ledger_flows;
	for (const auto &[name, c] : ledger.flows())
		if (c.tx_packets || c.rx_packets)
			ledger_flows[name] = c;
	for (const auto &[name, c] : ledger_flows) {
		INFO("flow " << name.local << " -> " << name.remote << ": ledger " << c);
		if (!traced_flows.count(name))
			for (const auto &[n, t] : traced_flows)
				UNSCOPED_INFO("traced: " << n.local << " -> " << n.remote << ": " << t);
		REQUIRE(traced_flows.count(name) == 1);
		CHECK(traced_flows.at(name) == c);
	}
	for (const auto &[name, c] : traced_flows) {
		INFO("traced flow " << name.local << " -> " << name.remote << ": " << c);
		CHECK(ledger_flows.count(name) == 1);
	}
}

} // namespace accuracy
