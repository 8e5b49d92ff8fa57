// SPDX-License-Identifier: LGPL-2.1-or-later
// What the flow tracker needs of the kernel: a narrow interface over the
// BPF maps (KernelMaps implements it), so that the tracker's logic can be
// driven by tests through orders real traffic rarely produces.
#pragma once

#include <cstdint>
#include <functional>
#include <linux/types.h>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

extern "C" {
#include "udpintercept.h"
}

namespace udpintercept::detail {

class KernelFlows {
public:
	virtual ~KernelFlows() = default;

	/// The flow's state in the kernel's table, if it is there.
	virtual std::optional<udpi_flow> lookup(const udpi_flow_key &key) = 0;

	/// Adds the flow unless its key is present; false if it was (or the table is full).
	virtual bool insert(const udpi_flow_key &key, const udpi_flow &flow) = 0;

	/// Removes the flow; false if it was not there.
	virtual bool erase(const udpi_flow_key &key) = 0;

	/**
	 * Removes the flow and returns its state as it was when removed, or
	 * nullopt if it was not there. Where the kernel can (hash maps, Linux
	 * 5.14), reading and removing are one step, so no operation lands between
	 * them; a BPF program that found the entry just before can still add to
	 * it afterwards (see FlowTracker's late operations).
	 */
	virtual std::optional<udpi_flow> take(const udpi_flow_key &key) = 0;

	/// Calls `fn` for every flow of the table (a full sweep; costs a read of the whole table).
	virtual void for_each(const std::function<void(const udpi_flow_key &, const udpi_flow &)> &fn) = 0;

	/**
	 * Asks the kernel to send the flow's snapshot through the ring buffer if
	 * it has unreported changes and its interval has passed (the flush
	 * program: the kernel's one rate limit decides).
	 */
	virtual udpi_flush_result flush(const udpi_flow_key &key) = 0;

	/// Whether the kernel asked for a full sweep (a record was lost); clears the request.
	virtual bool take_full_sweep_request() = 0;

	/// Sockets whose close record found the ring buffer full, with the
	/// CLOCK_MONOTONIC time of the close; each is returned once.
	virtual std::vector<std::pair<std::uint64_t, std::uint64_t>> take_closed() = 0;

	/**
	 * The ids of the sockets in the kernel's socket table: those it has seen
	 * and not seen close (a socket leaves it at its close, whether or not the
	 * close reached user space), or nullopt if the table cannot be read. Read
	 * after the flow table, a flow whose socket is missing here belongs to a
	 * socket that closed.
	 */
	virtual std::optional<std::unordered_set<std::uint64_t>> open_sockets() = 0;
};

} // namespace udpintercept::detail
