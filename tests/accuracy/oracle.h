// SPDX-License-Identifier: LGPL-2.1-or-later
// The accuracy tier's three-way check: a scenario keeps its own ledger of
// what each flow moved; the kernel's UDP MIB (/proc/net/snmp, snmp6) of a
// fresh network namespace and its sockets' drops (/proc/net/udp, udp6) are
// the oracle nobody here wrote; the tracer's final per-flow counters must
// equal the ledger, and its per-family sums the MIB's deltas.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <string>

#include "../integration/recorder.h"
#include "ledger.h"

namespace accuracy {

/// This process only: the machine's other UDP users must not reach the tracer's loss counters.
inline udpintercept::Options own_process()
{
	udpintercept::Options o;
	o.pid = static_cast<std::uint32_t>(getpid());
	return o;
}

/**
 * UDPI_TEST_CHECKSUM_DROPS_UNSEEN=1: the backend under test cannot see
 * checksum failures found by a receive on this kernel (the tracepoint
 * backend before 6.15, README's limits): the tracer must count none of them,
 * and everything else exactly.
 */
inline bool checksum_drops_unseen()
{
	const char *v = std::getenv("UDPI_TEST_CHECKSUM_DROPS_UNSEEN");
	return v && std::string(v) == "1";
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

		const MibFamily d4 = after.v4 - before.v4, d6 = after.v6 - before.v6;
		INFO("MIB deltas: in4 " << d4.in << " out4 " << d4.out << " in6 " << d6.in << " out6 "
					<< d6.out << " in_errors4 " << d4.in_errors << " in_errors6 "
					<< d6.in_errors);
		// 1. The oracle is sound: the ledger agrees with the kernel. Every
		// drop of a datagram addressed to a socket is in InErrors and in
		// that socket's drops. Drops are summed over the families: poll()
		// counts an IPv6 socket's checksum failures under Udp: (the check,
		// __first_packet_length(), is IPv4's code).
		CHECK(ledger.in4 == d4.in);
		CHECK(ledger.in6 == d6.in);
		if (check == MibCheck::both_sides) {
			CHECK(ledger.out4 == d4.out);
			CHECK(ledger.out6 == d6.out);
		}
		CHECK(ledger.drops4 + ledger.drops6 == d4.in_errors + d6.in_errors);
		CHECK(ledger.socket_drops == ledger.drops4 + ledger.drops6);

		// 3. The tracer's per-family totals equal the kernel's deltas.
		const udpintercept::Stats st = rec.tracer().stats();
		INFO("insert failures " << st.insert_failures << ", last errno " << st.insert_last_errno
					<< ", deferred " << st.deferred_operations << ", untracked datagrams "
					<< st.untracked_packets << ", program runs missed "
					<< st.program_misses);
		Mib traced;
		for (const auto &[name, e] : finals) {
			if (e.family == udpintercept::Family::ipv4) {
				traced.in4 += e.rx_packets;
				traced.out4 += e.tx_packets;
				traced.v4.in_errors += e.rx_drops;
			} else {
				traced.in6 += e.rx_packets;
				traced.out6 += e.tx_packets;
				traced.v6.in_errors += e.rx_drops;
			}
		}
		if (check == MibCheck::neither) {
			CHECK(traced.in4 == ledger.v4.rx_packets);
			CHECK(traced.in6 == ledger.v6.rx_packets);
		} else {
			CHECK(traced.in4 == d4.in);
			CHECK(traced.in6 == d6.in);
		}
		const std::uint64_t unseen4 =
			(checksum_drops_unseen() ? ledger.checksum_drops4 : 0) + ledger.copy_drops4;
		const std::uint64_t unseen6 =
			(checksum_drops_unseen() ? ledger.checksum_drops6 : 0) + ledger.copy_drops6;
		CHECK(traced.v4.in_errors + traced.v6.in_errors + unseen4 + unseen6 ==
		      d4.in_errors + d6.in_errors);
		CHECK(traced.v4.in_errors + unseen4 == ledger.drops4);
		CHECK(traced.v6.in_errors + unseen6 == ledger.drops6);
		if (check == MibCheck::both_sides) {
			CHECK(traced.out4 == d4.out);
			CHECK(traced.out6 == d6.out);
		} else {
			CHECK(traced.out4 == ledger.out4);
			CHECK(traced.out6 == ledger.out6);
		}
		// No datagram of the scenario's namespace went to an unknown peer; the
		// tracer's own count says so too where it watched this process alone
		// (the machine's other sockets are not the scenario's).
		for (const auto &[name, e] : finals) {
			INFO("flow " << name.local << " -> " << name.remote);
			CHECK(e.remote.port != 0);
		}
		if (options.pid)
			CHECK(st.peer_unknown == 0);
		CHECK(st.flows_untracked == 0);
	}

	// 2. The tracer's final per-flow counters equal the ledger, flow for flow.
	std::map<testutil::FlowName, Counts> traced_flows;
	for (const auto &[name, e] : finals)
		if (e.tx_packets || e.rx_packets || e.tx_bytes || e.rx_bytes || e.rx_drops)
			traced_flows[name] =
				Counts{e.tx_packets, e.tx_bytes, e.rx_packets, e.rx_bytes, e.rx_drops};
	std::map<testutil::FlowName, Counts> ledger_flows;
	for (auto [name, c] : ledger.flows()) {
		if (checksum_drops_unseen() && ledger.checksum_drops().count(name))
			c.rx_drops -= ledger.checksum_drops().at(name);
		if (c.tx_packets || c.rx_packets || c.rx_drops)
			ledger_flows[name] = c;
	}
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
