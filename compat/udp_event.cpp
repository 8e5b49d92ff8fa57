// SPDX-License-Identifier: LGPL-2.1-or-later
// libudpEvent.so: the legacy dlopen()/dlsym() ABI over udpintercept::Tracer.
//
// One background thread owns the Tracer and polls it; every snapshot goes
// into an EventQueue from which DequeuePerfEvent() callers take it.
#include "udpEvent.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <string>
#include <sys/eventfd.h>
#include <system_error>
#include <thread>
#include <time.h>
#include <unistd.h>

#include <udpintercept/tracer.h>

#include "event_queue.h"
#include "legacy.h"

namespace udpevent {

namespace {

// How long cleanup() waits for the tracer to detach. It waits with poll()
// only, so a signal handler can call it; the bound keeps a wedged kernel
// call from hanging the consumer's shutdown.
constexpr int kDetachWaitMs = 5000;

class Shim {
public:
	Shim() noexcept;
	~Shim();

	void add_probe() noexcept;
	unsigned status() const noexcept;
	void cleanup() noexcept;
	udp_event_t dequeue() noexcept { return queue_.pop(); }
	const char *last_error() const noexcept;
	std::uint64_t shed() const noexcept { return queue_.shed(); }

private:
	void start(const Settings &settings);
	void run(Settings settings) noexcept;
	void poll_loop(udpintercept::Tracer &tracer, std::size_t queue_size);
	void report_losses(udpintercept::Tracer &tracer, std::size_t queue_size);
	void set_error(const std::string &message, bool from_poller = false) noexcept;

	EventQueue queue_;

	// Serialises AddProbe() and the join; cleanup() never takes it.
	std::mutex control_;
	std::thread poller_; // guarded by control_

	std::atomic<unsigned> status_{0};
	// True from the poller's start until it has destroyed the Tracer.
	std::atomic<bool> running_{false};
	// Readable once the poller has destroyed the Tracer: what cleanup() waits on.
	int detached_fd_ = -1;
	// Why an eventfd could not be made when the library was loaded, or 0.
	int init_errno_ = 0;

	// The attach handshake: the poller writes attach_error_, sets
	// attach_done_ and writes attach_fd_, on which AddProbe() sleeps. No
	// lock, so that the poller can never wait for a thread that a signal
	// handler interrupted.
	int attach_fd_ = -1;
	std::atomic<bool> attach_done_{false};
	std::string attach_error_; // written by the poller before attach_done_

	mutable std::mutex error_mutex_;
	char last_error_[1024] = {}; // guarded by error_mutex_; stable storage for udpEvent_lastError()
	bool has_error_ = false;     // guarded by error_mutex_
	mutable std::atomic<std::int64_t> last_reminder_ns_{0};

	// The poller's own loss bookkeeping.
	std::uint64_t reported_shed_ = 0;
	std::uint64_t reported_lost_ = 0;
	std::uint64_t reported_untracked_ = 0, reported_untracked_packets_ = 0, reported_untracked_bytes_ = 0;
	std::chrono::steady_clock::time_point last_report_{};
};

std::int64_t monotonic_ns() noexcept
{
	timespec ts{};
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Shim::Shim() noexcept
    : detached_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), attach_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
	if (!queue_.usable() || detached_fd_ < 0 || attach_fd_ < 0)
		init_errno_ = errno ? errno : EMFILE;
}

Shim::~Shim()
{
	// Runs at dlclose() or exit(): no thread may still run this library's
	// code once it is unmapped, so the poller is stopped and joined here
	// even when the consumer never called cleanup(). If AddProbe() holds
	// control_ (a signal handler that exits interrupted it), waiting would
	// never end: the process is going away then, so do not.
	queue_.close();
	if (control_.try_lock()) {
		if (poller_.joinable())
			poller_.join();
		control_.unlock();
	}
	for (int fd : {detached_fd_, attach_fd_})
		if (fd >= 0)
			::close(fd);
}

void Shim::set_error(const std::string &message, bool from_poller) noexcept
{
	std::fprintf(stderr, "libudpEvent: %s\n", message.c_str());
	if (from_poller) {
		// The poller must not wait for ever for a lock that an interrupted
		// consumer may hold (udpEvent_lastError() on a thread whose signal
		// handler then exits): the message above is then all there is.
		bool locked = false;
		for (int i = 0; i < 100 && !(locked = error_mutex_.try_lock()); i++) {
			const timespec pause{0, 1000000};
			nanosleep(&pause, nullptr);
		}
		if (!locked)
			return;
	} else {
		error_mutex_.lock();
	}
	std::lock_guard lock(error_mutex_, std::adopt_lock);
	std::snprintf(last_error_, sizeof(last_error_), "%s", message.c_str());
	has_error_ = true;
}

const char *Shim::last_error() const noexcept
{
	try {
		std::lock_guard lock(error_mutex_);
		return has_error_ ? last_error_ : nullptr;
	} catch (...) {
		return nullptr;
	}
}

void Shim::add_probe() noexcept
{
	try {
		std::lock_guard lock(control_);
		if (status_.load())
			return;
		// A poller that was cleaned up, or whose attach failed, has ended or is ending.
		if (poller_.joinable())
			poller_.join();
		if (init_errno_) {
			set_error("AddProbe failed: cannot create the eventfds the event queue needs: " +
				  std::string(std::strerror(init_errno_)));
			return;
		}
		{
			std::lock_guard error_lock(error_mutex_);
			has_error_ = false;
		}
		start(read_settings());
	} catch (const std::exception &e) {
		set_error(std::string("AddProbe failed: ") + e.what());
	} catch (...) {
		set_error("AddProbe failed");
	}
}

void Shim::start(const Settings &settings)
{
	for (int fd : {detached_fd_, attach_fd_}) {
		std::uint64_t value;
		[[maybe_unused]] const ssize_t n = read(fd, &value, sizeof(value));
	}
	queue_.reopen(settings.queue_size);
	reported_shed_ = queue_.shed();
	reported_lost_ = 0;
	reported_untracked_ = reported_untracked_packets_ = reported_untracked_bytes_ = 0;
	attach_error_.clear();
	attach_done_.store(false);

	// The poller runs with every signal blocked, so that the consumer's
	// handlers (the legacy example's SIGINT handler calls cleanup(),
	// dlclose() and exit()) always run on one of the consumer's threads.
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	running_.store(true);
	try {
		poller_ = std::thread(&Shim::run, this, settings);
	} catch (...) {
		running_.store(false);
		pthread_sigmask(SIG_SETMASK, &old, nullptr);
		throw;
	}
	pthread_sigmask(SIG_SETMASK, &old, nullptr);

	while (!attach_done_.load(std::memory_order_acquire)) {
		pollfd fd{attach_fd_, POLLIN, 0};
		poll(&fd, 1, 1000);
	}
	if (!attach_error_.empty()) {
		set_error("AddProbe failed: " + attach_error_);
		poller_.join();
	}
}

void Shim::run(Settings settings) noexcept
{
	std::optional<udpintercept::Tracer> tracer;
	std::string error;
	try {
		udpintercept::Options options;
		options.backend = settings.backend;
		options.interval = settings.interval;
		options.flow_timeout = settings.flow_timeout;
		if (settings.max_flows)
			options.max_flows = *settings.max_flows;
		options.pid = settings.pid;
		options.uid = settings.uid;
		options.port = settings.port;
		options.family = settings.family;
		if (settings.verbose)
			options.log = [](std::string_view line) {
				std::fprintf(stderr, "libudpEvent: %.*s\n", static_cast<int>(line.size()),
					     line.data());
			};
		// The legacy struct has no kind: every snapshot (connect, update,
		// close, expire) is one event; an expire, like a close, is the
		// flow's last.
		tracer.emplace(std::move(options),
			       [this](const udpintercept::Event &event) { queue_.push(to_legacy(event)); });
	} catch (const udpintercept::Error &e) {
		error = e.stage() + " failed: " + e.what();
	} catch (const std::exception &e) {
		error = e.what();
	} catch (...) {
		error = "unknown error";
	}

	if (tracer) {
		if (!queue_.closed()) {
			status_.store(1);
			std::fprintf(stderr, "libudpEvent: attached the %s backend (%s)\n",
				     std::string(to_string(tracer->backend())).c_str(),
				     tracer->backend_reason().c_str());
		}
	}
	attach_error_ = std::move(error);
	attach_done_.store(true, std::memory_order_release);
	const std::uint64_t one = 1;
	[[maybe_unused]] const ssize_t written = write(attach_fd_, &one, sizeof(one));

	if (tracer) {
		try {
			poll_loop(*tracer, settings.queue_size);
		} catch (const std::exception &e) {
			set_error(std::string("stopped tracing: ") + e.what(), true);
			// Nothing will come any more: blocked consumers get their zeroed event.
			queue_.close();
		} catch (...) {
			set_error("stopped tracing", true);
			queue_.close();
		}
		status_.store(0);
		// Detaches. No `final` snapshots: the queue is closed, and after
		// cleanup() no consumer could receive them.
		tracer.reset();
	}
	[[maybe_unused]] const ssize_t n = write(detached_fd_, &one, sizeof(one));
	running_.store(false);
}

void Shim::poll_loop(udpintercept::Tracer &tracer, std::size_t queue_size)
{
	last_report_ = std::chrono::steady_clock::now();
	while (!queue_.closed()) {
		pollfd fds[2] = {{tracer.fd(), POLLIN, 0}, {queue_.close_fd(), POLLIN, 0}};
		// The timeout bounds how late the loss report can be.
		if (::poll(fds, 2, 1000) < 0 && errno != EINTR)
			throw std::system_error(errno, std::generic_category(), "poll");
		if (queue_.closed())
			break;
		tracer.process();
		report_losses(tracer, queue_size);
	}
}

// At most one line a second, and only when something was lost since the last one.
void Shim::report_losses(udpintercept::Tracer &tracer, std::size_t queue_size)
{
	const auto now = std::chrono::steady_clock::now();
	if (now - last_report_ < std::chrono::seconds(1))
		return;
	last_report_ = now;
	const std::uint64_t shed = queue_.shed();
	const udpintercept::Stats stats = tracer.stats();
	const std::uint64_t lost = stats.lost;
	const std::uint64_t untracked = stats.flows_untracked;
	if (shed == reported_shed_ && lost == reported_lost_ && untracked == reported_untracked_)
		return;
	std::string line;
	if (shed != reported_shed_)
		line = "shed " + std::to_string(shed - reported_shed_) + " events, the oldest first (" +
		       std::to_string(shed) + " since loading): the queue of " + std::to_string(queue_size) +
		       " was full; dequeue faster or raise UDPEVENT_QUEUE_SIZE";
	if (lost != reported_lost_)
		line += std::string(line.empty() ? "" : "; ") + "the kernel's ring buffer dropped " +
			std::to_string(lost - reported_lost_) +
			" snapshots (later snapshots of the same flows still carry exact totals)";
	if (untracked != reported_untracked_)
		line += std::string(line.empty() ? "" : "; ") +
			std::to_string(untracked - reported_untracked_) + " operations (" +
			std::to_string(stats.untracked_packets - reported_untracked_packets_) +
			" datagrams, " + std::to_string(stats.untracked_bytes - reported_untracked_bytes_) +
			" bytes) counted in no flow: the flow table was full; raise UDPEVENT_MAX_FLOWS";
	std::fprintf(stderr, "libudpEvent: %s\n", line.c_str());
	reported_shed_ = shed;
	reported_lost_ = lost;
	reported_untracked_ = untracked;
	reported_untracked_packets_ = stats.untracked_packets;
	reported_untracked_bytes_ = stats.untracked_bytes;
}

unsigned Shim::status() const noexcept
{
	const unsigned attached = status_.load();
	if (!attached) {
		// The legacy example polls getStatus() forever: remind why it waits
		// (every 10 s) rather than wait in silence.
		const std::int64_t now = monotonic_ns();
		std::int64_t last = last_reminder_ns_.load();
		if (now - last >= 10000000000LL && last_reminder_ns_.compare_exchange_strong(last, now)) {
			if (const char *error = last_error())
				std::fprintf(stderr, "libudpEvent: not attached: %s\n", error);
		}
	}
	return attached;
}

void Shim::cleanup() noexcept
{
	// Async-signal-safe: atomics, write() and poll() only.
	const int saved_errno = errno;
	status_.store(0);
	queue_.close();
	if (running_.load() && detached_fd_ >= 0) {
		pollfd fd{detached_fd_, POLLIN, 0};
		poll(&fd, 1, kDetachWaitMs);
	}
	errno = saved_errno;
}

// Built when the library is loaded, destroyed by dlclose() or exit().
Shim g_shim;

} // namespace

} // namespace udpevent

extern "C" {

__attribute__((visibility("default"))) void AddProbe(void) noexcept
{
	udpevent::g_shim.add_probe();
}

__attribute__((visibility("default"))) unsigned getStatus(void) noexcept
{
	return udpevent::g_shim.status();
}

__attribute__((visibility("default"))) struct udp_event_t DequeuePerfEvent(void) noexcept
{
	return udpevent::g_shim.dequeue();
}

__attribute__((visibility("default"))) void cleanup(void) noexcept
{
	udpevent::g_shim.cleanup();
}

__attribute__((visibility("default"))) const char *udpEvent_lastError(void) noexcept
{
	return udpevent::g_shim.last_error();
}

__attribute__((visibility("default"))) unsigned long long udpEvent_shedCount(void) noexcept
{
	return udpevent::g_shim.shed();
}

} // extern "C"
