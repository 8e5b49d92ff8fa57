// SPDX-License-Identifier: LGPL-2.1-or-later
#include "kernel_maps.h"

#include <algorithm>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include <udpintercept/error.h>

namespace udpintercept::detail {

namespace {

// A call the kernel refused for a moment (no memory for its copy of the key
// or value, say) is tried again this many times before its refusal counts.
constexpr int kReadTries = 3;

// A bpf() call tried again while the kernel refuses it for another reason
// than an entry's absence (ENOENT; for a batch read, the table's end) or
// `answer_too` (an errno that says something of the table, not of a
// moment): 0, or -1 with errno set.
template <typename Call> int retried(Call &&call, int answer_too = ENOENT)
{
	int err = -1;
	for (int tries = 0; err && tries < kReadTries; tries++)
		if ((err = call()) != 0 && (errno == ENOENT || errno == answer_too))
			break;
	return err;
}

} // namespace

std::optional<udpi_flow> KernelMaps::lookup(const udpi_flow_key &key)
{
	udpi_flow flow{};
	if (retried([&] { return bpf_map_lookup_elem(objects_.flows_fd, &key, &flow); }) != 0)
		return std::nullopt;
	return flow;
}

bool KernelMaps::insert(const udpi_flow_key &key, const udpi_flow &flow)
{
	return bpf_map_update_elem(objects_.flows_fd, &key, &flow, BPF_NOEXIST) == 0;
}

bool KernelMaps::erase(const udpi_flow_key &key)
{
	return retried([&] { return bpf_map_delete_elem(objects_.flows_fd, &key); }) == 0;
}

std::optional<udpi_flow> KernelMaps::take(const udpi_flow_key &key)
{
	udpi_flow flow{};
	if (take_in_one_step_) {
		if (retried([&] { return bpf_map_lookup_and_delete_elem(objects_.flows_fd, &key, &flow); }) ==
		    0)
			return flow;
		if (errno == ENOENT)
			return std::nullopt;
		// Hash maps gained BPF_MAP_LOOKUP_AND_DELETE_ELEM in Linux 5.14
		// (commit 3e87f192b405); before it the kernel answers ENOTSUPP (524).
		take_in_one_step_ = false;
	}
	const auto current = lookup(key);
	if (current && erase(key))
		return current;
	return std::nullopt;
}

namespace {

// Every entry of a hash map, in batches of hundreds per system call
// (BPF_MAP_LOOKUP_BATCH, 5.6+), else one key at a time; false, with errno
// set, if the kernel kept refusing a read part of the way through (an entry
// missed would be a flow missed).
template <typename Key, typename Value, typename Fn> bool walk(int fd, Fn &&fn)
{
	std::size_t batch = 512;
	std::vector<Key> keys(batch);
	std::vector<Value> values(batch);
	__u32 in_batch = 0, out_batch = 0;
	bool first = true;
	for (;;) {
		__u32 count = 0;
		// ENOSPC: one hash bucket holds more than a batch (asked again, larger).
		const int err = retried(
			[&] {
				count = static_cast<__u32>(batch);
				return bpf_map_lookup_batch(fd, first ? nullptr : &in_batch, &out_batch,
							    keys.data(), values.data(), &count, nullptr);
			},
			ENOSPC);
		const int e = err ? errno : 0;
		// The last batch ends with ENOENT; any other refusal may leave
		// `count` as it was passed in (libbpf copies back what the kernel
		// did not write), so nothing of it is taken.
		if (err && e != ENOENT)
			count = 0;
		for (__u32 i = 0; i < count; i++)
			fn(keys[i], values[i]);
		if (!err) {
			in_batch = out_batch;
			first = false;
			continue;
		}
		if (e == ENOENT)
			return true;
		if (e == ENOSPC && batch < (1u << 20)) {
			batch *= 2;
			keys.resize(batch);
			values.resize(batch);
			continue;
		}
		if (first)
			break; // no batch operations here (or not now): walk the keys
		errno = e;
		return false;
	}
	Key cur{}, next{};
	const void *prev = nullptr;
	for (;;) {
		if (retried([&] { return bpf_map_get_next_key(fd, prev, &next); }) != 0)
			return errno == ENOENT; // the end, or a read refused for good
		Value value{};
		if (retried([&] { return bpf_map_lookup_elem(fd, &next, &value); }) == 0)
			fn(next, value);
		else if (errno != ENOENT) // refused for good (ENOENT: deleted since)
			return false;
		cur = next;
		prev = &cur;
	}
}

} // namespace

void KernelMaps::for_each(const std::function<void(const udpi_flow_key &, const udpi_flow &)> &fn)
{
	if (!walk<udpi_flow_key, udpi_flow>(objects_.flows_fd, fn))
		throw Error("sweep", errno,
			    fmt::format("cannot read the flow table whole: {}", std::strerror(errno)));
}

// The socket table's sockets less those the check program finds released:
// a release no program saw leaves its socket in the table (see check_socks).
std::optional<std::unordered_set<std::uint64_t>> KernelMaps::open_sockets()
{
	if (objects_.socks_fd < 0)
		return std::nullopt;
	std::vector<std::pair<std::uint64_t, std::uint64_t>> entries; // address, id
	if (!walk<std::uint64_t, udpi_sock>(objects_.socks_fd,
					    [&](std::uint64_t address, const udpi_sock &sock) {
						    entries.emplace_back(address, sock.id);
					    }))
		return std::nullopt;
	std::unordered_set<std::uint64_t> ids;
	if (objects_.check_prog_fd < 0) {
		for (const auto &[address, id] : entries)
			ids.insert(id);
		return ids;
	}
	for (std::size_t at = 0; at < entries.size(); at += UDPI_SOCK_CHECK_BATCH) {
		const std::size_t n = std::min<std::size_t>(UDPI_SOCK_CHECK_BATCH, entries.size() - at);
		std::array<std::uint64_t, UDPI_SOCK_CHECK_BATCH> batch{};
		for (std::size_t i = 0; i < n; i++)
			batch[i] = entries[at + i].first;
		LIBBPF_OPTS(bpf_test_run_opts, run, .ctx_in = batch.data(), .ctx_size_in = sizeof(batch));
		// A refused run takes the batch as open, as the table says.
		const std::uint32_t gone =
			bpf_prog_test_run_opts(objects_.check_prog_fd, &run) == 0 ? run.retval : 0;
		for (std::size_t i = 0; i < n; i++)
			if (!(gone & (1u << i)))
				ids.insert(entries[at + i].second);
	}
	return ids;
}

udpi_flush_result KernelMaps::flush(const udpi_flow_key &key)
{
	LIBBPF_OPTS(bpf_test_run_opts, run, .ctx_in = &key, .ctx_size_in = sizeof(key));
	if (retried([&] { return bpf_prog_test_run_opts(objects_.flush_prog_fd, &run); }) != 0)
		throw Error("sweep", errno,
			    fmt::format("cannot run the flush program (BPF_PROG_TEST_RUN): {}",
					std::strerror(errno)));
	return static_cast<udpi_flush_result>(run.retval);
}

bool KernelMaps::take_full_sweep_request()
{
	// The kernel sets the word with a plain store; an exchange cannot lose one.
	return objects_.full_sweep_wanted &&
	       __atomic_exchange_n(objects_.full_sweep_wanted, 0u, __ATOMIC_SEQ_CST);
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> KernelMaps::take_closed()
{
	const int fd = objects_.closed_fd;
	std::vector<std::uint64_t> ids;
	std::uint64_t id = 0, next = 0;
	const void *prev = nullptr;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		ids.push_back(next);
		id = next;
		prev = &id;
	}
	std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
	for (std::uint64_t sid : ids) {
		std::uint64_t when = 0;
		if (retried([&] { return bpf_map_lookup_elem(fd, &sid, &when); }) != 0)
			continue;
		// Left in the map, a close is taken by a later sweep, once.
		if (retried([&] { return bpf_map_delete_elem(fd, &sid); }) != 0 && errno != ENOENT)
			continue;
		out.emplace_back(sid, when);
	}
	return out;
}

KernelStats KernelMaps::stats() const
{
	KernelStats out;
	const int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return out;
	std::vector<std::uint64_t> values(static_cast<std::size_t>(ncpu));
	for (__u32 idx = 0; idx < UDPI_STAT_MAX; idx++) {
		if (retried([&] { return bpf_map_lookup_elem(objects_.stats_fd, &idx, values.data()); }) != 0)
			continue;
		if (idx == UDPI_STAT_INSERT_LAST_ERRNO)
			out.insert_last_errno = *std::max_element(values.begin(), values.end());
		else
			for (std::uint64_t v : values)
				out.sum[idx] += v;
	}
	return out;
}

} // namespace udpintercept::detail
