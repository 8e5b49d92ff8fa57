// SPDX-License-Identifier: LGPL-2.1-or-later
// udpEvent.h, the header for programs that link libudpEvent.so, compiles as
// strict C11 and declares the legacy functions with their legacy types.
#include "udpEvent.h"

_Static_assert(_Generic(&AddProbe, void (*)(void) : 1, default : 0), "AddProbe: void (void)");
_Static_assert(_Generic(&getStatus, unsigned (*)(void) : 1, default : 0), "getStatus: unsigned (void)");
_Static_assert(_Generic(&DequeuePerfEvent, struct udp_event_t (*)(void) : 1, default : 0),
	       "DequeuePerfEvent: struct udp_event_t (void)");
_Static_assert(_Generic(&cleanup, void (*)(void) : 1, default : 0), "cleanup: void (void)");
_Static_assert(_Generic(&udpEvent_lastError, const char *(*)(void) : 1, default : 0),
	       "udpEvent_lastError: const char *(void)");
_Static_assert(_Generic(&udpEvent_shedCount, unsigned long long (*)(void) : 1, default : 0),
	       "udpEvent_shedCount: unsigned long long (void)");

int check_prototypes(void)
{
	return 0;
}
