// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <udpintercept/error.h>
#include <udpintercept/event.h>
#include <udpintercept/options.h>

namespace udpintercept {

/// Loss and load counters. Every figure is cumulative since construction.
struct Stats {
	std::uint64_t events = 0;       ///< snapshots delivered to the callback
	std::uint64_t records_sent = 0; ///< records the kernel put in the ring buffer
	std::uint64_t records_received =
		0;              ///< records user space took from it (equal to records_sent once drained)
	std::uint64_t lost = 0; ///< snapshots the ring buffer had no room for (counts stay exact: later
				///< snapshots are cumulative)
	std::uint64_t closes_deferred =
		0; ///< socket closes that missed the ring buffer and were collected from the kernel later
	std::uint64_t flows_untracked = 0;   ///< operations on flows the full flow table could not admit
	std::uint64_t untracked_packets = 0; ///< datagrams of those operations
	std::uint64_t untracked_bytes = 0;   ///< bytes of those operations
	std::uint64_t sockets_untracked = 0; ///< sockets the full socket table could not admit
	std::uint64_t peer_unknown =
		0; ///< receives whose sender could not be known (see the README's limits)
	std::uint64_t deferred_operations =
		0; ///< operations a busy flow table handed to user space (counted exactly)
	std::uint64_t insert_failures =
		0;                      ///< socket/flow inserts refused for a reason other than a full table
	int insert_last_errno = 0;      ///< the errno of the last of those
	std::uint64_t flows_active = 0; ///< flows in the kernel's flow table now (0 once stopped)
};

/**
 * A running UDP tracer: loaded and attached when the constructor returns,
 * detached by the destructor. Move-only.
 *
 * Snapshots reach the callback from poll() or process(), on the calling
 * thread. stop() sends the `final` snapshots; the destructor detaches
 * without them.
 */
class Tracer {
public:
	using Callback = std::function<void(const Event &)>;

	/// Loads and attaches; throws Error (privileges, BTF, backend, options…).
	explicit Tracer(Options options = {}, Callback callback = {});
	~Tracer();
	Tracer(Tracer &&) noexcept;
	Tracer &operator=(Tracer &&) noexcept;
	Tracer(const Tracer &) = delete;
	Tracer &operator=(const Tracer &) = delete;

	/// Replaces the callback.
	void on_event(Callback callback);

	/**
	 * Waits up to `timeout` for snapshots and delivers them; also sends the
	 * interval's pending updates. Returns how many were delivered.
	 * A negative timeout waits until something arrives.
	 */
	int poll(std::chrono::milliseconds timeout);

	/// An fd that becomes readable when process() has work: for the caller's epoll/poll loop.
	int fd() const noexcept;

	/// Delivers what is ready without waiting (call when fd() is readable).
	int process();

	/**
	 * Detaches, delivers what is left, then one `final` snapshot for every
	 * flow not yet closed. Idempotent; poll() after stop() returns 0.
	 */
	void stop();

	/**
	 * Gives up the capabilities the attached tracer no longer uses, in the
	 * calling thread: its effective, permitted and inheritable sets keep
	 * CAP_BPF only where this kernel checks it on every bpf() call (before
	 * Linux 6.5, while kernel.unprivileged_bpf_disabled is set), plus CAP_BPF
	 * and CAP_NET_ADMIN while an attach on demand is pending (the tracepoint
	 * backend's arrival hook; they go once it is attached), plus
	 * CAP_DAC_OVERRIDE if that is what made the tracefs return probes, which
	 * are removed when the tracer goes; the ambient set is emptied.
	 * Capabilities belong to threads: call it before starting others.
	 * Throws Error (stage "privileges") if they cannot be changed.
	 */
	void drop_privileges();

	/// The backend in use (never Backend::automatic).
	Backend backend() const noexcept;
	/// Why that backend was chosen, for logs.
	const std::string &backend_reason() const noexcept;

	Stats stats() const;

private:
	struct Impl;
	std::unique_ptr<Impl> impl_;
};

} // namespace udpintercept
