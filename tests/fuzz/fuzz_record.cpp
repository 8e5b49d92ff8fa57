// SPDX-License-Identifier: LGPL-2.1-or-later
// Arbitrary bytes as a ring-buffer record of any kind and length: the reader
// takes only records long enough for their kind, and a snapshot it takes
// decodes and formats as valid JSON whatever its fields hold.
#include <cstddef>
#include <cstdint>
#include <span>

#include "clock.h"
#include "decode.h"
#include "json_check.h"
#include "record.h"

using namespace udpintercept;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
	static const detail::WallClock clock;
	const auto record = detail::parse_record(
		std::span<const std::byte>(reinterpret_cast<const std::byte *>(data), size));
	if (!record)
		return 0;
	switch (record->kind) {
	case UDPI_REC_PENDING:
		FUZZ_CHECK(size >= sizeof(udpi_pending_record));
		return 0;
	case UDPI_REC_WANT_ARRIVALS:
		FUZZ_CHECK(size >= sizeof(std::uint32_t));
		return 0;
	default:
		FUZZ_CHECK(size >= sizeof(udpi_record));
		break;
	}
	for (EventKind kind : {EventKind::update, EventKind::expire}) {
		const Event e = detail::decode(kind, record->key, record->flow, clock);
		FUZZ_CHECK(e.comm.size() <= UDPI_COMM_LEN); // never read past the field
		FUZZ_CHECK(fuzzcheck::JsonCheck(to_json(e)).valid());
		FUZZ_CHECK(to_text(e).find('\n') == std::string::npos);
	}
	return 0;
}
