// SPDX-License-Identifier: LGPL-2.1-or-later
#include "libbpf_clock.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <dlfcn.h>
#include <linux/bpf.h>
#include <mutex>
#include <pthread.h>
#include <sys/syscall.h>
#include <utility>

struct btf;

namespace bench {

namespace {

std::atomic<bool> g_recording{false};
std::atomic<bool> g_seen{false};
std::mutex g_mutex;
std::vector<BpfCall> g_calls;

/*
 * A fork while another thread records a call (the library forks a child for
 * a probe while it makes maps on a thread) must not leave the lock held in
 * the child, where no thread would release it: the fork waits for the lock,
 * and the child, whose calls are not the start's, records none.
 */
const int g_fork_safe = pthread_atfork([] { g_mutex.lock(); }, [] { g_mutex.unlock(); },
				       [] {
					       g_recording = false;
					       g_mutex.unlock();
				       });

using SyscallFn = long (*)(long, ...);

// Not a guarded static: a thread waiting on another's initialization of one
// waits with futex(), through syscall(), which comes back here. The atomic is
// constant-initialized; two threads may both look the symbol up, to the same end.
std::atomic<SyscallFn> g_real_syscall{nullptr};

SyscallFn real_syscall()
{
	SyscallFn fn = g_real_syscall.load(std::memory_order_acquire);
	if (!fn) {
		fn = reinterpret_cast<SyscallFn>(dlsym(RTLD_NEXT, "syscall"));
		g_real_syscall.store(fn, std::memory_order_release);
	}
	return fn;
}

std::string name_of(const char *field, std::size_t size)
{
	return std::string(field, strnlen(field, size));
}

void describe(BpfCall &call, const void *attr_ptr, unsigned size)
{
	// The caller passes only the fields it knows: the rest reads as zero.
	bpf_attr attr{};
	std::memcpy(&attr, attr_ptr, std::min<std::size_t>(size, sizeof(attr)));
	switch (call.cmd) {
	case BPF_MAP_CREATE:
		call.type = attr.map_type;
		call.name = name_of(attr.map_name, sizeof(attr.map_name));
		call.count = attr.max_entries;
		break;
	case BPF_PROG_LOAD:
		call.type = attr.prog_type;
		call.name = name_of(attr.prog_name, sizeof(attr.prog_name));
		call.count = attr.insn_cnt;
		break;
	case BPF_BTF_LOAD:
		call.count = attr.btf_size;
		break;
	case BPF_LINK_CREATE:
		call.type = attr.link_create.attach_type;
		break;
	default:
		break;
	}
}

} // namespace

void bpf_calls_record()
{
	std::lock_guard lock(g_mutex);
	g_calls.clear();
	g_recording = true;
}

std::vector<BpfCall> bpf_calls_take()
{
	std::lock_guard lock(g_mutex);
	g_recording = false;
	return std::exchange(g_calls, {});
}

bool bpf_calls_seen()
{
	return g_seen;
}

} // namespace bench

// Six arguments are passed on whatever the call: the kernel reads only those
// of the number, as libc's own syscall() does.
extern "C" long syscall(long number, ...) noexcept
{
	va_list ap;
	va_start(ap, number);
	long a[6];
	for (long &x : a)
		x = va_arg(ap, long);
	va_end(ap);
	const auto real = bench::real_syscall();
	if (number != SYS_bpf || !bench::g_recording)
		return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);

	bench::g_seen = true;
	bench::BpfCall call;
	call.cmd = static_cast<int>(a[0]);
	call.start = std::chrono::steady_clock::now();
	call.result = real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
	call.took = std::chrono::steady_clock::now() - call.start;
	const int saved = errno;
	const long result = call.result;
	if (a[1])
		bench::describe(call, reinterpret_cast<const void *>(a[1]), static_cast<unsigned>(a[2]));
	{
		std::lock_guard lock(bench::g_mutex);
		if (bench::g_recording)
			bench::g_calls.push_back(std::move(call));
	}
	errno = saved;
	return result;
}

extern "C" struct btf *btf__load_vmlinux_btf(void)
{
	using Fn = struct btf *(*)();
	static const auto real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "btf__load_vmlinux_btf"));
	if (!bench::g_recording)
		return real();
	bench::BpfCall call;
	call.cmd = bench::kVmlinuxBtfParse;
	call.name = "vmlinux";
	call.start = std::chrono::steady_clock::now();
	struct btf *btf = real();
	call.took = std::chrono::steady_clock::now() - call.start;
	const int saved = errno;
	{
		std::lock_guard lock(bench::g_mutex);
		if (bench::g_recording)
			bench::g_calls.push_back(std::move(call));
	}
	errno = saved;
	return btf;
}
