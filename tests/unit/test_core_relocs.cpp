// SPDX-License-Identifier: LGPL-2.1-or-later
// Each type a CO-RE relocation of the BPF object names costs libbpf a walk
// over the whole kernel BTF at every start, so the programs relocate only
// the kernel's own structures, whose layouts differ between kernels; the
// contexts, the wire headers and the socket addresses are read at their
// fixed layouts (bpf/fixed.bpf.h). This reads the relocations the built
// object carries (its .BTF.ext section) and names every type they touch,
// which must be among the types the loader copies out for libbpf.
#include <catch2/catch.hpp>

#include <bpf/btf.h>
#include <cstdint>
#include <cstring>
#include <elf.h>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kernel_probe.h"

namespace {

std::vector<char> read_file(const char *path)
{
	std::ifstream in(path, std::ios::binary);
	return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <typename T> T at(const std::vector<char> &bytes, std::size_t off)
{
	T v{};
	REQUIRE(off + sizeof(T) <= bytes.size());
	std::memcpy(&v, bytes.data() + off, sizeof(T));
	return v;
}

// The bytes of the ELF section `name`, empty if there is none.
std::vector<char> elf_section(const std::vector<char> &elf, const std::string &name)
{
	const auto eh = at<Elf64_Ehdr>(elf, 0);
	REQUIRE(std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0);
	REQUIRE(eh.e_ident[EI_CLASS] == ELFCLASS64);
	const auto strtab = at<Elf64_Shdr>(elf, eh.e_shoff + std::size_t{eh.e_shstrndx} * eh.e_shentsize);
	for (std::size_t i = 0; i < eh.e_shnum; i++) {
		const auto sh = at<Elf64_Shdr>(elf, eh.e_shoff + i * eh.e_shentsize);
		const char *n = elf.data() + strtab.sh_offset + sh.sh_name;
		if (name == n) {
			REQUIRE(sh.sh_offset + sh.sh_size <= elf.size());
			return {elf.begin() + static_cast<std::ptrdiff_t>(sh.sh_offset),
				elf.begin() + static_cast<std::ptrdiff_t>(sh.sh_offset + sh.sh_size)};
		}
	}
	return {};
}

// The .BTF.ext header (include/uapi/linux/btf.h has no definition of it;
// this is the layout libbpf and LLVM share), with the CO-RE part.
struct BtfExtHeader {
	std::uint16_t magic;
	std::uint8_t version;
	std::uint8_t flags;
	std::uint32_t hdr_len;
	std::uint32_t func_info_off, func_info_len;
	std::uint32_t line_info_off, line_info_len;
	std::uint32_t core_relo_off, core_relo_len;
};

// The names of the kernel types the object's CO-RE relocations name: a
// local flavor (struct cgroup___ancestor_ids) names the kernel's type whose
// name ends before its "___", as libbpf matches them.
std::set<std::string> relocated_types(const char *object)
{
	const std::vector<char> elf = read_file(object);
	REQUIRE(!elf.empty());
	const std::vector<char> ext = elf_section(elf, ".BTF.ext");
	REQUIRE(!ext.empty());
	const auto h = at<BtfExtHeader>(ext, 0);
	REQUIRE(h.magic == 0xeB9F);
	REQUIRE(h.hdr_len >= sizeof(BtfExtHeader));
	std::unique_ptr<btf, void (*)(btf *)> types(btf__parse_elf(object, nullptr), btf__free);
	REQUIRE(types);

	std::set<std::string> names;
	std::size_t off = h.hdr_len + h.core_relo_off;
	const std::size_t end = off + h.core_relo_len;
	const auto record_size = at<std::uint32_t>(ext, off);
	REQUIRE(record_size >= 4 * sizeof(std::uint32_t)); // insn_off, type_id, access_str_off, kind
	off += sizeof(std::uint32_t);
	while (off < end) {
		const auto count = at<std::uint32_t>(ext, off + sizeof(std::uint32_t)); // after sec_name_off
		off += 2 * sizeof(std::uint32_t);
		for (std::uint32_t i = 0; i < count; i++, off += record_size) {
			const auto type_id = at<std::uint32_t>(ext, off + sizeof(std::uint32_t));
			const btf_type *t = btf__type_by_id(types.get(), type_id);
			REQUIRE(t != nullptr);
			const std::string name = btf__name_by_offset(types.get(), t->name_off);
			names.insert(name.substr(0, name.find("___")));
		}
	}
	return names;
}

} // namespace

TEST_CASE("CO-RE relocations name only kernel structures whose layouts move", "[abi]")
{
	// struct sock, sk_buff and its shared info, net, udp_sock and msghdr
	// differ between kernels; the drop reasons' values too; pt_regs is the
	// kprobe backend's (libbpf's PT_REGS macros read it through CO-RE);
	// task_struct, css_set and cgroup lead to a task's cgroup ancestors
	// where tracing programs cannot ask for them (before 5.14). The
	// loader gives libbpf these types alone to relocate against: a type
	// named here and not there would find nothing.
	const std::set<std::string> allowed(udpintercept::detail::kRelocatedKernelTypes.begin(),
					    udpintercept::detail::kRelocatedKernelTypes.end());
	const std::set<std::string> found = relocated_types(UDPI_BPF_OBJECT);
	INFO("types named by CO-RE relocations: " << [&] {
		std::string s;
		for (const auto &n : found)
			s += n + " ";
		return s;
	}());
	CHECK(found.count("sock") == 1); // the object does relocate: the reading works
	for (const auto &name : found)
		CHECK(allowed.count(name) == 1);
}
