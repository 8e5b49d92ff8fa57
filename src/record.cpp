// SPDX-License-Identifier: LGPL-2.1-or-later
#include "record.h"

#include <cstring>

namespace udpintercept::detail {

namespace {

template <typename T> std::optional<T> read(std::span<const std::byte> bytes) noexcept
{
	if (bytes.size() < sizeof(T))
		return std::nullopt;
	T value;
	std::memcpy(&value, bytes.data(), sizeof(T));
	return value;
}

} // namespace

std::optional<Record> parse_record(std::span<const std::byte> bytes) noexcept
{
	const auto kind = read<std::uint32_t>(bytes);
	if (!kind)
		return std::nullopt;
	Record r;
	switch (*kind) {
	case UDPI_REC_NEW:
	case UDPI_REC_UPDATE:
	case UDPI_REC_CONNECT:
	case UDPI_REC_SOCK_CLOSE:
	case UDPI_REC_DEFERRED: {
		const auto rec = read<udpi_record>(bytes);
		if (!rec)
			return std::nullopt;
		r.key = rec->key;
		r.flow = rec->flow;
		break;
	}
	case UDPI_REC_PENDING: {
		const auto rec = read<udpi_pending_record>(bytes);
		if (!rec)
			return std::nullopt;
		r.key = rec->key;
		r.last_emit_ns = rec->last_emit_ns;
		break;
	}
	case UDPI_REC_WANT_ARRIVALS:
		break;
	default:
		return std::nullopt;
	}
	r.kind = static_cast<udpi_record_kind>(*kind);
	return r;
}

} // namespace udpintercept::detail
