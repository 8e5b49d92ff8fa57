// SPDX-License-Identifier: LGPL-2.1-or-later
// The command-line tracer as an operator runs it: a real process, real
// traffic, SIGINT, and its JSON read back.
#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>

#include "recorder.h"

extern std::string g_cli_path;

using namespace std::chrono_literals;
using testutil::endpoint;
using testutil::JsonObject;
using testutil::SockAddr;
using testutil::Udp;

namespace {

// A running CLI with its stdout and stderr read through pipes.
class CliProcess {
public:
	explicit CliProcess(std::vector<std::string> args, uid_t run_as = 0)
	{
		REQUIRE(!g_cli_path.empty());
		int out[2], err[2];
		REQUIRE(pipe2(out, O_CLOEXEC) == 0);
		REQUIRE(pipe2(err, O_CLOEXEC) == 0);
		pid_ = fork();
		REQUIRE(pid_ >= 0);
		if (pid_ == 0) {
			dup2(out[1], 1);
			dup2(err[1], 2);
			if (run_as && (setgid(run_as) != 0 || setuid(run_as) != 0))
				_exit(120);
			std::vector<char *> argv{const_cast<char *>(g_cli_path.c_str())};
			std::string backend = testutil::test_backend();
			bool has_backend = false;
			for (auto &a : args)
				has_backend |= a == "--backend" || a == "--help";
			if (!has_backend) {
				args.push_back("--backend");
				args.push_back(backend);
			}
			for (auto &a : args)
				argv.push_back(a.data());
			argv.push_back(nullptr);
			execv(argv[0], argv.data());
			_exit(127);
		}
		close(out[1]);
		close(err[1]);
		out_ = out[0];
		err_ = err[0];
	}
	~CliProcess()
	{
		if (pid_ > 0 && !exited_) {
			kill(pid_, SIGKILL);
			waitpid(pid_, nullptr, 0);
		}
		close(out_);
		close(err_);
	}

	// Reads stderr until a line containing `needle` (or the timeout).
	bool wait_stderr(const std::string &needle, std::chrono::milliseconds timeout)
	{
		const auto end = std::chrono::steady_clock::now() + timeout;
		while (std::chrono::steady_clock::now() < end) {
			if (err_text.find(needle) != std::string::npos)
				return true;
			pump(50);
		}
		return err_text.find(needle) != std::string::npos;
	}

	// Waits for exit, collecting all output; returns the exit status (-1 on signal/timeout).
	int wait_exit(std::chrono::milliseconds timeout)
	{
		const auto end = std::chrono::steady_clock::now() + timeout;
		int status = 0;
		while (std::chrono::steady_clock::now() < end) {
			pump(20);
			pid_t r = waitpid(pid_, &status, WNOHANG);
			if (r == pid_) {
				exited_ = true;
				while (pump(0)) {
				}
				return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
			}
		}
		return -1;
	}

	void signal(int sig) { kill(pid_, sig); }

	std::vector<JsonObject> json_lines() const
	{
		std::vector<JsonObject> out;
		std::size_t pos = 0;
		while (pos < out_text.size()) {
			std::size_t nl = out_text.find('\n', pos);
			if (nl == std::string::npos)
				break;
			out.push_back(testutil::parse_json_line(out_text.substr(pos, nl - pos)));
			pos = nl + 1;
		}
		return out;
	}

	std::string out_text, err_text;

private:
	bool pump(int timeout_ms)
	{
		pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
		if (::poll(fds, 2, timeout_ms) <= 0)
			return false;
		bool got = false;
		char buf[65536];
		for (int i = 0; i < 2; i++) {
			if (!(fds[i].revents & (POLLIN | POLLHUP)))
				continue;
			ssize_t n = read(fds[i].fd, buf, sizeof(buf));
			if (n > 0) {
				(i == 0 ? out_text : err_text).append(buf, static_cast<std::size_t>(n));
				got = true;
			}
		}
		return got;
	}

	pid_t pid_ = -1;
	int out_ = -1, err_ = -1;
	bool exited_ = false;
};

std::string my_comm()
{
	char name[17] = {};
	prctl(PR_GET_NAME, name);
	return name;
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
	for (const char *s : {"--json", "--interval", "--duration", "--backend", "--pid", "--uid", "--port",
			      "--family", "--cgroup", "--recv-peers", "tx_bytes", "final", "lost", "CAP_BPF"})
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

TEST_CASE("udpintercept --recv-peers: the arrival hook on demand, or from the start", "[cli]")
{
	for (const std::string mode : {"on-demand", "always"}) {
		CAPTURE(mode);
		CliProcess cli(
			{"--json", "--verbose", "--pid", std::to_string(getpid()), "--recv-peers", mode});
		REQUIRE(cli.wait_stderr("tracing", 30s));
		Udp server(AF_INET), a(AF_INET);
		server.bind("127.0.0.1");
		a.bind("127.0.0.1");
		a.send_to(server.local(), 50);
		REQUIRE(server.recv() == 50);       // recv() without an address, unconnected
		std::this_thread::sleep_for(300ms); // the CLI attaches the hook on demand
		for (int i = 0; i < 3; i++) {
			a.send_to(server.local(), 51);
			REQUIRE(server.recv() == 51);
		}
		std::this_thread::sleep_for(200ms);
		cli.signal(SIGINT);
		REQUIRE(cli.wait_exit(30s) == 0);

		const bool tracepoint =
			cli.err_text.find("backend=tracepoint") != std::string::npos; // the exit summary
		const bool unknown_first = tracepoint && mode == "on-demand";
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
