// SPDX-License-Identifier: LGPL-2.1-or-later
// How many entries a BPF map holds, by walking its keys.
#pragma once

#include <bpf/bpf.h>

#include <cstdint>
#include <vector>

namespace testutil {

inline std::uint64_t map_entries(int fd, std::size_t key_size)
{
	std::vector<char> key(key_size), next(key_size);
	std::uint64_t n = 0;
	const void *prev = nullptr;
	while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
		n++;
		key = next;
		prev = key.data();
	}
	return n;
}

} // namespace testutil
