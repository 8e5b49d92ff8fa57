// SPDX-License-Identifier: LGPL-2.1-or-later
// Linked by the build to learn whether clang++ has libFuzzer here.
#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *, std::size_t)
{
	return 0;
}
