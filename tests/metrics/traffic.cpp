// SPDX-License-Identifier: LGPL-2.1-or-later
// udpi-traffic [--min-seconds S] LEDGER [SCENARIO...]: the accuracy tier's
// scenarios (all of them, or those named), each in a fresh network
// namespace, as one command whose traffic a tracer in another process
// watches; rounds of them until S seconds have passed (default one round),
// so that scrapes fall while traffic flows. Each scenario's ledger is first
// held to its namespace's UDP MIB; then the ledger, summed per family and
// direction, is written to LEDGER as JSON for the test to compare with what
// the tracer exported.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <set>
#include <sys/prctl.h>

#include "scenarios.h"

namespace {

// The command name the metrics tests sum by (the comm label); children and
// threads inherit it.
constexpr const char *kComm = "udpi-traffic";

std::string json(const accuracy::Counts &c)
{
	return "{\"sent_datagrams\":" + std::to_string(c.tx_packets) +
	       ",\"sent_bytes\":" + std::to_string(c.tx_bytes) +
	       ",\"received_datagrams\":" + std::to_string(c.rx_packets) +
	       ",\"received_bytes\":" + std::to_string(c.rx_bytes) +
	       ",\"received_drops\":" + std::to_string(c.rx_drops) + "}";
}

void add(accuracy::Counts &sum, const accuracy::Counts &c)
{
	sum.tx_packets += c.tx_packets;
	sum.tx_bytes += c.tx_bytes;
	sum.rx_packets += c.rx_packets;
	sum.rx_bytes += c.rx_bytes;
	sum.rx_drops += c.rx_drops;
}

// One round of the scenarios, summed into v4 and v6; returns how many ran.
int run_round(const std::set<std::string> &only, accuracy::Counts &v4, accuracy::Counts &v6)
{
	scenarios::Observer nobody; // the tracer is another process
	int runs = 0;
	for (const auto &s : scenarios::all()) {
		if (!only.empty() && !only.count(s.name))
			continue;
		for (const auto &f : s.families) {
			testutil::enter_fresh_netns();
			accuracy::Ledger l;
			const auto before = accuracy::Mib::read();
			s.body(l, nobody, f);
			const auto after = accuracy::Mib::read();
			// The ledger is the oracle only if the kernel agrees with it.
			const bool out_ok =
				s.check != accuracy::MibCheck::both_sides ||
				(l.out4 == after.out4 - before.out4 && l.out6 == after.out6 - before.out6);
			const std::uint64_t in_errors =
				(after.v4 - before.v4).in_errors + (after.v6 - before.v6).in_errors;
			if (!out_ok || l.in4 != after.in4 - before.in4 || l.in6 != after.in6 - before.in6 ||
			    l.drops4 + l.drops6 != in_errors)
				throw scenarios::Failure(s.name + " (" + f.loopback +
							 "): the ledger disagrees with the UDP MIB");
			add(v4, l.v4);
			add(v6, l.v6);
			runs++;
		}
	}
	return runs;
}

} // namespace

int main(int argc, char **argv)
{
	if (testutil::asks_for_help(argc, argv)) {
		std::printf("usage: udpi-traffic [--min-seconds S] LEDGER [SCENARIO...]\n"
			    "Run the accuracy tier's scenarios (all, or those named), each in a fresh\n"
			    "network namespace, in rounds until S seconds have passed (default: one\n"
			    "round). Each scenario's ledger is held to its namespace's UDP MIB; the\n"
			    "ledgers, summed per family and direction, are written to LEDGER as JSON.\n"
			    "Needs root (network namespaces). Exit status: 0 done, 1 a scenario\n"
			    "failed, 2 bad arguments or no scenario matched.\n");
		return 0;
	}
	int first = 1;
	double min_seconds = 0;
	if (argc > 1 && std::strcmp(argv[1], "--min-seconds") == 0) {
		char *end = nullptr;
		min_seconds = argc > 2 ? std::strtod(argv[2], &end) : -1;
		if (argc <= 2 || !*argv[2] || *end || !(min_seconds >= 0)) {
			std::fprintf(stderr, "%s: --min-seconds wants a number of seconds, not '%s'\n", kComm,
				     argc > 2 ? argv[2] : "");
			return 2;
		}
		first = 3;
	}
	for (int i = first; i < argc; i++)
		if (argv[i][0] == '-') {
			std::fprintf(stderr, "%s: unknown option '%s' (%s --help says how to run it)\n",
				     kComm, argv[i], kComm);
			return 2;
		}
	if (argc <= first) {
		std::fprintf(stderr, "usage: %s [--min-seconds S] LEDGER [SCENARIO...]\n", kComm);
		return 2;
	}
	prctl(PR_SET_NAME, kComm);
	const char *ledger_path = argv[first];
	const std::set<std::string> only(argv + first + 1, argv + argc);
	accuracy::Counts v4, v6;
	int runs = 0, rounds = 0;
	const auto start = std::chrono::steady_clock::now();
	const auto least = std::chrono::duration<double>(min_seconds);
	try {
		do {
			const int ran = run_round(only, v4, v6);
			if (ran == 0) {
				std::fprintf(stderr, "%s: no scenario matched\n", kComm);
				return 2;
			}
			runs += ran;
			rounds++;
		} while (std::chrono::steady_clock::now() - start < least);
	} catch (const std::exception &e) {
		std::fprintf(stderr, "%s: %s\n", kComm, e.what());
		return 1;
	}
	std::ofstream out(ledger_path);
	out << "{\"rounds\":" << rounds << ",\"runs\":" << runs << ",\"ipv4\":" << json(v4)
	    << ",\"ipv6\":" << json(v6) << "}\n";
	return out.good() ? 0 : 1;
}
