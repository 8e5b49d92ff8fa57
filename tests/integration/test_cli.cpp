// SPDX-License-Identifier: LGPL-2.1-or-later
// The command-line tracer as an operator runs it: a real process, real
// traffic, SIGINT, and its JSON read back.
#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>

#include "cli_process.h"
#include "recorder.h"

extern std::string g_cli_path;

using namespace std::chrono_literals;
using testutil::endpoint;
using testutil::JsonObject;
using testutil::SockAddr;
using testutil::Udp;

namespace {

// The CLI under test with the backend under test, as `run_as` (a uid, 0 for
// this process's own) if given.
class CliProcess : public testutil::CliProcess {
public:
	explicit CliProcess(std::vector<std::string> args, uid_t run_as = 0)
	    : testutil::CliProcess(
		      g_cli_path, testutil::with_test_backend(std::move(args)), Stdout::pipe,
		      [run_as] { return !run_as || (setgid(run_as) == 0 && setuid(run_as) == 0); })
	{
	}
};

std::string my_comm()
{
	char name[17] = {};
	prctl(PR_GET_NAME, name);
	return name;
}

// This process's cgroup v2 path, as the tracer reports it.
std::string my_cgroup()
{
	std::ifstream self("/proc/self/cgroup");
	std::string line;
	while (std::getline(self, line))
		if (line.rfind("0::", 0) == 0)
			return line.substr(3);
	return "";
}

// GET http://127.0.0.1:port/path: the status code and the body (HTTP/1.0: the body ends with the connection).
std::pair<int, std::string> http_get(std::uint16_t port, const std::string &path)
{
	const SockAddr to = SockAddr::parse("127.0.0.1", port);
	const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE(fd >= 0);
	timeval tv{10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, to.sa(), to.len) != 0) {
		close(fd);
		return {0, std::strerror(errno)};
	}
	const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
	REQUIRE(write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size()));
	std::string reply;
	char buf[65536];
	for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;)
		reply.append(buf, static_cast<std::size_t>(n));
	close(fd);
	const auto space = reply.find(' ');
	const auto body = reply.find("\r\n\r\n");
	if (space == std::string::npos || body == std::string::npos)
		return {0, reply};
	return {std::stoi(reply.substr(space + 1, 3)), reply.substr(body + 4)};
}

// The sum of one metric's samples whose labels include `match` (a 'name="value"' text).
double metric_sum(const std::string &exposition, const std::string &metric, const std::string &match)
{
	double sum = 0;
	std::istringstream lines(exposition);
	for (std::string line; std::getline(lines, line);)
		if (line.rfind(metric + "{", 0) == 0 && line.find(match) != std::string::npos)
			sum += std::stod(line.substr(line.rfind(' ') + 1));
	return sum;
}

// The port of the CLI's "serving metrics at http://127.0.0.1:PORT/metrics" line.
std::uint16_t metrics_port(const std::string &err)
{
	const std::string mark = "serving metrics at http://127.0.0.1:";
	const auto at = err.find(mark);
	REQUIRE(at != std::string::npos);
	return static_cast<std::uint16_t>(std::stoi(err.substr(at + mark.size())));
}

} // namespace

TEST_CASE("udpintercept --json reports a loopback exchange as four exact flows", "[cli]")
{
	CliProcess cli({"--json"});
	REQUIRE(cli.wait_stderr("tracing", 30s));
	CHECK_THAT(cli.err_text,
		   Catch::Contains("tracepoint") || Catch::Contains("fentry") || Catch::Contains("kprobe"));
	if (testutil::test_backend() != "auto")
		CHECK_THAT(cli.err_text, Catch::Contains("the " + testutil::test_backend() + " backend"));

	const auto before = std::chrono::system_clock::now();
	Udp c4(AF_INET), s4(AF_INET), c6(AF_INET6), s6(AF_INET6);
	s4.bind("127.0.0.1");
	s6.bind("::1");
	c4.connect(s4.local());
	c6.connect(s6.local());
	for (int i = 0; i < 7; i++)
		c4.send(123);
	for (int i = 0; i < 5; i++)
		c6.send(77);
	for (int i = 0; i < 7; i++)
		s4.recv_from();
	for (int i = 0; i < 5; i++)
		s6.recv_from();
	cli.signal(SIGINT); // the CLI's stop reads what its ring buffer still holds
	REQUIRE(cli.wait_exit(30s) == 0);
	const auto after = std::chrono::system_clock::now();

	const std::string netns = std::to_string(testutil::current_netns());
	std::map<std::pair<std::string, std::string>, JsonObject> last;
	for (const auto &o : cli.json_lines())
		if (o.at("netns") == netns && o.at("event") != "connect") // connect() bound the port after
			last[{o.at("saddr") + ":" + o.at("sport"), o.at("daddr") + ":" + o.at("dport")}] = o;
	REQUIRE(last.size() == 4);

	auto check = [&](const Udp &from, const Udp &to, const char *family, int n, int size) {
		const auto &tx = last.at({endpoint(from.local()), endpoint(to.local())});
		CHECK(tx.at("event") == "final");
		CHECK(tx.at("family") == family);
		CHECK(tx.at("tx_packets") == std::to_string(n));
		CHECK(tx.at("tx_bytes") == std::to_string(n * size));
		CHECK(tx.at("rx_packets") == "0");
		const auto &rx = last.at({endpoint(to.local()), endpoint(from.local())});
		CHECK(rx.at("event") == "final");
		CHECK(rx.at("rx_packets") == std::to_string(n));
		CHECK(rx.at("rx_bytes") == std::to_string(n * size));
		CHECK(rx.at("tx_packets") == "0");
		for (const auto *o : {&tx, &rx}) {
			CHECK(o->at("cgroup") == my_cgroup());
			CHECK(o->at("container_id") == "");
			CHECK(o->at("pid") == std::to_string(getpid()));
			CHECK(o->at("uid") == std::to_string(getuid()));
			CHECK(o->at("comm") == my_comm());
			const long long t = std::stoll(o->at("time_ns"));
			CHECK(t >=
			      std::chrono::duration_cast<std::chrono::nanoseconds>(before.time_since_epoch())
				      .count());
			CHECK(t <=
			      std::chrono::duration_cast<std::chrono::nanoseconds>(after.time_since_epoch())
				      .count());
			CHECK(o->at("time").size() == 30); // 2026-11-28T00:01:12.394162199Z
		}
	};
	check(c4, s4, "ipv4", 7, 123);
	check(c6, s6, "ipv6", 5, 77);

	CHECK_THAT(cli.err_text, Catch::Contains("events="));
	CHECK_THAT(cli.err_text, Catch::Contains(" lost=0"));
}

TEST_CASE("udpintercept stops by itself after --duration", "[cli]")
{
	CliProcess cli({"--duration", "1", "--port", "9"});
	REQUIRE(cli.wait_stderr("tracing", 30s));
	CHECK(cli.wait_exit(10s) == 0);
	CHECK_THAT(cli.err_text, Catch::Contains("events=0 lost=0"));
	CHECK_THAT(cli.out_text, Catch::StartsWith("TIME")); // the readable form has a header
}

TEST_CASE("udpintercept without root says which privilege is missing", "[cli][errors]")
{
	CliProcess cli({"--json"}, 65534);
	const int rc = cli.wait_exit(10s);
	CHECK(rc != 0);
	CHECK(rc != -1);
	CHECK_THAT(cli.err_text, Catch::Contains("CAP_BPF"));
	CHECK_THAT(cli.err_text, Catch::Contains("root"));
	CHECK(cli.out_text.empty());
}

TEST_CASE("udpintercept rejects bad usage with exit status 2", "[cli][errors]")
{
	for (std::vector<std::string> args : {std::vector<std::string>{"--interval", "-5"},
					      {"--backend", "ebpf"},
					      {"--family", "ipx"},
					      {"--port", "70000"},
					      {"--recv-peers", "sometimes"},
					      {"--metrics", "localhost:9100"},
					      {"--metrics", "127.0.0.1:65536"},
					      {"--metrics-labels", "uid"},
					      {"--metrics", "0", "--metrics-labels", "uid,daddr"},
					      {"--metrics", "0", "--metrics-max-series", "0"},
					      {"--quiet", "--json"},
					      {"--bogus"},
					      {"stray"}}) {
		CliProcess cli(args);
		CHECK(cli.wait_exit(10s) == 2);
		CHECK_THAT(cli.err_text, Catch::Contains("--help"));
	}
}

TEST_CASE("udpintercept --help explains the output, filters and backends", "[cli]")
{
	CliProcess cli({"--help"});
	REQUIRE(cli.wait_exit(10s) == 0);
	for (const char *s : {"--json",
			      "--interval",
			      "--duration",
			      "--backend",
			      "--pid",
			      "--uid",
			      "--port",
			      "--family",
			      "--cgroup",
			      "--recv-peers",
			      "tx_bytes",
			      "final",
			      "lost",
			      "CAP_BPF",
			      "--metrics",
			      "--quiet",
			      "--metrics-labels",
			      "--metrics-max-series",
			      "container_id",
			      "/health"})
		CHECK_THAT(cli.out_text, Catch::Contains(s));
}

TEST_CASE("udpintercept exits promptly with a clear error for a backend the kernel lacks", "[cli][errors]")
{
	CliProcess cli({"--backend", "kprobe"});
	const auto start = std::chrono::steady_clock::now();
	const int rc = cli.wait_exit(30s);
	if (rc == 0 || cli.err_text.find("tracing") != std::string::npos) {
		SUCCEED("this kernel offers kprobes");
		return;
	}
	CHECK(rc == 1);
	CHECK(std::chrono::steady_clock::now() - start < 10s);
	CHECK_THAT(cli.err_text, Catch::Contains("not available"));
	CHECK_THAT(cli.err_text, Catch::Contains("kprobe"));
}

TEST_CASE("udpintercept --recv-peers: exact from the start by default, or lazy-inexact", "[cli]")
{
	for (const std::string mode : {"exact", "lazy-inexact"}) {
		CAPTURE(mode);
		std::vector<std::string> args{"--json", "--verbose", "--pid", std::to_string(getpid())};
		if (mode != "exact")
			args.insert(args.end(), {"--recv-peers", mode});
		CliProcess cli(args);
		REQUIRE(cli.wait_stderr("tracing", 30s));
		const bool tracepoint = cli.err_text.find("with the tracepoint backend") != std::string::npos;
		const bool unknown_first = tracepoint && mode == "lazy-inexact";
		Udp server(AF_INET), a(AF_INET);
		server.bind("127.0.0.1");
		a.bind("127.0.0.1");
		a.send_to(server.local(), 50);
		REQUIRE(server.recv() == 50); // recv() without an address, unconnected
		if (unknown_first)            // the CLI attaches the hook this receive asked for
			REQUIRE(cli.wait_stderr("attached the arrival hook", 10s));
		for (int i = 0; i < 3; i++) {
			a.send_to(server.local(), 51);
			REQUIRE(server.recv() == 51);
		}
		cli.signal(SIGINT);
		REQUIRE(cli.wait_exit(30s) == 0);
		const std::string netns = std::to_string(testutil::current_netns());
		std::map<std::pair<std::string, std::string>, JsonObject> last;
		for (const auto &o : cli.json_lines())
			if (o.at("netns") == netns)
				last[{o.at("saddr") + ":" + o.at("sport"),
				      o.at("daddr") + ":" + o.at("dport")}] = o;
		const auto &in = last.at({endpoint(server.local()), endpoint(a.local())});
		CHECK(in.at("rx_packets") == (unknown_first ? "3" : "4"));
		CHECK(in.at("rx_bytes") == (unknown_first ? "153" : "203"));
		CHECK_THAT(cli.err_text,
			   Catch::Contains(unknown_first ? " peer_unknown=1" : " peer_unknown=0"));
		if (unknown_first)
			CHECK_THAT(cli.err_text, Catch::Contains("attached the arrival hook"));
		else
			CHECK_THAT(cli.err_text, !Catch::Contains("attached the arrival hook"));
	}
}

TEST_CASE("udpintercept --metrics on a port that is taken exits 1 naming the address and the error",
	  "[cli][errors]")
{
	const int taken = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE(taken >= 0);
	const SockAddr any = SockAddr::parse("127.0.0.1", 0);
	REQUIRE(bind(taken, any.sa(), any.len) == 0);
	REQUIRE(listen(taken, 1) == 0);
	SockAddr where;
	where.len = sizeof(where.ss);
	REQUIRE(getsockname(taken, reinterpret_cast<sockaddr *>(&where.ss), &where.len) == 0);

	CliProcess cli({"--metrics", std::to_string(where.port()), "--quiet"});
	CHECK(cli.wait_exit(10s) == 1);
	CHECK_THAT(cli.err_text, Catch::Contains("127.0.0.1:" + std::to_string(where.port())));
	CHECK_THAT(cli.err_text, Catch::Contains("Address already in use"));
	CHECK_THAT(cli.err_text, !Catch::Contains("tracing")); // before any BPF is loaded
	close(taken);
}

TEST_CASE("udpintercept --json --metrics: the same flows as JSON lines and as counters", "[cli]")
{
	CliProcess cli({"--json", "--metrics", "0", "--metrics-labels", "remote_port,pid", "--pid",
			std::to_string(getpid())});
	REQUIRE(cli.wait_stderr("tracing", 30s));
	const std::uint16_t port = metrics_port(cli.err_text);
	CHECK(http_get(port, "/health") == std::pair<int, std::string>{200, "ok\n"});

	Udp server(AF_INET), a(AF_INET), b(AF_INET);
	server.bind("127.0.0.1");
	a.bind("127.0.0.1");
	b.bind("127.0.0.1");
	for (int i = 0; i < 6; i++)
		a.send_to(server.local(), 40 + i);
	for (int i = 0; i < 3; i++)
		b.send_to(server.local(), 7);
	for (int i = 0; i < 9; i++)
		server.recv_from();
	a.close(); // a closed flow stays in its series

	const std::string comm = "comm=\"" + my_comm() + "\"";
	const std::string to_server = "remote_port=\"" + std::to_string(server.local().port()) + "\"";
	std::string exposition;
	const auto end = std::chrono::steady_clock::now() + 20s;
	while (std::chrono::steady_clock::now() < end) {
		exposition = http_get(port, "/metrics").second;
		if (metric_sum(exposition, "udpintercept_received_datagrams_total", comm) == 9 &&
		    metric_sum(exposition, "udpintercept_sent_datagrams_total", to_server) == 9)
			break;
		std::this_thread::sleep_for(100ms);
	}
	INFO(exposition);
	CHECK(metric_sum(exposition, "udpintercept_sent_bytes_total", to_server) == 6 * 40 + 15 + 3 * 7);
	CHECK(metric_sum(exposition, "udpintercept_sent_datagrams_total", to_server) == 9);
	CHECK(metric_sum(exposition, "udpintercept_received_bytes_total", comm) == 6 * 40 + 15 + 3 * 7);
	CHECK(metric_sum(exposition, "udpintercept_received_datagrams_total", comm) == 9);
	// One series per remote port: the server's, and a's and b's as seen by the server.
	CHECK(metric_sum(exposition, "udpintercept_received_datagrams_total",
			 "remote_port=\"" + std::to_string(b.local().port()) + "\"") == 3);
	CHECK_THAT(exposition, Catch::Contains("pid=\"" + std::to_string(getpid()) + "\""));
	CHECK_THAT(exposition, Catch::Contains("udpintercept_build_info{backend="));

	cli.signal(SIGINT);
	REQUIRE(cli.wait_exit(30s) == 0);
	// Beside the counters, the JSON lines as ever, with the new fields.
	std::uint64_t sent = 0;
	std::map<std::pair<std::string, std::string>, JsonObject> last;
	for (const auto &o : cli.json_lines())
		last[{o.at("saddr") + ":" + o.at("sport"), o.at("daddr") + ":" + o.at("dport")}] = o;
	for (const auto &[name, o] : last) {
		CHECK(o.count("cgroup") == 1);
		CHECK(o.count("container_id") == 1);
		if (name.second == endpoint(server.local()))
			sent += std::stoull(o.at("tx_packets"));
	}
	CHECK(sent == 9);
}
