// SPDX-License-Identifier: LGPL-2.1-or-later
// The channel between the thread that owns the Tracer and the consumers
// blocked in DequeuePerfEvent().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common.h"

namespace udpevent {

/**
 * A bounded FIFO of legacy events with one producer and any number of
 * consumers. When full it sheds the oldest event, as the legacy library
 * did, but counts what it sheds.
 *
 * Consumers sleep in poll() on eventfds rather than on a condition variable,
 * so that close() is async-signal-safe: it only stores an atomic flag and
 * writes an eventfd. The producer never waits for the lock once the queue is
 * closed, so a consumer interrupted by a signal while holding the lock (the
 * legacy example calls cleanup(), dlclose() and exit() from its SIGINT
 * handler) cannot keep the producer from finishing.
 */
class EventQueue {
public:
	EventQueue() noexcept;
	~EventQueue();
	EventQueue(const EventQueue &) = delete;
	EventQueue &operator=(const EventQueue &) = delete;

	/// False when the eventfds could not be made: pop() then returns at once.
	bool usable() const noexcept { return data_fd_ >= 0 && close_fd_ >= 0; }

	/// Empties the queue, sets its capacity and undoes close().
	void reopen(std::size_t capacity);

	/**
	 * Appends an event, shedding the oldest when full. Returns false, and
	 * drops the event, once the queue is closed.
	 */
	bool push(const udp_event_t &event) noexcept;

	/// Blocks for the oldest event; an all-zero event once closed.
	udp_event_t pop() noexcept;

	/// Wakes every pop() with an all-zero event, now and later. Async-signal-safe.
	void close() noexcept;

	bool closed() const noexcept { return closed_.load(); }

	/// Readable once close() was called: for the producer's poll().
	int close_fd() const noexcept { return close_fd_; }

	/// Events shed because the queue was full, since the process loaded it.
	std::uint64_t shed() const noexcept { return shed_.load(); }

	std::size_t capacity() const;
	std::size_t size() const;

private:
	// A lock-free flag, so that close() works inside a signal handler.
	std::atomic<bool> closed_{false};
	static_assert(std::atomic<bool>::is_always_lock_free);
	std::atomic<std::uint64_t> shed_{0};

	// Readable while events may be queued: pop() clears it when it finds
	// the queue empty, under mutex_, so a queued event always leaves it set.
	int data_fd_ = -1;
	int close_fd_ = -1;

	mutable std::mutex mutex_;
	std::vector<udp_event_t> ring_; // guarded by mutex_
	std::size_t head_ = 0;          // guarded by mutex_
	std::size_t count_ = 0;         // guarded by mutex_
};

} // namespace udpevent
