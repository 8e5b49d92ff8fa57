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
	std::uint64_t tx_packets = 0, tx_bytes = 0, rx_packets = 0, rx_bytes = 0, rx_drops = 0;
	bool operator==(const Counts &) const = default;
};

inline std::ostream &operator<<(std::ostream &os, const Counts &c)
{
	return os << "tx " << c.tx_packets << "/" << c.tx_bytes << " rx " << c.rx_packets << "/" << c.rx_bytes
		  << " drops " << c.rx_drops;
}

/// The kernel's UDP counters of one family.
struct MibFamily {
	std::uint64_t in = 0, out = 0;
	std::uint64_t in_errors = 0;     ///< datagrams that arrived but were not delivered: every drop
	std::uint64_t rcvbuf_errors = 0; ///< of those, a full receive buffer
	std::uint64_t mem_errors = 0;    ///< of those, protocol memory
	std::uint64_t csum_errors = 0;   ///< of those, a bad checksum
	std::uint64_t no_ports = 0;      ///< datagrams no socket listened for (not in in_errors)

	/// The kernel's name for each field, after the family's prefix.
	void set(const std::string &name, std::uint64_t v)
	{
		const std::pair<const char *, std::uint64_t MibFamily::*> fields[] = {
			{"InDatagrams", &MibFamily::in},       {"OutDatagrams", &MibFamily::out},
			{"InErrors", &MibFamily::in_errors},   {"RcvbufErrors", &MibFamily::rcvbuf_errors},
			{"MemErrors", &MibFamily::mem_errors}, {"InCsumErrors", &MibFamily::csum_errors},
			{"NoPorts", &MibFamily::no_ports},
		};
		for (const auto &[n, field] : fields)
			if (name == n)
				this->*field = v;
	}

	MibFamily operator-(const MibFamily &o) const
	{
		return {in - o.in,
			out - o.out,
			in_errors - o.in_errors,
			rcvbuf_errors - o.rcvbuf_errors,
			mem_errors - o.mem_errors,
			csum_errors - o.csum_errors,
			no_ports - o.no_ports};
	}
};

/// The kernel's UDP counters of the calling thread's namespace.
struct Mib {
	std::uint64_t in4 = 0, out4 = 0, in6 = 0, out6 = 0;
	MibFamily v4, v6; ///< every counter (in4 is v4.in, ...)

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
			while (n >> name && v >> value)
				if (name != "Udp:")
					m.v4.set(name, std::stoull(value));
			break;
		}
		std::ifstream snmp6("/proc/net/snmp6");
		std::string name, value;
		while (snmp6 >> name >> value)
			if (name.rfind("Udp6", 0) == 0)
				m.v6.set(name.substr(4), std::stoull(value));
		m.in4 = m.v4.in;
		m.out4 = m.v4.out;
		m.in6 = m.v6.in;
		m.out6 = m.v6.out;
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
	/// One receive of `bytes`; `packets`: the datagrams on the wire it
	/// returned (a UDP_GRO socket's coalesced segments), which the kernel's
	/// InDatagrams counts as one.
	void received(const testutil::SockAddr &local, const testutil::SockAddr &remote, std::uint64_t bytes,
		      std::uint64_t packets = 1)
	{
		auto &c = flows_[{testutil::endpoint(local), testutil::endpoint(remote)}];
		c.rx_packets += packets;
		c.rx_bytes += bytes;
		(family(remote) == AF_INET ? in4 : in6) += 1;
		auto &f = family(remote) == AF_INET ? v4 : v6;
		f.rx_packets += packets;
		f.rx_bytes += bytes;
	}
	/// `n` datagrams from `remote` the kernel discarded on their way into
	/// `local`; `checksum`: a receive found their checksum bad.
	void dropped(const testutil::SockAddr &local, const testutil::SockAddr &remote, std::uint64_t n,
		     bool checksum = false)
	{
		const testutil::FlowName name{testutil::endpoint(local), testutil::endpoint(remote)};
		flows_[name].rx_drops += n;
		(family(remote) == AF_INET ? drops4 : drops6) += n;
		(family(remote) == AF_INET ? v4 : v6).rx_drops += n;
		if (checksum) {
			checksum_drops_[name] += n;
			(family(remote) == AF_INET ? checksum_drops4 : checksum_drops6) += n;
		}
	}
	/// `n` datagrams from `remote` the kernel took off a socket's queue and
	/// dropped because copying them to the application failed (EFAULT): in
	/// InErrors and the socket's drops, in no flow's rx_drops.
	void dropped_in_copy(const testutil::SockAddr &remote, std::uint64_t n)
	{
		(family(remote) == AF_INET ? drops4 : drops6) += n;
		(family(remote) == AF_INET ? copy_drops4 : copy_drops6) += n;
	}
	/// The drops column of /proc/net/udp{,6} of a receiving socket, read before it closes.
	void socket_dropped(std::uint64_t n) { socket_drops += n; }

	const std::map<testutil::FlowName, Counts> &flows() const { return flows_; }
	/// Of each flow's drops, those a receive found by their checksum.
	const std::map<testutil::FlowName, std::uint64_t> &checksum_drops() const { return checksum_drops_; }

	std::uint64_t in4 = 0, out4 = 0, in6 = 0, out6 = 0;
	std::uint64_t drops4 = 0, drops6 = 0;                   ///< datagrams dropped, by the sender's family
	std::uint64_t checksum_drops4 = 0, checksum_drops6 = 0; ///< of those, found by their checksum
	std::uint64_t copy_drops4 = 0, copy_drops6 = 0;         ///< of those, a failed copy's (no flow's)
	std::uint64_t socket_drops = 0;                         ///< what the sockets' drops columns said
	Counts v4, v6;                                          ///< every flow's counters summed by family

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
	std::map<testutil::FlowName, std::uint64_t> checksum_drops_;
};

/// How a scenario's figures are held to the oracle.
enum class MibCheck {
	both_sides,   ///< Out and In deltas equal the ledger's and the tracer's
	receive_side, ///< GSO: OutDatagrams counts a segmented send once on some kernels
	/// GSO to a UDP_GRO receiver: InDatagrams counts a coalesced receive once
	/// too; the tracer's totals are held to the ledger's datagrams on the wire
	neither,
};

} // namespace accuracy
