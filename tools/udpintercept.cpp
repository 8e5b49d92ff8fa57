// SPDX-License-Identifier: LGPL-2.1-or-later
// udpintercept: trace every UDP flow on the machine from the command line.
#include <udpintercept/metrics.h>
#include <udpintercept/tracer.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <poll.h>
#include <string>
#include <string_view>
#include <vector>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include "cli_args.h"
#include "exposition.h"
#include "metrics_server.h"

namespace {

using udpintercept::cli::Config;

// The tracer's figures for the exposition: Tracer::stats() reads the kernel's
// maps, so the tracer's thread calls it about once a second, not per scrape.
constexpr auto kRefresh = std::chrono::seconds(1);

struct Metrics {
	std::unique_ptr<udpintercept::FlowMetrics> flows;
	std::shared_ptr<udpintercept::cli::Exposition> exposition;
	std::unique_ptr<udpintercept::cli::MetricsServer> server;

	void refresh(const udpintercept::Tracer &tracer, std::string backend)
	{
		exposition->update({tracer.stats(), std::move(backend)});
		flows->drop_stale(udpintercept::WallTime(std::chrono::duration_cast<std::chrono::nanoseconds>(
			std::chrono::system_clock::now().time_since_epoch())));
	}
};

int run(const Config &cli)
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

	// Listening first: a port that is taken fails before the BPF is loaded.
	Metrics metrics;
	if (cli.metrics) {
		metrics.flows = std::make_unique<udpintercept::FlowMetrics>(cli.metrics_config);
		metrics.exposition =
			std::make_shared<udpintercept::cli::Exposition>(*metrics.flows, UDPINTERCEPT_VERSION);
		metrics.server =
			std::make_unique<udpintercept::cli::MetricsServer>(*cli.metrics, metrics.exposition);
		fmt::print(stderr, "udpintercept: serving metrics at {} (and /health)\n",
			   metrics.server->url());
	}

	const auto on_event = [&cli, flows = metrics.flows.get()](const udpintercept::Event &e) {
		if (flows)
			flows->add(e);
		if (cli.quiet)
			return;
		const std::string line = cli.json ? udpintercept::to_json(e) : udpintercept::to_text(e);
		std::fwrite(line.data(), 1, line.size(), stdout);
		std::fputc('\n', stdout);
	};

	udpintercept::Tracer tracer(cli.options, on_event);
	const std::string backend(udpintercept::to_string(tracer.backend()));
	if (metrics.server) {
		metrics.refresh(tracer, backend);
		metrics.server->set_attached(true);
	}
	fmt::print(stderr, "udpintercept: tracing UDP with the {} backend ({}); Ctrl-C to stop\n", backend,
		   tracer.backend_reason());
	if (!cli.json && !cli.quiet) {
		fmt::print("{}\n", udpintercept::text_header());
		std::fflush(stdout);
	}

	const auto start = std::chrono::steady_clock::now();
	const auto deadline = start + cli.duration;
	auto next_refresh = start + kRefresh;
	for (;;) {
		int timeout = -1;
		const auto now = std::chrono::steady_clock::now();
		if (cli.duration.count() > 0) {
			const auto left =
				std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
			if (left.count() <= 0)
				break;
			timeout = static_cast<int>(left.count());
		}
		if (metrics.server) {
			if (now >= next_refresh) {
				metrics.refresh(tracer, backend);
				next_refresh = now + kRefresh;
			}
			const auto until =
				std::chrono::duration_cast<std::chrono::milliseconds>(next_refresh - now);
			const int wait = static_cast<int>(std::max<std::int64_t>(until.count(), 1));
			timeout = timeout < 0 ? wait : std::min(timeout, wait);
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
	if (metrics.server)
		metrics.server->set_attached(false);
	tracer.stop();
	std::fflush(stdout);
	if (metrics.server)
		metrics.refresh(tracer, backend); // the final snapshots, for a scrape before the exit
	const auto s = tracer.stats();
	fmt::print(
		stderr,
		"udpintercept: events={} lost={} closes_deferred={} untracked_flows={} untracked_packets={} "
		"untracked_bytes={} untracked_sockets={} peer_unknown={} no_listener={} backend={}\n",
		s.events, s.lost, s.closes_deferred, s.flows_untracked, s.untracked_packets,
		s.untracked_bytes, s.sockets_untracked, s.peer_unknown, s.no_listener, backend);
	close(sfd);
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	const std::vector<std::string_view> args(argv + (argc > 0 ? 1 : argc), argv + argc);
	auto parsed = udpintercept::cli::parse_args(args);
	switch (parsed.action) {
	case udpintercept::cli::Action::help:
		fmt::print("{}", udpintercept::cli::usage());
		return 0;
	case udpintercept::cli::Action::version:
		fmt::print("udpintercept {}\n", UDPINTERCEPT_VERSION);
		return 0;
	case udpintercept::cli::Action::usage_error:
		fmt::print(stderr, "udpintercept: {}\nTry 'udpintercept --help' for more information.\n",
			   parsed.error);
		return 2;
	case udpintercept::cli::Action::run:
		break;
	}
	Config &cli = parsed.config;
	if (cli.verbose)
		cli.options.log = [](std::string_view line) {
			fmt::print(stderr, "udpintercept: {}\n", line);
		};
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
