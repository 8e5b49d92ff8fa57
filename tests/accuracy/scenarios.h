// SPDX-License-Identifier: LGPL-2.1-or-later
// The accuracy tier's traffic: every counting rule of the design's data
// model as a scenario that moves real datagrams and writes its ledger. The
// accuracy tests run each under a Tracer of their own; the metrics tier's
// generator runs them all under the CLI and its Prometheus.
#pragma once

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <sys/types.h>
#include <vector>

#include "ledger.h"

namespace scenarios {

/// A scenario's own expectation of the kernel failed (a refused send accepted, …).
struct Failure : std::runtime_error {
	using std::runtime_error::runtime_error;
};

/**
 * What a scenario tells the tracer that watches it, at the points where the
 * accuracy tier checks more than the final counters. The generator's tracer
 * is another process: it does nothing.
 */
class Observer {
public:
	virtual ~Observer() = default;
	/// Lets the tracer deliver what it has (a storm must not outrun the ring buffer).
	virtual void pump(std::chrono::milliseconds) {}
	/// A forked child, gone now, made the newest change of the flow `from` -> `to`.
	virtual void forked_sender(const testutil::SockAddr &, const testutil::SockAddr &, pid_t) {}
	/// `sockets` short-lived sockets have sent and closed; their receiver is open.
	virtual void storm_sent(int) {}
	/// ... and now the receiver has closed too.
	virtual void storm_closed() {}
	/// Every datagram from `remote` to `local` was dropped; this process had used `local` before.
	virtual void drops_only(const testutil::SockAddr &, const testutil::SockAddr &) {}
	/// Whether the tracer notes each arriving datagram's sender (the tracepoint backend's recv() path).
	virtual bool notes_arrivals() const { return true; }
};

/// A family and its loopback address.
struct Fam {
	int af;
	const char *loopback;
};
inline constexpr Fam kIpv4{AF_INET, "127.0.0.1"};
inline constexpr Fam kIpv6{AF_INET6, "::1"};

/// A UDP socket bound to the family's loopback address, on a free port.
testutil::Udp bound(const Fam &f);

/// A GSO send of `bytes` in segments of `segment`, through a control message
/// (to `to`, or the socket's peer if null); throws Failure if refused.
void gso_send(testutil::Udp &tx, const testutil::SockAddr *to, std::size_t bytes, std::uint16_t segment);

struct Scenario {
	std::string name;          ///< the accuracy tier's test case
	std::vector<Fam> families; ///< run once for each
	accuracy::MibCheck check;  ///< how its figures hold against the MIB
	bool whole_process_tree;   ///< a forked child sends: trace more than this process
	std::function<void(accuracy::Ledger &, Observer &, const Fam &)> body;
};

/// Every scenario, in the accuracy tier's order.
const std::vector<Scenario> &all();

/// The scenario of that name; throws if there is none.
const Scenario &named(const std::string &name);

} // namespace scenarios
