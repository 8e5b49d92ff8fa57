// SPDX-License-Identifier: LGPL-2.1-or-later
// The shared header as user space compiles it must be the layout the BPF
// object was built with: each shared structure's size and every member's
// offset are compared with the BTF of the built object.
#include <catch2/catch.hpp>

#include <bpf/btf.h>
#include <cstddef>
#include <linux/types.h>
#include <map>
#include <memory>
#include <string>
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
static_assert(sizeof(udpi_pending_record) % 8 == 0, "ring buffer records stay 8-byte aligned");

namespace {

struct Layout {
	std::size_t size;
	std::map<std::string, std::size_t> offsets;
};

#define MEMBER(type, field)                                                                                  \
	{                                                                                                    \
#field, offsetof(type, field)                                                                \
	}

// Every member of every structure that crosses the kernel boundary.
const std::map<std::string, Layout> kUserSpace = {
	{"udpi_flow_key",
	 {sizeof(udpi_flow_key),
	  {MEMBER(udpi_flow_key, sock_id), MEMBER(udpi_flow_key, raddr), MEMBER(udpi_flow_key, rport),
	   MEMBER(udpi_flow_key, family), MEMBER(udpi_flow_key, pad)}}},
	{"udpi_flow",
	 {sizeof(udpi_flow),
	  {MEMBER(udpi_flow, tx_bytes), MEMBER(udpi_flow, rx_bytes), MEMBER(udpi_flow, tx_packets),
	   MEMBER(udpi_flow, rx_packets), MEMBER(udpi_flow, rx_drops), MEMBER(udpi_flow, last_ns),
	   MEMBER(udpi_flow, last_emit_ns), MEMBER(udpi_flow, cgroup_id), MEMBER(udpi_flow, changes),
	   MEMBER(udpi_flow, last_tick), MEMBER(udpi_flow, emitted_changes),
	   MEMBER(udpi_flow, pending_for_ns), MEMBER(udpi_flow, pid), MEMBER(udpi_flow, uid),
	   MEMBER(udpi_flow, netns), MEMBER(udpi_flow, lport), MEMBER(udpi_flow, pad0),
	   MEMBER(udpi_flow, laddr), MEMBER(udpi_flow, comm)}}},
	{"udpi_record",
	 {sizeof(udpi_record),
	  {MEMBER(udpi_record, kind), MEMBER(udpi_record, pad), MEMBER(udpi_record, key),
	   MEMBER(udpi_record, flow)}}},
	{"udpi_pending_record",
	 {sizeof(udpi_pending_record),
	  {MEMBER(udpi_pending_record, kind), MEMBER(udpi_pending_record, pad),
	   MEMBER(udpi_pending_record, key), MEMBER(udpi_pending_record, last_emit_ns)}}},
	{"udpi_sock",
	 {sizeof(udpi_sock),
	  {MEMBER(udpi_sock, id), MEMBER(udpi_sock, cgroup_id), MEMBER(udpi_sock, pid),
	   MEMBER(udpi_sock, uid), MEMBER(udpi_sock, comm)}}},
	{"udpi_peer_stash",
	 {sizeof(udpi_peer_stash),
	  {MEMBER(udpi_peer_stash, sk), MEMBER(udpi_peer_stash, addr), MEMBER(udpi_peer_stash, port),
	   MEMBER(udpi_peer_stash, family), MEMBER(udpi_peer_stash, connected),
	   MEMBER(udpi_peer_stash, pad)}}},
};

#undef MEMBER

} // namespace

TEST_CASE("shared structures have, member by member, the layout of the BPF object's BTF", "[abi]")
{
	std::unique_ptr<btf, void (*)(btf *)> object(btf__parse_elf(UDPI_BPF_OBJECT, nullptr), btf__free);
	REQUIRE(object);
	for (const auto &[name, layout] : kUserSpace) {
		INFO("struct " << name);
		const int id = btf__find_by_name_kind(object.get(), name.c_str(), BTF_KIND_STRUCT);
		REQUIRE(id > 0);
		const btf_type *t = btf__type_by_id(object.get(), id);
		CHECK(t->size == layout.size);
		const btf_member *m = btf_members(t);
		std::map<std::string, std::size_t> in_btf;
		for (int i = 0; i < btf_vlen(t); i++, m++)
			in_btf[btf__name_by_offset(object.get(), m->name_off)] =
				btf_member_bit_offset(t, i) / 8;
		CHECK(in_btf == layout.offsets);
	}
}
