// SPDX-License-Identifier: LGPL-2.1-or-later
// The accuracy tier's three-way check: a scenario keeps its own ledger of
// what each flow moved; the kernel's UDP MIB (/proc/net/snmp, snmp6) of a
// fresh network namespace is the oracle nobody here wrote; the tracer's
// final per-flow counters must equal the ledger, and its per-family sums the
// MIB's deltas.
#pragma once

#include <catch2/catch.hpp>

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
		// No datagram of the scenario's namespace went to an unknown peer; the
		// tracer's own count says so too where it watched this process alone
		// (the machine's other sockets are not the scenario's).
		for (const auto &[name, e] : finals) {
			INFO("flow " << name.local << " -> " << name.remote);
			CHECK(e.remote.port != 0);
		}
		if (options.pid)
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
