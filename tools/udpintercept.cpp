// SPDX-License-Identifier: LGPL-2.1-or-later
// udpintercept: trace every UDP flow on the machine from the command line.
#include <udpintercept/tracer.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <getopt.h>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fmt/format.h>
#if UDPINTERCEPT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace {

constexpr const char *kUsage = R"(Usage: udpintercept [OPTION]...
Trace UDP sends and receives on this machine (IPv4 and IPv6) and print one
snapshot per flow: a flow is one local socket talking to one remote endpoint,
and each snapshot carries its cumulative counters.

Output:
  -j, --json              one JSON object per line, fields: event time_ns time
                          pid uid comm cgroup_id netns family saddr sport daddr
                          dport tx_bytes tx_packets rx_bytes rx_packets
                          (default: one readable line per snapshot)
  -i, --interval MS       at most one update per flow every MS milliseconds
                          (default 1000); 0 = a snapshot for every operation
  -d, --duration S        stop after S seconds (default: until SIGINT/SIGTERM)

Filters (applied in the kernel):
  -p, --pid PID           only operations by process PID
  -u, --uid UID           only operations by user UID
  -P, --port PORT         only flows with local or remote port PORT
  -f, --family FAMILY     ipv4 or ipv6 (IPv4-mapped IPv6 traffic counts as ipv4)
  -c, --cgroup PATH       only operations by tasks in this cgroup v2 directory
                          (exactly it, not its children)

Kernel hooks and sizes:
  -b, --backend NAME      auto (default), fentry, kprobe or tracepoint; auto
                          probes the kernel and picks the best one it offers
      --max-flows N       flow table size (default 65536)
      --max-sockets N     socket table size (default 65536)
      --ring-buffer BYTES ring buffer size, a power of two (default 4194304)
      --recv-peers WHEN   tracepoint backend: when to start noting the sender
                          of every arriving datagram, which recv() without an
                          address on an unconnected socket needs: on-demand
                          (default: at the first such receive; it, and what
                          is queued then, count as peer unknown) or always
                          (from the start, at some 5 % of a UDP flood's rate)
  -v, --verbose           log backend probing and libbpf warnings to stderr
  -h, --help              this text
  -V, --version           the version

Events: connect (connect() set the peer), update (counters changed), close
(the socket was destroyed: final totals), final (tracing stopped while the
flow was open). On SIGINT, SIGTERM or the end of --duration the final
snapshots are printed, then one summary line on stderr:
  udpintercept: events=N lost=N closes_deferred=N untracked_flows=N ...
lost counts snapshots the ring buffer had no room for; counters stay exact
because every snapshot is cumulative.

Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (run as root, or grant those
three), and gives up those it no longer uses once attached. Exit status: 0
after a clean stop, 1 on a runtime error, 2 for bad usage.
)";

enum LongOnly { kMaxFlows = 1000, kMaxSockets, kRingBuffer, kRecvPeers };

[[noreturn]] void usage_error(const std::string &msg)
{
	fmt::print(stderr, "udpintercept: {}\nTry 'udpintercept --help' for more information.\n", msg);
	std::exit(2);
}

template <typename T> T parse_number(std::string_view text, const char *what, T min, T max)
{
	T value{};
	const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
	if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max)
		usage_error(fmt::format("invalid {} '{}': expected a number from {} to {}", what, text, min,
					max));
	return value;
}

struct Cli {
	udpintercept::Options options;
	bool json = false;
	double duration_s = 0;
	bool verbose = false;
};

Cli parse(int argc, char **argv)
{
	static const option longopts[] = {
		{"json", no_argument, nullptr, 'j'},
		{"interval", required_argument, nullptr, 'i'},
		{"duration", required_argument, nullptr, 'd'},
		{"pid", required_argument, nullptr, 'p'},
		{"uid", required_argument, nullptr, 'u'},
		{"port", required_argument, nullptr, 'P'},
		{"family", required_argument, nullptr, 'f'},
		{"cgroup", required_argument, nullptr, 'c'},
		{"backend", required_argument, nullptr, 'b'},
		{"max-flows", required_argument, nullptr, kMaxFlows},
		{"max-sockets", required_argument, nullptr, kMaxSockets},
		{"ring-buffer", required_argument, nullptr, kRingBuffer},
		{"recv-peers", required_argument, nullptr, kRecvPeers},
		{"verbose", no_argument, nullptr, 'v'},
		{"help", no_argument, nullptr, 'h'},
		{"version", no_argument, nullptr, 'V'},
		{nullptr, 0, nullptr, 0},
	};
	Cli cli;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":ji:d:p:u:P:f:c:b:vhV", longopts, nullptr)) != -1) {
		const std::string_view arg = optarg ? optarg : "";
		switch (c) {
		case 'j':
			cli.json = true;
			break;
		case 'i':
			cli.options.interval =
				std::chrono::milliseconds(parse_number<long>(arg, "interval", 0, 86400000));
			break;
		case 'd':
			cli.duration_s = parse_number<long>(arg, "duration", 1, 31536000);
			break;
		case 'p':
			cli.options.pid = parse_number<std::uint32_t>(arg, "pid", 1, 4194304);
			break;
		case 'u':
			cli.options.uid = parse_number<std::uint32_t>(arg, "uid", 0, 4294967294u);
			break;
		case 'P':
			cli.options.port = parse_number<std::uint16_t>(arg, "port", 1, 65535);
			break;
		case 'f':
			if (arg == "ipv4" || arg == "4")
				cli.options.family = udpintercept::Family::ipv4;
			else if (arg == "ipv6" || arg == "6")
				cli.options.family = udpintercept::Family::ipv6;
			else
				usage_error(fmt::format("invalid family '{}': expected ipv4 or ipv6", arg));
			break;
		case 'c':
			cli.options.cgroup = std::string(arg);
			break;
		case 'b':
			if (auto b = udpintercept::parse_backend(arg))
				cli.options.backend = *b;
			else
				usage_error(fmt::format(
					"invalid backend '{}': expected auto, fentry, kprobe or tracepoint",
					arg));
			break;
		case kMaxFlows:
			cli.options.max_flows = parse_number<std::uint32_t>(arg, "--max-flows", 16, 1u << 24);
			break;
		case kMaxSockets:
			cli.options.max_sockets =
				parse_number<std::uint32_t>(arg, "--max-sockets", 16, 1u << 24);
			break;
		case kRingBuffer:
			cli.options.ring_buffer_bytes =
				parse_number<std::uint32_t>(arg, "--ring-buffer", 4096, 1u << 30);
			break;
		case kRecvPeers:
			if (arg == "on-demand" || arg == "always")
				cli.options.recv_peers_from_start = arg == "always";
			else
				usage_error(fmt::format(
					"invalid --recv-peers '{}': expected on-demand or always", arg));
			break;
		case 'v':
			cli.verbose = true;
			break;
		case 'h':
			fmt::print("{}", kUsage);
			std::exit(0);
		case 'V':
			fmt::print("udpintercept {}\n", UDPINTERCEPT_VERSION);
			std::exit(0);
		case ':':
			usage_error(fmt::format("option '{}' needs a value", argv[optind - 1]));
		default:
			usage_error(fmt::format("unknown option '{}'", argv[optind - 1]));
		}
	}
	if (optind < argc)
		usage_error(fmt::format("unexpected argument '{}'", argv[optind]));
	if (cli.verbose)
		cli.options.log = [](std::string_view line) {
			fmt::print(stderr, "udpintercept: {}\n", line);
		};
	return cli;
}

// A systemd service of Type=notify counts as started once the tracer is
// attached (no-op outside systemd: NOTIFY_SOCKET is unset).
void notify_systemd([[maybe_unused]] const std::string &state)
{
#if UDPINTERCEPT_HAVE_SYSTEMD
	sd_notify(0, state.c_str());
#endif
}

int run(const Cli &cli)
{
	// SIGINT and SIGTERM arrive through a signalfd in the same poll loop.
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, nullptr);
	const int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fmt::print(stderr, "udpintercept: signalfd: {}\n", std::strerror(errno));
		return 1;
	}
	std::signal(SIGPIPE, SIG_IGN);

	const auto print = [json = cli.json](const udpintercept::Event &e) {
		const std::string line = json ? udpintercept::to_json(e) : udpintercept::to_text(e);
		std::fwrite(line.data(), 1, line.size(), stdout);
		std::fputc('\n', stdout);
	};

	udpintercept::Tracer tracer(cli.options, print);
	// Before any other thread exists: capabilities belong to threads.
	tracer.drop_privileges();
	fmt::print(stderr, "udpintercept: tracing UDP with the {} backend ({}); Ctrl-C to stop\n",
		   udpintercept::to_string(tracer.backend()), tracer.backend_reason());
	notify_systemd(fmt::format("READY=1\nSTATUS=Tracing UDP with the {} backend",
				   udpintercept::to_string(tracer.backend())));
	if (!cli.json) {
		fmt::print("{}\n", udpintercept::text_header());
		std::fflush(stdout);
	}

	const auto start = std::chrono::steady_clock::now();
	const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
					      std::chrono::duration<double>(cli.duration_s));
	for (;;) {
		int timeout = -1;
		if (cli.duration_s > 0) {
			const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
				deadline - std::chrono::steady_clock::now());
			if (left.count() <= 0)
				break;
			timeout = static_cast<int>(left.count());
		}
		pollfd fds[2] = {{tracer.fd(), POLLIN, 0}, {sfd, POLLIN, 0}};
		if (::poll(fds, 2, timeout) < 0 && errno != EINTR)
			throw udpintercept::Error("poll", errno, "poll failed");
		if (fds[1].revents)
			break;
		if (tracer.process() > 0 && std::fflush(stdout) != 0) {
			// stdout is gone (e.g. `| head`): stop, still with the summary
			break;
		}
	}
	notify_systemd("STOPPING=1");
	tracer.stop();
	std::fflush(stdout);
	const auto s = tracer.stats();
	fmt::print(
		stderr,
		"udpintercept: events={} lost={} closes_deferred={} untracked_flows={} untracked_packets={} "
		"untracked_bytes={} untracked_sockets={} peer_unknown={} backend={}\n",
		s.events, s.lost, s.closes_deferred, s.flows_untracked, s.untracked_packets,
		s.untracked_bytes, s.sockets_untracked, s.peer_unknown,
		udpintercept::to_string(tracer.backend()));
	close(sfd);
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	const Cli cli = parse(argc, argv);
	try {
		return run(cli);
	} catch (const udpintercept::Error &e) {
		fmt::print(stderr, "udpintercept: {} failed: {}\n", e.stage(), e.what());
		return 1;
	} catch (const std::exception &e) {
		fmt::print(stderr, "udpintercept: {}\n", e.what());
		return 1;
	}
}
