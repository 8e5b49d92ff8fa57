// SPDX-License-Identifier: LGPL-2.1-or-later
// common.h compiles as strict C11 and declares nothing but the struct: a
// legacy consumer's own file-scope names (the example's `cleanup`, and the
// pointers it resolves with dlsym()) must not collide with anything in it.
#include "common.h"

#include <stdio.h>

void (*cleanup)();
void (*AddProbe)();
unsigned (*getStatus)();
struct udp_event_t (*DequeuePerfEvent)();
void *handle = NULL;

int check_prototypes(void); // header_proto.c

int main(void)
{
	struct udp_event_t event = {0};
	int failures = 0;
	const struct {
		const char *name;
		size_t offset, expected;
	} fields[] = {
		{"family", offsetof(struct udp_event_t, family), 0},
		{"pid", offsetof(struct udp_event_t, pid), 2},
		{"UserId", offsetof(struct udp_event_t, UserId), 6},
		{"EventTime", offsetof(struct udp_event_t, EventTime), 10},
		{"SPT", offsetof(struct udp_event_t, SPT), 18},
		{"DPT", offsetof(struct udp_event_t, DPT), 20},
		{"task", offsetof(struct udp_event_t, task), 22},
		{"rx_b", offsetof(struct udp_event_t, rx_b), 38},
		{"tx_b", offsetof(struct udp_event_t, tx_b), 46},
		{"rxPkts", offsetof(struct udp_event_t, rxPkts), 54},
		{"txPkts", offsetof(struct udp_event_t, txPkts), 58},
		{"SADDR", offsetof(struct udp_event_t, SADDR), 62},
		{"DADDR", offsetof(struct udp_event_t, DADDR), 126},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (fields[i].offset != fields[i].expected) {
			fprintf(stderr, "FAIL: %s at %zu, expected %zu\n", fields[i].name, fields[i].offset,
				fields[i].expected);
			failures++;
		}
	}
	if (sizeof(event) != 190 || sizeof(event.task) != 16 || sizeof(event.SADDR) != 64 ||
	    sizeof(event.DADDR) != 64) {
		fprintf(stderr, "FAIL: sizes %zu/%zu/%zu/%zu\n", sizeof(event), sizeof(event.task),
			sizeof(event.SADDR), sizeof(event.DADDR));
		failures++;
	}
	failures += check_prototypes();
	if (!failures)
		printf("ok: struct udp_event_t is 190 packed bytes in C\n");
	return failures ? 1 : 0;
}
