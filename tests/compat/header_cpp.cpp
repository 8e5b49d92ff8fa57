// SPDX-License-Identifier: LGPL-2.1-or-later
// common.h and udpEvent.h compile as strict C++, and a program can link
// libudpEvent.so instead of dlopen()ing it.
#include "udpEvent.h"

#include <cstdio>
#include <cstring>
#include <type_traits>

static_assert(sizeof(udp_event_t) == 190);
static_assert(std::is_trivially_copyable_v<udp_event_t> && std::is_standard_layout_v<udp_event_t>);
static_assert(std::is_same_v<decltype(&AddProbe), void (*)() noexcept>);
static_assert(std::is_same_v<decltype(&getStatus), unsigned (*)() noexcept>);
static_assert(std::is_same_v<decltype(&DequeuePerfEvent), udp_event_t (*)() noexcept>);
static_assert(std::is_same_v<decltype(&cleanup), void (*)() noexcept>);
static_assert(std::is_same_v<decltype(&udpEvent_lastError), const char *(*)() noexcept>);
static_assert(std::is_same_v<decltype(&udpEvent_shedCount), unsigned long long (*)() noexcept>);

int main()
{
	int failures = 0;
	// Linked, not loaded by hand: nothing runs until AddProbe().
	if (getStatus() != 0) {
		std::fprintf(stderr, "FAIL: getStatus() is %u before AddProbe()\n", getStatus());
		failures++;
	}
	if (udpEvent_lastError() != nullptr || udpEvent_shedCount() != 0) {
		std::fprintf(stderr, "FAIL: an error or shed events before AddProbe()\n");
		failures++;
	}
	// cleanup() without AddProbe() is harmless, and turns DequeuePerfEvent()
	// into an immediate zeroed event.
	cleanup();
	cleanup();
	const udp_event_t event = DequeuePerfEvent();
	const udp_event_t zero{};
	if (std::memcmp(&event, &zero, sizeof(event)) != 0) {
		std::fprintf(stderr, "FAIL: DequeuePerfEvent() after cleanup() is not zeroed\n");
		failures++;
	}
	if (!failures)
		std::printf("ok: common.h and udpEvent.h in C++, linked consumer\n");
	return failures ? 1 : 0;
}
