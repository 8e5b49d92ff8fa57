// SPDX-License-Identifier: LGPL-2.1-or-later
#include "kernel_probe.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <cstring>
#include <linux/bpf.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace udpintercept::detail {

std::unique_ptr<RawBtf> RawBtf::read(const char *path)
{
	const int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return nullptr;
	auto raw = std::unique_ptr<RawBtf>(new RawBtf());
	struct stat st {};
	if (fstat(fd, &st) == 0 && st.st_size > 0) {
		// Mapped, the kernel's own copy is read in place: sysfs hands it out
		// a page per read() otherwise (1,347 calls, 4-8 ms, for 5.5 MB).
		void *m = mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
		if (m != MAP_FAILED) {
			raw->mapping_ = m;
			raw->size_ = static_cast<std::size_t>(st.st_size);
		} else {
			raw->owned_.resize(static_cast<std::size_t>(st.st_size));
		}
	}
	if (!raw->mapping_) {
		std::size_t got = 0;
		for (;;) {
			if (got == raw->owned_.size())
				raw->owned_.resize(std::max<std::size_t>(raw->owned_.size() * 2, 1 << 20));
			const ssize_t n = ::read(fd, raw->owned_.data() + got, raw->owned_.size() - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				const int err = errno;
				close(fd);
				errno = err;
				return nullptr;
			}
			if (n == 0)
				break;
			got += static_cast<std::size_t>(n);
		}
		raw->owned_.resize(got);
		raw->size_ = got;
	}
	close(fd);
	raw->data_ = raw->mapping_ ? static_cast<const char *>(raw->mapping_) : raw->owned_.data();
	raw = walk(std::move(raw));
	if (!raw)
		errno = EINVAL;
	return raw;
}

std::unique_ptr<RawBtf> RawBtf::parse(std::vector<char> bytes)
{
	auto raw = std::unique_ptr<RawBtf>(new RawBtf());
	raw->owned_ = std::move(bytes);
	raw->size_ = raw->owned_.size();
	raw->data_ = raw->owned_.data();
	return walk(std::move(raw));
}

RawBtf::~RawBtf()
{
	if (mapping_)
		munmap(mapping_, size_);
}

std::unique_ptr<RawBtf> RawBtf::walk(std::unique_ptr<RawBtf> raw)
{
	const char *bytes = raw->data_;
	const std::size_t size = raw->size_;
	btf_header hdr{};
	if (size < sizeof hdr)
		return nullptr;
	std::memcpy(&hdr, bytes, sizeof hdr);
	// A blob in the other byte order (BTF_MAGIC swapped) is libbpf's to read.
	if (hdr.magic != BTF_MAGIC || hdr.hdr_len < sizeof hdr)
		return nullptr;
	const std::uint64_t types = std::uint64_t{hdr.hdr_len} + hdr.type_off;
	const std::uint64_t strings = std::uint64_t{hdr.hdr_len} + hdr.str_off;
	if (types + hdr.type_len > size || strings + hdr.str_len > size || hdr.str_len == 0 ||
	    bytes[strings + hdr.str_len - 1] != '\0')
		return nullptr;

	raw->types_ = types;
	raw->strings_ = strings;
	raw->strings_len_ = hdr.str_len;
	raw->offsets_.reserve(hdr.type_len / 16);
	std::uint32_t off = 0;
	while (off < hdr.type_len) {
		btf_type t{};
		if (hdr.type_len - off < sizeof t)
			return nullptr;
		std::memcpy(&t, bytes + types + off, sizeof t);
		const std::uint32_t vlen = BTF_INFO_VLEN(t.info);
		std::uint64_t extra;
		switch (BTF_INFO_KIND(t.info)) {
		case BTF_KIND_INT:
			extra = sizeof(std::uint32_t);
			break;
		case BTF_KIND_PTR:
		case BTF_KIND_FWD:
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_VOLATILE:
		case BTF_KIND_CONST:
		case BTF_KIND_RESTRICT:
		case BTF_KIND_FUNC:
		case BTF_KIND_FLOAT:
		case BTF_KIND_TYPE_TAG:
			extra = 0;
			break;
		case BTF_KIND_ARRAY:
			extra = sizeof(struct btf_array);
			break;
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
			extra = std::uint64_t{vlen} * sizeof(struct btf_member);
			break;
		case BTF_KIND_ENUM:
			extra = std::uint64_t{vlen} * sizeof(struct btf_enum);
			break;
		case BTF_KIND_ENUM64:
			extra = std::uint64_t{vlen} * sizeof(struct btf_enum64);
			break;
		case BTF_KIND_FUNC_PROTO:
			extra = std::uint64_t{vlen} * sizeof(struct btf_param);
			break;
		case BTF_KIND_VAR:
			extra = sizeof(struct btf_var);
			break;
		case BTF_KIND_DATASEC:
			extra = std::uint64_t{vlen} * sizeof(struct btf_var_secinfo);
			break;
		case BTF_KIND_DECL_TAG:
			extra = sizeof(struct btf_decl_tag);
			break;
		default:
			return nullptr; // a kind newer than this reader: libbpf's parse instead
		}
		if (sizeof t + extra > hdr.type_len - off)
			return nullptr;
		raw->offsets_.push_back(off);
		off += static_cast<std::uint32_t>(sizeof t + extra);
	}
	return raw;
}

int RawBtf::find(std::string_view name, int kind) const
{
	if (name.empty())
		return -ENOENT;
	auto [it, fresh] = of_kind_.try_emplace(kind);
	auto &ids = it->second;
	if (fresh)
		for (std::size_t i = 0; i < offsets_.size(); i++) {
			btf_type t;
			std::memcpy(&t, data_ + types_ + offsets_[i], sizeof t);
			if (static_cast<int>(BTF_INFO_KIND(t.info)) == kind && t.name_off &&
			    t.name_off < strings_len_)
				ids.push_back(static_cast<std::uint32_t>(i + 1));
		}
	// A scan of names in place (a hash index of 55,000 function names costs
	// more to build than the twenty questions a start asks). The string
	// section ends with a NUL (checked), so every compare stops inside it.
	const char *strings = data_ + strings_;
	for (const std::uint32_t id : ids) {
		btf_type t;
		std::memcpy(&t, data_ + types_ + offsets_[id - 1], sizeof t);
		const char *n = strings + t.name_off;
		if (n[0] == name[0] && std::strncmp(n, name.data(), name.size()) == 0 &&
		    n[name.size()] == '\0')
			return static_cast<int>(id);
	}
	return -ENOENT;
}

bool RawBtf::type(std::uint32_t id, int &kind, std::uint32_t &vlen, std::uint32_t &ref) const
{
	if (id == 0 || id > offsets_.size())
		return false;
	btf_type t;
	std::memcpy(&t, data_ + types_ + offsets_[id - 1], sizeof t);
	kind = static_cast<int>(BTF_INFO_KIND(t.info));
	vlen = BTF_INFO_VLEN(t.info);
	ref = t.type;
	return true;
}

namespace {

template <typename T> T load_at(const char *p)
{
	T v;
	std::memcpy(&v, p, sizeof v);
	return v;
}

template <typename T> void append(std::vector<char> &out, const T &v)
{
	const auto *p = reinterpret_cast<const char *>(&v);
	out.insert(out.end(), p, p + sizeof v);
}

/// A struct's members or an enum's values, each changed by `renumber` on its way to `out`.
template <typename Entry, typename Renumber>
void copy_entries(std::vector<char> &out, const char *from, std::uint32_t n, Renumber renumber)
{
	for (std::uint32_t i = 0; i < n; i++) {
		auto e = load_at<Entry>(from + i * sizeof(Entry));
		renumber(e);
		append(out, e);
	}
}

} // namespace

std::vector<char> RawBtf::relocation_subset(std::span<const std::string_view> roots) const
{
	const char *strings = data_ + strings_;
	// walk() checked the string section ends with a NUL: every name ends inside it.
	const auto name_of = [&](std::uint32_t off) {
		return off < strings_len_ ? std::string_view(strings + off) : std::string_view();
	};
	const auto at = [&](std::uint32_t id) { return data_ + types_ + offsets_[id - 1]; };

	// Old id -> new id, of the taken ids only: a table of every id would be
	// half a megabyte of fresh pages, which cost more to touch than the few
	// hundred taken (540 on 6.18) cost to hash. The taken old ids in new id
	// order.
	std::unordered_map<std::uint32_t, std::uint32_t> new_ids;
	std::vector<std::uint32_t> order;
	const auto take = [&](std::uint32_t id) {
		if (id > offsets_.size())
			return false;
		if (id && new_ids.try_emplace(id, static_cast<std::uint32_t>(order.size() + 1)).second)
			order.push_back(id);
		return true;
	};
	const auto new_id = [&](std::uint32_t id) -> std::uint32_t {
		const auto it = new_ids.find(id);
		return it == new_ids.end() ? 0 : it->second; // 0: void
	};
	for (std::uint32_t id = 1; id <= offsets_.size(); id++) {
		const auto t = load_at<btf_type>(at(id));
		switch (BTF_INFO_KIND(t.info)) {
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
		case BTF_KIND_ENUM:
		case BTF_KIND_ENUM64:
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_FWD:
			if (const auto n = name_of(t.name_off);
			    !n.empty() && std::find(roots.begin(), roots.end(), n) != roots.end())
				take(id);
			break;
		default:
			break;
		}
	}
	if (order.empty())
		return {};
	// What each taken type holds by value, breadth first (order grows as it is walked).
	for (std::size_t k = 0; k < order.size(); k++) {
		const char *p = at(order[k]);
		const auto t = load_at<btf_type>(p);
		bool ok = true;
		switch (BTF_INFO_KIND(t.info)) {
		case BTF_KIND_INT:
		case BTF_KIND_PTR: // becomes void *
		case BTF_KIND_ENUM:
		case BTF_KIND_ENUM64:
		case BTF_KIND_FWD:
		case BTF_KIND_FLOAT:
			break;
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_VOLATILE:
		case BTF_KIND_CONST:
		case BTF_KIND_RESTRICT:
		case BTF_KIND_TYPE_TAG:
			ok = take(t.type);
			break;
		case BTF_KIND_ARRAY: {
			const auto a = load_at<struct btf_array>(p + sizeof t);
			ok = take(a.type) && take(a.index_type);
			break;
		}
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
			for (std::uint32_t i = 0; i < BTF_INFO_VLEN(t.info) && ok; i++)
				ok = take(load_at<struct btf_member>(p + sizeof t +
								     i * sizeof(struct btf_member))
						  .type);
			break;
		default:
			return {}; // a function, variable or section held by value: not BTF as a kernel
				   // writes it
		}
		if (!ok)
			return {};
	}

	std::vector<char> types, names(1, '\0');
	std::unordered_map<std::string_view, std::uint32_t> name_offsets;
	const auto name = [&](std::uint32_t off) -> std::uint32_t {
		const auto n = name_of(off);
		if (n.empty())
			return 0;
		auto [it, fresh] = name_offsets.try_emplace(n, static_cast<std::uint32_t>(names.size()));
		if (fresh) {
			names.insert(names.end(), n.begin(), n.end());
			names.push_back('\0');
		}
		return it->second;
	};
	for (const std::uint32_t id : order) {
		const char *p = at(id);
		auto t = load_at<btf_type>(p);
		const std::uint32_t vlen = BTF_INFO_VLEN(t.info);
		p += sizeof t;
		t.name_off = name(t.name_off);
		switch (BTF_INFO_KIND(t.info)) {
		case BTF_KIND_PTR:
			t.type = 0;
			append(types, t);
			break;
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_VOLATILE:
		case BTF_KIND_CONST:
		case BTF_KIND_RESTRICT:
		case BTF_KIND_TYPE_TAG:
			t.type = new_id(t.type);
			append(types, t);
			break;
		case BTF_KIND_INT:
			append(types, t);
			append(types, load_at<std::uint32_t>(p));
			break;
		case BTF_KIND_ARRAY: {
			auto a = load_at<struct btf_array>(p);
			a.type = new_id(a.type);
			a.index_type = new_id(a.index_type);
			append(types, t);
			append(types, a);
			break;
		}
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
			append(types, t); // its size, vlen and bitfield flag as they are
			copy_entries<struct btf_member>(types, p, vlen, [&](auto &m) {
				m.name_off = name(m.name_off);
				m.type = new_id(m.type);
			});
			break;
		case BTF_KIND_ENUM:
			append(types, t);
			copy_entries<struct btf_enum>(types, p, vlen,
						      [&](auto &e) { e.name_off = name(e.name_off); });
			break;
		case BTF_KIND_ENUM64:
			append(types, t);
			copy_entries<struct btf_enum64>(types, p, vlen,
							[&](auto &e) { e.name_off = name(e.name_off); });
			break;
		default: // FWD, FLOAT: the header is all
			append(types, t);
			break;
		}
	}
	btf_header hdr{};
	hdr.magic = BTF_MAGIC;
	hdr.version = BTF_VERSION;
	hdr.hdr_len = sizeof hdr;
	hdr.type_off = 0;
	hdr.type_len = static_cast<std::uint32_t>(types.size());
	hdr.str_off = hdr.type_len;
	hdr.str_len = static_cast<std::uint32_t>(names.size());
	std::vector<char> out;
	out.reserve(sizeof hdr + types.size() + names.size());
	append(out, hdr);
	out.insert(out.end(), types.begin(), types.end());
	out.insert(out.end(), names.begin(), names.end());
	return out;
}

bool KernelFeatures::has_type(std::string_view name, int kind) const
{
	return function_or_type_id(name, kind) >= 0;
}

int KernelFeatures::function_or_type_id(std::string_view name, int kind) const
{
	if (raw_)
		return raw_->find(name, kind);
	return vmlinux_ ? btf__find_by_name_kind(vmlinux_, std::string(name).c_str(), kind) : -ENOENT;
}

int KernelFeatures::function_id(std::string_view name) const
{
	return function_or_type_id(name, BTF_KIND_FUNC);
}

int trampoline_refusal(const KernelFeatures &kernel)
{
	const int id = kernel.function_id("udp_sendmsg");
	if (id < 0)
		return -id;
	const bpf_insn insns[] = {
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
		{BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FEXIT,
		    .attach_btf_id = static_cast<__u32>(id));
	const int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, nullptr, "GPL", insns, std::size(insns), &opts);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

bool KernelFeatures::has_function(std::string_view name) const
{
	return has_type(name, BTF_KIND_FUNC);
}

int KernelFeatures::tracepoint_arity(std::string_view name) const
{
	if (raw_) {
		// typedef -> pointer -> function prototype, whose first parameter is the tracepoint's data.
		const int id = raw_->find("btf_trace_" + std::string(name), BTF_KIND_TYPEDEF);
		int kind;
		std::uint32_t vlen, ref;
		if (id < 0 || !raw_->type(static_cast<std::uint32_t>(id), kind, vlen, ref) ||
		    !raw_->type(ref, kind, vlen, ref) || kind != BTF_KIND_PTR ||
		    !raw_->type(ref, kind, vlen, ref) || kind != BTF_KIND_FUNC_PROTO)
			return -1;
		return static_cast<int>(vlen) - 1;
	}
	if (!vmlinux_)
		return -1;
	const int id = btf__find_by_name_kind(vmlinux_, ("btf_trace_" + std::string(name)).c_str(),
					      BTF_KIND_TYPEDEF);
	if (id < 0)
		return -1;
	// typedef -> pointer -> function prototype, whose first parameter is the tracepoint's data.
	const btf_type *t = btf__type_by_id(vmlinux_, btf__type_by_id(vmlinux_, id)->type);
	if (!t || !btf_is_ptr(t))
		return -1;
	t = btf__type_by_id(vmlinux_, t->type);
	return t && btf_is_func_proto(t) ? btf_vlen(t) - 1 : -1;
}

bool helper_allowed(int type, int attach, int helper)
{
	// r1..r5 = 0; call helper; r0 = 1; exit. Arguments of the wrong kind are a
	// different complaint from an unknown or forbidden helper.
	const bpf_insn insns[] = {
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_2, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_5, 0, 0, 0},
		{BPF_JMP | BPF_CALL, 0, 0, 0, helper},
		{BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
		{BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
	};
	std::string log(16384, '\0');
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = static_cast<bpf_attach_type>(attach),
		    .log_level = 1, .log_size = static_cast<__u32>(log.size()), .log_buf = log.data());
	const int fd = bpf_prog_load(static_cast<bpf_prog_type>(type), nullptr, "GPL", insns,
				     std::size(insns), &opts);
	if (fd >= 0) {
		close(fd);
		return true;
	}
	log.resize(std::strlen(log.c_str()));
	return log.find("unknown func") == std::string::npos &&
	       log.find("invalid func") == std::string::npos &&
	       log.find("cannot use helper") == std::string::npos && !log.empty();
}

std::string cgroup2_mount()
{
	std::ifstream mounts("/proc/self/mounts");
	std::string line;
	while (std::getline(mounts, line)) {
		std::istringstream fields(line);
		std::string dev, dir, type;
		fields >> dev >> dir >> type;
		if (type == "cgroup2")
			return dir;
	}
	return {};
}

// sock_sendmsg_nosec()/sock_recvmsg_nosec() call trace_sock_{send,recv}_length
// since Linux 6.3 (include/trace/events/sock.h). Every raw tracepoint
// leaves a btf_trace_<name> typedef in the kernel's BTF.
Availability probe_tracepoint_backend(const KernelFeatures &k)
{
	for (const char *tp : {"btf_trace_sock_send_length", "btf_trace_sock_recv_length"})
		if (!k.has_type(tp, BTF_KIND_TYPEDEF))
			return {false, std::string("the kernel has no ") + (tp + 10) +
					       " tracepoint (it arrived in Linux 6.3)"};
	if (cgroup2_mount().empty())
		return {false, "cgroup v2 is not mounted (the peer and close hooks attach to its root)"};
	return {true, "sock_send_length/sock_recv_length tracepoints and cgroup v2 are present"};
}

namespace {

// The functions the fentry and kprobe backends hook. A function missing from
// BTF was inlined into every caller or does not exist on this build.
constexpr std::array<std::string_view, 7> kHookedFunctions = {
	"udp_sendmsg",          "udpv6_sendmsg",    "skb_consume_udp",    "ip4_datagram_connect",
	"ip6_datagram_connect", "udp_destroy_sock", "udpv6_destroy_sock",
};

std::string missing_functions(const KernelFeatures &k)
{
	std::string missing;
	for (auto fn : kHookedFunctions)
		if (!k.has_function(fn))
			missing += (missing.empty() ? "" : ", ") + std::string(fn);
	return missing;
}

} // namespace

// Trampolines need BTF for each function; whether the kernel (architecture,
// version, security policy) lets them attach is found by the trial load the
// Tracer does next.
Availability probe_fentry_backend(const KernelFeatures &k)
{
	if (auto missing = missing_functions(k); !missing.empty())
		return {false, "the kernel's BTF lacks " + missing};
	return {true, "BTF has every hooked function (fentry/fexit trampolines)"};
}

// kprobes are created through the kprobe perf PMU (CONFIG_KPROBE_EVENTS).
Availability probe_kprobe_backend(const KernelFeatures &k)
{
	if (access("/sys/bus/event_source/devices/kprobe/type", R_OK) != 0)
		return {false,
			"the kernel has no kprobe support (no kprobe PMU: CONFIG_KPROBES/KPROBE_EVENTS)"};
	if (auto missing = missing_functions(k); !missing.empty())
		return {false, "the kernel's BTF lacks " + missing};
	return {true, "kprobes and every hooked function are present"};
}

} // namespace udpintercept::detail
