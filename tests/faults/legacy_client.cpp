// SPDX-License-Identifier: LGPL-2.1-or-later
// A consumer of libudpEvent.so, run as a child of the faults tests (their
// own executable, `--legacy-client LIB`), so that a library preloaded into
// it can refuse its bpf() calls (fail_bpf.c): it attaches, counts a small
// exchange, and cleans up, then once more with no call refused (the
// preloaded library paused). Each round prints one line on stdout,
// "round N attached=0|1 exact=0|1", and why a round fell short on stderr
// (udpEvent_lastError()); a last line counts the descriptors open but
// sockets before the first round and after each, "fds A B C" (a failed
// AddProbe() must leave none behind: a consumer may try again for months).
#include <chrono>
#include <cstdio>
#include <dirent.h>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <string_view>
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

// Open descriptors but sockets (the exchange's come and go), each also
// named in `listing`.
int open_fds(std::string &listing)
{
	int n = 0;
	listing.clear();
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (const dirent *e = readdir(d)) {
		char target[256] = {};
		const std::string path = std::string("/proc/self/fd/") + e->d_name;
		if (e->d_name[0] != '.' && readlink(path.c_str(), target, sizeof(target) - 1) > 0 &&
		    std::string_view(target).rfind("socket:", 0) != 0) {
			n++;
			listing += std::string(" ") + e->d_name + "=" + target;
		}
	}
	closedir(d);
	return n - 1; // the directory's own
}

// The count, and the listing on stderr when it differs from `before`'s. A
// thread of the library may still be ending after cleanup() returned (glibc
// opens /proc/sys/vm/overcommit_memory for a moment as it gives a thread's
// memory back): a count is taken again until it is `before`'s or a second
// has passed.
int open_fds_as(const char *when, const std::string &before)
{
	std::string listing;
	int n = open_fds(listing);
	for (int tries = 0; listing != before && tries < 50; tries++) {
		std::this_thread::sleep_for(20ms);
		n = open_fds(listing);
	}
	if (listing != before)
		std::fprintf(stderr, "legacy client: open %s:%s (before the first round:%s)\n", when,
			     listing.c_str(), before.c_str());
	return n;
}

void say_error(int round, const Legacy &lib)
{
	const char *error = lib.last_error();
	std::fprintf(stderr, "legacy client: round %d: %s\n", round, error ? error : "(no error kept)");
}

// One attach, exchange and cleanup, and its line.
void round_of(int round, const Legacy &lib)
{
	lib.add_probe();
	if (!lib.get_status()) {
		say_error(round, lib);
		std::printf("round %d attached=0 exact=0\n", round);
		return;
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
	std::string listing;
	const int before = open_fds(listing);
	round_of(1, lib);
	const int after_first = open_fds_as("after the first round", listing);
	if (const auto pause = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "udpi_fail_bpf_pause")))
		pause();
	round_of(2, lib);
	std::printf("fds %d %d %d\n", before, after_first, open_fds_as("after the second round", listing));
	dlclose(handle);
	return 0;
}
