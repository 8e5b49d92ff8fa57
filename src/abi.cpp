// SPDX-License-Identifier: LGPL-2.1-or-later
// The layout of everything that crosses the kernel boundary, checked at
// compile time: a change to bpf/udpintercept.h that moves a field fails the
// build here (tests/unit/test_btf.cpp compares it with the BPF object too).
#include <cstddef>
#include <linux/types.h>

extern "C" {
#include "udpintercept.h"
}

static_assert(sizeof(udpi_flow_key) == 32);
static_assert(offsetof(udpi_flow_key, sock_id) == 0);
static_assert(offsetof(udpi_flow_key, raddr) == 8);
static_assert(offsetof(udpi_flow_key, rport) == 24);
static_assert(offsetof(udpi_flow_key, family) == 26);
static_assert(sizeof(udpi_flow) == 144);
static_assert(offsetof(udpi_flow, tx_bytes) == 0);
static_assert(offsetof(udpi_flow, rx_packets) == 24);
static_assert(offsetof(udpi_flow, rx_drops) == 32);
static_assert(offsetof(udpi_flow, last_ns) == 40);
static_assert(offsetof(udpi_flow, changes) == 64);
static_assert(offsetof(udpi_flow, last_tick) == 72);
static_assert(offsetof(udpi_flow, emitted_changes) == 80);
static_assert(offsetof(udpi_flow, pending_for_ns) == 88);
static_assert(offsetof(udpi_flow, pid) == 96);
static_assert(offsetof(udpi_flow, netns) == 104);
static_assert(offsetof(udpi_flow, lport) == 108);
static_assert(offsetof(udpi_flow, laddr) == 112);
static_assert(offsetof(udpi_flow, comm) == 128);
static_assert(sizeof(udpi_record) == 184);
static_assert(offsetof(udpi_record, key) == 8);
static_assert(offsetof(udpi_record, flow) == 40);
static_assert(sizeof(udpi_pending_record) == 48);
static_assert(offsetof(udpi_pending_record, key) == 8);
static_assert(offsetof(udpi_pending_record, last_emit_ns) == 40);
static_assert(sizeof(udpi_sock) == 40);
static_assert(offsetof(udpi_sock, cgroup_id) == 8);
static_assert(offsetof(udpi_sock, pid) == 16);
static_assert(offsetof(udpi_sock, comm) == 24);
static_assert(sizeof(udpi_peer_stash) == 32);
static_assert(UDPI_STAT_MAX == 13);
