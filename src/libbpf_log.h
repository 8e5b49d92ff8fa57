// SPDX-License-Identifier: LGPL-2.1-or-later
// libbpf prints through one process-wide function. While a Tracer loads or
// attaches, its warnings (the verifier log among them) are kept, so that a
// failure can say why, and passed to Options::log if set.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include <bpf/libbpf.h>

namespace udpintercept::detail {

/// libbpf's output for the lifetime of this object (one at a time per process).
class LibbpfCapture {
public:
	explicit LibbpfCapture(const std::function<void(std::string_view)> &log);
	/// The program's own libbpf printer comes back: this library may be unloaded.
	~LibbpfCapture();
	LibbpfCapture(const LibbpfCapture &) = delete;
	LibbpfCapture &operator=(const LibbpfCapture &) = delete;

	/// The last `lines` lines, which hold the verifier's verdict.
	std::string tail(std::size_t lines = 12) const;

private:
	std::lock_guard<std::mutex> lock_;
	std::string text_;
	libbpf_print_fn_t previous_ = nullptr;
};

} // namespace udpintercept::detail
