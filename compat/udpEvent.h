// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Prototypes of libudpEvent.so for programs that link it (-ludpEvent)
 * instead of resolving the names with dlsym(). Consumers that dlopen() the
 * library include common.h only.
 */
#ifndef UDPEVENT_UDPEVENT_H
#define UDPEVENT_UDPEVENT_H

#include "common.h"

#ifdef __cplusplus
#define UDPEVENT_NOEXCEPT noexcept
extern "C" {
#else
#define UDPEVENT_NOEXCEPT
#endif

/**
 * Loads and attaches the tracer (the best backend the kernel offers) and
 * returns once it is attached or has failed. A failure is said on stderr
 * with its cause and kept for udpEvent_lastError(). Does nothing while
 * attached; after cleanup() it attaches again.
 */
void AddProbe(void) UDPEVENT_NOEXCEPT;

/// Non-zero while attached (from AddProbe() until cleanup()).
unsigned getStatus(void) UDPEVENT_NOEXCEPT;

/**
 * Blocks until the next snapshot of a flow and returns it. Safe from several
 * threads: each snapshot goes to exactly one of them. After cleanup() (also
 * one that happens while blocked) returns an all-zero event.
 */
struct udp_event_t DequeuePerfEvent(void) UDPEVENT_NOEXCEPT;

/**
 * Detaches and wakes every blocked DequeuePerfEvent(). Async-signal-safe, so
 * it may be called from a signal handler; calling it again does nothing.
 */
void cleanup(void) UDPEVENT_NOEXCEPT;

/// Why the last AddProbe() failed, or NULL. Valid until the next AddProbe().
const char *udpEvent_lastError(void) UDPEVENT_NOEXCEPT;

/// Snapshots shed because the queue was full (oldest first), since loading.
unsigned long long udpEvent_shedCount(void) UDPEVENT_NOEXCEPT;

#ifdef __cplusplus
}
#endif
#undef UDPEVENT_NOEXCEPT

#endif /* UDPEVENT_UDPEVENT_H */
