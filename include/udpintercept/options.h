// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <udpintercept/event.h>
#include <udpintercept/export.h>

namespace udpintercept {

/// How the tracer hooks the kernel (see the README: "How a backend is chosen").
enum class Backend {
	automatic,  ///< the best backend this kernel offers, found by probing
	fentry,     ///< fentry/fexit BPF trampolines on the UDP functions
	kprobe,     ///< kprobes on the same functions
	tracepoint, ///< sock_{send,recv}_length raw tracepoints plus cgroup hooks (kernel >= 6.3)
};

/// "auto", "fentry", "kprobe" or "tracepoint".
UDPINTERCEPT_EXPORT std::string_view to_string(Backend backend) noexcept;
/// The inverse of to_string(); nullopt for an unknown name.
UDPINTERCEPT_EXPORT std::optional<Backend> parse_backend(std::string_view name) noexcept;

/// What to trace and how. Every field has a usable default.
struct UDPINTERCEPT_EXPORT Options {
	Backend backend = Backend::automatic;

	/// At most one `update` per flow per interval; 0 = one snapshot per operation.
	std::chrono::milliseconds interval{1000};

	/// Filters, applied in the kernel before any map work. Unset = everything.
	std::optional<std::uint32_t> pid;  ///< process id (tgid) of the task doing the operation
	std::optional<std::uint32_t> uid;  ///< user id of that task
	std::optional<std::uint16_t> port; ///< local or remote port
	std::optional<Family> family;      ///< traffic family (IPv4-mapped peers are IPv4)
	std::optional<std::string> cgroup; ///< cgroup v2 directory (absolute path) at or above that task's

	/**
	 * A flow with no operation for this long is reported with `expire` (its
	 * totals) and leaves the flow table; the same socket and peer talking
	 * again start a new flow. When the table passes 90 % full, the longest
	 * idle flows are expired early (Stats::expired_early). 0 = never: flows
	 * leave the table only when their socket closes, and a full table
	 * counts new flows' traffic as untracked.
	 */
	std::chrono::seconds flow_timeout{300};

	std::uint32_t max_flows = 65536;            ///< flow table entries
	std::uint32_t max_sockets = 65536;          ///< socket table entries
	std::uint32_t ring_buffer_bytes = 4u << 20; ///< power of two, at least one page

	/// Tracepoint backend only: count sends at sock_send_length (with the
	/// cgroup sendmsg hooks and net_dev_queue) even where one cgroup_skb/egress
	/// program could (the default wherever the kernel allows it, and cheaper).
	bool sends_at_tracepoint = false;

	/// Tracepoint backend only, and inexact: note arriving datagrams' senders
	/// (the arrival hook, cgroup_skb/ingress: what recv() without an address
	/// on an unconnected socket needs) only once the first such receive on
	/// the machine asks for it, instead of from the start. Saves every
	/// received datagram a program until then, at the price of exactness:
	/// that receive, any before the next poll(), and the datagrams queued at
	/// that moment count under an unknown peer (Stats::peer_unknown).
	bool recv_peers_lazy_inexact = false;

	/// Receives a line for each decision worth logging (backend probing, choices).
	/// Called one line at a time, during the Tracer's construction also from the
	/// thread that verifies some of its programs beside the constructing one.
	std::function<void(std::string_view)> log;

	/// Throws Error (stage "options") naming the first invalid field.
	void validate() const;
};

} // namespace udpintercept
