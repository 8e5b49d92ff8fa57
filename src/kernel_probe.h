// SPDX-License-Identifier: LGPL-2.1-or-later
// What the running kernel offers, found by probing its BTF and asking the
// verifier, never by its version number.
#pragma once

#include <cstdint>
#include <array>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct btf;

namespace udpintercept::detail {

/**
 * The kernel's BTF as the loader needs it: the type section walked once for
 * each type's offset, names looked up in place. libbpf's full parse of the
 * same bytes (validation, an index grown type by type) takes ~10 ms of a
 * tracer's startup for 126,000 types, and libbpf parses them again for its
 * own relocations; this maps or reads them in ~1 ms and answers a start's
 * twenty questions in ~3 (tracer_scale on 126,611 types).
 */
class RawBtf {
public:
	/// Maps (where the kernel allows it) or reads /sys/kernel/btf/vmlinux
	/// (or `path`); nullptr with errno set if it cannot be read, or is not BTF
	/// in this machine's byte order.
	static std::unique_ptr<RawBtf> read(const char *path = "/sys/kernel/btf/vmlinux");
	/// Takes the bytes of a BTF blob; nullptr if they are not one this reader walks.
	static std::unique_ptr<RawBtf> parse(std::vector<char> bytes);
	~RawBtf();
	RawBtf(const RawBtf &) = delete;
	RawBtf &operator=(const RawBtf &) = delete;

	/// The number of types, counting the void type 0 (as btf__type_cnt()).
	std::uint32_t type_count() const { return static_cast<std::uint32_t>(offsets_.size()) + 1; }
	/// The id of the first type of that kind and name, or -ENOENT.
	int find(std::string_view name, int kind) const;
	/// A type's kind, its vlen and the type it refers to; false for an id out of range.
	bool type(std::uint32_t id, int &kind, std::uint32_t &vlen, std::uint32_t &ref) const;
	/**
	 * A BTF blob of the structs, unions, enums and typedefs named `roots`
	 * and every type they hold by value, each pointer turned to `void *`.
	 * libbpf's relocations of fields and enum values on those types find in
	 * it what they find in the whole BTF: they follow members by name, and
	 * take a pointer field for one whatever it points to. Empty if no root is
	 * here, or one holds a type of a kind this does not copy.
	 */
	std::vector<char> relocation_subset(std::span<const std::string_view> roots) const;

private:
	RawBtf() = default;
	static std::unique_ptr<RawBtf> walk(std::unique_ptr<RawBtf> raw);

	std::vector<char> owned_; // the bytes, when read
	void *mapping_ = nullptr; // or mapped
	std::size_t size_ = 0;
	const char *data_ = nullptr;
	std::size_t types_ = 0, strings_ = 0, strings_len_ = 0;
	std::vector<std::uint32_t> offsets_; // of type id 1, 2, ... from types_
	// Built on the first question about a kind: the ids of that kind, in order.
	mutable std::unordered_map<int, std::vector<std::uint32_t>> of_kind_;
};

/**
 * The kernel types the BPF object's CO-RE relocations name (a unit test
 * holds the object to them): the loader gives libbpf these and what they
 * hold by value to relocate against, not the whole kernel BTF.
 */
inline constexpr std::array<std::string_view, 11> kRelocatedKernelTypes = {
	"sock",    "sk_buff",         "skb_shared_info", "net",     "udp_sock", "msghdr",
	"pt_regs", "skb_drop_reason", "task_struct",     "css_set", "cgroup"};

/// What the kernel's BTF says, looked up by name.
class KernelFeatures {
public:
	explicit KernelFeatures(const btf *vmlinux) : vmlinux_(vmlinux) {}
	explicit KernelFeatures(const RawBtf *raw) : raw_(raw) {}
	/// A type of that name and BTF kind is in the kernel's BTF.
	bool has_type(std::string_view name, int kind) const;
	/// The kernel has a function of that name (a BTF FUNC: traceable, not inlined away).
	bool has_function(std::string_view name) const;
	/// The number of arguments of a raw tracepoint, or -1 if the kernel has none of that name.
	int tracepoint_arity(std::string_view name) const;
	/// The BTF id of the kernel function of that name, or a negative errno.
	int function_id(std::string_view name) const;

private:
	int function_or_type_id(std::string_view name, int kind) const;

	const btf *vmlinux_ = nullptr;
	const RawBtf *raw_ = nullptr;
};

struct Availability {
	bool available = false;
	std::string why; ///< what was found, or what is missing
};

/// Whether each backend's hooks exist on this kernel (the trial load decides the rest).
Availability probe_fentry_backend(const KernelFeatures &kernel);
Availability probe_kprobe_backend(const KernelFeatures &kernel);
Availability probe_tracepoint_backend(const KernelFeatures &kernel);

/**
 * Whether the kernel lets this process load a BPF trampoline program (an
 * fexit program on udp_sendmsg that only returns): 0, or the errno of the
 * refusal (a security policy, the lockdown, an architecture without
 * trampolines). A millisecond, where a refused trial load of the whole
 * object costs tens (its maps are made before its programs are refused).
 */
int trampoline_refusal(const KernelFeatures &kernel);

/**
 * Whether programs of `type` (attached as `attach`) may call `helper` on this
 * kernel: a one-call program is loaded and the verifier's verdict read.
 * (libbpf 1.1's probe takes newer kernels' "program of this type cannot use
 * helper" for a yes.) Needs CAP_BPF.
 */
bool helper_allowed(int type, int attach, int helper);

/// Where cgroup v2 is mounted, from /proc/self/mounts; empty if nowhere.
std::string cgroup2_mount();

} // namespace udpintercept::detail
