// SPDX-License-Identifier: LGPL-2.1-or-later
// The kernel's tables as the flow tracker sees them (KernelFlows), over the
// file descriptors of the loaded BPF object, and its statistics.
#pragma once

#include <array>
#include <cstdint>

#include "kernel_flows.h"

namespace udpintercept::detail {

/// What KernelMaps works on: borrowed from the loaded object, which outlives it.
struct KernelObjects {
	int flows_fd = -1;
	int closed_fd = -1;
	int socks_fd = -1;
	int stats_fd = -1;
	int flush_prog_fd = -1;
	int check_prog_fd = -1;                     ///< which sockets of the socket table are gone
	std::uint32_t *full_sweep_wanted = nullptr; ///< in the object's mmapped .bss
};

/// The per-CPU statistics of the kernel side, summed over CPUs.
struct KernelStats {
	std::array<std::uint64_t, UDPI_STAT_MAX> sum{};
	std::uint64_t insert_last_errno = 0; ///< not a sum: the value of any CPU that set it
};

class KernelMaps final : public KernelFlows {
public:
	explicit KernelMaps(const KernelObjects &objects) : objects_(objects) {}

	std::optional<udpi_flow> lookup(const udpi_flow_key &key) override;
	bool insert(const udpi_flow_key &key, const udpi_flow &flow) override;
	bool erase(const udpi_flow_key &key) override;
	std::optional<udpi_flow> take(const udpi_flow_key &key) override;
	void for_each(const std::function<void(const udpi_flow_key &, const udpi_flow &)> &fn) override;
	udpi_flush_result flush(const udpi_flow_key &key) override;
	bool take_full_sweep_request() override;
	std::vector<std::pair<std::uint64_t, std::uint64_t>> take_closed() override;
	std::optional<std::unordered_set<std::uint64_t>> open_sockets() override;

	/// One lookup per statistic; safe from any thread.
	KernelStats stats() const;

private:
	KernelObjects objects_;
	bool take_in_one_step_ = true; // until the kernel says it cannot (before 5.14)
};

} // namespace udpintercept::detail
