// SPDX-License-Identifier: LGPL-2.1-or-later
// The BPF object in the kernel: which backend, loaded how, attached where.
// loader.cpp is the only file that includes the generated skeleton.
#pragma once

#include <memory>
#include <string>

#include <udpintercept/options.h>

#include "kernel_maps.h"

namespace udpintercept::detail {

class Loader {
public:
	/**
	 * Chooses a backend (the forced one, or the first `auto` finds that
	 * passes its trial load), then opens, configures, loads and attaches
	 * it. Throws Error naming the stage that failed.
	 */
	explicit Loader(const Options &options);
	~Loader();
	Loader(const Loader &) = delete;
	Loader &operator=(const Loader &) = delete;

	Backend backend() const noexcept;
	/// Why that backend, including the ones `auto` tried before it.
	const std::string &reason() const noexcept;

	/// The maps and programs the flow tracker works on.
	KernelObjects objects() const noexcept;
	/// The ring buffer map.
	int ring_fd() const noexcept;

	/// Attaches the arrival hook a receive asked for (UDPI_REC_WANT_ARRIVALS), once.
	void attach_arrivals();

	/**
	 * Keeps only the capabilities the attached object still uses (see
	 * Tracer::drop_privileges()), now and again once the arrival hook is
	 * attached.
	 */
	void drop_privileges();

	/// Runs of the loaded programs the kernel skipped (see Stats::program_misses).
	std::uint64_t program_misses() const noexcept;

	/// Detaches every program; the maps stay readable.
	void detach() noexcept;

private:
	struct Impl;
	std::unique_ptr<Impl> impl_;
};

} // namespace udpintercept::detail
