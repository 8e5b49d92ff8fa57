// SPDX-License-Identifier: LGPL-2.1-or-later
// A consumer of libudpEvent.so, run as a child of the faults tests (their
// own executable, `--legacy-client LIB`), so that a library preloaded into
// it can refuse its bpf() calls (fail_bpf.c): it attaches, counts a small
// exchange, and cleans up, then once more with no call refused (the
// preloaded library paused). Each round prints one line on stdout,
// "round N attached=0|1 exact=0|1", and why a round fell short on stderr
// (udpEvent_lastError()).
#include <chrono>
#include <cstdio>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>

#include "common.h"
#include "exchange.h"

using namespace std::chrono_literals;

namespace {

struct Legacy {
	void (*add_probe)() = nullptr;
	unsigned (*get_status)() = nullptr;
	udp_event_t (*dequeue)() = nullptr;
	void (*cleanup)() = nullptr;
	const char *(*last_error)() = nullptr;
};

void say_error(int round, const Legacy &lib)
{
	const char *error = lib.last_error();
	std::fprintf(stderr, "legacy client: round %d: %s\n", round, error ? error : "(no error kept)");
}

// One attach, exchange and cleanup: whether its counts were the ledger's.
bool round_of(int round, const Legacy &lib)
{
	lib.add_probe();
	if (!lib.get_status()) {
		say_error(round, lib);
		std::printf("round %d attached=0 exact=0\n", round);
		return false;
	}
	// The legacy struct has no netns: the ledger's ports name its flows. A
	// zeroed event ends the reader: cleanup(), or the tracer stopped.
	std::mutex mu;
	faults::Ledger traced;
	bool ended = false;
	std::thread reader([&] {
		for (;;) {
			const udp_event_t e = lib.dequeue();
			std::lock_guard lock(mu);
			if (e.pid == 0 && e.EventTime == 0) {
				ended = true;
				return;
			}
			traced[faults::flow_id(e.SPT, std::string(e.DADDR) + ":" + std::to_string(e.DPT))] = {
				e.tx_b, e.txPkts, e.rx_b, e.rxPkts};
		}
	});
	const faults::Ledger ledger = faults::exchange(2, 5, 40);
	// The closes carry each flow's totals.
	bool exact = false;
	for (const auto end = std::chrono::steady_clock::now() + 20s;
	     !exact && std::chrono::steady_clock::now() < end;) {
		{
			std::lock_guard lock(mu);
			exact = faults::of_ledger(traced, ledger) == ledger;
			if (ended)
				break;
		}
		if (!exact)
			std::this_thread::sleep_for(20ms);
	}
	if (!exact)
		say_error(round, lib);
	lib.cleanup();
	reader.join();
	std::printf("round %d attached=1 exact=%d\n", round, exact ? 1 : 0);
	return exact;
}

} // namespace

int legacy_client(const char *path)
{
	void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		std::fprintf(stderr, "legacy client: %s\n", dlerror());
		return 2;
	}
	Legacy lib;
	lib.add_probe = reinterpret_cast<void (*)()>(dlsym(handle, "AddProbe"));
	lib.get_status = reinterpret_cast<unsigned (*)()>(dlsym(handle, "getStatus"));
	lib.dequeue = reinterpret_cast<udp_event_t (*)()>(dlsym(handle, "DequeuePerfEvent"));
	lib.cleanup = reinterpret_cast<void (*)()>(dlsym(handle, "cleanup"));
	lib.last_error = reinterpret_cast<const char *(*)()>(dlsym(handle, "udpEvent_lastError"));
	if (!lib.add_probe || !lib.get_status || !lib.dequeue || !lib.cleanup || !lib.last_error) {
		std::fprintf(stderr, "legacy client: %s lacks a legacy name\n", path);
		return 2;
	}
	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	round_of(1, lib);
	if (const auto pause = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "udpi_fail_bpf_pause")))
		pause();
	round_of(2, lib);
	dlclose(handle);
	return 0;
}
