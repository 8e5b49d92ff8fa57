// SPDX-License-Identifier: LGPL-2.1-or-later
// Runs the legacy documentation's complete example (seed_example.c, compiled
// unchanged) against libudpEvent.so installed at the legacy path, makes IPv4
// and IPv6 UDP traffic, and checks what the example prints: exact totals per
// flow, family, addresses, ports, command, pid, time, and a clean exit on
// SIGINT.
//
// The host is left as it was: the library is installed on a tmpfs over /opt
// in a private mount namespace, and the traffic runs over the loopback of a
// fresh network namespace. Both die with this process.
//
// With "filtered", UDPEVENT_PORT restricts the tracer to the test's server
// port, so that a busy host's own UDP cannot crowd out the test's flows;
// without it the example runs with no UDPEVENT_* variable but the interval.
//
// usage: compat_seed_driver SEED_EXAMPLE LIBUDPEVENT_SO INTERVAL_MS [filtered]
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <string>
#include <string_view>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

#include "testutil.h"

namespace {

constexpr const char *kLegacyDir = "/opt/RealTimeKql/lib";
constexpr const char *kLegacyPath = "/opt/RealTimeKql/lib/libudpEvent.so";
// The command the traffic runs as (at most 15 characters, as the kernel keeps it).
constexpr const char *kTrafficComm = "udpi-legacy-tx";
constexpr std::int64_t kSecond = 1000000000;

int failures = 0;

template <typename... Args> void fail(fmt::format_string<Args...> format, Args &&...args)
{
	fmt::print(stderr, "FAIL: {}\n", fmt::format(format, std::forward<Args>(args)...));
	failures++;
}

template <typename... Args> [[noreturn]] void die(fmt::format_string<Args...> format, Args &&...args)
{
	fmt::print(stderr, "FAIL: {}\n", fmt::format(format, std::forward<Args>(args)...));
	std::exit(1);
}

std::int64_t wall_ns()
{
	timespec ts{};
	clock_gettime(CLOCK_REALTIME, &ts);
	return static_cast<std::int64_t>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

// ---- the private namespaces ----

void copy_file(const char *from, const char *to)
{
	const int in = open(from, O_RDONLY | O_CLOEXEC);
	const int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (in < 0 || out < 0)
		die("cannot copy {} to {}: {}", from, to, std::strerror(errno));
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, static_cast<size_t>(n)) != n)
			die("writing {}: {}", to, std::strerror(errno));
	if (n < 0)
		die("reading {}: {}", from, std::strerror(errno));
	close(in);
	close(out);
}

void enter_namespaces(const char *library)
{
	if (unshare(CLONE_NEWNS) != 0)
		die("unshare(CLONE_NEWNS): {}", std::strerror(errno));
	// Nothing mounted from here on propagates back to the host.
	if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
		die("making / private: {}", std::strerror(errno));
	struct stat st = {};
	if (stat("/opt", &st) != 0 || !S_ISDIR(st.st_mode))
		die("/opt is not a directory: there is nothing to mount the private tmpfs over");
	if (mount("tmpfs", "/opt", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
		die("mounting a tmpfs over /opt: {}", std::strerror(errno));
	if (mkdir("/opt/RealTimeKql", 0755) != 0 || mkdir(kLegacyDir, 0755) != 0)
		die("creating {}: {}", kLegacyDir, std::strerror(errno));
	copy_file(library, kLegacyPath);
	try {
		testutil::enter_fresh_netns();
	} catch (const std::exception &e) {
		die("{}", e.what());
	}
}

// ---- the example, on a pseudo-terminal ----
//
// Its stdout is a terminal, as when a person runs it: stdio then flushes
// every line, so the driver sees each event as it is printed.

struct Example {
	pid_t pid = -1;
	int out_fd = -1; // pty master
	int err_fd = -1;
	std::string out, err;
	bool out_eof = false, err_eof = false;
	std::optional<int> status;

	void start(const char *path, const char *interval_ms, const char *port_filter)
	{
		const int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
			die("cannot open a pseudo-terminal: {}", std::strerror(errno));
		const int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
		termios tio{};
		if (slave < 0 || tcgetattr(slave, &tio) != 0)
			die("cannot open the pseudo-terminal's slave: {}", std::strerror(errno));
		cfmakeraw(&tio);
		tcsetattr(slave, TCSANOW, &tio);
		int err_pipe[2];
		if (pipe2(err_pipe, O_CLOEXEC) != 0)
			die("pipe: {}", std::strerror(errno));

		pid = fork();
		if (pid < 0)
			die("fork: {}", std::strerror(errno));
		if (pid == 0) {
			for (const char *name : {"UDPEVENT_QUEUE_SIZE", "UDPEVENT_PID", "UDPEVENT_UID",
						 "UDPEVENT_PORT", "UDPEVENT_FAMILY", "UDPEVENT_VERBOSE"})
				unsetenv(name);
			setenv("UDPEVENT_INTERVAL_MS", interval_ms, 1);
			// The backend under test (UDPI_TEST_BACKEND, as in every root tier).
			setenv("UDPEVENT_BACKEND", testutil::test_backend().c_str(), 1);
			if (port_filter)
				setenv("UDPEVENT_PORT", port_filter, 1);
			dup2(slave, STDOUT_FILENO);
			dup2(err_pipe[1], STDERR_FILENO);
			execl(path, path, static_cast<char *>(nullptr));
			_exit(127);
		}
		close(slave);
		close(err_pipe[1]);
		out_fd = master;
		err_fd = err_pipe[0];
	}

	// Reads what the example prints until `done` holds or the deadline passes.
	bool pump(std::chrono::milliseconds timeout, const std::function<bool()> &done)
	{
		const auto deadline = std::chrono::steady_clock::now() + timeout;
		for (;;) {
			if (done())
				return true;
			reap();
			const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
				deadline - std::chrono::steady_clock::now());
			if (left.count() <= 0)
				return done();
			if (out_eof && err_eof && status)
				return done();
			pollfd fds[2] = {{out_eof ? -1 : out_fd, POLLIN, 0},
					 {err_eof ? -1 : err_fd, POLLIN, 0}};
			poll(fds, 2, static_cast<int>(std::min<long>(left.count(), 100)));
			read_into(out_fd, out, out_eof, fds[0].revents);
			read_into(err_fd, err, err_eof, fds[1].revents, "example stderr: ");
		}
	}

	void reap()
	{
		int st;
		if (!status && pid > 0 && waitpid(pid, &st, WNOHANG) == pid)
			status = st;
	}

private:
	static void read_into(int fd, std::string &text, bool &eof, short revents, const char *echo = nullptr)
	{
		if (!revents)
			return;
		char buf[4096];
		const ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			// A pty master reads EIO once the example has exited.
			if (n == 0 || errno != EINTR)
				eof = true;
			return;
		}
		text.append(buf, static_cast<size_t>(n));
		if (echo)
			fmt::print(stderr, "{}{}", echo, std::string_view(buf, static_cast<size_t>(n)));
	}
};

// ---- what the example prints ----

struct Printed {
	long pid = -1, uid = -1, family = -1;
	std::uint64_t rx_b = 0, tx_b = 0, rx_pkts = 0, tx_pkts = 0;
	std::string command, saddr, daddr;
	long sport = -1, dport = -1;
	std::int64_t time = 0;
};

bool split_endpoint(const std::string &text, std::string &addr, long &port)
{
	const auto colon = text.rfind(':');
	if (colon == std::string::npos)
		return false;
	addr = text.substr(0, colon);
	port = std::strtol(text.c_str() + colon + 1, nullptr, 10);
	return true;
}

// printEvent()'s blocks, in order.
std::vector<Printed> parse(const std::string &out)
{
	std::vector<Printed> events;
	Printed cur;
	size_t pos = 0;
	while (pos < out.size()) {
		size_t end = out.find('\n', pos);
		if (end == std::string::npos)
			break; // an incomplete last line
		std::string line = out.substr(pos, end - pos);
		pos = end + 1;
		while (!line.empty() && line.back() == '\r')
			line.pop_back();
		const auto value = [&](const char *prefix) -> const char * {
			const size_t n = std::strlen(prefix);
			return line.compare(0, n, prefix) == 0 ? line.c_str() + n : nullptr;
		};
		if (const char *v = value("PID: ")) {
			cur = Printed{};
			cur.pid = std::strtol(v, nullptr, 10);
		} else if (const char *v = value("UID: ")) {
			cur.uid = std::strtol(v, nullptr, 10);
		} else if (const char *v = value("Family: ")) {
			cur.family = std::strtol(v, nullptr, 10);
		} else if (const char *v = value("Bytes received: ")) {
			cur.rx_b = std::strtoull(v, nullptr, 10);
		} else if (const char *v = value("Bytes sent: ")) {
			cur.tx_b = std::strtoull(v, nullptr, 10);
		} else if (const char *v = value("Packets received: ")) {
			cur.rx_pkts = std::strtoull(v, nullptr, 10);
		} else if (const char *v = value("Packets sent: ")) {
			cur.tx_pkts = std::strtoull(v, nullptr, 10);
		} else if (const char *v = value("Command: ")) {
			cur.command = v;
		} else if (const char *v = value("Source: ")) {
			split_endpoint(v, cur.saddr, cur.sport);
		} else if (const char *v = value("Destination: ")) {
			split_endpoint(v, cur.daddr, cur.dport);
		} else if (const char *v = value("Event time: ")) {
			cur.time = std::strtoll(v, nullptr, 10);
			events.push_back(cur);
		}
	}
	return events;
}

// ---- the traffic ----

struct Flow {
	const char *name;
	int family; // the legacy code: 2 or 10
	const char *saddr;
	long sport;
	const char *daddr;
	long dport;
	std::uint64_t tx_b, tx_pkts, rx_b, rx_pkts;
};

// One server port for both families, so that one port filter selects every flow.
constexpr std::uint16_t kServer4 = 40004, kClient4 = 40014, kServer6 = 40004, kClient6 = 40016;

// What traffic() does, flow by flow: a connected client and an unconnected
// server (whose peers come from the datagrams), in each family. The IPv6
// client also sends a zero-length datagram, which is a datagram.
const Flow kFlows[] = {
	{"IPv4 client", 2, "127.0.0.1", kClient4, "127.0.0.1", kServer4, 600, 3, 33, 2},
	{"IPv4 server", 2, "127.0.0.1", kServer4, "127.0.0.1", kClient4, 33, 2, 600, 3},
	{"IPv6 client", 10, "::1", kClient6, "::1", kServer6, 100, 5, 1234, 1},
	{"IPv6 server", 10, "::1", kServer6, "::1", kClient6, 1234, 1, 100, 5},
};

sockaddr_storage address(int family, std::uint16_t port)
{
	sockaddr_storage ss{};
	if (family == AF_INET) {
		auto *sin = reinterpret_cast<sockaddr_in *>(&ss);
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		auto *sin6 = reinterpret_cast<sockaddr_in6 *>(&ss);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_loopback;
	}
	return ss;
}

socklen_t length(int family)
{
	return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

bool check(bool ok, const char *what)
{
	if (!ok)
		std::fprintf(stderr, "traffic: %s: %s\n", what, std::strerror(errno));
	return ok;
}

int bound_socket(int family, std::uint16_t port)
{
	const int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	const timeval timeout{5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	const sockaddr_storage addr = address(family, port);
	if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr *>(&addr), length(family)) != 0) {
		std::fprintf(stderr, "traffic: bind to port %u: %s\n", port, std::strerror(errno));
		return -1;
	}
	return fd;
}

bool exchange(int family, std::uint16_t server_port, std::uint16_t client_port,
	      const std::vector<size_t> &requests, const std::vector<size_t> &replies)
{
	static char buf[65536];
	const int server = bound_socket(family, server_port);
	const int client = bound_socket(family, client_port);
	if (server < 0 || client < 0)
		return false;
	const sockaddr_storage server_addr = address(family, server_port);
	if (!check(connect(client, reinterpret_cast<const sockaddr *>(&server_addr), length(family)) == 0,
		   "connect"))
		return false;
	for (size_t size : requests)
		if (!check(send(client, buf, size, 0) == static_cast<ssize_t>(size), "send"))
			return false;
	sockaddr_storage peer{};
	for (size_t size : requests) {
		socklen_t len = sizeof(peer);
		if (!check(recvfrom(server, buf, sizeof(buf), 0, reinterpret_cast<sockaddr *>(&peer), &len) ==
				   static_cast<ssize_t>(size),
			   "recvfrom"))
			return false;
	}
	for (size_t size : replies)
		if (!check(sendto(server, buf, size, 0, reinterpret_cast<const sockaddr *>(&peer),
				  length(family)) == static_cast<ssize_t>(size),
			   "sendto"))
			return false;
	for (size_t size : replies)
		if (!check(recv(client, buf, sizeof(buf), 0) == static_cast<ssize_t>(size), "recv"))
			return false;
	close(client);
	close(server);
	return true;
}

// In a child named kTrafficComm, so that its pid and command are known.
pid_t run_traffic()
{
	const pid_t pid = fork();
	if (pid < 0)
		die("fork: {}", std::strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_NAME, kTrafficComm);
		const bool ok = exchange(AF_INET, kServer4, kClient4, {100, 200, 300}, {11, 22}) &&
				exchange(AF_INET6, kServer6, kClient6, {10, 20, 30, 40, 0}, {1234});
		_exit(ok ? 0 : 1);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("the traffic failed (see above)");
	return pid;
}

bool same_flow(const Printed &p, const Flow &f)
{
	return p.family == f.family && p.saddr == f.saddr && p.sport == f.sport && p.daddr == f.daddr &&
	       p.dport == f.dport;
}

bool has_totals(const Printed &p, const Flow &f)
{
	return p.tx_b == f.tx_b && p.tx_pkts == f.tx_pkts && p.rx_b == f.rx_b && p.rx_pkts == f.rx_pkts;
}

std::string describe(const Printed &p)
{
	return fmt::format("pid {} uid {} family {} {}:{} -> {}:{} tx {}/{} rx {}/{} command '{}' time {}",
			   p.pid, p.uid, p.family, p.saddr, p.sport, p.daddr, p.dport, p.tx_pkts, p.tx_b,
			   p.rx_pkts, p.rx_b, p.command, p.time);
}

} // namespace

int main(int argc, char **argv)
{
	const char *usage = "usage: compat_seed_driver SEED_EXAMPLE LIBUDPEVENT_SO INTERVAL_MS [filtered]\n";
	if (testutil::asks_for_help(argc, argv)) {
		std::printf("%sRun the legacy documentation's example SEED_EXAMPLE against LIBUDPEVENT_SO\n"
			    "(installed at the legacy path in a private mount namespace), make IPv4 and\n"
			    "IPv6 traffic in a fresh network namespace, and check what the example\n"
			    "prints; with \"filtered\", UDPEVENT_PORT limits it to the test's port.\n",
			    usage);
		return 0;
	}
	if (argc != 4 && !(argc == 5 && std::string_view(argv[4]) == "filtered")) {
		std::fputs(usage, stderr);
		return 2;
	}
	const std::string port_filter = std::to_string(kServer4);
	const bool filtered = argc == 5;
	testutil::require_root_or_skip("compat seed example");
	const char *interval = argv[3];
	enter_namespaces(argv[2]);

	Example example;
	example.start(argv[1], interval, filtered ? port_filter.c_str() : nullptr);
	const bool attached = example.pump(std::chrono::seconds(60), [&] {
		// A failed attach is said at once, never a silent wait: stop there.
		return example.err.find("libudpEvent: AddProbe failed") != std::string::npos ||
		       (example.err.find("libudpEvent: attached") != std::string::npos &&
			example.out.find("Probes attached!") != std::string::npos);
	});
	if (!attached || example.err.find("libudpEvent: AddProbe failed") != std::string::npos) {
		kill(example.pid, SIGKILL);
		die("the example did not attach; it printed:\n{}\nand on stderr:\n{}", example.out,
		    example.err);
	}

	const std::int64_t t0 = wall_ns();
	const pid_t traffic = run_traffic();
	const std::int64_t t1 = wall_ns();

	// The close of each socket brings its flows' totals.
	const bool complete = example.pump(std::chrono::seconds(20), [&] {
		const auto events = parse(example.out);
		for (const Flow &f : kFlows) {
			bool seen = false;
			for (const Printed &p : events)
				seen = seen || (p.pid == traffic && same_flow(p, f) && has_totals(p, f));
			if (!seen)
				return false;
		}
		return true;
	});
	if (!complete)
		fail("not every flow's totals were printed within 20 s");
	// Anything still on its way for these flows would come now.
	example.pump(std::chrono::milliseconds(500), [] { return false; });

	kill(example.pid, SIGINT);
	const bool exited =
		example.pump(std::chrono::seconds(15), [&] { return example.status && example.out_eof; });
	if (!exited || !example.status) {
		kill(example.pid, SIGKILL);
		die("the example did not exit within 15 s of SIGINT (a deadlock in cleanup() or dlclose()?)");
	}
	const int st = *example.status;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != SIGINT)
		fail("after SIGINT the example should exit(2) from its handler; it {} {}",
		     WIFEXITED(st) ? "exited with" : "was killed by signal",
		     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	if (example.out.find("Interrupted by signal 2") == std::string::npos)
		fail("the example's SIGINT handler did not run");
	if (example.out.find(fmt::format("UDP Event Monitor PID: {}", example.pid)) == std::string::npos)
		fail("the example did not print its pid");

	const auto events = parse(example.out);
	for (const Flow &f : kFlows) {
		std::vector<Printed> mine;
		for (const Printed &p : events)
			if (same_flow(p, f) && p.pid == traffic)
				mine.push_back(p);
		if (mine.empty()) {
			fail("{}: no event for {}:{} -> {}:{}", f.name, f.saddr, f.sport, f.daddr, f.dport);
			continue;
		}
		const Printed &last = mine.back();
		if (!has_totals(last, f))
			fail("{}: the last event has tx {}/{} rx {}/{}, expected tx {}/{} rx {}/{}", f.name,
			     last.tx_pkts, last.tx_b, last.rx_pkts, last.rx_b, f.tx_pkts, f.tx_b, f.rx_pkts,
			     f.rx_b);
		for (size_t i = 0; i < mine.size(); i++) {
			const Printed &p = mine[i];
			if (p.uid != 0 || p.command != kTrafficComm)
				fail("{}: event {} is not of uid 0 and command {}: {}", f.name, i,
				     kTrafficComm, describe(p));
			if (p.time < t0 - kSecond || p.time > t1 + kSecond)
				fail("{}: event {} has Event time {}, more than a second away from the "
				     "traffic "
				     "({}..{})",
				     f.name, i, p.time, t0, t1);
			if (i > 0) {
				const Printed &q = mine[i - 1];
				if (p.tx_b < q.tx_b || p.rx_b < q.rx_b || p.tx_pkts < q.tx_pkts ||
				    p.rx_pkts < q.rx_pkts)
					fail("{}: counters went backwards: {} after {}", f.name, describe(p),
					     describe(q));
			}
		}
		fmt::print("{}: {} events, last: {}\n", f.name, mine.size(), describe(last));
	}
	// Every event of the traffic names its peer: none has a zero destination.
	size_t of_traffic = 0;
	for (const Printed &p : events) {
		if (p.pid != traffic)
			continue;
		of_traffic++;
		if (p.dport == 0 || p.daddr == "0.0.0.0" || p.daddr == "::" || p.daddr.empty())
			fail("an event with no destination: {}", describe(p));
	}
	fmt::print("{} events printed, {} of the traffic (pid {}), interval {} ms{}; exit status {}\n",
		   events.size(), of_traffic, traffic, interval, filtered ? ", port filter" : "",
		   WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	if (failures) {
		fmt::print(stderr, "the example printed:\n{}\n", example.out);
		return 1;
	}
	fmt::print("ok: the legacy example, unchanged, traced the IPv4 and IPv6 exchanges exactly\n");
	return 0;
}
