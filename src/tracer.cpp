// SPDX-License-Identifier: LGPL-2.1-or-later
// The Tracer: the only file that includes the generated skeleton.
#include <udpintercept/tracer.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <mutex>
#include <numeric>
#include <optional>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "backend.h"
#include "decode.h"
#include "fd.h"
#include "kretprobe.h"
#include "privileges.h"
#include "udpintercept.skel.h"

namespace udpintercept {

using detail::UniqueFd;

namespace {

constexpr const char *kVmlinuxBtf = "/sys/kernel/btf/vmlinux";
constexpr long kCgroup2Magic = 0x63677270;

// ---- libbpf's messages ----
//
// libbpf prints through one process-wide function. While a Tracer is being
// built, its warnings (the verifier log among them) are kept so that a
// failure can say why; otherwise they go to Options::log if set.
std::mutex g_libbpf_mutex;
std::string *g_libbpf_capture = nullptr;
const std::function<void(std::string_view)> *g_libbpf_log = nullptr;

int libbpf_print(enum libbpf_print_level level, const char *format, va_list args) noexcept
{
	if (level == LIBBPF_DEBUG)
		return 0;
	// A verifier log arrives as one message of any length: format it whole.
	va_list again;
	va_copy(again, args);
	const int n = vsnprintf(nullptr, 0, format, args);
	std::string buf;
	try {
		buf.resize(n < 0 ? 0 : static_cast<size_t>(n));
	} catch (...) {
	}
	if (!buf.empty())
		vsnprintf(buf.data(), buf.size() + 1, format, again);
	va_end(again);
	try {
		if (g_libbpf_capture)
			g_libbpf_capture->append(buf);
		if (g_libbpf_log && *g_libbpf_log) {
			std::string_view line(buf);
			while (!line.empty() && line.back() == '\n')
				line.remove_suffix(1);
			(*g_libbpf_log)(line);
		}
	} catch (...) {
	}
	return n;
}

// Holds libbpf's output for the duration of a constructor.
class LibbpfCapture {
public:
	explicit LibbpfCapture(const std::function<void(std::string_view)> &log) : lock_(g_libbpf_mutex)
	{
		g_libbpf_capture = &text_;
		g_libbpf_log = &log;
		previous_ = libbpf_set_print(libbpf_print);
	}
	// The program's own libbpf printer comes back: this library may be unloaded.
	~LibbpfCapture()
	{
		libbpf_set_print(previous_);
		g_libbpf_capture = nullptr;
		g_libbpf_log = nullptr;
	}
	// The last lines, which hold the verifier's verdict.
	std::string tail(size_t lines = 12) const
	{
		size_t pos = text_.size();
		for (size_t i = 0; i <= lines && pos != std::string::npos && pos > 0; i++)
			pos = text_.rfind('\n', pos - 1);
		return pos == std::string::npos ? text_ : text_.substr(pos + 1);
	}

private:
	std::lock_guard<std::mutex> lock_;
	std::string text_;
	libbpf_print_fn_t previous_ = nullptr;
};

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
					what, detail::explain_denial(), tail));
	throw Error(stage, err, fmt::format("{}: {}{}", what, std::strerror(err), tail));
}

// ---- bookkeeping of flows in user space ----

struct KeyHash {
	size_t operator()(const udpi_flow_key &k) const noexcept
	{
		std::uint64_t h = k.sock_id * 0x9e3779b97f4a7c15ULL;
		std::uint64_t a, b;
		std::memcpy(&a, k.raddr, 8);
		std::memcpy(&b, k.raddr + 8, 8);
		h ^= a + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
		h ^= b + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
		h ^= (std::uint64_t(k.rport) << 16 | k.family) + (h << 6) + (h >> 2);
		return h;
	}
};

struct KeyEq {
	bool operator()(const udpi_flow_key &a, const udpi_flow_key &b) const noexcept
	{
		return std::memcmp(&a, &b, sizeof(a)) == 0;
	}
};

// What user space last reported of a flow.
struct FlowState {
	std::uint64_t reported_changes = 0;
	std::uint64_t last_emit_ns = 0; // CLOCK_MONOTONIC
	udpi_flow extra{};              // counts of deferred operations the kernel's entry lacks
};

} // namespace

struct SkelDeleter {
	void operator()(udpintercept_bpf *skel) const noexcept { udpintercept_bpf__destroy(skel); }
};

struct RingBufferDeleter {
	void operator()(ring_buffer *rb) const noexcept { ring_buffer__free(rb); }
};

struct LinkDeleter {
	void operator()(bpf_link *link) const noexcept { bpf_link__destroy(link); }
};

struct Tracer::Impl {
	Options options;
	Callback callback;
	Backend backend = Backend::automatic;
	std::string backend_reason;
	std::string backend_reason_prefix; // backends `auto` tried first
	bool kfree_skb_has_sk = false;

	std::unique_ptr<udpintercept_bpf, SkelDeleter> skel;
	UniqueFd cgroup;                         // the cgroup v2 root, for programs attached later
	std::vector<bpf_program *> arrival_hook; // attached on demand (tracepoint backend)
	bool arrivals_wanted = false;
	// Destroyed after the links that use them (members go in reverse order).
	std::vector<std::unique_ptr<detail::TracefsKretprobe>> kretprobes;
	std::string kretprobe_note; // why return probes could not be made through tracefs
	bool privileges_dropped = false;
	std::optional<bool> maps_need_cap_bpf;
	std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links;
	std::unique_ptr<ring_buffer, RingBufferDeleter> rb;
	UniqueFd epoll;
	UniqueFd timer;
	detail::WallClock clock;

	std::unordered_map<udpi_flow_key, FlowState, KeyHash, KeyEq> flows;
	std::unordered_map<std::uint64_t, std::vector<udpi_flow_key>> flows_of_socket;
	std::unordered_map<std::uint64_t, std::uint64_t> closed_sockets; // id -> sweep generation
	std::uint64_t sweep_generation = 0;
	std::uint64_t sweep_period_ns = 0;
	std::uint64_t last_sweep_ns = 0;

	Stats counted;     // what user space counts itself
	int delivered = 0; // by the current process()
	std::exception_ptr callback_error;
	bool stopped = false;

	explicit Impl(Options opts, Callback cb) : options(std::move(opts)), callback(std::move(cb)) {}

	struct Candidate {
		Backend backend;
		std::string why;
	};
	std::vector<Candidate> candidates();
	void open();
	void configure();
	void load(LibbpfCapture &capture);
	void attach(LibbpfCapture &capture);
	bpf_link *attach_kretprobe(bpf_program *prog, const std::string &function);
	void attach_program(bpf_program *prog, LibbpfCapture &capture);
	void attach_arrivals();
	void setup_delivery();
	void keep_needed_capabilities();

	static int on_record(void *ctx, void *data, size_t size) noexcept;
	void handle_record(const udpi_record &rec);
	void apply_deferred(const udpi_record &rec);
	void deliver(EventKind kind, const udpi_flow_key &key, const udpi_flow &flow);
	void remember(const udpi_flow_key &key);
	void close_socket(std::uint64_t sock_id, std::uint64_t close_ns);
	void sweep();
	void collect_deferred_closes();
	int process();
	void drain();
	void detach() noexcept;
	void stop();
	std::vector<std::uint64_t> stat_values(udpi_stat idx) const;
	std::uint64_t stat_sum(udpi_stat idx) const;
	std::uint64_t stat_max(udpi_stat idx) const;
	std::uint64_t kernel_flow_count() const;
	std::vector<std::pair<udpi_flow_key, udpi_flow>> read_flows() const;
	void log(const std::string &line) const
	{
		if (options.log)
			options.log(line);
	}
};

// ---- lifecycle: choose, open, configure, load, attach ----

std::vector<Tracer::Impl::Candidate> Tracer::Impl::candidates()
{
	if (access(kVmlinuxBtf, R_OK) != 0)
		throw Error(
			"btf", errno,
			fmt::format("no BTF at {}: udpintercept needs a kernel built with "
				    "CONFIG_DEBUG_INFO_BTF=y (every major distribution's kernel since 2020)",
				    kVmlinuxBtf));
	std::unique_ptr<btf, void (*)(btf *)> vmlinux(btf__load_vmlinux_btf(), btf__free);
	if (!vmlinux)
		fail("btf", errno, fmt::format("cannot read the kernel's BTF from {}", kVmlinuxBtf));
	const detail::KernelFeatures kernel(vmlinux.get());
	// kfree_skb names the receiving socket of a drop since 6.12.
	kfree_skb_has_sk = kernel.tracepoint_arity("kfree_skb") >= 4;

	std::vector<Candidate> out;
	std::vector<std::string> rejected;
	for (const auto &spec : detail::backend_table()) {
		if (options.backend != Backend::automatic && spec.backend != options.backend)
			continue;
		const auto avail = spec.probe(kernel);
		log(fmt::format("backend {}: {}", to_string(spec.backend), avail.why));
		if (avail.available)
			out.push_back({spec.backend, avail.why});
		else
			rejected.push_back(fmt::format("{}: {}", to_string(spec.backend), avail.why));
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

void Tracer::Impl::open()
{
	skel.reset(udpintercept_bpf__open());
	if (!skel)
		fail("open", errno, "cannot open the embedded BPF object");
}

void Tracer::Impl::configure()
{
	auto *ro = skel->rodata;
	ro->interval_ns = static_cast<__u64>(options.interval.count()) * 1000000ULL;
	ro->filter_pid = options.pid.value_or(0);
	ro->filter_uid = options.uid.value_or(0);
	ro->filter_uid_set = options.uid.has_value();
	ro->filter_port = options.port.value_or(0);
	ro->kfree_skb_has_sk = kfree_skb_has_sk;
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
					    *options.cgroup, detail::cgroup2_mount()));
		ro->filter_cgroup = st.st_ino; // a cgroup v2 directory's inode number is its id
	}

	// Maps only another backend's programs use shrink to their least (an LRU
	// map keeps a list per CPU).
	const auto least = static_cast<__u32>(std::max(1, libbpf_num_possible_cpus()));
	if (backend != Backend::kprobe)
		for (bpf_map *m : {skel->maps.kp_send4, skel->maps.kp_send6, skel->maps.kp_connect})
			bpf_map__set_max_entries(m, least);
	if (backend != Backend::tracepoint)
		for (bpf_map *m : {skel->maps.send_stash, skel->maps.recv_stash, skel->maps.rx_rings,
				   skel->maps.gso_notes})
			bpf_map__set_max_entries(m, least);
	// The tracepoint backend's peer stashes live in task storage where cgroup
	// programs may use it (a kernel-version question the verifier answers),
	// else in the LRU maps above. Task storage maps exist since 5.11: other
	// backends, which run on 5.10 too, do not create one.
	const auto sock_addr_may = [](bpf_func_id helper) {
		return detail::helper_allowed(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP4_RECVMSG,
					      helper);
	};
	const bool stash_in_task = backend == Backend::tracepoint &&
				   sock_addr_may(BPF_FUNC_task_storage_get) &&
				   sock_addr_may(BPF_FUNC_get_current_task_btf);
	ro->stash_in_task = stash_in_task;
	if (stash_in_task)
		for (bpf_map *m : {skel->maps.send_stash, skel->maps.recv_stash})
			bpf_map__set_max_entries(m, least);
	bpf_map__set_autocreate(skel->maps.task_stashes, backend == Backend::tracepoint);
	if (backend == Backend::tracepoint)
		log(fmt::format("peer stashes in {}", stash_in_task ? "task storage" : "LRU hash maps"));
	// The tracepoint backend counts sends in one cgroup_skb/egress program
	// where the kernel lets those see the current task (bpf_get_current_*),
	// else with the sendmsg hooks, sock_send_length and net_dev_queue.
	bool egress_sees_task = backend == Backend::tracepoint;
	for (const auto helper :
	     {BPF_FUNC_get_current_pid_tgid, BPF_FUNC_get_current_uid_gid, BPF_FUNC_get_current_cgroup_id,
	      BPF_FUNC_get_current_comm, BPF_FUNC_jiffies64})
		egress_sees_task = egress_sees_task && detail::helper_allowed(BPF_PROG_TYPE_CGROUP_SKB,
									      BPF_CGROUP_INET_EGRESS, helper);
	ro->send_at_egress = egress_sees_task && !options.sends_at_tracepoint;
	if (backend == Backend::tracepoint)
		log(ro->send_at_egress ? "sends counted at cgroup_skb/egress"
				       : "sends counted at sock_send_length (with cgroup sendmsg hooks and "
					 "net_dev_queue)");
	bpf_map__set_max_entries(skel->maps.flows, options.max_flows);
	bpf_map__set_max_entries(skel->maps.socks, options.max_sockets);
	bpf_map__set_max_entries(skel->maps.events, options.ring_buffer_bytes);

	const auto &spec = detail::backend_spec(backend);
	const auto among = [](std::span<const std::string_view> names, std::string_view name) {
		return std::find(names.begin(), names.end(), name) != names.end();
	};
	bpf_program *prog;
	bpf_object__for_each_program(prog, skel->obj)
	{
		const std::string_view name = bpf_program__name(prog);
		bool wanted = among(spec.programs, name);
		if (name == "tp_kfree_skb" && !kfree_skb_has_sk)
			wanted = false;
		if (among(ro->send_at_egress ? detail::tracepoint_send_programs()
					     : detail::egress_send_programs(),
			  name))
			wanted = false; // the send path not taken
		bpf_program__set_autoload(prog, wanted);
	}
}

void Tracer::Impl::load(LibbpfCapture &capture)
{
	if (int err = udpintercept_bpf__load(skel.get()); err)
		fail("load", -err,
		     fmt::format("the kernel refused the {} backend's BPF programs", to_string(backend)),
		     capture.tail());
}

void Tracer::Impl::attach(LibbpfCapture &capture)
{
	const auto &spec = detail::backend_spec(backend);
	if (spec.needs_cgroup) {
		const std::string root = detail::cgroup2_mount();
		cgroup = UniqueFd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		if (!cgroup)
			fail("attach", errno, fmt::format("cannot open the cgroup v2 root '{}'", root));
	}
	const auto arrivals = detail::arrival_programs();
	const bool arrivals_now = backend != Backend::tracepoint || options.recv_peers_from_start;
	skel->bss->arrivals_asked = arrivals_now;
	bpf_program *prog;
	bpf_object__for_each_program(prog, skel->obj)
	{
		if (!bpf_program__autoload(prog))
			continue;
		if (!arrivals_now &&
		    std::find(arrivals.begin(), arrivals.end(), bpf_program__name(prog)) != arrivals.end()) {
			arrival_hook.push_back(prog);
			continue;
		}
		attach_program(prog, capture);
	}
}

void Tracer::Impl::attach_program(bpf_program *prog, LibbpfCapture &capture)
{
	const bpf_prog_type type = bpf_program__type(prog);
	// Links attach with multi-attach semantics, so other users' cgroup
	// programs keep working.
	const std::string_view section = bpf_program__section_name(prog);
	bpf_link *link = nullptr;
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
				 to_string(backend)),
		     capture.tail(4));
	links.emplace_back(link);
}

// A recv() without an address on an unconnected socket asked for the arrival
// hook (UDPI_REC_WANT_ARRIVALS): from now on such receives name their sender.
void Tracer::Impl::attach_arrivals()
{
	arrivals_wanted = false;
	if (arrival_hook.empty())
		return;
	LibbpfCapture capture(options.log);
	for (bpf_program *prog : std::exchange(arrival_hook, {}))
		attach_program(prog, capture);
	log("a recv() without an address on an unconnected socket: attached the arrival hook "
	    "(cgroup_skb/ingress); such receives before it count as peer unknown");
	if (privileges_dropped)
		keep_needed_capabilities();
}

// What an attached tracer still uses: CAP_BPF where the kernel checks it on
// every bpf() call (before 6.5, while kernel.unprivileged_bpf_disabled is
// set: the tracer reads its maps until it stops); CAP_BPF and CAP_NET_ADMIN
// while the arrival hook waits to be attached; CAP_DAC_OVERRIDE if it took
// that to make tracefs return probes, which go away with the tracer.
void Tracer::Impl::keep_needed_capabilities()
{
	if (!maps_need_cap_bpf)
		maps_need_cap_bpf = !detail::maps_usable_without_cap_bpf(bpf_map__fd(skel->maps.flows));
	std::vector<int> keep;
	if (*maps_need_cap_bpf || !arrival_hook.empty())
		keep.push_back(detail::kCapBpf);
	if (!arrival_hook.empty())
		keep.push_back(detail::kCapNetAdmin);
	if (!kretprobes.empty() && geteuid() != 0)
		keep.push_back(detail::kCapDacOverride);
	detail::keep_only_capabilities(keep);
	log(fmt::format("capabilities kept once attached: {}", detail::effective_capability_names()));
}

// Return probes get room for kKretprobeMaxactive concurrent calls (see
// kretprobe.h); without tracefs, the kernel's default, said in the log.
bpf_link *Tracer::Impl::attach_kretprobe(bpf_program *prog, const std::string &function)
{
	constexpr int kKretprobeMaxactive = 1024;
	try {
		auto probe = std::make_unique<detail::TracefsKretprobe>(function, kKretprobeMaxactive);
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
			const std::string why = detail::tracefs_denial();
			kretprobe_note = fmt::format("return probes with the kernel's default room for "
						     "concurrent calls: {}",
						     why.empty() ? e.what() : why);
		}
		return bpf_program__attach(prog);
	}
}

void Tracer::Impl::setup_delivery()
{
	rb.reset(ring_buffer__new(bpf_map__fd(skel->maps.events), on_record, this, nullptr));
	if (!rb)
		fail("ring buffer", errno, "cannot map the ring buffer");

	const std::uint64_t interval_ns = static_cast<std::uint64_t>(options.interval.count()) * 1000000ULL;
	// Pending updates go out at most a quarter interval late.
	sweep_period_ns = std::clamp<std::uint64_t>(interval_ns / 4, 10000000ULL, 250000000ULL);
	if (!interval_ns)
		sweep_period_ns = 100000000ULL; // only snapshots the ring buffer lost are pending

	epoll = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
	timer = UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
	if (!epoll || !timer)
		fail("ring buffer", errno, "cannot create the tracer's epoll or timer fd");
	itimerspec its{};
	its.it_interval.tv_sec = static_cast<time_t>(sweep_period_ns / 1000000000ULL);
	its.it_interval.tv_nsec = static_cast<long>(sweep_period_ns % 1000000000ULL);
	its.it_value = its.it_interval;
	if (timerfd_settime(timer.get(), 0, &its, nullptr) != 0)
		fail("ring buffer", errno, "cannot arm the sweep timer");
	for (int fd : {ring_buffer__epoll_fd(rb.get()), timer.get()}) {
		epoll_event ev{};
		ev.events = EPOLLIN;
		ev.data.fd = fd;
		if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
			fail("ring buffer", errno, "cannot watch the ring buffer");
	}
	last_sweep_ns = detail::monotonic_ns();
}

// ---- delivery ----

int Tracer::Impl::on_record(void *ctx, void *data, size_t size) noexcept
{
	auto *self = static_cast<Impl *>(ctx);
	self->counted.records_received++;
	if (size < sizeof(udpi_record))
		return 0;
	try {
		udpi_record rec;
		std::memcpy(&rec, data, sizeof(rec));
		self->handle_record(rec);
		return 0;
	} catch (...) {
		// Carried across libbpf's C frames and rethrown by process().
		self->callback_error = std::current_exception();
		return -ECANCELED;
	}
}

void Tracer::Impl::remember(const udpi_flow_key &key)
{
	if (flows.try_emplace(key).second)
		flows_of_socket[key.sock_id].push_back(key);
}

void Tracer::Impl::deliver(EventKind kind, const udpi_flow_key &key, const udpi_flow &kernel_flow)
{
	udpi_flow flow = kernel_flow;
	if (auto it = flows.find(key); it != flows.end()) {
		flow.tx_bytes += it->second.extra.tx_bytes;
		flow.tx_packets += it->second.extra.tx_packets;
		flow.rx_bytes += it->second.extra.rx_bytes;
		flow.rx_packets += it->second.extra.rx_packets;
	}
	counted.events++;
	delivered++;
	if (callback)
		callback(detail::decode(kind, key, flow, clock));
}

// An operation the kernel could not add to its flow table: it enters the table
// from here if the flow is still missing, else its counts ride along in user
// space (the kernel's own additions to an entry cannot be merged atomically).
void Tracer::Impl::apply_deferred(const udpi_record &rec)
{
	counted.deferred_operations++;
	const int fd = bpf_map__fd(skel->maps.flows);
	remember(rec.key);
	FlowState &st = flows[rec.key];
	if (bpf_map_update_elem(fd, &rec.key, &rec.flow, BPF_NOEXIST) == 0) {
		deliver(EventKind::update, rec.key, rec.flow);
		st.reported_changes = std::max<std::uint64_t>(st.reported_changes, rec.flow.changes);
		return;
	}
	st.extra.tx_bytes += rec.flow.tx_bytes;
	st.extra.tx_packets += rec.flow.tx_packets;
	st.extra.rx_bytes += rec.flow.rx_bytes;
	st.extra.rx_packets += rec.flow.rx_packets;
	udpi_flow now{};
	if (bpf_map_lookup_elem(fd, &rec.key, &now) == 0)
		deliver(EventKind::update, rec.key, now);
}

void Tracer::Impl::handle_record(const udpi_record &rec)
{
	switch (rec.kind) {
	case UDPI_REC_SOCK_CLOSE:
		close_socket(rec.key.sock_id, detail::monotonic_ns());
		return;
	case UDPI_REC_DEFERRED:
		apply_deferred(rec);
		return;
	case UDPI_REC_WANT_ARRIVALS:
		arrivals_wanted = true; // attached by process(), outside the ring buffer's callback
		return;
	case UDPI_REC_NEW:
	case UDPI_REC_UPDATE:
	case UDPI_REC_CONNECT: {
		remember(rec.key);
		FlowState &st = flows[rec.key];
		// A sweep may already have reported a newer state: snapshots of a
		// flow never go backwards, and an unchanged one is not repeated.
		if (rec.kind != UDPI_REC_CONNECT && rec.flow.changes <= st.reported_changes)
			return;
		st.reported_changes = std::max<std::uint64_t>(st.reported_changes, rec.flow.changes);
		st.last_emit_ns = std::max<std::uint64_t>(st.last_emit_ns, rec.flow.last_emit_ns);
		deliver(rec.kind == UDPI_REC_CONNECT ? EventKind::connect : EventKind::update, rec.key,
			rec.flow);
		return;
	}
	default:
		return;
	}
}

void Tracer::Impl::close_socket(std::uint64_t sock_id, std::uint64_t close_ns)
{
	const int flows_fd = bpf_map__fd(skel->maps.flows);
	closed_sockets[sock_id] = sweep_generation;
	auto it = flows_of_socket.find(sock_id);
	if (it == flows_of_socket.end())
		return; // no flow known yet: the next sweep finds any in the kernel
	for (const auto &key : it->second) {
		udpi_flow flow{};
		if (bpf_map_lookup_elem(flows_fd, &key, &flow) != 0)
			continue;
		bpf_map_delete_elem(flows_fd, &key);
		flow.last_ns = std::max<std::uint64_t>(flow.last_ns, close_ns);
		deliver(EventKind::close, key, flow);
		flows.erase(key);
	}
	flows_of_socket.erase(it);
}

void Tracer::Impl::collect_deferred_closes()
{
	const int fd = bpf_map__fd(skel->maps.closed);
	std::uint64_t id = 0, next = 0, when = 0;
	std::vector<std::uint64_t> ids;
	const void *prev = nullptr;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		ids.push_back(next);
		id = next;
		prev = &id;
	}
	for (std::uint64_t sid : ids) {
		if (bpf_map_lookup_elem(fd, &sid, &when) != 0)
			continue;
		bpf_map_delete_elem(fd, &sid);
		counted.closes_deferred++;
		close_socket(sid, when);
	}
}

// Reports flows with changes the ring buffer did not carry within the
// interval (traffic that stopped, or snapshots that were dropped), adopts
// flows user space has not heard of, and closes those of closed sockets.
void Tracer::Impl::sweep()
{
	collect_deferred_closes();
	clock.calibrate();
	const std::uint64_t now = detail::monotonic_ns();
	const std::uint64_t interval_ns = static_cast<std::uint64_t>(options.interval.count()) * 1000000ULL;
	const int fd = bpf_map__fd(skel->maps.flows);

	for (const auto &[key, flow] : read_flows()) {
		const bool known = flows.count(key) != 0;
		if (!known && closed_sockets.count(key.sock_id)) {
			bpf_map_delete_elem(fd, &key);
			deliver(EventKind::close, key, flow);
			continue;
		}
		remember(key);
		FlowState &st = flows[key];
		if (known && flow.changes <= st.reported_changes)
			continue;
		if (known && now - std::max<std::uint64_t>(st.last_emit_ns, flow.last_emit_ns) < interval_ns)
			continue; // the kernel will send it, or the next sweep will
		if (known && !interval_ns && now - flow.last_ns < sweep_period_ns)
			continue; // per-operation mode: its snapshot may still be in the ring buffer
		st.reported_changes = flow.changes;
		st.last_emit_ns = now;
		deliver(flow.changes ? EventKind::update : EventKind::connect, key, flow);
	}
	// A closed socket's flows all existed when its close was recorded, so one
	// full sweep after it has seen every one of them.
	std::erase_if(closed_sockets, [&](const auto &kv) { return kv.second < sweep_generation; });
	sweep_generation++;
	last_sweep_ns = now;
}

int Tracer::Impl::process()
{
	delivered = 0;
	if (stopped)
		return 0;
	const int n = ring_buffer__consume(rb.get());
	if (callback_error) {
		auto err = std::exchange(callback_error, nullptr);
		std::rethrow_exception(err);
	}
	if (n < 0 && n != -ECANCELED && n != -EINTR)
		fail("ring buffer", -n, "cannot read the ring buffer");
	if (arrivals_wanted)
		attach_arrivals();
	std::uint64_t expirations;
	while (read(timer.get(), &expirations, sizeof(expirations)) > 0) {
	}
	if (detail::monotonic_ns() - last_sweep_ns >= sweep_period_ns)
		sweep();
	return delivered;
}

void Tracer::Impl::detach() noexcept
{
	links.clear();
	kretprobes.clear();
}

void Tracer::Impl::drain()
{
	// Everything the kernel queued before the detach.
	ring_buffer__consume(rb.get());
	if (callback_error) {
		auto err = std::exchange(callback_error, nullptr);
		std::rethrow_exception(err);
	}
}

void Tracer::Impl::stop()
{
	if (stopped)
		return;
	detach();
	stopped = true;
	delivered = 0;
	drain();
	collect_deferred_closes();
	clock.calibrate();
	for (const auto &[key, flow] : read_flows()) {
		if (closed_sockets.count(key.sock_id)) {
			deliver(EventKind::close, key, flow);
			continue;
		}
		deliver(EventKind::final, key, flow);
	}
	flows.clear();
	flows_of_socket.clear();
}

// One statistic's per-CPU values (empty if it cannot be read).
std::vector<std::uint64_t> Tracer::Impl::stat_values(udpi_stat idx) const
{
	const int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return {};
	std::vector<std::uint64_t> values(static_cast<size_t>(ncpu));
	__u32 key = idx;
	if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.stats), &key, values.data()) != 0)
		return {};
	return values;
}

std::uint64_t Tracer::Impl::stat_sum(udpi_stat idx) const
{
	const auto values = stat_values(idx);
	return std::accumulate(values.begin(), values.end(), std::uint64_t{0});
}

std::uint64_t Tracer::Impl::stat_max(udpi_stat idx) const
{
	const auto values = stat_values(idx);
	return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
}

// The flow table as the kernel holds it (not user space's view of it).
std::uint64_t Tracer::Impl::kernel_flow_count() const
{
	return stopped ? 0 : read_flows().size();
}

// Every entry of the flow table: in batches of hundreds per system call
// (BPF_MAP_LOOKUP_BATCH, 5.6+), else one key at a time.
std::vector<std::pair<udpi_flow_key, udpi_flow>> Tracer::Impl::read_flows() const
{
	const int fd = bpf_map__fd(skel->maps.flows);
	std::vector<std::pair<udpi_flow_key, udpi_flow>> out;
	std::size_t batch = 512;
	std::vector<udpi_flow_key> keys(batch);
	std::vector<udpi_flow> values(batch);
	__u32 in_batch = 0, out_batch = 0;
	bool first = true;
	for (;;) {
		__u32 count = static_cast<__u32>(batch);
		const int err = bpf_map_lookup_batch(fd, first ? nullptr : &in_batch, &out_batch, keys.data(),
						     values.data(), &count, nullptr);
		const int e = err ? errno : 0;
		for (__u32 i = 0; i < count; i++)
			out.emplace_back(keys[i], values[i]);
		if (!err) {
			in_batch = out_batch;
			first = false;
			continue;
		}
		if (e == ENOENT)
			return out;
		if (e == ENOSPC && batch < (1u << 20)) { // one hash bucket holds more than a batch
			batch *= 2;
			keys.resize(batch);
			values.resize(batch);
			continue;
		}
		if (first && count == 0)
			break; // no batch operations here: walk the keys
		return out;
	}
	udpi_flow_key cur{}, next{};
	const void *prev = nullptr;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		udpi_flow flow{};
		if (bpf_map_lookup_elem(fd, &next, &flow) == 0)
			out.emplace_back(next, flow);
		cur = next;
		prev = &cur;
	}
	return out;
}

// ---- public API ----

Tracer::Tracer(Options options, Callback callback)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(callback)))
{
	Impl &d = *impl_;
	d.options.validate();
	LibbpfCapture capture(d.options.log);
	const auto candidates = d.candidates();
	detail::raise_memlock_limit();
	// The trial load: a backend the BTF says is there can still be refused
	// (an architecture without trampolines, a lockdown or security policy);
	// `auto` then falls through to the next one. A missing privilege is not
	// a kernel feature: `auto` takes the best backend the capabilities allow,
	// and if none, the privilege error of the best one stops the search.
	std::optional<std::size_t> lacking;
	bool attached = false;
	for (std::size_t i = 0; i < candidates.size() && !attached; i++) {
		d.backend = candidates[i].backend;
		d.backend_reason = candidates[i].why;
		const auto &spec = detail::backend_spec(d.backend);
		if (const auto missing =
			    detail::missing_capabilities({spec.needs_cgroup, spec.needs_perf_events});
		    !missing.empty()) {
			lacking = lacking.value_or(i);
			const auto what =
				fmt::format("{} needs {}", to_string(d.backend), fmt::join(missing, ", "));
			d.log(fmt::format("backend {}, which this process lacks", what));
			d.backend_reason_prefix += what + "; ";
			continue;
		}
		try {
			d.open();
			d.configure();
			d.load(capture);
			d.attach(capture);
			attached = true;
		} catch (const Error &e) {
			d.links.clear();
			d.kretprobes.clear();
			d.kretprobe_note.clear();
			d.arrival_hook.clear();
			d.skel.reset();
			if (d.options.backend != Backend::automatic)
				throw Error("backend", e.code().value(),
					    fmt::format("backend '{}' is not available on this kernel: {}",
							to_string(d.backend), e.what()));
			if (i + 1 == candidates.size() && !lacking)
				throw;
			d.log(fmt::format("backend {} failed its trial load: {}", to_string(d.backend),
					  e.what()));
			d.backend_reason_prefix +=
				fmt::format("{} refused ({}); ", to_string(d.backend), e.code().message());
		}
	}
	if (!attached) {
		const auto &best = detail::backend_spec(candidates[lacking.value()].backend);
		detail::check_privileges(to_string(best.backend),
					 {best.needs_cgroup, best.needs_perf_events});
	}
	if (!d.kretprobe_note.empty())
		d.backend_reason += "; " + d.kretprobe_note;
	d.backend_reason = d.backend_reason_prefix + d.backend_reason;
	d.setup_delivery();
	d.log(fmt::format("attached the {} backend ({})", to_string(d.backend), d.backend_reason));
}

Tracer::~Tracer() = default;
Tracer::Tracer(Tracer &&) noexcept = default;
Tracer &Tracer::operator=(Tracer &&) noexcept = default;

void Tracer::on_event(Callback callback)
{
	impl_->callback = std::move(callback);
}

int Tracer::poll(std::chrono::milliseconds timeout)
{
	if (impl_->stopped)
		return 0;
	epoll_event ev[2];
	const int n = epoll_wait(impl_->epoll.get(), ev, 2,
				 timeout.count() < 0 ? -1 : static_cast<int>(timeout.count()));
	if (n < 0 && errno != EINTR)
		fail("ring buffer", errno, "cannot wait for the ring buffer");
	return impl_->process();
}

int Tracer::fd() const noexcept
{
	return impl_->epoll.get();
}

int Tracer::process()
{
	return impl_->process();
}

void Tracer::stop()
{
	impl_->stop();
}

void Tracer::drop_privileges()
{
	impl_->privileges_dropped = true;
	impl_->keep_needed_capabilities();
}

Backend Tracer::backend() const noexcept
{
	return impl_->backend;
}

const std::string &Tracer::backend_reason() const noexcept
{
	return impl_->backend_reason;
}

Stats Tracer::stats() const
{
	Stats s = impl_->counted;
	s.lost = impl_->stat_sum(UDPI_STAT_RB_DROP_UPDATE);
	s.flows_untracked = impl_->stat_sum(UDPI_STAT_FLOWS_UNTRACKED);
	s.untracked_packets = impl_->stat_sum(UDPI_STAT_UNTRACKED_PACKETS);
	s.untracked_bytes = impl_->stat_sum(UDPI_STAT_UNTRACKED_BYTES);
	s.sockets_untracked = impl_->stat_sum(UDPI_STAT_SOCKS_UNTRACKED);
	s.peer_unknown = impl_->stat_sum(UDPI_STAT_PEER_UNKNOWN);
	s.records_sent = impl_->stat_sum(UDPI_STAT_RB_SUBMITTED);
	s.insert_failures = impl_->stat_sum(UDPI_STAT_INSERT_FAILED);
	s.insert_last_errno = static_cast<int>(impl_->stat_max(UDPI_STAT_INSERT_LAST_ERRNO));
	s.flows_active = impl_->kernel_flow_count();
	return s;
}

} // namespace udpintercept
