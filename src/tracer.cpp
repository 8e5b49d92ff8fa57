// SPDX-License-Identifier: LGPL-2.1-or-later
// The public Tracer: a loader (the BPF object in the kernel), a flow
// tracker (what user space has reported) and an event loop (the ring buffer
// and the sweep timer), joined.
#include <udpintercept/tracer.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <optional>

#include <fmt/format.h>

#include "cgroup_names.h"
#include "clock.h"
#include "decode.h"
#include "event_loop.h"
#include "flow_tracker.h"
#include "kernel_maps.h"
#include "loader.h"
#include "record.h"

namespace udpintercept {

namespace {

Options validated(Options options)
{
	options.validate();
	return options;
}

// Pending updates go out at most a quarter interval late; in the
// per-operation mode only snapshots the ring buffer lost are pending.
std::chrono::nanoseconds sweep_period(std::chrono::milliseconds interval)
{
	using namespace std::chrono_literals;
	if (interval.count() == 0)
		return 100ms;
	return std::clamp<std::chrono::nanoseconds>(interval / 4, 10ms, 250ms);
}

detail::ExpiryPolicy expiry_policy(const Options &options)
{
	detail::ExpiryPolicy policy;
	policy.timeout_ns = static_cast<std::uint64_t>(
		std::chrono::duration_cast<std::chrono::nanoseconds>(options.flow_timeout).count());
	policy.max_flows = options.max_flows;
	return policy;
}

} // namespace

struct __attribute__((visibility("hidden"))) Tracer::Impl {
	Options options;
	Callback callback;
	detail::Loader loader;
	detail::KernelMaps kernel;
	detail::WallClock clock;
	detail::CgroupNames cgroup_names; // the tracer's thread only
	detail::FlowTracker tracker;
	detail::EventLoop loop;

	std::atomic<std::uint64_t> records_received{0};
	std::atomic<bool> stopped{false};
	bool arrivals_wanted = false;
	// Whether the cgroup tree was watched whole when last logged (unset before the first walk).
	std::optional<bool> cgroup_watching_logged;
	int delivered = 0; // by the current call
	std::exception_ptr callback_error;

	Impl(Options opts, Callback cb)
	    : options(validated(std::move(opts))), callback(std::move(cb)), loader(options),
	      kernel(loader.objects()), tracker(
						kernel, options.interval,
						[this](EventKind kind, const udpi_flow_key &key,
						       const udpi_flow &flow) { deliver(kind, key, flow); },
						expiry_policy(options)),
	      loop(loader.ring_fd(), sweep_period(options.interval),
		   [this](std::span<const std::byte> bytes) { on_record(bytes); })
	{
	}

	void on_record(std::span<const std::byte> bytes)
	{
		records_received.fetch_add(1, std::memory_order_relaxed);
		const auto record = detail::parse_record(bytes);
		if (!record)
			return;
		if (record->kind == UDPI_REC_WANT_ARRIVALS)
			arrivals_wanted = true; // attached by process(), outside libbpf's callback
		else
			tracker.on_record(*record, detail::monotonic_ns());
	}

	void deliver(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow)
	{
		delivered++;
		if (!callback)
			return;
		try {
			Event event = detail::decode(kind, key, flow, clock);
			cgroup_names.annotate(event);
			log_cgroup_naming();
			callback(event);
		} catch (...) {
			if (!callback_error)
				callback_error = std::current_exception();
		}
	}

	// A change in how cgroups are named is logged once: a walk per unknown
	// cgroup costs the tracer's thread a read of every directory of the tree.
	void log_cgroup_naming()
	{
		if (!options.log || cgroup_names.walks() == 0 ||
		    cgroup_watching_logged == cgroup_names.watching())
			return;
		cgroup_watching_logged = cgroup_names.watching();
		if (*cgroup_watching_logged)
			options.log(fmt::format("cgroup names: inotify watches every directory of the cgroup "
						"tree ({}); a new cgroup is learnt from its parent's watch",
						cgroup_names.watches()));
		else
			options.log(fmt::format("cgroup names: {}; each cgroup id not yet known walks the "
						"cgroup tree ({} walks so far)",
						cgroup_names.unwatched_reason(), cgroup_names.walks()));
	}

	void rethrow_callback_error()
	{
		if (callback_error)
			std::rethrow_exception(std::exchange(callback_error, nullptr));
	}

	int process()
	{
		if (stopped)
			return 0;
		delivered = 0;
		loop.consume();
		if (arrivals_wanted) {
			arrivals_wanted = false;
			loader.attach_arrivals();
		}
		const std::uint64_t now = detail::monotonic_ns();
		if (loop.take_sweep(now)) {
			clock.calibrate();
			cgroup_names.refresh();
			log_cgroup_naming();
			if (tracker.sweep(now))
				loop.sweep_soon(); // flows a batch limit left due
			loop.consume();            // what the sweep's flushes sent
		}
		rethrow_callback_error();
		return delivered;
	}

	void stop()
	{
		if (stopped)
			return;
		stopped = true;
		delivered = 0;
		loader.detach();
		loop.consume(); // everything the kernel queued before the detach
		loop.disarm();
		clock.calibrate();
		tracker.stop(detail::monotonic_ns());
		rethrow_callback_error();
	}
};

Tracer::Tracer(Options options, Callback callback)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(callback)))
{
}

Tracer::~Tracer() = default;
Tracer::Tracer(Tracer &&) noexcept = default;
Tracer &Tracer::operator=(Tracer &&) noexcept = default;

void Tracer::on_event(Callback callback)
{
	impl_->callback = std::move(callback);
}

int Tracer::poll(std::chrono::milliseconds timeout)
{
	if (impl_->stopped)
		return 0;
	impl_->loop.wait(timeout);
	return impl_->process();
}

int Tracer::fd() const noexcept
{
	return impl_->loop.fd();
}

int Tracer::process()
{
	return impl_->process();
}

void Tracer::stop()
{
	impl_->stop();
}

void Tracer::drop_privileges()
{
	impl_->loader.drop_privileges();
}

Backend Tracer::backend() const noexcept
{
	return impl_->loader.backend();
}

const std::string &Tracer::backend_reason() const noexcept
{
	return impl_->loader.reason();
}

CgroupNaming Tracer::cgroup_naming() const
{
	const detail::CgroupNames &names = impl_->cgroup_names;
	CgroupNaming out;
	out.watching = names.watching();
	out.tree_walks = names.walks();
	out.directories_watched = names.watches();
	out.unwatched_reason = names.unwatched_reason();
	return out;
}

Stats Tracer::stats() const
{
	const Impl &d = *impl_;
	const detail::TrackerCounters &c = d.tracker.counters();
	// Every flow user space erased was created or inserted before: its
	// erasures read first, the active count cannot go below zero.
	const std::uint64_t erased = c.flows_erased;
	const detail::KernelStats k = d.kernel.stats();
	Stats s;
	s.events = c.events;
	s.records_sent = k.sum[UDPI_STAT_RB_SUBMITTED];
	s.records_received = d.records_received;
	s.lost = k.sum[UDPI_STAT_RB_DROP_UPDATE];
	s.closes_deferred = c.closes_deferred;
	s.flows_untracked = k.sum[UDPI_STAT_FLOWS_UNTRACKED] + c.untracked_operations;
	s.untracked_packets = k.sum[UDPI_STAT_UNTRACKED_PACKETS] + c.untracked_packets;
	s.untracked_bytes = k.sum[UDPI_STAT_UNTRACKED_BYTES] + c.untracked_bytes;
	s.sockets_untracked = k.sum[UDPI_STAT_SOCKS_UNTRACKED];
	s.peer_unknown = k.sum[UDPI_STAT_PEER_UNKNOWN];
	s.no_listener = k.sum[UDPI_STAT_NO_LISTENER];
	s.program_misses = d.loader.program_misses();
	s.deferred_operations = c.deferred_operations;
	s.insert_failures = k.sum[UDPI_STAT_INSERT_FAILED];
	s.insert_last_errno = static_cast<int>(k.insert_last_errno);
	// Counted, not walked: the kernel counts its inserts, user space the rest.
	const std::uint64_t made = k.sum[UDPI_STAT_FLOWS_CREATED] + c.flows_inserted;
	s.flows_active = d.stopped || made < erased ? 0 : made - erased;
	s.full_sweeps = c.full_sweeps;
	s.flushes = c.flushes;
	s.expired = c.expired;
	s.expired_early = c.expired_early;
	return s;
}

} // namespace udpintercept
