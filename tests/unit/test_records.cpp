// SPDX-License-Identifier: LGPL-2.1-or-later
// Ring-buffer records are read with their lengths checked.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "record.h"

using udpintercept::detail::parse_record;

namespace {

template <typename T> std::vector<std::byte> bytes_of(const T &value, std::size_t size = sizeof(T))
{
	std::vector<std::byte> out(size);
	std::memcpy(out.data(), &value, std::min(size, sizeof(T)));
	return out;
}

} // namespace

TEST_CASE("a snapshot record is read whole", "[records]")
{
	udpi_record rec{};
	rec.kind = UDPI_REC_UPDATE;
	rec.key.sock_id = 42;
	rec.key.rport = 53;
	rec.flow.tx_bytes = 1234;
	rec.flow.changes = 7;
	const auto r = parse_record(bytes_of(rec));
	REQUIRE(r);
	CHECK(r->kind == UDPI_REC_UPDATE);
	CHECK(r->key.sock_id == 42);
	CHECK(r->key.rport == 53);
	CHECK(r->flow.tx_bytes == 1234);
	CHECK(r->flow.changes == 7);
}

TEST_CASE("a pending note carries the key and the emission it follows", "[records]")
{
	udpi_pending_record rec{};
	rec.kind = UDPI_REC_PENDING;
	rec.key.sock_id = 9;
	rec.last_emit_ns = 123456789;
	const auto r = parse_record(bytes_of(rec));
	REQUIRE(r);
	CHECK(r->kind == UDPI_REC_PENDING);
	CHECK(r->key.sock_id == 9);
	CHECK(r->last_emit_ns == 123456789);
}

TEST_CASE("records too short for their kind, or of unknown kinds, are refused", "[records]")
{
	udpi_record rec{};
	for (std::uint32_t kind :
	     {UDPI_REC_NEW, UDPI_REC_UPDATE, UDPI_REC_CONNECT, UDPI_REC_SOCK_CLOSE, UDPI_REC_DEFERRED}) {
		rec.kind = kind;
		CHECK(parse_record(bytes_of(rec)));
		CHECK_FALSE(parse_record(bytes_of(rec, sizeof(rec) - 1)));
		CHECK_FALSE(parse_record(bytes_of(rec, sizeof(udpi_pending_record))));
	}
	udpi_pending_record pending{};
	pending.kind = UDPI_REC_PENDING;
	CHECK_FALSE(parse_record(bytes_of(pending, sizeof(pending) - 8)));
	rec.kind = 0;
	CHECK_FALSE(parse_record(bytes_of(rec)));
	rec.kind = 99;
	CHECK_FALSE(parse_record(bytes_of(rec)));
	CHECK_FALSE(parse_record({}));
	CHECK_FALSE(parse_record(bytes_of(std::uint16_t{UDPI_REC_NEW})));
	// The arrival request has no body.
	CHECK(parse_record(bytes_of(std::uint32_t{UDPI_REC_WANT_ARRIVALS})));
}
