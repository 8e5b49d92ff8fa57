// SPDX-License-Identifier: LGPL-2.1-or-later
// Helpers shared by the root test tiers: privileges, fresh network
// namespaces, real UDP sockets, and a small reader of the CLI's JSON lines.
#pragma once

#include <arpa/inet.h>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdexcept>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tuple>
#include <unistd.h>
#include <vector>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* linux/udp.h; netinet/udp.h lacks it before glibc 2.34 */
#endif

namespace testutil {

[[noreturn]] inline void die(const std::string &what)
{
	throw std::runtime_error(what + ": " + std::strerror(errno));
}

/// Exit 77 (Meson's skip) unless root; in CI (CI=true) a missing privilege is a failure.
inline void require_root_or_skip(const char *test)
{
	if (geteuid() == 0)
		return;
	const char *ci = std::getenv("CI");
	if (ci && std::string(ci) == "true") {
		std::fprintf(stderr, "%s: needs root, and CI must not skip\n", test);
		std::exit(1);
	}
	std::fprintf(stderr, "%s: skipped: needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) to load BPF\n",
		     test);
	std::exit(77);
}

/// Whether the command line asks for usage (-h or --help anywhere): the test
/// drivers answer it before they take their arguments or need root.
inline bool asks_for_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

/// The backend the root tiers test: UDPI_TEST_BACKEND (auto, fentry, kprobe,
/// tracepoint), default auto. The kernel matrix runs every tier once per backend.
inline std::string test_backend()
{
	const char *b = std::getenv("UDPI_TEST_BACKEND");
	return b && *b ? b : "auto";
}

/// UDPI_TEST_SENDS=tracepoint: the tracepoint backend counts sends at
/// sock_send_length (Options::sends_at_tracepoint), the path kernels take whose
/// cgroup_skb programs cannot see the current task.
inline bool test_sends_at_tracepoint()
{
	const char *s = std::getenv("UDPI_TEST_SENDS");
	return s && std::string(s) == "tracepoint";
}

/**
 * Moves the calling thread into a fresh network namespace with `lo` up; false
 * (errno set) if it cannot. Only system calls: a child forked from a
 * threaded process may call it.
 */
inline bool try_fresh_netns()
{
	if (unshare(CLONE_NEWNET) != 0)
		return false;
	const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	ifreq ifr{};
	std::memcpy(ifr.ifr_name, "lo", 3);
	bool up = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	up = up && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
	const int saved = errno;
	close(fd);
	errno = saved;
	return up;
}

/// Moves the calling process into a fresh network namespace with `lo` up.
inline void enter_fresh_netns()
{
	if (!try_fresh_netns())
		die("a fresh network namespace with lo up");
}

/**
 * Waits until every CPU's loopback backlog has delivered what was sent before
 * the call. Loopback queues a datagram on the sending CPU's backlog, which
 * a softirq empties in order: mostly before sendto() returns, but on a busy
 * machine later, in ksoftirqd, and a thread that moved to another CPU in
 * between sees its later datagrams overtake its earlier ones. A marker sent
 * from each CPU in turn comes back only after everything queued before it
 * there. The markers are IP packets of protocol 253 (RFC 3692's, for
 * experiments) on a raw socket, not UDP: no tracer counts them. They go from
 * a child process in a network namespace of its own, so no UDP or IP counter
 * of the caller's namespace sees them either.
 */
inline void loopback_barrier()
{
	const pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		// Only system calls from here on: the parent may have had threads.
		if (!try_fresh_netns())
			_exit(2);
		const int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, 253);
		sockaddr_in a{};
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		const timeval wait{10, 0};
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) != 0)
			_exit(3);
		for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
			cpu_set_t one;
			CPU_ZERO(&one);
			CPU_SET(cpu, &one);
			if (sched_setaffinity(0, sizeof(one), &one) != 0)
				continue; // not a CPU this process may run on
			char mark = static_cast<char>(cpu), back[64];
			if (sendto(fd, &mark, 1, 0, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 1)
				_exit(5);
			// The packet comes back with its IP header; only this process sends here.
			if (recv(fd, back, sizeof(back), 0) <= 0)
				_exit(6);
		}
		_exit(0);
	}
	int status = 0;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		throw std::runtime_error("loopback_barrier: a marker did not come back (status " +
					 std::to_string(status) + ")");
}

/// The calling thread's command, as the kernel reports it (`comm`).
inline std::string own_comm()
{
	std::ifstream in("/proc/thread-self/comm");
	std::string comm;
	std::getline(in, comm);
	return comm;
}

/// Inode number of the calling thread's network namespace (the tracer's `netns`).
inline std::uint32_t current_netns()
{
	struct stat st {};
	if (stat("/proc/self/ns/net", &st) != 0)
		die("stat /proc/self/ns/net");
	return static_cast<std::uint32_t>(st.st_ino);
}

/// An IPv4 or IPv6 socket address with a port.
struct SockAddr {
	sockaddr_storage ss{};
	socklen_t len = 0;

	static SockAddr parse(const std::string &ip, std::uint16_t port)
	{
		SockAddr a;
		if (ip.find(':') == std::string::npos) {
			auto *sin = reinterpret_cast<sockaddr_in *>(&a.ss);
			sin->sin_family = AF_INET;
			sin->sin_port = htons(port);
			if (inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) != 1)
				throw std::runtime_error("bad address " + ip);
			a.len = sizeof(*sin);
		} else {
			auto *sin6 = reinterpret_cast<sockaddr_in6 *>(&a.ss);
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(port);
			if (inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr) != 1)
				throw std::runtime_error("bad address " + ip);
			a.len = sizeof(*sin6);
		}
		return a;
	}
	int family() const { return ss.ss_family; }
	std::uint16_t port() const
	{
		return ntohs(family() == AF_INET ? reinterpret_cast<const sockaddr_in *>(&ss)->sin_port
						 : reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_port);
	}
	std::string ip() const
	{
		char buf[INET6_ADDRSTRLEN];
		if (family() == AF_INET)
			return inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in *>(&ss)->sin_addr, buf,
					 sizeof(buf));
		return inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_addr, buf,
				 sizeof(buf));
	}
	const sockaddr *sa() const { return reinterpret_cast<const sockaddr *>(&ss); }
};

/// A real UDP socket, closed by the destructor.
class Udp {
public:
	explicit Udp(int family) : fd_(socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0))
	{
		if (fd_ < 0)
			die("socket");
		// A datagram that never comes fails the test instead of hanging it.
		timeval tv{20, 0};
		setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	Udp(const Udp &) = delete;
	Udp &operator=(const Udp &) = delete;
	Udp(Udp &&o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
	~Udp() { close(); }

	void close()
	{
		if (fd_ >= 0)
			::close(fd_);
		fd_ = -1;
	}
	int fd() const { return fd_; }

	void bind(const std::string &ip, std::uint16_t port = 0)
	{
		auto a = SockAddr::parse(ip, port);
		if (::bind(fd_, a.sa(), a.len) != 0)
			die("bind " + ip);
	}
	void connect(const SockAddr &peer)
	{
		if (::connect(fd_, peer.sa(), peer.len) != 0)
			die("connect");
	}
	SockAddr local() const
	{
		SockAddr a;
		a.len = sizeof(a.ss);
		if (getsockname(fd_, reinterpret_cast<sockaddr *>(&a.ss), &a.len) != 0)
			die("getsockname");
		return a;
	}
	void send(std::size_t bytes)
	{
		std::vector<char> buf(bytes, 'u');
		if (::send(fd_, buf.data(), bytes, 0) != static_cast<ssize_t>(bytes))
			die("send");
	}
	void send_to(const SockAddr &peer, std::size_t bytes)
	{
		std::vector<char> buf(bytes, 'u');
		if (::sendto(fd_, buf.data(), bytes, 0, peer.sa(), peer.len) != static_cast<ssize_t>(bytes))
			die("sendto");
	}
	/// recvfrom(): returns the bytes and stores the sender.
	std::size_t recv_from(SockAddr &from)
	{
		char buf[65536];
		from.len = sizeof(from.ss);
		ssize_t n = ::recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr *>(&from.ss),
				       &from.len);
		if (n < 0)
			die("recvfrom");
		return static_cast<std::size_t>(n);
	}
	std::size_t recv_from()
	{
		SockAddr from;
		return recv_from(from);
	}
	/// recv() without asking for the sender, into a buffer of `size` bytes.
	std::size_t recv(std::size_t size = 65536, int flags = 0)
	{
		std::vector<char> buf(size ? size : 1);
		const ssize_t n = ::recv(fd_, buf.data(), size, flags);
		if (n < 0)
			die("recv");
		return static_cast<std::size_t>(n);
	}

private:
	int fd_;
};

/// Identifies a flow by what a test knows: local and remote endpoint text.
struct FlowName {
	std::string local;  // "ip:port"
	std::string remote; // "ip:port"
	bool operator<(const FlowName &o) const
	{
		return std::tie(local, remote) < std::tie(o.local, o.remote);
	}
};

inline std::string endpoint(const SockAddr &a)
{
	return a.ip() + ":" + std::to_string(a.port());
}

/// The socket's drops as the kernel counts them: the last column of its line
/// in /proc/net/udp or udp6 (of the calling thread's network namespace).
inline std::uint64_t socket_drops(int fd)
{
	struct stat st {};
	if (fstat(fd, &st) != 0)
		die("fstat");
	for (const char *table : {"/proc/net/udp", "/proc/net/udp6"}) {
		std::ifstream in(table);
		std::string line;
		std::getline(in, line); // the titles
		while (std::getline(in, line)) {
			std::vector<std::string> fields;
			std::size_t i = 0;
			while (i < line.size()) {
				const std::size_t start = line.find_first_not_of(' ', i);
				if (start == std::string::npos)
					break;
				i = line.find(' ', start);
				fields.push_back(line.substr(start, i == std::string::npos ? i : i - start));
			}
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
			if (fields.size() >= 13 && fields[9] == std::to_string(st.st_ino))
				return std::stoull(fields.back());
		}
	}
	throw std::runtime_error("no line for inode " + std::to_string(st.st_ino) + " in /proc/net/udp{,6}");
}

/// Datagrams every CPU's input backlog dropped before any protocol saw them
/// (the second column of /proc/net/softnet_stat, summed; machine-wide).
inline std::uint64_t softnet_dropped()
{
	std::ifstream in("/proc/net/softnet_stat");
	std::string processed, dropped, rest;
	std::uint64_t sum = 0;
	while (in >> processed >> dropped) {
		sum += std::stoull(dropped, nullptr, 16);
		std::getline(in, rest);
	}
	return sum;
}

/// One flat JSON object of the CLI's --json output: strings and integers.
using JsonObject = std::map<std::string, std::string>;

/// Parses {"k":"v","n":123,...}; values keep their text (strings unescaped).
inline JsonObject parse_json_line(const std::string &line)
{
	JsonObject obj;
	std::size_t i = 0;
	auto skip_ws = [&] {
		while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i])))
			i++;
	};
	auto expect = [&](char c) {
		skip_ws();
		if (i >= line.size() || line[i] != c)
			throw std::runtime_error("bad JSON (expected '" + std::string(1, c) + "'): " + line);
		i++;
	};
	auto read_string = [&] {
		expect('"');
		std::string s;
		while (i < line.size() && line[i] != '"') {
			if (line[i] == '\\' && i + 1 < line.size()) {
				i++;
				if (line[i] == 'u' && i + 4 < line.size()) {
					s += static_cast<char>(std::stoi(line.substr(i + 1, 4), nullptr, 16));
					i += 4;
				} else {
					s += line[i];
				}
			} else {
				s += line[i];
			}
			i++;
		}
		expect('"');
		return s;
	};
	expect('{');
	skip_ws();
	while (i < line.size() && line[i] != '}') {
		std::string key = read_string();
		expect(':');
		skip_ws();
		std::string value;
		if (i < line.size() && line[i] == '"') {
			value = read_string();
		} else {
			while (i < line.size() && line[i] != ',' && line[i] != '}')
				value += line[i++];
		}
		obj[key] = value;
		skip_ws();
		if (i < line.size() && line[i] == ',')
			i++;
		skip_ws();
	}
	expect('}');
	return obj;
}

} // namespace testutil
