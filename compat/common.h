// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The event of the legacy libudpEvent.so ABI, byte for byte as the original
 * header shipped it: consumers read it straight out of DequeuePerfEvent()'s
 * return value, so neither the fields nor the packing may change.
 *
 * This header declares the struct and nothing else. Consumers that dlopen()
 * the library declare their own pointers named AddProbe, cleanup, ... at file
 * scope; a prototype here would collide with them. Programs that link the
 * library get the prototypes from udpEvent.h.
 */
#ifndef UDPEVENT_COMMON_H
#define UDPEVENT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#pragma pack(push, 1)
struct udp_event_t {
	uint16_t family;    /* 2 (AF_INET) or 10 (AF_INET6), by the traffic */
	uint32_t pid;       /* process id of the task of the newest change */
	uint32_t UserId;    /* its user id */
	uint64_t EventTime; /* wall clock, nanoseconds since the Unix epoch */
	uint16_t SPT;       /* local port */
	uint16_t DPT;       /* remote port */
	char task[16];      /* command, NUL-terminated */
	uint64_t rx_b;      /* bytes received, cumulative for the flow */
	uint64_t tx_b;      /* bytes sent, cumulative for the flow */
	uint32_t rxPkts;    /* datagrams received, cumulative */
	uint32_t txPkts;    /* datagrams sent, cumulative */
	char SADDR[64];     /* local address as text, NUL-terminated */
	char DADDR[64];     /* remote address as text, NUL-terminated */
};
#pragma pack(pop)

#ifdef __cplusplus
#define UDPEVENT_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define UDPEVENT_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

UDPEVENT_STATIC_ASSERT(sizeof(struct udp_event_t) == 190, "udp_event_t is the legacy 190-byte packed layout");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, family) == 0, "legacy layout: family");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, pid) == 2, "legacy layout: pid");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, UserId) == 6, "legacy layout: UserId");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, EventTime) == 10, "legacy layout: EventTime");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, SPT) == 18, "legacy layout: SPT");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, DPT) == 20, "legacy layout: DPT");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, task) == 22, "legacy layout: task");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, rx_b) == 38, "legacy layout: rx_b");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, tx_b) == 46, "legacy layout: tx_b");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, rxPkts) == 54, "legacy layout: rxPkts");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, txPkts) == 58, "legacy layout: txPkts");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, SADDR) == 62, "legacy layout: SADDR");
UDPEVENT_STATIC_ASSERT(offsetof(struct udp_event_t, DADDR) == 126, "legacy layout: DADDR");

#undef UDPEVENT_STATIC_ASSERT

#endif /* UDPEVENT_COMMON_H */
