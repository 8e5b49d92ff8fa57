// SPDX-License-Identifier: LGPL-2.1-or-later
// Running the tracer as an unprivileged user with chosen capabilities, and a
// traffic run with its ledger of exact per-flow counters.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <grp.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/perf_event.h>
#include <map>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <utility>
#include <vector>

#include "process.h"
#include "recorder.h"
#include "testutil.h"

namespace privtest {

constexpr uid_t kNobody = 65534;
constexpr int kCapNetAdmin = 12, kCapSysAdmin = 21, kCapPerfmon = 38, kCapBpf = 39;

struct Cap {
	int number;
	const char *name;    // as the tracer names it
	const char *setpriv; // as setpriv(1) names it
};
constexpr Cap kThree[] = {
	{kCapBpf, "CAP_BPF", "bpf"},
	{kCapPerfmon, "CAP_PERFMON", "perfmon"},
	{kCapNetAdmin, "CAP_NET_ADMIN", "net_admin"},
};
constexpr Cap kNamed[] = {kThree[0], kThree[1], kThree[2], {kCapSysAdmin, "CAP_SYS_ADMIN", "sys_admin"}};

inline std::uint64_t bit(int cap)
{
	return std::uint64_t{1} << cap;
}

inline std::uint64_t mask(const std::vector<Cap> &caps)
{
	std::uint64_t m = 0;
	for (const auto &c : caps)
		m |= bit(c.number);
	return m;
}

/**
 * Becomes user and group `uid` with exactly `caps` (effective, permitted,
 * inheritable), the way setpriv(1) or systemd's AmbientCapabilities= leave a
 * process. For a forked child: exits 120 on failure.
 */
inline void become(uid_t uid, const std::vector<int> &caps)
{
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	__user_cap_data_struct data[2]{};
	for (int cap : caps) {
		data[cap / 32].effective |= 1u << (cap % 32);
		data[cap / 32].permitted |= 1u << (cap % 32);
		data[cap / 32].inheritable |= 1u << (cap % 32);
	}
	if (prctl(PR_SET_KEEPCAPS, 1) != 0 || setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 ||
	    setresuid(uid, uid, uid) != 0 || syscall(SYS_capset, &hdr, data) != 0 ||
	    prctl(PR_SET_KEEPCAPS, 0) != 0)
		_exit(120);
}

/// The effective capabilities of process `pid` (/proc/PID/status), or ~0 if unreadable.
inline std::uint64_t cap_eff(pid_t pid)
{
	std::ifstream status("/proc/" + std::to_string(pid) + "/status");
	std::string line;
	while (std::getline(status, line))
		if (line.rfind("CapEff:", 0) == 0)
			return std::stoull(line.substr(7), nullptr, 16);
	return ~std::uint64_t{0};
}

inline std::string cap_names(std::uint64_t caps)
{
	std::string out;
	std::uint64_t named = 0;
	for (const auto &c : kNamed) {
		named |= bit(c.number);
		if (caps & bit(c.number))
			out += std::string(out.empty() ? "" : ", ") + c.name;
	}
	if (caps & ~named)
		out += std::string(out.empty() ? "" : ", ") + "others";
	return out.empty() ? "none" : out;
}

// The exit status of `probe` run in a forked child.
template <typename F> int in_child(F probe)
{
	const pid_t pid = fork();
	if (pid == 0)
		_exit(probe());
	int status = 0;
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/**
 * Whether this kernel refuses perf events to nobody with CAP_PERFMON: the
 * test's own finding, from a CPU clock event on itself, which
 * kernel.perf_event_paranoid up to 2 allows to anyone.
 */
inline bool perf_events_refused_to_nobody()
{
	static const int refused = in_child([] {
		become(kNobody, {kCapBpf, kCapPerfmon, kCapNetAdmin});
		perf_event_attr attr{};
		attr.size = sizeof(attr);
		attr.type = PERF_TYPE_SOFTWARE;
		attr.config = PERF_COUNT_SW_CPU_CLOCK;
		attr.disabled = 1;
		attr.exclude_kernel = 1;
		attr.exclude_hv = 1;
		const long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
		return fd < 0 && (errno == EACCES || errno == EPERM) ? 1 : 0;
	});
	return refused == 1;
}

/**
 * Whether a process without CAP_BPF is refused bpf() calls on maps it holds:
 * the test's own finding, from a lookup in a map made here by a child that
 * dropped every capability (kernels before 6.5 refused every bpf() call
 * without CAP_BPF while kernel.unprivileged_bpf_disabled was set, and some
 * stable kernels took the later rule). The tracer keeps CAP_BPF when that
 * sysctl is 0, for it could be set later.
 */
inline bool maps_need_cap_bpf()
{
	std::ifstream sysctl("/proc/sys/kernel/unprivileged_bpf_disabled");
	int disabled = 0;
	if (!(sysctl >> disabled) || disabled == 0)
		return true;
	union bpf_attr attr {
	};
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 8;
	attr.max_entries = 1;
	const int fd = static_cast<int>(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
	if (fd < 0)
		return true;
	const int status = in_child([fd] {
		__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
		__user_cap_data_struct none[2]{};
		if (syscall(SYS_capset, &hdr, none) != 0)
			return 2;
		std::uint32_t key = 0;
		std::uint64_t value = 0;
		union bpf_attr lookup {
		};
		lookup.map_fd = static_cast<std::uint32_t>(fd);
		lookup.key = reinterpret_cast<std::uint64_t>(&key);
		lookup.value = reinterpret_cast<std::uint64_t>(&value);
		return syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &lookup, sizeof(lookup)) == 0 ? 0 : 1;
	});
	close(fd);
	return status != 0;
}

/// The capabilities `backend` needs here.
inline std::uint64_t required_caps(const std::string &backend)
{
	std::uint64_t caps = bit(kCapBpf) | bit(kCapPerfmon);
	if (backend == "tracepoint")
		caps |= bit(kCapNetAdmin);
	if (backend == "kprobe" && perf_events_refused_to_nobody())
		caps |= bit(kCapSysAdmin);
	return caps;
}

/// Whether `backend` attaches here as root (the CLI forced to it, for a second).
inline bool attaches_as_root(const std::string &cli, const std::string &backend)
{
	static std::map<std::string, bool> known;
	if (!known.count(backend)) {
		testutil::Process root({cli, "--backend", backend, "--duration", "1"});
		known[backend] = root.wait_exit(std::chrono::seconds(120)) == 0;
	}
	return known[backend];
}

/**
 * The backend that must trace for a process holding `caps` (the test's
 * backend, or what `auto` must take: the first in its order that attaches
 * here and whose needs `caps` meet), or "" if none; then `*missing` gets
 * what the best one lacks.
 */
inline std::string expected_backend(const std::string &cli, std::uint64_t caps, std::uint64_t *missing)
{
	const std::string forced = testutil::test_backend();
	std::vector<std::string> order{forced};
	if (forced == "auto")
		order = {"fentry", "tracepoint", "kprobe"};
	std::string best;
	for (const auto &b : order) {
		if (forced == "auto" && !attaches_as_root(cli, b))
			continue;
		if (!(required_caps(b) & ~caps))
			return b;
		if (best.empty())
			best = b;
	}
	*missing = best.empty() ? 0 : required_caps(best) & ~caps;
	return "";
}

/// Final counters of one flow.
struct Counts {
	std::uint64_t tx_packets = 0, tx_bytes = 0, rx_packets = 0, rx_bytes = 0;
	bool operator==(const Counts &o) const
	{
		return tx_packets == o.tx_packets && tx_bytes == o.tx_bytes && rx_packets == o.rx_packets &&
		       rx_bytes == o.rx_bytes;
	}
};

inline std::string to_string(const Counts &c)
{
	std::ostringstream s;
	s << "tx " << c.tx_packets << '/' << c.tx_bytes << " rx " << c.rx_packets << '/' << c.rx_bytes;
	return s.str();
}

/// Expected final counters by (local "ip:port", remote "ip:port").
using Ledger = std::map<std::pair<std::string, std::string>, Counts>;

/**
 * Loopback traffic in this network namespace: connected IPv4 and IPv6
 * sockets, and an unconnected one talking to two peers, answered by one.
 * Every socket is closed when it returns.
 */
inline Ledger exchange()
{
	using testutil::endpoint;
	using testutil::Udp;
	Ledger l;
	const auto sent = [&](const Udp &from, const Udp &to, std::size_t n, std::size_t size) {
		auto &tx = l[{endpoint(from.local()), endpoint(to.local())}];
		tx.tx_packets += n;
		tx.tx_bytes += n * size;
		auto &rx = l[{endpoint(to.local()), endpoint(from.local())}];
		rx.rx_packets += n;
		rx.rx_bytes += n * size;
	};
	Udp c4(AF_INET), s4(AF_INET), c6(AF_INET6), s6(AF_INET6);
	s4.bind("127.0.0.1");
	s6.bind("::1");
	c4.connect(s4.local());
	c6.connect(s6.local());
	for (int i = 0; i < 7; i++)
		c4.send(123);
	for (int i = 0; i < 7; i++)
		s4.recv_from();
	sent(c4, s4, 7, 123);
	for (int i = 0; i < 5; i++)
		c6.send(77);
	for (int i = 0; i < 5; i++)
		s6.recv_from();
	sent(c6, s6, 5, 77);

	Udp u(AF_INET), p1(AF_INET), p2(AF_INET);
	u.bind("127.0.0.1");
	p1.bind("127.0.0.1");
	p2.bind("127.0.0.1");
	for (int i = 0; i < 3; i++)
		u.send_to(p1.local(), 200);
	for (int i = 0; i < 2; i++)
		u.send_to(p2.local(), 50);
	for (int i = 0; i < 3; i++)
		p1.recv_from();
	for (int i = 0; i < 2; i++)
		p2.recv_from();
	sent(u, p1, 3, 200);
	sent(u, p2, 2, 50);
	for (int i = 0; i < 4; i++)
		p1.send_to(u.local(), 10);
	for (int i = 0; i < 4; i++)
		u.recv_from();
	sent(p1, u, 4, 10);
	return l;
}

/// Each flow's newest snapshot in network namespace `netns`, by endpoints,
/// from JSON lines (connect snapshots can show a port connect() bound later).
inline std::map<std::pair<std::string, std::string>, testutil::JsonObject>
last_snapshots(const std::vector<testutil::JsonObject> &lines, std::uint32_t netns)
{
	std::map<std::pair<std::string, std::string>, testutil::JsonObject> last;
	const std::string ns = std::to_string(netns);
	for (const auto &o : lines)
		if (o.at("netns") == ns && o.at("event") != "connect")
			last[{o.at("saddr") + ":" + o.at("sport"), o.at("daddr") + ":" + o.at("dport")}] = o;
	return last;
}

inline Counts counts_of(const testutil::JsonObject &o)
{
	return {std::stoull(o.at("tx_packets")), std::stoull(o.at("tx_bytes")),
		std::stoull(o.at("rx_packets")), std::stoull(o.at("rx_bytes"))};
}

inline std::vector<testutil::JsonObject> parse_lines(const std::string &text)
{
	std::vector<testutil::JsonObject> out;
	std::istringstream in(text);
	std::string line;
	while (std::getline(in, line))
		if (!line.empty() && line.front() == '{')
			out.push_back(testutil::parse_json_line(line));
	return out;
}

} // namespace privtest
