// SPDX-License-Identifier: LGPL-2.1-or-later
// The loader gives libbpf the kernel structures the programs read, and what
// they hold by value, to relocate against instead of the kernel's whole BTF
// (RawBtf::relocation_subset). Every CO-RE relocation of every program, all
// backends', must then patch its instruction as the whole BTF does, on each
// kernel the matrix boots.
#include <catch2/catch.hpp>

#include <bpf/libbpf.h>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "fd.h"
#include "kernel_probe.h"
#include "udpintercept.skel.h"

namespace {

std::vector<std::string> *g_patches;

// libbpf's line for each instruction a CO-RE relocation patches (or poisons,
// where the kernel lacks what it names), without the BTF ids it matched.
int keep_patches(libbpf_print_level, const char *format, va_list args)
{
	char line[512];
	std::vsnprintf(line, sizeof line, format, args);
	const std::string s(line);
	if (g_patches && s.find(": relo #") != std::string::npos &&
	    (s.find("patched insn") != std::string::npos || s.find("substituting insn") != std::string::npos))
		g_patches->push_back(s);
	return 0;
}

// Every program's relocations, against the BTF at `btf_path` (nullptr: the kernel's own).
std::vector<std::string> relocate_all(const char *btf_path)
{
	std::vector<std::string> patches;
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = btf_path);
	udpintercept_bpf *skel = udpintercept_bpf__open_opts(&opts);
	REQUIRE(skel);
	bpf_program *prog;
	bpf_object__for_each_program(prog, skel->obj) bpf_program__set_autoload(prog, true);
	// No map is made: libbpf relocates every program, then the first load fails on its maps.
	bpf_map *map;
	bpf_object__for_each_map(map, skel->obj) bpf_map__set_autocreate(map, false);
	g_patches = &patches;
	const libbpf_print_fn_t before = libbpf_set_print(keep_patches);
	udpintercept_bpf__load(skel);
	libbpf_set_print(before);
	g_patches = nullptr;
	udpintercept_bpf__destroy(skel);
	return patches;
}

} // namespace

TEST_CASE("relocating against the kernel's structures alone patches every instruction as the whole BTF does",
	  "[backend]")
{
	using namespace udpintercept::detail;
	const auto raw = RawBtf::read();
	REQUIRE(raw);
	const std::vector<char> subset = raw->relocation_subset(kRelocatedKernelTypes);
	REQUIRE(!subset.empty());
	INFO("the subset: " << subset.size() << " bytes of the kernel's BTF");
	UniqueFd fd(memfd_create("relocation-subset", MFD_CLOEXEC));
	REQUIRE(fd);
	REQUIRE(write(fd.get(), subset.data(), subset.size()) == static_cast<ssize_t>(subset.size()));
	const std::string path = "/proc/self/fd/" + std::to_string(fd.get());

	const auto whole = relocate_all(nullptr);
	const auto alone = relocate_all(path.c_str());
	// The object relocates some 500 instructions over its four backends' programs.
	CHECK(whole.size() > 400);
	REQUIRE(alone.size() == whole.size());
	for (std::size_t i = 0; i < whole.size(); i++) {
		INFO("relocation " << i);
		CHECK(alone[i] == whole[i]);
	}
}
