// SPDX-License-Identifier: LGPL-2.1-or-later
#include "event_queue.h"

#include <cerrno>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

namespace udpevent {

namespace {

void signal_fd(int fd) noexcept
{
	const std::uint64_t one = 1;
	// Only EAGAIN (the counter is at its maximum) can fail here, and then
	// the fd is readable anyway.
	[[maybe_unused]] const ssize_t n = write(fd, &one, sizeof(one));
}

void clear_fd(int fd) noexcept
{
	std::uint64_t value;
	[[maybe_unused]] const ssize_t n = read(fd, &value, sizeof(value));
}

} // namespace

EventQueue::EventQueue() noexcept
    : data_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), close_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
}

EventQueue::~EventQueue()
{
	if (data_fd_ >= 0)
		::close(data_fd_);
	if (close_fd_ >= 0)
		::close(close_fd_);
}

void EventQueue::reopen(std::size_t capacity)
{
	std::lock_guard lock(mutex_);
	ring_.assign(capacity, udp_event_t{});
	head_ = count_ = 0;
	clear_fd(data_fd_);
	clear_fd(close_fd_);
	closed_.store(false);
}

bool EventQueue::push(const udp_event_t &event) noexcept
{
	// Consumers hold the lock for a copy only, unless a signal handler that
	// called cleanup() interrupted one of them: then closed_ is set and the
	// event is not wanted any more.
	for (int spins = 0; !mutex_.try_lock(); spins++) {
		if (closed_.load())
			return false;
		if (spins < 64) {
			sched_yield();
		} else {
			const timespec pause{0, 100000};
			nanosleep(&pause, nullptr);
		}
	}
	std::lock_guard lock(mutex_, std::adopt_lock);
	if (closed_.load() || ring_.empty())
		return false;
	if (count_ == ring_.size()) {
		head_ = (head_ + 1) % ring_.size();
		count_--;
		shed_.fetch_add(1);
	}
	ring_[(head_ + count_) % ring_.size()] = event;
	count_++;
	signal_fd(data_fd_);
	return true;
}

udp_event_t EventQueue::pop() noexcept
{
	if (!usable())
		return {};
	for (;;) {
		if (closed_.load())
			return {};
		pollfd fds[2] = {{data_fd_, POLLIN, 0}, {close_fd_, POLLIN, 0}};
		// EINTR: a signal handler may have called cleanup(); look again.
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			return {};
		if (closed_.load())
			return {};
		if (!(fds[0].revents & POLLIN))
			continue;
		std::lock_guard lock(mutex_);
		if (closed_.load())
			return {};
		if (count_ == 0) {
			// Another consumer took it: go back to sleep.
			clear_fd(data_fd_);
			continue;
		}
		const udp_event_t event = ring_[head_];
		head_ = (head_ + 1) % ring_.size();
		if (--count_ == 0)
			clear_fd(data_fd_);
		return event;
	}
}

void EventQueue::close() noexcept
{
	const int saved_errno = errno;
	closed_.store(true);
	if (close_fd_ >= 0)
		signal_fd(close_fd_);
	errno = saved_errno;
}

std::size_t EventQueue::capacity() const
{
	std::lock_guard lock(mutex_);
	return ring_.size();
}

std::size_t EventQueue::size() const
{
	std::lock_guard lock(mutex_);
	return count_;
}

} // namespace udpevent
