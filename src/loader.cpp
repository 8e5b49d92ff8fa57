// SPDX-License-Identifier: LGPL-2.1-or-later
// The only file that includes the generated skeleton: the backends as rows
// of programs (named by skeleton member) with their own configuration, and
// the lifecycle open -> configure -> load -> attach, tried per backend.
#include "loader.h"

#include <algorithm>
#include <array>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <future>
#include <iterator>
#include <latch>
#include <mutex>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include <udpintercept/error.h>

#include "fd.h"
#include "kernel_probe.h"
#include "kretprobe.h"
#include "libbpf_log.h"
#include "map_btf.h"
#include "privileges.h"
#include "udpintercept.skel.h"

namespace udpintercept::detail {

namespace {

constexpr const char *kVmlinuxBtf = "/sys/kernel/btf/vmlinux";
constexpr long kCgroup2Magic = 0x63677270;

using Skeleton = udpintercept_bpf;
using Programs = decltype(Skeleton::progs);
using Maps = decltype(Skeleton::maps);
using ProgramRef = bpf_program *Programs::*;
using MapRef = bpf_map *Maps::*;

struct SkeletonDeleter {
	void operator()(Skeleton *skel) const noexcept { udpintercept_bpf__destroy(skel); }
};

struct LinkDeleter {
	void operator()(bpf_link *link) const noexcept { bpf_link__destroy(link); }
};

using LogFn = std::function<void(const std::string &)>;

// What a backend's configuration step works on, between open and load.
struct Configuration {
	Skeleton &skel;
	const Options &options;
	const KernelFeatures &kernel;
	const LogFn &log;
	std::vector<ProgramRef> on_demand; // loaded now, attached when asked for
};

struct BackendRow {
	Backend backend;
	/// Whether this kernel has the backend's hooks (the trial load decides the rest).
	Availability (*probe)(const KernelFeatures &);
	/// The programs it loads and attaches.
	std::vector<ProgramRef> programs;
	/// Maps only its programs use: not created when another backend is chosen.
	std::vector<MapRef> own_maps;
	/// Its programs attach to the cgroup v2 root (CAP_NET_ADMIN).
	bool needs_cgroup;
	/// Its hooks are opened as perf events (kprobes), which kernel.perf_event_paranoid can refuse.
	bool needs_perf_events;
	/// Knobs and program choices of its own, set between open and load.
	void (*configure)(Configuration &);
	/// A cheap load that tells a refusal before the whole object is tried
	/// (its maps made, its programs verified): 0, or the errno of the refusal.
	int (*quick_trial)(const KernelFeatures &) = nullptr;
	/// The programs the kernel takes longest to verify, about half of the
	/// load's verification: where the process may run on two CPUs, they are
	/// verified on a thread of their own, beside the others (Impl::load).
	std::vector<ProgramRef> verified_beside = {};
};

// Of the object's programs, these load and no other.
void load_only(Skeleton &skel, const std::vector<ProgramRef> &programs)
{
	bpf_program *prog;
	bpf_object__for_each_program(prog, skel.obj) bpf_program__set_autoload(prog, false);
	for (ProgramRef p : programs)
		bpf_program__set_autoload(skel.progs.*p, true);
}

// The programs every backend loads besides its own.
constexpr std::array<ProgramRef, 2> kCommonPrograms = {&Programs::flush_flow, &Programs::check_socks};

// A map only programs that were not loaded would use keeps its least size.
void shrink(bpf_map *map)
{
	bpf_map__set_max_entries(map, static_cast<__u32>(std::max(1, libbpf_num_possible_cpus())));
}

// Programs of one kernel function that the fentry or kprobe backend hooks for drops.
struct DropHook {
	const char *function;
	std::vector<ProgramRef> programs;
	const char *without; // what goes uncounted where the kernel lacks the function
};

// The fentry and kprobe backends' drop hooks (bpf/drops.bpf.h): where the
// kfree_skb tracepoint names the receiving socket (6.11+), it says whose
// drop each is and the receive functions need no window; a hooked function
// the kernel's BTF lacks (inlined on that build) is left out, and what it
// would have counted is said in the log.
void configure_drop_hooks(Configuration &c, const std::vector<DropHook> &receive,
			  const std::vector<DropHook> &others)
{
	const bool named = c.skel.rodata->kfree_skb_arity >= 4;
	c.log(named ? "drops: the kfree_skb tracepoint names the receiving socket"
		    : "drops: windows around the UDP receive functions tell the kfree_skb tracepoint whose "
		      "drop it is");
	const auto load = [&c](const DropHook &h, bool needed) {
		const bool present = c.kernel.has_function(h.function);
		if (needed && !present)
			c.log(fmt::format("drops: the kernel's BTF lacks {}: {} are not counted", h.function,
					  h.without));
		for (ProgramRef p : h.programs)
			bpf_program__set_autoload(c.skel.progs.*p, needed && present);
	};
	for (const DropHook &h : receive)
		load(h, !named);
	for (const DropHook &h : others)
		load(h, true);
}

// The new-socket hooks (bpf/fentry.bpf.c): a socket's init ends the flows of
// a gone socket whose id is still at its address. udpv6_init_sock() arrived
// in 6.1 (and stable backports); before it, udp_init_sock() starts IPv6
// sockets too.
void configure_init_hooks(Configuration &c, ProgramRef v4, ProgramRef v6)
{
	for (const auto &[function, program] :
	     {std::pair{"udp_init_sock", v4}, std::pair{"udpv6_init_sock", v6}}) {
		const bool present = c.kernel.has_function(function);
		bpf_program__set_autoload(c.skel.progs.*program, present);
		if (!present)
			c.log(fmt::format("new sockets: the kernel's BTF lacks {}{}", function,
					  program == v6 ? " (udp_init_sock starts IPv6 sockets too)"
							: ": a socket at the address of one gone unseen "
							  "takes that one's id"));
	}
}

void configure_fentry(Configuration &c)
{
	configure_init_hooks(c, &Programs::fe_udp_init_sock, &Programs::fe_udpv6_init_sock);
	constexpr const char *kReceiveDrops = "socket filter, receive buffer and protocol memory drops";
	configure_drop_hooks(c,
			     {{"udp_queue_rcv_one_skb",
			       {&Programs::fe_udp_queue_rcv_one_skb, &Programs::fx_udp_queue_rcv_one_skb},
			       kReceiveDrops},
			      {"udpv6_queue_rcv_one_skb",
			       {&Programs::fe_udpv6_queue_rcv_one_skb, &Programs::fx_udpv6_queue_rcv_one_skb},
			       kReceiveDrops}},
			     {{"__first_packet_length",
			       {&Programs::fe_first_packet_length, &Programs::fx_first_packet_length},
			       "checksum failures found by poll() or ioctl(FIONREAD)"},
			      {"__sk_queue_drop_skb",
			       {&Programs::fx_sk_queue_drop_skb},
			       "checksum failures found by recvmsg()"}});
}

void configure_kprobe(Configuration &c)
{
	configure_init_hooks(c, &Programs::kp_udp_init_sock, &Programs::kp_udpv6_init_sock);
	constexpr const char *kReceiveDrops = "socket filter, receive buffer and protocol memory drops";
	configure_drop_hooks(c,
			     {{"udp_queue_rcv_one_skb",
			       {&Programs::kp_udp_queue_rcv_one_skb, &Programs::kr_udp_queue_rcv_one_skb},
			       kReceiveDrops},
			      {"udpv6_queue_rcv_one_skb",
			       {&Programs::kp_udpv6_queue_rcv_one_skb, &Programs::kr_udpv6_queue_rcv_one_skb},
			       kReceiveDrops}},
			     {{"__first_packet_length",
			       {&Programs::kp_first_packet_length, &Programs::kr_first_packet_length},
			       "checksum failures found by poll() or ioctl(FIONREAD)"},
			      {"__sk_queue_drop_skb",
			       {&Programs::kp_sk_queue_drop_skb, &Programs::kr_sk_queue_drop_skb},
			       "checksum failures found by recvmsg()"}});
}

// The tracepoint backend's choices, each made by asking the kernel.
void configure_tracepoint(Configuration &c)
{
	auto *ro = c.skel.rodata;
	auto &progs = c.skel.progs;

	c.log(ro->kfree_skb_arity >= 4 ? "drops: the kfree_skb tracepoint names the receiving socket"
				       : "drops: the kfree_skb tracepoint takes the socket from the arrival "
					 "hook's last datagram on the CPU");

	// Peer stashes live in task storage where cgroup programs may use it (a
	// question of the kernel's version the verifier answers), else in LRU maps.
	const auto sock_addr_may = [](bpf_func_id helper) {
		return helper_allowed(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP4_RECVMSG, helper);
	};
	ro->stash_in_task =
		sock_addr_may(BPF_FUNC_task_storage_get) && sock_addr_may(BPF_FUNC_get_current_task_btf);
	if (ro->stash_in_task) {
		// Left to the stashes and GSO notes of a thread whose task storage
		// the kernel could not allocate (each taken within its system call).
		const auto spill_room = static_cast<__u32>(16 * std::max(1, libbpf_num_possible_cpus()));
		for (bpf_map *spill : {c.skel.maps.send_stash, c.skel.maps.recv_stash, c.skel.maps.gso_notes})
			bpf_map__set_max_entries(spill, spill_room);
	}
	c.log(fmt::format("peer stashes in {}", ro->stash_in_task ? "task storage" : "LRU hash maps"));

	// Sends are counted by one cgroup_skb/egress program where the kernel lets
	// those see the current task, else with the sendmsg hooks,
	// sock_send_length and net_dev_queue.
	// (The cgroup filter asks for the task's cgroup ancestors too.)
	std::vector<bpf_func_id> egress_helpers = {
		BPF_FUNC_get_current_pid_tgid, BPF_FUNC_get_current_uid_gid, BPF_FUNC_get_current_cgroup_id,
		BPF_FUNC_get_current_comm, BPF_FUNC_jiffies64};
	if (c.options.cgroup)
		egress_helpers.push_back(BPF_FUNC_get_current_ancestor_cgroup_id);
	bool egress_sees_task = true;
	for (const auto helper : egress_helpers)
		egress_sees_task = egress_sees_task &&
				   helper_allowed(BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS, helper);
	ro->send_at_egress = egress_sees_task && !c.options.sends_at_tracepoint;
	for (bpf_program *p :
	     {progs.tp_send_length, progs.cg_sendmsg4, progs.cg_sendmsg6, progs.tp_net_dev_queue})
		bpf_program__set_autoload(p, !ro->send_at_egress);
	bpf_program__set_autoload(progs.cg_skb_egress, ro->send_at_egress);
	if (ro->send_at_egress)
		shrink(c.skel.maps.gso_notes); // only tp_net_dev_queue notes GSO sends
	c.log(ro->send_at_egress
		      ? "sends counted at cgroup_skb/egress"
		      : "sends counted at sock_send_length (with cgroup sendmsg hooks and net_dev_queue)");

	// The arrival hook (the senders of datagrams read with recv() without an
	// address) is in place from the start; only the inexact opt-in defers it
	// to the first such receive. kfree_skb counts drops: it is always there.
	c.skel.bss->arrivals_asked = !c.options.recv_peers_lazy_inexact;
	if (c.options.recv_peers_lazy_inexact)
		c.on_demand = {&Programs::cg_skb_ingress};
	// A ring of notes for each unconnected socket that receives, at most.
	bpf_map__set_max_entries(c.skel.maps.rx_rings, c.options.max_sockets);
	// Released sockets' marks, each CPU's own: a mark lives through one close.
	bpf_map__set_max_entries(c.skel.maps.rx_released,
				 static_cast<__u32>(64 * std::max(1, libbpf_num_possible_cpus())));
}

const std::vector<BackendRow> &backend_rows()
{
	// In the order `auto` prefers them: a trampoline is the cheapest hook and
	// sees every argument; the tracepoint backend hangs on stable hooks; a
	// kprobe traps on every call and its return probes are bounded.
	static const std::vector<BackendRow> rows = {
		{
			Backend::fentry,
			probe_fentry_backend,
			{&Programs::fx_udp_sendmsg, &Programs::fx_udpv6_sendmsg,
			 &Programs::fe_skb_consume_udp, &Programs::fx_ip4_datagram_connect,
			 &Programs::fx_ip6_datagram_connect, &Programs::fe_udp_destroy_sock,
			 &Programs::fe_udpv6_destroy_sock, &Programs::fe_udp_init_sock,
			 &Programs::fe_udpv6_init_sock, &Programs::tp_kfree_skb_drop,
			 &Programs::fe_udp_queue_rcv_one_skb, &Programs::fx_udp_queue_rcv_one_skb,
			 &Programs::fe_udpv6_queue_rcv_one_skb, &Programs::fx_udpv6_queue_rcv_one_skb,
			 &Programs::fe_first_packet_length, &Programs::fx_first_packet_length,
			 &Programs::fx_sk_queue_drop_skb},
			{&Maps::drop_windows},
			false,
			false,
			configure_fentry,
			trampoline_refusal,
			// 1,258 of 2,516 ms on 6.1 under emulation (bench/README.md).
			{&Programs::fx_udp_sendmsg, &Programs::fx_udpv6_sendmsg},
		},
		{
			Backend::tracepoint,
			probe_tracepoint_backend,
			{&Programs::tp_send_length, &Programs::tp_recv_length, &Programs::cg_sendmsg4,
			 &Programs::cg_sendmsg6, &Programs::cg_recvmsg4, &Programs::cg_recvmsg6,
			 &Programs::cg_connect4, &Programs::cg_connect6, &Programs::cg_sock_release,
			 &Programs::cg_sock_create, &Programs::cg_skb_ingress, &Programs::tp_kfree_skb,
			 &Programs::tp_net_dev_queue, &Programs::cg_skb_egress},
			{&Maps::send_stash, &Maps::recv_stash, &Maps::task_stashes, &Maps::gso_notes,
			 &Maps::gso_pending, &Maps::rx_rings, &Maps::rx_released, &Maps::rx_ring_zero,
			 &Maps::rx_last, &Maps::csum_drops, &Maps::csum_drops_zero, &Maps::ptr_scratch},
			true,
			false,
			configure_tracepoint,
			nullptr,
			// About half of the verification on 6.18 (bench/README.md).
			{&Programs::tp_recv_length, &Programs::cg_sock_release, &Programs::cg_connect4,
			 &Programs::cg_connect6},
		},
		{
			Backend::kprobe,
			probe_kprobe_backend,
			{&Programs::kp_udp_sendmsg,
			 &Programs::kr_udp_sendmsg,
			 &Programs::kp_udpv6_sendmsg,
			 &Programs::kr_udpv6_sendmsg,
			 &Programs::kp_skb_consume_udp,
			 &Programs::kp_ip4_datagram_connect,
			 &Programs::kr_ip4_datagram_connect,
			 &Programs::kp_ip6_datagram_connect,
			 &Programs::kr_ip6_datagram_connect,
			 &Programs::kp_udp_destroy_sock,
			 &Programs::kp_udpv6_destroy_sock,
			 &Programs::kp_udp_init_sock,
			 &Programs::kp_udpv6_init_sock,
			 &Programs::tp_kfree_skb_drop,
			 &Programs::kp_udp_queue_rcv_one_skb,
			 &Programs::kr_udp_queue_rcv_one_skb,
			 &Programs::kp_udpv6_queue_rcv_one_skb,
			 &Programs::kr_udpv6_queue_rcv_one_skb,
			 &Programs::kp_first_packet_length,
			 &Programs::kr_first_packet_length,
			 &Programs::kp_sk_queue_drop_skb,
			 &Programs::kr_sk_queue_drop_skb},
			{&Maps::kp_send4, &Maps::kp_send6, &Maps::kp_connect, &Maps::kp_queue_drop,
			 &Maps::drop_windows},
			false,
			true,
			configure_kprobe,
			nullptr,
			// 342 of 634 ms on 6.1 under emulation (bench/README.md).
			{&Programs::kp_udp_sendmsg, &Programs::kr_udp_sendmsg, &Programs::kp_udpv6_sendmsg,
			 &Programs::kr_udpv6_sendmsg},
		},
	};
	return rows;
}

/*
 * libbpf (1.1) asks the kernel what it supports (BTF, global data, mappable
 * arrays, bpf_probe_read_kernel()...) once per process, a bpf() call each,
 * in the first load that needs it, and keeps the answers for the process's
 * life: a probe refused then (the kernel short of memory, or the process
 * without the privilege yet) is kept as a feature missing, and each later
 * load is made for a kernel without it, which ours refuses. Whether a load
 * of this process has succeeded, or loads have only failed: a failure after
 * failures alone says so (a library's user retries in the same process).
 */
enum class FeaturesLearned { not_yet, in_a_load, in_failed_loads };
std::atomic<FeaturesLearned> g_features_learned{FeaturesLearned::not_yet};

// `detail` (libbpf's own words) goes last, after what to do.
[[noreturn]] void fail(const char *stage, int err, const std::string &what, const std::string &detail = {})
{
	const std::string tail = detail.empty() ? "" : "\nlibbpf said:\n" + detail;
	// The capabilities were checked before any load: a refusal now comes from
	// a resource limit, the kernel's lockdown or a security policy.
	if (err == EPERM || err == EACCES)
		throw Error(stage, err,
			    fmt::format("{}: permission denied although this process has the capabilities "
					"it needs: {}{}",
					what, explain_denial(), tail));
	throw Error(stage, err, fmt::format("{}: {}{}", what, std::strerror(err), tail));
}

// Whether this process may run on two CPUs (its affinity): then work
// beside the constructor's thread shortens the start.
bool on_two_cpus() noexcept
{
	cpu_set_t cpus;
	return sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) >= 2;
}

/*
 * The flow table, preallocated, is the largest map and the slowest to make:
 * the kernel writes a free-list link into every entry (at 65,536 flows on a
 * 2-vCPU machine, 4 ms on a quick day, 22-28 ms on a slow one). It is made on a
 * thread of its own while the constructor reads the kernel's BTF and opens
 * the object. The object's other hash maps and its ring buffer (another
 * 2-8 ms, buckets and pages) are made when the constructor, about to load,
 * has configured them: by the constructor and, once the flow table is made,
 * by the thread too, one map at a time from a shared list, instead of by
 * libbpf after it. The object takes the maps made here in place of its own
 * (bpf_map__reuse_fd()) only if they are what it would have made, and only
 * in the first load that asks: a backend refused after attaching part of
 * its programs leaves its maps behind. A map the kernel refuses here is
 * made by libbpf as ever, which reports the refusal. The bpf() calls are
 * made directly (sys_bpf()), not through libbpf. The hash maps made here
 * carry their key and value types all the same (kMapBtf, generated from the
 * object when it is built), so that `bpftool map dump` shows their fields:
 * the thread loads that BTF before it makes the table.
 */
class PremadeMaps {
public:
	explicit PremadeMaps(const Options &options)
	    : flows_{.name = "flows",
		     .type = BPF_MAP_TYPE_HASH,
		     .key_size = sizeof(udpi_flow_key),
		     .value_size = sizeof(udpi_flow),
		     .max_entries = options.max_flows}
	{
		if (!on_two_cpus())
			return;
		try {
			thread_ = std::thread([this] {
				btf_fd_ = load_map_btf();
				btf_loaded_.count_down();
				flows_fd_ = create(flows_);
				{
					std::unique_lock lock(mutex_);
					listed_.wait(lock, [this] { return list_ready_; });
				}
				make_listed();
			});
		} catch (const std::system_error &) {
		}
	}
	~PremadeMaps() { finish(); }
	PremadeMaps(const PremadeMaps &) = delete;
	PremadeMaps &operator=(const PremadeMaps &) = delete;

	// Gives `obj` the maps made here that match its own, once; how many.
	int adopt(bpf_object *obj)
	{
		if (!thread_.joinable())
			return 0;
		std::vector<bpf_map *> maps;
		std::vector<Shape> list;
		bpf_map *map;
		bpf_object__for_each_map(map, obj)
		{
			const bpf_map_type type = bpf_map__type(map);
			if (bpf_map__autocreate(map) && bpf_map__fd(map) < 0 &&
			    std::strcmp(bpf_map__name(map), flows_.name) != 0 &&
			    (type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_LRU_HASH ||
			     type == BPF_MAP_TYPE_RINGBUF)) {
				maps.push_back(map);
				list.push_back({bpf_map__name(map), type, bpf_map__key_size(map),
						bpf_map__value_size(map), bpf_map__max_entries(map),
						bpf_map__map_flags(map)});
			}
		}
		std::vector<UniqueFd> made(list.size());
		btf_loaded_.wait(); // the thread's first step
		{
			std::lock_guard lock(mutex_);
			list_ = std::move(list);
			made_ = std::move(made);
			list_ready_ = true;
		}
		listed_.notify_one();
		make_listed();
		finish();
		int adopted = 0;
		for (std::size_t i = 0; i < maps.size(); i++)
			adopted += made_[i] && bpf_map__reuse_fd(maps[i], made_[i].get()) == 0;
		bpf_map *flows = bpf_object__find_map_by_name(obj, flows_.name);
		adopted += flows_fd_ && flows && bpf_map__autocreate(flows) &&
			   bpf_map__type(flows) == flows_.type &&
			   bpf_map__key_size(flows) == flows_.key_size &&
			   bpf_map__value_size(flows) == flows_.value_size &&
			   bpf_map__max_entries(flows) == flows_.max_entries &&
			   bpf_map__map_flags(flows) == flows_.flags &&
			   bpf_map__reuse_fd(flows, flows_fd_.get()) == 0;
		// The object holds its own descriptors, and the maps their BTF.
		flows_fd_.reset();
		btf_fd_.reset();
		made_.clear();
		return adopted;
	}

private:
	struct Shape {
		const char *name = nullptr;
		bpf_map_type type = BPF_MAP_TYPE_UNSPEC;
		__u32 key_size = 0, value_size = 0, max_entries = 0, flags = 0;
	};

	// The BTF of the object's hash maps' types, in the kernel; none if refused.
	static UniqueFd load_map_btf() noexcept
	{
		bpf_attr attr;
		std::memset(&attr, 0, sizeof(attr));
		attr.btf = reinterpret_cast<std::uintptr_t>(kMapBtf);
		attr.btf_size = sizeof(kMapBtf);
		return UniqueFd(static_cast<int>(sys_bpf(BPF_BTF_LOAD, &attr)));
	}

	// Made with its types where kMapBtf has them, else (or if the kernel
	// refuses them, as libbpf does) without. Refused for want of memory, it
	// is not tried again without them: that would only fail as slowly.
	UniqueFd create(const Shape &m) const noexcept
	{
		bpf_attr attr;
		std::memset(&attr, 0, sizeof(attr));
		attr.map_type = m.type;
		attr.key_size = m.key_size;
		attr.value_size = m.value_size;
		attr.max_entries = m.max_entries;
		attr.map_flags = m.flags;
		std::strncpy(attr.map_name, m.name, sizeof(attr.map_name) - 1);
		const auto types = std::find_if(
			std::begin(kMapBtfTypes), std::end(kMapBtfTypes), [&](const MapBtfTypes &t) {
				return std::strcmp(t.map, m.name) == 0 && t.key_size == m.key_size &&
				       t.value_size == m.value_size;
			});
		if (btf_fd_ && types != std::end(kMapBtfTypes)) {
			attr.btf_fd = static_cast<__u32>(btf_fd_.get());
			attr.btf_key_type_id = types->key_type_id;
			attr.btf_value_type_id = types->value_type_id;
			if (UniqueFd fd(static_cast<int>(sys_bpf(BPF_MAP_CREATE, &attr)));
			    fd || errno == ENOMEM)
				return fd;
			attr.btf_fd = attr.btf_key_type_id = attr.btf_value_type_id = 0;
		}
		return UniqueFd(static_cast<int>(sys_bpf(BPF_MAP_CREATE, &attr)));
	}

	// Makes the listed maps not yet taken, one at a time, on either thread.
	void make_listed() noexcept
	{
		for (;;) {
			std::size_t i;
			{
				std::lock_guard lock(mutex_);
				if (next_ == list_.size())
					return;
				i = next_++;
			}
			made_[i] = create(list_[i]); // each slot written by one thread
		}
	}

	// Lets the thread go (with nothing listed, if nothing was) and joins it.
	void finish() noexcept
	{
		if (!thread_.joinable())
			return;
		{
			std::lock_guard lock(mutex_);
			list_ready_ = true;
		}
		listed_.notify_one();
		thread_.join();
	}

	const Shape flows_;
	UniqueFd btf_fd_; // kMapBtf, written by the thread before btf_loaded_
	std::latch btf_loaded_{1};
	UniqueFd flows_fd_;
	std::mutex mutex_;
	std::condition_variable listed_;
	bool list_ready_ = false;    // the list is final (the thread may take from it)
	std::vector<Shape> list_;    // the object's other maps, as configured
	std::vector<UniqueFd> made_; // their descriptors, slot by slot
	std::size_t next_ = 0;       // the first map no thread has taken
	std::thread thread_;
};

} // namespace

struct Loader::Impl {
	Options options;
	LogFn log;
	const BackendRow *row = nullptr;
	std::string reason;

	// The object whose maps the programs use; it loads the programs too,
	// unless they are verified on two threads: then each thread's share is
	// an object of its own (program_objects) that takes these maps.
	std::unique_ptr<Skeleton, SkeletonDeleter> skel;
	std::vector<std::unique_ptr<Skeleton, SkeletonDeleter>> program_objects;
	// The programs of the program objects let go once attached
	// (release_program_objects()), each by a descriptor of its own.
	std::vector<std::pair<ProgramRef, UniqueFd>> kept_programs;
	UniqueFd relocation_btf;          // the kernel types libbpf relocates against, until loaded
	std::string relocation_path;      // its name for libbpf, or empty: the kernel's whole BTF
	UniqueFd cgroup;                  // the cgroup v2 root, for programs attached later
	std::vector<ProgramRef> deferred; // loaded, attached when asked for
	std::vector<bpf_program *> on_demand;
	// Destroyed after the links that use them (members go in reverse order).
	std::vector<std::unique_ptr<TracefsKretprobe>> kretprobes;
	std::string kretprobe_note; // why return probes could not be made through tracefs
	std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links;
	bool privileges_dropped = false;
	std::optional<bool> maps_need_cap_bpf;

	explicit Impl(const Options &opts) : options(opts)
	{
		log = [this](const std::string &line) {
			if (options.log)
				options.log(line);
		};
	}

	std::vector<std::pair<const BackendRow *, std::string>>
	candidates(std::optional<KernelFeatures> &kernel, std::unique_ptr<RawBtf> &raw,
		   std::unique_ptr<btf, void (*)(btf *)> &vmlinux);
	std::string write_relocation_btf(const RawBtf &raw);
	void open(const RawBtf *raw);
	Skeleton *open_copy() const noexcept;
	void configure(const KernelFeatures &kernel);
	std::vector<ProgramRef> programs_beside() const;
	void load(LibbpfCapture &capture);
	int load_share(Skeleton *&out, const std::vector<ProgramRef> &programs,
		       const std::shared_future<bool> &maps_made) noexcept;
	bpf_program *program(ProgramRef p) const;
	int program_fd(ProgramRef p) const;
	void attach(LibbpfCapture &capture);
	void release_program_objects(bool handed_out = false);
	void attach_program(bpf_program *prog, LibbpfCapture &capture);
	bpf_link *attach_kretprobe(bpf_program *prog, const std::string &function);
	void keep_needed_capabilities();
	void reset() noexcept;
	std::size_t count_loaded_programs() const;
	std::size_t count_created_maps() const;
};

std::vector<std::pair<const BackendRow *, std::string>>
Loader::Impl::candidates(std::optional<KernelFeatures> &kernel, std::unique_ptr<RawBtf> &raw,
			 std::unique_ptr<btf, void (*)(btf *)> &vmlinux)
{
	if (access(kVmlinuxBtf, R_OK) != 0)
		throw Error(
			"btf", errno,
			fmt::format("no BTF at {}: udpintercept needs a kernel built with "
				    "CONFIG_DEBUG_INFO_BTF=y (every major distribution's kernel since 2020)",
				    kVmlinuxBtf));
	// The few names the backends' probes ask for are looked up in the raw
	// bytes; libbpf's full parse is the fallback for a blob this reader does
	// not walk (a newer BTF kind, the other byte order).
	if ((raw = RawBtf::read(kVmlinuxBtf))) {
		log(fmt::format("read the kernel's BTF ({} types)", raw->type_count()));
		kernel.emplace(raw.get());
	} else {
		vmlinux.reset(btf__load_vmlinux_btf());
		if (!vmlinux)
			fail("btf", errno, fmt::format("cannot read the kernel's BTF from {}", kVmlinuxBtf));
		log(fmt::format("read the kernel's BTF ({} types, parsed by libbpf)",
				btf__type_cnt(vmlinux.get())));
		kernel.emplace(vmlinux.get());
	}

	std::vector<std::pair<const BackendRow *, std::string>> out;
	std::vector<std::string> rejected;
	for (const auto &r : backend_rows()) {
		if (options.backend != Backend::automatic && r.backend != options.backend)
			continue;
		const auto avail = r.probe(*kernel);
		log(fmt::format("backend {}: {}", to_string(r.backend), avail.why));
		if (avail.available)
			out.emplace_back(&r, avail.why);
		else
			rejected.push_back(fmt::format("{}: {}", to_string(r.backend), avail.why));
	}
	if (out.empty() && options.backend != Backend::automatic)
		throw Error(
			"backend", EOPNOTSUPP,
			fmt::format("backend '{}' is not available on this kernel: {} (the automatic choice "
				    "picks one this kernel has)",
				    to_string(options.backend), rejected.front()));
	if (out.empty())
		throw Error("backend", EOPNOTSUPP,
			    fmt::format("no backend works on this kernel ({})", fmt::join(rejected, "; ")));
	return out;
}

/*
 * libbpf parses the kernel's whole BTF (126,000 types, 9-10 ms of a start)
 * to relocate the programs' reads of the few structures they name; given a
 * file of those and what they hold by value (its btf_custom_path), it parses
 * that instead. The fentry backend's programs need the whole BTF to attach,
 * which libbpf parses for each object that loads them anyway; the object
 * that only makes the maps (Impl::load) then parses none. Empty: libbpf
 * reads the kernel's.
 */
std::string Loader::Impl::write_relocation_btf(const RawBtf &raw)
{
	const std::vector<char> blob = raw.relocation_subset(kRelocatedKernelTypes);
	if (blob.empty()) {
		log("relocating against the kernel's whole BTF (its structures could not be copied out)");
		return {};
	}
	UniqueFd fd(memfd_create("udpintercept-btf", MFD_CLOEXEC));
	std::size_t done = 0;
	while (fd && done < blob.size()) {
		const ssize_t n = write(fd.get(), blob.data() + done, blob.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fd.reset();
		else
			done += static_cast<std::size_t>(n);
	}
	std::string path = fmt::format("/proc/self/fd/{}", fd.get());
	if (!fd || access(path.c_str(), R_OK) != 0) {
		log(fmt::format("relocating against the kernel's whole BTF (no file for its structures: {})",
				std::strerror(errno)));
		return {};
	}
	relocation_btf = std::move(fd);
	log(fmt::format("relocating against {} bytes of the kernel's BTF", blob.size()));
	return path;
}

void Loader::Impl::open(const RawBtf *raw)
{
	if (raw)
		relocation_path = write_relocation_btf(*raw);
	skel.reset(open_copy());
	if (!skel)
		fail("open", errno, "cannot open the embedded BPF object");
}

// An object opened from the embedded ELF, relocated as the loader's is; null
// with errno set if it cannot be.
Skeleton *Loader::Impl::open_copy() const noexcept
{
	LIBBPF_OPTS(bpf_object_open_opts, opts);
	if (!relocation_path.empty())
		opts.btf_custom_path = relocation_path.c_str(); // copied by libbpf
	return udpintercept_bpf__open_opts(&opts);
}

void Loader::Impl::configure(const KernelFeatures &kernel)
{
	auto *ro = skel->rodata;
	ro->interval_ns = static_cast<__u64>(options.interval.count()) * 1000000ULL;
	ro->filter_pid = options.pid.value_or(0);
	ro->filter_uid = options.uid.value_or(0);
	ro->filter_uid_set = options.uid.has_value();
	ro->filter_port = options.port.value_or(0);
	ro->filter_family = !options.family                   ? 0
			    : *options.family == Family::ipv4 ? UDPI_AF_INET
							      : UDPI_AF_INET6;
	if (options.cgroup) {
		struct statfs sfs {};
		struct stat st {};
		if (statfs(options.cgroup->c_str(), &sfs) != 0 || stat(options.cgroup->c_str(), &st) != 0)
			fail("options", errno, fmt::format("cgroup filter '{}'", *options.cgroup));
		if (sfs.f_type != kCgroup2Magic || !S_ISDIR(st.st_mode))
			throw Error(
				"options", EINVAL,
				fmt::format("cgroup filter '{}' is not a cgroup v2 directory (cgroup v2 is "
					    "mounted at '{}')",
					    *options.cgroup, cgroup2_mount()));
		ro->filter_cgroup = st.st_ino; // a cgroup v2 directory's inode number is its id
		// The filter keeps the directory's descendants too: tracing programs
		// (raw tracepoints' kind) can ask for a task's ancestors since 5.14,
		// before which the programs read them from the task's cgroup.
		ro->ancestor_cgroup_helper = helper_allowed(BPF_PROG_TYPE_RAW_TRACEPOINT, 0,
							    BPF_FUNC_get_current_ancestor_cgroup_id);
	}
	// kfree_skb, where every drop ends: its arguments differ between kernels.
	ro->kfree_skb_arity = static_cast<__u32>(std::max(2, kernel.tracepoint_arity("kfree_skb")));
	bpf_map__set_max_entries(skel->maps.flows, options.max_flows);
	bpf_map__set_max_entries(skel->maps.socks, options.max_sockets);
	bpf_map__set_max_entries(skel->maps.events, options.ring_buffer_bytes);
	// The socket table and the closes left for user space take memory for
	// the sockets in use, not for the most there may be, where tracing
	// programs may use hash maps that are not preallocated: since 6.1, whose
	// BPF memory allocator (struct bpf_mem_alloc) made it safe ("bpf: Relax
	// the requirement to use preallocated hash maps in tracing progs");
	// before, the verifier warns of them. The flow table stays preallocated:
	// a new flow must not wait for an allocation that can fail.
	if (kernel.has_type("bpf_mem_alloc", BTF_KIND_STRUCT))
		for (bpf_map *m : {skel->maps.socks, skel->maps.closed})
			bpf_map__set_map_flags(m, bpf_map__map_flags(m) | BPF_F_NO_PREALLOC);

	// Only the chosen backend's programs load (and the flush and check
	// programs, which every backend has); maps only other backends use are
	// not created.
	std::vector<ProgramRef> programs = row->programs;
	programs.insert(programs.end(), kCommonPrograms.begin(), kCommonPrograms.end());
	load_only(*skel, programs);
	for (const auto &other : backend_rows())
		if (&other != row)
			for (MapRef m : other.own_maps)
				if (std::find(row->own_maps.begin(), row->own_maps.end(), m) ==
				    row->own_maps.end())
					bpf_map__set_autocreate(skel->maps.*m, false);

	Configuration c{*skel, options, kernel, log, {}};
	row->configure(c);
	for (ProgramRef p : c.on_demand)
		if (bpf_program__autoload(skel->progs.*p))
			deferred.push_back(p);
}

// The chosen programs the row has verified on a second thread, where this
// process may run on two CPUs (its affinity).
std::vector<ProgramRef> Loader::Impl::programs_beside() const
{
	if (!on_two_cpus())
		return {};
	std::vector<ProgramRef> out;
	for (ProgramRef p : row->verified_beside)
		if (bpf_program__autoload(skel->progs.*p))
			out.push_back(p);
	return out;
}

/*
 * The kernel verifies a program in the bpf() call that loads it, one after
 * another in an object's load, and that is most of a start (the verifier
 * walks every path of a program). Verified on two threads, the load takes
 * about the longer of the two shares: this object makes the maps (and loads
 * no program), then two more objects of the same ELF, each with its share
 * of the programs and every map taken from this one (bpf_map__reuse_fd(),
 * the read-only data frozen as configured), load at once, one on a thread
 * of its own. Each is relocated and carries the object's BTF as the single
 * object would. The thread opens its object (libbpf's parse of the ELF and
 * its BTF, 1.5-3 ms) while the first makes the maps. If no thread can be
 * started, the second share loads after the first.
 */
void Loader::Impl::load(LibbpfCapture &capture)
{
	const auto refused = [&](int err) {
		FeaturesLearned learned = FeaturesLearned::not_yet;
		g_features_learned.compare_exchange_strong(learned, FeaturesLearned::in_failed_loads);
		const bool again = learned == FeaturesLearned::in_failed_loads;
		constexpr const char *kept =
			" (nor could an earlier load of this process, and libbpf keeps the "
			"kernel's features as it found them then for the process's life, a "
			"probe refused then as a feature missing: if that is the cause, a new "
			"process loads)";
		fail("load", err,
		     fmt::format("cannot load the {} backend's BPF programs{}", to_string(row->backend),
				 again ? kept : ""),
		     capture.tail());
	};
	// libbpf has read the relocation BTF once every object has loaded.
	struct CloseWhenLoaded {
		UniqueFd &fd;
		~CloseWhenLoaded() { fd.reset(); }
	} close_when_loaded{relocation_btf};
	const std::vector<ProgramRef> beside = programs_beside();
	if (beside.empty()) {
		if (const int err = udpintercept_bpf__load(skel.get()))
			refused(-err);
	} else {
		std::vector<ProgramRef> rest;
		for (ProgramRef p : row->programs)
			if (bpf_program__autoload(skel->progs.*p) &&
			    std::find(beside.begin(), beside.end(), p) == beside.end())
				rest.push_back(p);
		rest.insert(rest.end(), kCommonPrograms.begin(), kCommonPrograms.end());
		load_only(*skel, {});
		Skeleton *first = nullptr, *second = nullptr;
		int first_err = 0, second_err = 0;
		std::promise<bool> made;
		const std::shared_future<bool> maps_made = made.get_future().share();
		std::thread thread;
		try {
			thread = std::thread([&] { second_err = load_share(second, beside, maps_made); });
		} catch (const std::system_error &) {
		}
		const int err = udpintercept_bpf__load(skel.get());
		made.set_value(err == 0);
		if (!err)
			first_err = load_share(first, rest, maps_made);
		if (thread.joinable())
			thread.join();
		else if (!err)
			second_err = load_share(second, beside, maps_made);
		for (Skeleton *o : {first, second})
			if (o)
				program_objects.emplace_back(o);
		if (err)
			refused(-err);
		if (first_err || second_err)
			refused(first_err ? first_err : second_err);
	}
	g_features_learned = FeaturesLearned::in_a_load;
	for (ProgramRef p : deferred)
		on_demand.push_back(program(p));
}

// Opens another copy of the object that loads only `programs`, with the
// maps of the first once `maps_made` says it made them: 0, or the errno of
// the failure (ECANCELED if the first was refused).
int Loader::Impl::load_share(Skeleton *&out, const std::vector<ProgramRef> &programs,
			     const std::shared_future<bool> &maps_made) noexcept
{
	out = open_copy();
	if (!out)
		return errno ? errno : ENOMEM;
	load_only(*out, programs);
	if (!maps_made.get())
		return ECANCELED;
	// The same ELF: the maps come in the same order.
	bpf_map *map, *mine = nullptr;
	bpf_object__for_each_map(map, skel->obj)
	{
		mine = bpf_object__next_map(out->obj, mine);
		if (bpf_map__fd(map) < 0)
			bpf_map__set_autocreate(mine, false);
		else if (const int err = bpf_map__reuse_fd(mine, bpf_map__fd(map)))
			return -err;
	}
	return -udpintercept_bpf__load(out);
}

// A program as loaded: by the object that verified it.
bpf_program *Loader::Impl::program(ProgramRef p) const
{
	for (const auto &o : program_objects)
		if (bpf_program__fd(o->progs.*p) >= 0)
			return o->progs.*p;
	return skel->progs.*p;
}

// A loaded program's descriptor, also once its object was let go.
int Loader::Impl::program_fd(ProgramRef p) const
{
	for (const auto &[ref, fd] : kept_programs)
		if (ref == p)
			return fd.get();
	return bpf_program__fd(program(p));
}

/*
 * Each program object holds a descriptor of every map (bpf_map__reuse_fd()
 * duplicates the first object's), so that verifying on two threads kept
 * three of each in the process: 69 for 23 maps. Once the programs are
 * attached, their links hold them in the kernel, and the objects are let
 * go but for a descriptor of each program (the flush and check programs
 * are run by it, and the programs' statistics read by it). An object with
 * a program still to attach (the arrival hook, on demand) stays until that
 * attach, but its programs' descriptors are taken all the same, so that
 * the descriptors objects() hands out outlive it. `handed_out`: objects()
 * has been asked, so an object whose programs are not all held by
 * descriptors of their own (one could not be had) may have had one of its
 * own handed out, and stays.
 */
void Loader::Impl::release_program_objects(bool handed_out)
{
	std::vector<ProgramRef> loaded = row->programs;
	loaded.insert(loaded.end(), kCommonPrograms.begin(), kCommonPrograms.end());
	const auto kept = [&](ProgramRef p) {
		return std::any_of(kept_programs.begin(), kept_programs.end(),
				   [&](const auto &k) { return k.first == p; });
	};
	std::erase_if(program_objects, [&](const std::unique_ptr<Skeleton, SkeletonDeleter> &o) {
		std::vector<std::pair<ProgramRef, UniqueFd>> fds;
		for (ProgramRef p : loaded)
			if (const int fd = bpf_program__fd(o->progs.*p); fd >= 0 && !kept(p)) {
				if (handed_out)
					return false;
				UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 3));
				if (!dup)
					return false; // no descriptor left: the object keeps its own
				fds.emplace_back(p, std::move(dup));
			}
		std::move(fds.begin(), fds.end(), std::back_inserter(kept_programs));
		for (ProgramRef p : loaded)
			if (std::find(on_demand.begin(), on_demand.end(), o->progs.*p) != on_demand.end())
				return false;
		return true;
	});
}

void Loader::Impl::attach(LibbpfCapture &capture)
{
	if (row->needs_cgroup) {
		const std::string root = cgroup2_mount();
		cgroup = UniqueFd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		if (!cgroup)
			fail("attach", errno, fmt::format("cannot open the cgroup v2 root '{}'", root));
	}
	for (ProgramRef p : row->programs) {
		bpf_program *prog = program(p);
		if (bpf_program__fd(prog) >= 0 &&
		    std::find(on_demand.begin(), on_demand.end(), prog) == on_demand.end())
			attach_program(prog, capture);
	}
}

void Loader::Impl::attach_program(bpf_program *prog, LibbpfCapture &capture)
{
	const bpf_prog_type type = bpf_program__type(prog);
	const std::string_view section = bpf_program__section_name(prog);
	bpf_link *link = nullptr;
	// Cgroup links attach with multi-attach semantics, so other users'
	// cgroup programs keep working.
	if (type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR || type == BPF_PROG_TYPE_CGROUP_SOCK ||
	    type == BPF_PROG_TYPE_CGROUP_SKB)
		link = bpf_program__attach_cgroup(prog, cgroup.get());
	else if (section.rfind("kretprobe/", 0) == 0)
		link = attach_kretprobe(prog, std::string(section.substr(10)));
	else
		link = bpf_program__attach(prog);
	if (!link)
		fail("attach", errno,
		     fmt::format("cannot attach {} ({} backend)", bpf_program__name(prog),
				 to_string(row->backend)),
		     capture.tail(4));
	links.emplace_back(link);
}

// Return probes get room for kKretprobeMaxactive concurrent calls (see
// kretprobe.h); without tracefs, the kernel's default, said in the log.
bpf_link *Loader::Impl::attach_kretprobe(bpf_program *prog, const std::string &function)
{
	constexpr int kKretprobeMaxactive = 1024;
	try {
		auto probe = std::make_unique<TracefsKretprobe>(function, kKretprobeMaxactive);
		const int pfd = probe->release_perf_fd();
		bpf_link *link = bpf_program__attach_perf_event(prog, pfd);
		if (!link) {
			const int err = errno;
			close(pfd);
			errno = err;
			return nullptr;
		}
		kretprobes.push_back(std::move(probe));
		return link;
	} catch (const Error &e) {
		log(fmt::format("{}; {} gets the kernel's default room for concurrent calls", e.what(),
				function));
		if (kretprobe_note.empty()) {
			const std::string why = tracefs_denial();
			kretprobe_note = fmt::format("return probes with the kernel's default room for "
						     "concurrent calls: {}",
						     why.empty() ? e.what() : why);
		}
		return bpf_program__attach(prog);
	}
}

// What an attached object still uses: CAP_BPF where the kernel checks it on
// every bpf() call (before 6.5, while kernel.unprivileged_bpf_disabled is
// set: the tracer reads its maps until it stops); CAP_BPF and CAP_NET_ADMIN
// while the arrival hook waits to be attached; CAP_DAC_OVERRIDE if it took
// that to make tracefs return probes, which go away with the tracer.
void Loader::Impl::keep_needed_capabilities()
{
	if (!maps_need_cap_bpf)
		maps_need_cap_bpf = !maps_usable_without_cap_bpf(bpf_map__fd(skel->maps.flows));
	std::vector<int> keep;
	if (*maps_need_cap_bpf || !on_demand.empty())
		keep.push_back(kCapBpf);
	if (!on_demand.empty())
		keep.push_back(kCapNetAdmin);
	if (!kretprobes.empty() && geteuid() != 0)
		keep.push_back(kCapDacOverride);
	keep_only_capabilities(keep);
	log(fmt::format("capabilities kept once attached: {}", effective_capability_names()));
}

std::size_t Loader::Impl::count_loaded_programs() const
{
	std::size_t n = 0;
	bpf_program *prog;
	bpf_object__for_each_program(prog, skel->obj) n += bpf_program__fd(prog) >= 0;
	for (const auto &o : program_objects)
		bpf_object__for_each_program(prog, o->obj) n += bpf_program__fd(prog) >= 0;
	return n;
}

std::size_t Loader::Impl::count_created_maps() const
{
	std::size_t n = 0;
	bpf_map *map;
	bpf_object__for_each_map(map, skel->obj) n += bpf_map__fd(map) >= 0;
	return n;
}

void Loader::Impl::reset() noexcept
{
	links.clear();
	kretprobes.clear();
	kretprobe_note.clear();
	deferred.clear();
	on_demand.clear();
	cgroup.reset();
	kept_programs.clear();
	program_objects.clear();
	skel.reset();
	relocation_btf.reset();
	relocation_path.clear();
}

Loader::Loader(const Options &options) : impl_(std::make_unique<Impl>(options))
{
	Impl &d = *impl_;
	LibbpfCapture capture(d.options.log);
	std::optional<KernelFeatures> kernel;
	std::unique_ptr<RawBtf> raw;
	std::unique_ptr<btf, void (*)(btf *)> vmlinux(nullptr, btf__free);
	raise_memlock_limit(); // before any map is made (kernels that charge memlock)
	PremadeMaps premade(d.options);
	const auto candidates = d.candidates(kernel, raw, vmlinux);
	std::string tried; // backends `auto` tried first
	// The trial load: a backend the BTF says is there can still be refused
	// (an architecture without trampolines, a lockdown or security policy);
	// `auto` then falls through to the next one. A missing privilege is not
	// a kernel feature: `auto` takes the best backend the capabilities allow,
	// and if none, the privilege error of the best one stops the search.
	std::optional<std::size_t> lacking;
	bool attached = false;
	for (std::size_t i = 0; i < candidates.size() && !attached; i++) {
		d.row = candidates[i].first;
		const PrivilegeNeeds needs{d.row->needs_cgroup, d.row->needs_perf_events};
		if (const auto missing = missing_capabilities(needs); !missing.empty()) {
			lacking = lacking.value_or(i);
			const auto what = fmt::format("{} needs {}", to_string(d.row->backend),
						      fmt::join(missing, ", "));
			d.log(fmt::format("backend {}, which this process lacks", what));
			tried += what + "; ";
			continue;
		}
		try {
			if (d.row->quick_trial)
				if (const int err = d.row->quick_trial(*kernel))
					fail("load", err,
					     fmt::format("the kernel refused a one-instruction {} program",
							 to_string(d.row->backend)));
			d.open(raw.get());
			d.log("opened the BPF object");
			d.configure(*kernel);
			const int adopted = premade.adopt(d.skel->obj);
			if (adopted)
				d.log(fmt::format("{} maps made beside the start", adopted));
			d.load(capture);
			d.log(fmt::format("loaded {} programs{} and created {} maps",
					  d.count_loaded_programs(),
					  d.program_objects.empty() ? "" : " (verified on two threads)",
					  d.count_created_maps() - static_cast<std::size_t>(adopted)));
			d.attach(capture);
			d.log(fmt::format("attached {} programs", d.links.size()));
			d.release_program_objects();
			d.reason = tried + candidates[i].second;
			if (!d.kretprobe_note.empty())
				d.reason += "; " + d.kretprobe_note;
			attached = true;
		} catch (const Error &e) {
			d.reset();
			if (d.options.backend != Backend::automatic)
				throw Error(e.stage(), e.code().value(),
					    fmt::format("backend '{}' is not available on this kernel: {}",
							to_string(d.row->backend), e.what()));
			if (i + 1 == candidates.size() && !lacking)
				throw;
			d.log(fmt::format("backend {} failed its trial load: {}", to_string(d.row->backend),
					  e.what()));
			tried += fmt::format("{} refused ({}); ", to_string(d.row->backend),
					     e.code().message());
		}
	}
	if (!attached) {
		d.row = candidates[lacking.value()].first;
		check_privileges(to_string(d.row->backend), {d.row->needs_cgroup, d.row->needs_perf_events});
	}
	d.log(fmt::format("attached the {} backend ({})", to_string(d.row->backend), d.reason));
}

Loader::~Loader() = default;

Backend Loader::backend() const noexcept
{
	return impl_->row->backend;
}

const std::string &Loader::reason() const noexcept
{
	return impl_->reason;
}

KernelObjects Loader::objects() const noexcept
{
	const Skeleton &s = *impl_->skel;
	KernelObjects o;
	o.flows_fd = bpf_map__fd(s.maps.flows);
	o.closed_fd = bpf_map__fd(s.maps.closed);
	o.socks_fd = bpf_map__fd(s.maps.socks);
	o.stats_fd = bpf_map__fd(s.maps.stats);
	o.flush_prog_fd = impl_->program_fd(&Programs::flush_flow);
	o.check_prog_fd = impl_->program_fd(&Programs::check_socks);
	o.full_sweep_wanted = &s.bss->full_sweep_wanted;
	return o;
}

std::uint64_t Loader::program_misses() const noexcept
{
	std::uint64_t n = 0;
	// A program held by a descriptor of its own and by its object counts once.
	std::array<__u32, 64> seen{};
	std::size_t nseen = 0;
	const auto add = [&](int fd) {
		bpf_prog_info info{};
		__u32 len = sizeof(info);
		if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len) != 0 ||
		    std::find(seen.begin(), seen.begin() + nseen, info.id) != seen.begin() + nseen)
			return;
		if (nseen < seen.size())
			seen[nseen++] = info.id;
		n += info.recursion_misses;
	};
	bpf_program *prog;
	bpf_object__for_each_program(prog, impl_->skel->obj) add(bpf_program__fd(prog));
	for (const auto &o : impl_->program_objects)
		bpf_object__for_each_program(prog, o->obj) add(bpf_program__fd(prog));
	for (const auto &[ref, fd] : impl_->kept_programs)
		add(fd.get());
	return n;
}

int Loader::ring_fd() const noexcept
{
	return bpf_map__fd(impl_->skel->maps.events);
}

// A recv() without an address on an unconnected socket asked for the arrival
// hook: from now on such receives name their sender.
void Loader::attach_arrivals()
{
	Impl &d = *impl_;
	if (d.on_demand.empty())
		return;
	LibbpfCapture capture(d.options.log);
	for (bpf_program *prog : std::exchange(d.on_demand, {}))
		d.attach_program(prog, capture);
	d.release_program_objects(true); // the object that held the hook, now attached
	d.log("attached the arrival hook (cgroup_skb/ingress); such receives before it count as peer "
	      "unknown");
	if (d.privileges_dropped)
		d.keep_needed_capabilities();
}

void Loader::drop_privileges()
{
	impl_->privileges_dropped = true;
	impl_->keep_needed_capabilities();
}

void Loader::detach() noexcept
{
	impl_->links.clear();
	impl_->kretprobes.clear();
	impl_->on_demand.clear();
}

} // namespace udpintercept::detail
