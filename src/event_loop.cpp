// SPDX-License-Identifier: LGPL-2.1-or-later
#include "event_loop.h"

#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <udpintercept/error.h>

#include "clock.h"
extern "C" {
#include <linux/types.h>

#include "udpintercept.h"
}

namespace udpintercept::detail {

namespace {

// Reads a timerfd's expirations, so that it is no longer readable.
// Whether the timer had expired since it was last drained.
bool drain(int timer_fd) noexcept
{
	std::uint64_t expirations;
	bool fired = false;
	while (read(timer_fd, &expirations, sizeof(expirations)) > 0)
		fired = true;
	return fired;
}

[[noreturn]] void fail(const char *stage, int err, const char *what)
{
	throw Error(stage, err, std::string(what) + ": " + std::strerror(err));
}

} // namespace

void EventLoop::RingDeleter::operator()(ring_buffer *rb) const noexcept
{
	ring_buffer__free(rb);
}

EventLoop::EventLoop(int ring_map_fd, std::chrono::nanoseconds sweep_period, OnRecord on_record)
    : on_record_(std::move(on_record)), ring_map_fd_(ring_map_fd),
      sweep_period_ns_(static_cast<std::uint64_t>(sweep_period.count()))
{
	ring_.reset(ring_buffer__new(ring_map_fd, on_ring_record, this, nullptr));
	if (!ring_)
		fail("ring buffer", errno, "cannot map the ring buffer");
	epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
	if (!epoll_)
		fail("epoll", errno, "cannot create the tracer's epoll fd");
	timer_ = UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
	if (!timer_)
		fail("timer", errno, "cannot create the sweep timer");
	itimerspec its{};
	its.it_interval.tv_sec = static_cast<time_t>(sweep_period_ns_ / 1000000000ULL);
	its.it_interval.tv_nsec = static_cast<long>(sweep_period_ns_ % 1000000000ULL);
	its.it_value = its.it_interval;
	if (timerfd_settime(timer_.get(), 0, &its, nullptr) != 0)
		fail("timer", errno, "cannot arm the sweep timer");
	follow_up_ = UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
	if (!follow_up_)
		fail("timer", errno, "cannot create the follow-up timer");
	for (int fd : {ring_buffer__epoll_fd(ring_.get()), timer_.get(), follow_up_.get()}) {
		epoll_event ev{};
		ev.events = EPOLLIN;
		ev.data.fd = fd;
		if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
			fail("epoll", errno, "cannot watch the ring buffer and the timers");
	}
	last_sweep_ns_ = monotonic_ns();
}

EventLoop::~EventLoop() = default;

void EventLoop::wait(std::chrono::milliseconds timeout)
{
	epoll_event ev[3];
	const int ms =
		timeout.count() < 0 ? -1 : static_cast<int>(std::min<long long>(timeout.count(), INT32_MAX));
	if (epoll_wait(epoll_.get(), ev, 3, ms) < 0 && errno != EINTR)
		fail("epoll", errno, "cannot wait for the ring buffer");
}

int EventLoop::on_ring_record(void *ctx, void *data, std::size_t size) noexcept
{
	auto *self = static_cast<EventLoop *>(ctx);
	self->consumed_++;
	try {
		self->on_record_(std::span<const std::byte>(static_cast<const std::byte *>(data), size));
		return 0;
	} catch (...) {
		// Carried across libbpf's C frames; the records after it stay queued.
		self->error_ = std::current_exception();
		return -ECANCELED;
	}
}

// The map's own poll asks the kernel whether anything was reserved past what
// was read (epoll would only know of records that woke the reader).
bool EventLoop::ring_holds_data() const noexcept
{
	pollfd p{ring_map_fd_, POLLIN, 0};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

void EventLoop::arm_follow_up()
{
	itimerspec its{};
	its.it_value.tv_nsec = static_cast<long>(UDPI_WAKEUP_WINDOW_NS);
	if (timerfd_settime(follow_up_.get(), 0, &its, nullptr) != 0)
		fail("timer", errno, "cannot arm the follow-up timer");
}

/*
 * A record the kernel queued within a wake-up window of one that could wake
 * the reader wakes no one (bpf/udpintercept.h): the read that finds that
 * earlier record (or finds a record still being written) sets the follow-up
 * timer a window later, which collects it. A read that finds the ring empty
 * leaves an armed timer armed and sets none: the next record wakes the
 * reader itself.
 */
int EventLoop::consume()
{
	drain(follow_up_.get());
	consumed_ = 0;
	const int n = ring_buffer__consume(ring_.get());
	if (consumed_ > 0 || ring_holds_data())
		arm_follow_up();
	if (error_)
		std::rethrow_exception(std::exchange(error_, nullptr));
	if (n < 0 && n != -EINTR)
		fail("ring buffer", -n, "cannot read the ring buffer");
	return consumed_;
}

void EventLoop::disarm() noexcept
{
	const itimerspec off{};
	for (const UniqueFd *t : {&timer_, &follow_up_}) {
		timerfd_settime(t->get(), 0, &off, nullptr);
		drain(t->get());
	}
}

// Due at each of the timer's expirations, which keep to the period whatever
// the delay in handling the last one (measured from the last sweep, a tick
// handled sooner after its expiration than the one before it would be
// passed over, and the sweep would wait a period more); and once a period
// has passed since the last sweep, for a caller that reads no timer.
bool EventLoop::take_sweep(std::uint64_t now_ns)
{
	const bool fired = drain(timer_.get());
	if (!fired && !sweep_soon_ && now_ns - last_sweep_ns_ < sweep_period_ns_)
		return false;
	last_sweep_ns_ = now_ns;
	sweep_soon_ = false;
	return true;
}

// The follow-up timer makes fd() readable; the read it leads to finds the
// sweep due. The ring buffer is read before it, as after every sweep.
void EventLoop::sweep_soon()
{
	sweep_soon_ = true;
	arm_follow_up();
}

} // namespace udpintercept::detail
