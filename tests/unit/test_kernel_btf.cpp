// SPDX-License-Identifier: LGPL-2.1-or-later
// The loader's reader of the kernel's BTF answers every question as libbpf's
// full parse of the same bytes does: on the BPF object's own BTF (every
// kind it has), on this machine's kernel, and on damaged blobs (refused,
// never read past their end).
#include <catch2/catch.hpp>

#include <bpf/btf.h>
#include <cstring>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "kernel_probe.h"

using udpintercept::detail::KernelFeatures;
using udpintercept::detail::RawBtf;

namespace {

using BtfPtr = std::unique_ptr<btf, void (*)(btf *)>;

std::vector<char> raw_bytes(const btf *b)
{
	__u32 size = 0;
	const auto *data = static_cast<const char *>(btf__raw_data(b, &size));
	REQUIRE(data);
	return {data, data + size};
}

// Every type's kind, vlen and reference, and for every named type the id
// libbpf finds for its name and kind (the first of them, as both search).
void same_answers(const btf *parsed, const RawBtf &raw, __u32 step)
{
	REQUIRE(raw.type_count() == btf__type_cnt(parsed));
	for (__u32 id = 1; id < btf__type_cnt(parsed); id += step) {
		const btf_type *t = btf__type_by_id(parsed, id);
		int kind;
		std::uint32_t vlen, ref;
		REQUIRE(raw.type(id, kind, vlen, ref));
		CHECK(kind == btf_kind(t));
		CHECK(vlen == btf_vlen(t));
		CHECK(ref == t->type);
		const char *name = btf__name_by_offset(parsed, t->name_off);
		if (name && *name) {
			INFO(name << " kind " << kind);
			CHECK(raw.find(name, kind) == btf__find_by_name_kind(parsed, name, kind));
		}
	}
	int kind;
	std::uint32_t vlen, ref;
	CHECK(!raw.type(0, kind, vlen, ref));
	CHECK(!raw.type(btf__type_cnt(parsed), kind, vlen, ref));
	CHECK(raw.find("no_such_function_in_any_kernel", BTF_KIND_FUNC) == -ENOENT);
}

} // namespace

TEST_CASE("the raw BTF reader agrees with libbpf on the BPF object's BTF", "[btf]")
{
	BtfPtr obj(btf__parse_elf(UDPI_BPF_OBJECT, nullptr), btf__free);
	REQUIRE(obj);
	auto raw = RawBtf::parse(raw_bytes(obj.get()));
	REQUIRE(raw);
	same_answers(obj.get(), *raw, 1);
}

TEST_CASE("the raw BTF reader refuses damaged blobs", "[btf]")
{
	BtfPtr obj(btf__parse_elf(UDPI_BPF_OBJECT, nullptr), btf__free);
	REQUIRE(obj);
	const auto bytes = raw_bytes(obj.get());
	CHECK(!RawBtf::parse({}));
	// Cut anywhere before the end: the header, a type or the strings are short.
	for (std::size_t n = 0; n < bytes.size(); n += 1 + n / 64)
		CHECK(!RawBtf::parse(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(n))));
	auto swapped = bytes;
	std::swap(swapped[0], swapped[1]); // the magic of the other byte order
	CHECK(!RawBtf::parse(swapped));
	auto unknown_kind = bytes;
	btf_header hdr;
	std::memcpy(&hdr, bytes.data(), sizeof hdr);
	// The first type's kind byte (info bits 24-28) set to a kind no kernel has yet.
	unknown_kind[hdr.hdr_len + hdr.type_off + 4 + 3] = 31;
	CHECK(!RawBtf::parse(unknown_kind));
	CHECK(!RawBtf::read("/nonexistent/btf"));
}

TEST_CASE("the raw BTF reader agrees with libbpf on this kernel's BTF", "[btf]")
{
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		WARN("this kernel has no /sys/kernel/btf/vmlinux");
		return;
	}
	BtfPtr parsed(btf__load_vmlinux_btf(), btf__free);
	REQUIRE(parsed);
	auto raw = RawBtf::read();
	REQUIRE(raw);
	same_answers(parsed.get(), *raw, 97);

	const KernelFeatures by_libbpf(parsed.get()), by_raw(raw.get());
	for (const char *fn : {"udp_sendmsg", "udpv6_sendmsg", "skb_consume_udp", "udp_destroy_sock",
			       "__udp_enqueue_schedule_skb", "no_such_function"}) {
		INFO(fn);
		CHECK(by_raw.function_id(fn) == by_libbpf.function_id(fn));
		CHECK(by_raw.has_function(fn) == by_libbpf.has_function(fn));
	}
	for (const char *tp : {"kfree_skb", "sock_recv_length", "sock_send_length", "udp_fail_queue_rcv_skb",
			       "no_such_tracepoint"}) {
		INFO(tp);
		CHECK(by_raw.tracepoint_arity(tp) == by_libbpf.tracepoint_arity(tp));
	}
	CHECK(by_raw.tracepoint_arity("kfree_skb") >= 2);
}

TEST_CASE("the types copied out for libbpf's relocations keep their layouts", "[btf]")
{
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		WARN("this kernel has no /sys/kernel/btf/vmlinux");
		return;
	}
	using udpintercept::detail::kRelocatedKernelTypes;
	BtfPtr whole(btf__load_vmlinux_btf(), btf__free);
	REQUIRE(whole);
	auto raw = RawBtf::read();
	REQUIRE(raw);
	const std::vector<char> bytes = raw->relocation_subset(kRelocatedKernelTypes);
	REQUIRE(!bytes.empty());
	BtfPtr subset(btf__new(bytes.data(), static_cast<__u32>(bytes.size())), btf__free);
	REQUIRE(subset); // libbpf reads it
	CHECK(btf__type_cnt(subset.get()) < btf__type_cnt(whole.get()) / 20);

	// Each struct or union is as the kernel has it, member by member: name,
	// offset, and the kind and size of what it holds; a pointer is void *.
	const auto same_layout = [&](__u32 in_subset, __u32 in_whole) {
		const btf_type *s = btf__type_by_id(subset.get(), in_subset);
		const btf_type *w = btf__type_by_id(whole.get(), in_whole);
		REQUIRE(s);
		REQUIRE(w);
		CHECK(btf_kind(s) == btf_kind(w));
		CHECK(btf_vlen(s) == btf_vlen(w));
		CHECK(std::string(btf__name_by_offset(subset.get(), s->name_off)) ==
		      btf__name_by_offset(whole.get(), w->name_off));
		if (!btf_is_composite(s) || btf_vlen(s) != btf_vlen(w))
			return;
		CHECK(s->size == w->size);
		for (__u16 i = 0; i < btf_vlen(s); i++) {
			const btf_member &ms = btf_members(s)[i], &mw = btf_members(w)[i];
			INFO("member " << btf__name_by_offset(whole.get(), mw.name_off));
			CHECK(ms.offset == mw.offset);
			CHECK(std::string(btf__name_by_offset(subset.get(), ms.name_off)) ==
			      btf__name_by_offset(whole.get(), mw.name_off));
			const btf_type *ts = btf__type_by_id(subset.get(), ms.type);
			const btf_type *tw = btf__type_by_id(whole.get(), mw.type);
			REQUIRE(ts);
			CHECK(btf_kind(ts) == btf_kind(tw));
			if (btf_is_ptr(ts))
				CHECK(ts->type == 0);
			else
				CHECK(btf__resolve_size(subset.get(), ms.type) ==
				      btf__resolve_size(whole.get(), mw.type));
		}
	};
	int roots = 0;
	for (const auto name : kRelocatedKernelTypes)
		for (const int kind :
		     {int{BTF_KIND_STRUCT}, int{BTF_KIND_UNION}, int{BTF_KIND_ENUM}, int{BTF_KIND_ENUM64}}) {
			const int w = btf__find_by_name_kind(whole.get(), std::string(name).c_str(), kind);
			const int s = btf__find_by_name_kind(subset.get(), std::string(name).c_str(), kind);
			INFO(name << " kind " << kind);
			CHECK((w > 0) == (s > 0));
			if (w > 0 && s > 0) {
				roots++;
				same_layout(static_cast<__u32>(s), static_cast<__u32>(w));
			}
		}
	CHECK(roots >= 5); // sock, sk_buff, skb_shared_info, net, udp_sock and msghdr on every kernel
	// Nested by value: sock's first member, its common part, is there in full.
	const int common_s = btf__find_by_name_kind(subset.get(), "sock_common", BTF_KIND_STRUCT);
	const int common_w = btf__find_by_name_kind(whole.get(), "sock_common", BTF_KIND_STRUCT);
	REQUIRE(common_s > 0);
	same_layout(static_cast<__u32>(common_s), static_cast<__u32>(common_w));
}
