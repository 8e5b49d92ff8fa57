// SPDX-License-Identifier: LGPL-2.1-or-later
// The records of the ring buffer, read with their lengths checked: the
// kernel writes them, but a reader that trusts lengths is one a bug or a
// fuzzer can walk off the end of.
#pragma once

#include <cstddef>
#include <cstdint>
#include <linux/types.h>
#include <optional>
#include <span>

extern "C" {
#include "udpintercept.h"
}

namespace udpintercept::detail {

/// One ring-buffer record of any kind.
struct Record {
	udpi_record_kind kind = UDPI_REC_NEW;
	udpi_flow_key key{};            ///< every kind but WANT_ARRIVALS (SOCK_CLOSE: sock_id only)
	udpi_flow flow{};               ///< NEW, UPDATE, CONNECT, DEFERRED
	std::uint64_t last_emit_ns = 0; ///< PENDING
};

/// The record in `bytes`, or nullopt if its kind is unknown or it is too short for its kind.
std::optional<Record> parse_record(std::span<const std::byte> bytes) noexcept;

} // namespace udpintercept::detail
