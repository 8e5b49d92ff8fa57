// SPDX-License-Identifier: LGPL-2.1-or-later
// The "Complete Monitoring Example" of the legacy library's documentation,
// token for token. Only the document's typography is undone: it set spaces
// around the parts of string literals ("%d \n " is "%d\n", "%s : %d" is
// "%s:%d", as its sample output shows). Nothing else is changed: libudpEvent.so
// must serve this program as it is.
#include <stdio.h>
#include <stdlib.h>
#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>
#include "common.h"
#define SOFILE "/opt/RealTimeKql/lib/libudpEvent.so"
void (*cleanup)();
void *handle = NULL;
void signalHandler(int signum)
{
	printf("Interrupted by signal %u\n", signum);
	cleanup();
	if (handle && dlclose(handle)) {
		puts("Error closing handle, but continuing shutdown");
	}
	exit(signum);
}
void printEvent(struct udp_event_t *event)
{
	if (!event)
		return;
	printf("---\n");
	printf("PID: %d\n", event->pid);
	printf("UID: %d\n", event->UserId);
	printf("Family: %d\n", event->family);
	printf("Bytes received: %lu\n", event->rx_b);
	printf("Bytes sent: %lu\n", event->tx_b);
	printf("Packets received: %u\n", event->rxPkts);
	printf("Packets sent: %u\n", event->txPkts);
	printf("Command: %s\n", event->task);
	printf("Source: %s:%d\n", event->SADDR, event->SPT);
	printf("Destination: %s:%d\n", event->DADDR, event->DPT);
	printf("Event time: %ld\n", event->EventTime);
	printf("---\n");
}
int main()
{
	printf("UDP Event Monitor PID: %d\n", getpid());
	// Load library
	handle = dlopen(SOFILE, RTLD_LAZY);
	if (!handle) {
		fprintf(stderr, "Failed to load library\n");
		exit(EXIT_FAILURE);
	}
	// Resolve symbols
	void (*AddProbe)() = dlsym(handle, "AddProbe");
	struct udp_event_t (*DequeuePerfEvent)() = dlsym(handle, "DequeuePerfEvent");
	cleanup = dlsym(handle, "cleanup");
	unsigned (*getStatus)() = dlsym(handle, "getStatus");
	// Check for errors (simplified)
	if (!AddProbe || !DequeuePerfEvent || !cleanup || !getStatus) {
		fprintf(stderr, "Failed to resolve symbols\n");
		exit(EXIT_FAILURE);
	}
	// Setup signal handler
	signal(SIGINT, signalHandler);
	// Attach probes
	puts("Attaching UDP probes...");
	AddProbe();
	puts("Probes attached!");
	// Wait for initialization
	while (!getStatus()) {
		puts("Waiting on getStatus()...");
		sleep(1);
	}
	// Main event loop
	struct udp_event_t event;
	while (1) {
		event = DequeuePerfEvent();
		printEvent(&event);
	}
	return 0;
}
