// SPDX-License-Identifier: LGPL-2.1-or-later
// The tracer's wake-ups: the ring buffer, the sweep timer and the follow-up
// timer behind one epoll fd that a caller can put in its own loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>

#include "fd.h"

struct ring_buffer;

namespace udpintercept::detail {

class EventLoop {
public:
	/// Receives each record of the ring buffer, in order.
	using OnRecord = std::function<void(std::span<const std::byte>)>;

	/// Throws Error (stage "ring buffer", "epoll" or "timer").
	EventLoop(int ring_map_fd, std::chrono::nanoseconds sweep_period, OnRecord on_record);
	~EventLoop();
	EventLoop(const EventLoop &) = delete;
	EventLoop &operator=(const EventLoop &) = delete;

	/// Readable when the kernel woke the reader, a sweep is due, or a
	/// follow-up read is (UDPI_WAKEUP_WINDOW_NS after a read that found records).
	int fd() const noexcept { return epoll_.get(); }

	/// Waits up to `timeout` (negative: without limit) for fd() to become readable.
	void wait(std::chrono::milliseconds timeout);

	/// Hands every record in the ring buffer to on_record; returns how many.
	/// If it found any, or left a record still being written, fd() becomes
	/// readable again a wake-up window later, for the records the kernel
	/// queued meanwhile without waking the reader.
	/// An exception on_record threw comes out here, after the records before it.
	int consume();

	/// Whether a sweep is due at `now_ns` (a sweep period since the last one,
	/// or asked for by sweep_soon()); if so, it counts as done.
	bool take_sweep(std::uint64_t now_ns);

	/// Makes the next sweep due a wake-up window from now, not a period: for
	/// a sweep that stopped at a batch limit with more to do. fd() becomes
	/// readable then.
	void sweep_soon();

	std::uint64_t sweep_period_ns() const noexcept { return sweep_period_ns_; }

	/// Stops both timers, for a tracer that has stopped: fd() stays quiet.
	void disarm() noexcept;

private:
	static int on_ring_record(void *ctx, void *data, std::size_t size) noexcept;
	bool ring_holds_data() const noexcept;
	void arm_follow_up();

	struct RingDeleter {
		void operator()(ring_buffer *rb) const noexcept;
	};

	OnRecord on_record_;
	std::unique_ptr<ring_buffer, RingDeleter> ring_;
	UniqueFd epoll_;
	UniqueFd timer_;
	UniqueFd follow_up_;
	int ring_map_fd_;
	std::uint64_t sweep_period_ns_;
	std::uint64_t last_sweep_ns_ = 0;
	bool sweep_soon_ = false;
	int consumed_ = 0;
	std::exception_ptr error_;
};

} // namespace udpintercept::detail
