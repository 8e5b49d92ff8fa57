// SPDX-License-Identifier: LGPL-2.1-or-later
// What a scenario knows it moved (its ledger) and what the kernel counted
// (the UDP MIB of its network namespace): the accuracy tier's two oracles,
// shared with the metrics tier's traffic generator.
#pragma once

#include <fstream>
#include <map>
#include <ostream>
#include <sstream>
#include <string>

#include "testutil.h"

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
		auto &f = family(remote) == AF_INET ? v4 : v6;
		f.tx_packets += packets;
		f.tx_bytes += bytes;
	}
	void received(const testutil::SockAddr &local, const testutil::SockAddr &remote, std::uint64_t bytes)
	{
		auto &c = flows_[{testutil::endpoint(local), testutil::endpoint(remote)}];
		c.rx_packets += 1;
		c.rx_bytes += bytes;
		(family(remote) == AF_INET ? in4 : in6) += 1;
		auto &f = family(remote) == AF_INET ? v4 : v6;
		f.rx_packets += 1;
		f.rx_bytes += bytes;
	}
	const std::map<testutil::FlowName, Counts> &flows() const { return flows_; }

	std::uint64_t in4 = 0, out4 = 0, in6 = 0, out6 = 0;
	Counts v4, v6; ///< every flow's counters summed by family

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

} // namespace accuracy
