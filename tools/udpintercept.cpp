// SPDX-License-Identifier: LGPL-2.1-or-later
// udpintercept: trace every UDP flow on the machine from the command line.
#include <udpintercept/metrics.h>
#include <udpintercept/tracer.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <string>
#include <string_view>
#include <vector>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fmt/format.h>
#if UDPINTERCEPT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cli_args.h"
#include "exposition.h"
#include "metrics_server.h"
#include "output.h"

namespace {

using udpintercept::cli::Config;

// A systemd service of Type=notify counts as started once the tracer is
// attached (no-op outside systemd: NOTIFY_SOCKET is unset).
void notify_systemd([[maybe_unused]] const std::string &state)
{
#if UDPINTERCEPT_HAVE_SYSTEMD
	sd_notify(0, state.c_str());
#endif
}

// The tracer's figures for the exposition: Tracer::stats() reads the kernel's
// maps, so the tracer's thread calls it about once a second, not per scrape.
constexpr auto kRefresh = std::chrono::seconds(1);

struct Metrics {
	std::unique_ptr<udpintercept::FlowMetrics> flows;
	std::shared_ptr<udpintercept::cli::Exposition> exposition;
	std::unique_ptr<udpintercept::cli::MetricsServer> server;

	void refresh(const udpintercept::Tracer &tracer, std::string backend)
	{
		exposition->update({tracer.stats(), std::move(backend), tracer.cgroup_naming()});
		flows->drop_stale();
	}
};

// Output waiting for stdout past which the tracer is not read (see run()).
constexpr std::size_t kOutputBacklog = 1 << 20;

// A stopped CLI gives up its output after its reader took none for this long.
constexpr auto kStalledReader = std::chrono::seconds(2);

void take_signal(int sfd)
{
	signalfd_siginfo info;
	while (read(sfd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
	}
}

/*
 * The output still queued when the tracer stopped (its final snapshots
 * among it) goes out as stdout takes it. Once a signal stopped the CLI, or
 * one comes now, a reader that takes nothing for kStalledReader, or a
 * second signal, ends the wait. Returns the lines left unwritten.
 */
std::size_t finish_output(udpintercept::cli::Output &out, int sfd, bool signalled)
{
	auto progress = std::chrono::steady_clock::now();
	while (out.pending() && !out.error()) {
		int timeout = -1;
		if (signalled) {
			const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
				progress + kStalledReader - std::chrono::steady_clock::now());
			if (left.count() <= 0)
				break;
			timeout = static_cast<int>(left.count());
		}
		pollfd fds[2] = {{STDOUT_FILENO, POLLOUT, 0}, {sfd, POLLIN, 0}};
		if (::poll(fds, 2, timeout) < 0 && errno != EINTR)
			break;
		if (fds[1].revents) {
			take_signal(sfd);
			if (signalled)
				break;
			signalled = true;
			progress = std::chrono::steady_clock::now();
		}
		if (fds[0].revents & (POLLERR | POLLHUP)) {
			out.add_error(EPIPE);
			break;
		}
		const std::size_t before = out.pending();
		if ((fds[0].revents & POLLOUT) && out.write_some() && out.pending() < before)
			progress = std::chrono::steady_clock::now();
	}
	const std::size_t unwritten = out.error() ? 0 : out.pending_lines();
	out.discard();
	return unwritten;
}

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
		fmt::print(stderr,
			   "udpintercept: signals failed: cannot take SIGINT and SIGTERM through a signalfd: "
			   "{}\n",
			   std::strerror(errno));
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

	// stdout takes whole lines when it can; the first error writing it
	// (EPIPE, ENOSPC, ...) stops the output, and the CLI with it.
	udpintercept::cli::Output out(STDOUT_FILENO);
	const auto on_event = [&cli, &out, flows = metrics.flows.get()](const udpintercept::Event &e) {
		if (flows)
			flows->add(e);
		if (!cli.quiet)
			out.add(cli.json ? udpintercept::to_json(e) : udpintercept::to_text(e));
	};

	udpintercept::Tracer tracer(cli.options, on_event);
	// The metrics server's threads gave theirs up as they started (see
	// metrics_server.cpp); this thread keeps what the tracer still uses.
	tracer.drop_privileges();
	const std::string backend(udpintercept::to_string(tracer.backend()));
	if (metrics.server) {
		metrics.refresh(tracer, backend);
		metrics.server->set_attached(true);
	}
	fmt::print(stderr, "udpintercept: tracing UDP with the {} backend ({}); Ctrl-C to stop\n", backend,
		   tracer.backend_reason());
	notify_systemd(fmt::format("READY=1\nSTATUS=Tracing UDP with the {} backend", backend));
	if (!cli.json && !cli.quiet)
		out.add(udpintercept::text_header());

	int stdout_errno = 0;
	bool signalled = false;
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
			// A --duration past poll()'s range (24.8 days) waits in steps.
			timeout = static_cast<int>(std::min<std::int64_t>(left.count(), INT_MAX));
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
		// stdout: for room when output waits, and for an error or a hang-up
		// (a pipe whose reader has gone, `| head -1`, ends the CLI at once,
		// not at the next snapshot, which on a quiet machine may never come).
		// Past kOutputBacklog waiting, the tracer is not read until stdout
		// takes some: its ring buffer then fills, and what it cannot take is
		// counted (lost=), the counters staying exact.
		const bool backlog = out.pending() >= kOutputBacklog;
		pollfd fds[3] = {
			{backlog ? -1 : tracer.fd(), POLLIN, 0},
			{sfd, POLLIN, 0},
			{cli.quiet ? -1 : STDOUT_FILENO, static_cast<short>(out.pending() ? POLLOUT : 0), 0}};
		if (::poll(fds, 3, timeout) < 0 && errno != EINTR)
			throw udpintercept::Error("poll", errno, "poll failed");
		if (fds[1].revents) {
			take_signal(sfd);
			signalled = true;
			break;
		}
		if (fds[2].revents & (POLLERR | POLLHUP)) {
			stdout_errno = EPIPE;
			break;
		}
		if ((fds[2].revents & POLLOUT) && !out.write_some())
			break;
		if (!backlog)
			tracer.process();
	}
	notify_systemd("STOPPING=1");
	if (metrics.server)
		metrics.server->set_attached(false);
	tracer.stop();
	const std::size_t unwritten = stdout_errno ? 0 : finish_output(out, sfd, signalled);
	if (!stdout_errno)
		stdout_errno = out.error();
	if (stdout_errno)
		fmt::print(stderr, "udpintercept: cannot write to stdout: {}\n", std::strerror(stdout_errno));
	else if (unwritten)
		fmt::print(stderr,
			   "udpintercept: {} lines of output not written: stdout's reader took none for {} s "
			   "after the CLI was stopped\n",
			   unwritten, kStalledReader.count());
	if (metrics.server)
		metrics.refresh(tracer, backend); // the final snapshots, for a scrape before the exit
	const auto s = tracer.stats();
	fmt::print(
		stderr,
		"udpintercept: events={} lost={} closes_deferred={} untracked_flows={} untracked_packets={} "
		"untracked_bytes={} untracked_sockets={} peer_unknown={} no_listener={} missed={} expired={} "
		"expired_early={} backend={}\n",
		s.events, s.lost, s.closes_deferred, s.flows_untracked, s.untracked_packets,
		s.untracked_bytes, s.sockets_untracked, s.peer_unknown, s.no_listener, s.program_misses,
		s.expired, s.expired_early, backend);
	close(sfd);
	return stdout_errno || unwritten ? 1 : 0;
}

} // namespace

// Standard descriptors the CLI was started without are opened on
// /dev/null (in order, so each takes the lowest free number, its own): a
// file it opens later (the signalfd, the BPF maps) must not become its
// stdout, which would then get the output.
void open_missing_std_fds()
{
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
			open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
	errno = 0;
}

int main(int argc, char **argv)
{
	open_missing_std_fds();
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
