// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <udpintercept/error.h>
#include <udpintercept/event.h>
#include <udpintercept/export.h>
#include <udpintercept/options.h>

namespace udpintercept {

/// Loss and load counters. Every figure is cumulative since construction.
struct Stats {
	/// Snapshots delivered to the callback.
	std::uint64_t events = 0;
	/// Records the kernel put in the ring buffer.
	std::uint64_t records_sent = 0;
	/// Records user space took from it (equal to records_sent once drained).
	std::uint64_t records_received = 0;
	/// Snapshots the ring buffer had no room for. Counts stay exact: later
	/// snapshots are cumulative, and a lost one makes the next sweep read
	/// the whole flow table (full_sweeps).
	std::uint64_t lost = 0;
	/// Socket closes that missed the ring buffer and were collected from the kernel later.
	std::uint64_t closes_deferred = 0;
	/// Operations on flows the full flow table could not admit.
	std::uint64_t flows_untracked = 0;
	/// Datagrams of those operations.
	std::uint64_t untracked_packets = 0;
	/// Bytes of those operations.
	std::uint64_t untracked_bytes = 0;
	/// Sockets the full socket table could not admit.
	std::uint64_t sockets_untracked = 0;
	/// Receives whose sender could not be known (see the README's limits).
	std::uint64_t peer_unknown = 0;
	/// Datagrams that arrived for a port no socket listened on (the kernel's
	/// NoPorts): they belong to no process and so to no flow. Counted on
	/// kernels that give drops a reason (5.17 and later); 0 on older ones.
	std::uint64_t no_listener = 0;
	/// Runs of the tracer's programs the kernel skipped because the same
	/// program was already running on that CPU (a hook reached again from
	/// an interrupt): what such a run would have counted is in no flow.
	/// Counted where the kernel keeps the figure: trampolines from 5.12,
	/// kprobes from 6.7, raw tracepoints on recent kernels; 0 elsewhere.
	std::uint64_t program_misses = 0;
	/// Operations a busy flow table handed to user space (counted exactly).
	std::uint64_t deferred_operations = 0;
	/// Socket and flow inserts refused for a reason other than a full table.
	std::uint64_t insert_failures = 0;
	/// The errno of the last of those.
	int insert_last_errno = 0;
	/// Flows in the kernel's flow table now (0 once stopped).
	std::uint64_t flows_active = 0;
	/// Reads of the whole flow table because the kernel lost a record (ring buffer full).
	std::uint64_t full_sweeps = 0;
	/// Updates sent for flows whose traffic stopped with changes the
	/// interval held back (user space asks the kernel for them; each is
	/// also a record in records_sent).
	std::uint64_t flushes = 0;
	/// Flows reported with `expire` and removed from the table (early ones included).
	std::uint64_t expired = 0;
	/// Of those, flows expired before their timeout because the table was
	/// past 90 % full (the longest idle first).
	std::uint64_t expired_early = 0;
};

/// How the tracer learns the cgroup path of a snapshot's cgroup id (Event::cgroup).
struct CgroupNaming {
	/// True while inotify watches every directory of the cgroup v2 tree: a
	/// cgroup made later is learnt by reading its own directory. False
	/// before the first lookup, and while some directory could not be
	/// watched: then each cgroup id not yet known walks the whole tree.
	bool watching = false;
	/// Walks of the whole cgroup v2 tree so far, the first lookup's included.
	std::uint64_t tree_walks = 0;
	/// Directories of the tree watched now.
	std::uint64_t directories_watched = 0;
	/// Why the tree is not watched whole ("" while it is, or before the first lookup).
	std::string unwatched_reason;
};

/**
 * A running UDP tracer: loaded and attached when the constructor returns,
 * detached by the destructor. Move-only: a Tracer moved from holds nothing,
 * and may only be assigned to or destroyed.
 *
 * Snapshots reach the callback from poll(), process() and stop(), on the
 * calling thread. stop() sends the `final` snapshots; the destructor
 * detaches without them.
 *
 * Threads: calls on one Tracer must not overlap, except stats(), which any
 * thread may call at any time while the Tracer exists.
 *
 * Callback exceptions: an exception the callback throws does not stop the
 * delivery of the other snapshots of the same call. The first one is
 * rethrown from that poll(), process() or stop() call once it has delivered
 * everything it had (stop() still delivers every `final` snapshot).
 */
class UDPINTERCEPT_EXPORT Tracer {
public:
	using Callback = std::function<void(const Event &)>;

	/// Loads and attaches; throws Error naming the stage that failed
	/// (options, btf, backend, privileges, open, load, attach, ring buffer, epoll, timer).
	/// A Tracer made after a failure starts afresh, but for libbpf's answers
	/// about the kernel's features, asked once per process and kept: a load
	/// that fails after failures alone says that a new process may be needed.
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
	 * A negative timeout waits until something arrives. Throws Error (stage
	 * "sweep") if the kernel keeps refusing a read of the flow table, which
	 * would otherwise miss flows.
	 */
	int poll(std::chrono::milliseconds timeout);

	/// An fd that becomes readable when process() has work: for the caller's epoll/poll loop.
	int fd() const noexcept;

	/// Delivers what is ready without waiting (call when fd() is readable).
	int process();

	/**
	 * Detaches, delivers what is left, then one `final` snapshot for every
	 * flow not yet closed. Idempotent; poll() after stop() returns 0. Throws
	 * Error (stage "sweep") if the kernel keeps refusing the read of the flow
	 * table that finds those flows (tried three times): the finals would be
	 * incomplete.
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

	/// The counters; cheap (no walk of the flow table) and safe from any
	/// thread, while the Tracer exists and is not being moved or assigned.
	Stats stats() const;

	/// How cgroup ids are named, for health checks (from the thread that
	/// calls poll(), process() and stop(), not beside them).
	CgroupNaming cgroup_naming() const;

private:
	struct Impl;
	std::unique_ptr<Impl> impl_;
};

} // namespace udpintercept
