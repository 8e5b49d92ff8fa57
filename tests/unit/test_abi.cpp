// SPDX-License-Identifier: LGPL-2.1-or-later
// The shared header as user space compiles it: the layout the BPF side
// writes must be the layout user space reads.
#include <catch2/catch.hpp>

#include <cstddef>
#include <linux/types.h>
#include <type_traits>

extern "C" {
#include "udpintercept.h"
}

static_assert(std::is_trivially_copyable_v<udpi_record>);
static_assert(sizeof(udpi_flow_key) % 8 == 0, "hash keys must have no implicit tail padding");
static_assert(offsetof(udpi_flow_key, pad) + sizeof(udpi_flow_key::pad) == sizeof(udpi_flow_key));
static_assert(offsetof(udpi_flow, comm) + UDPI_COMM_LEN == sizeof(udpi_flow));
static_assert(offsetof(udpi_record, flow) + sizeof(udpi_flow) == sizeof(udpi_record));
static_assert(sizeof(udpi_record) % 8 == 0, "ring buffer records stay 8-byte aligned");

TEST_CASE("shared structures have the sizes the BPF object was built with", "[abi]")
{
	CHECK(sizeof(udpi_flow_key) == 32);
	CHECK(sizeof(udpi_flow) == 120);
	CHECK(sizeof(udpi_record) == 160);
	CHECK(offsetof(udpi_flow_key, rport) == 24);
	CHECK(offsetof(udpi_flow, laddr) == 88);
}
