// SPDX-License-Identifier: LGPL-2.1-or-later
// empty_probe: attaches do-nothing BPF programs to the tracepoint backend's
// hooks and holds them until SIGINT/SIGTERM, so that bench/run_bench can
// tell the cost of the hooks apart from the cost of udpintercept's work.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <getopt.h>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "args.h"
#include "kernel_probe.h"

#include "empty_probe.skel.h"

namespace {

constexpr const char *kUsage = R"(Usage: empty_probe [--with-cgroup | --like-default [--lazy-inexact]]
Attach BPF programs that do nothing to raw_tp/sock_send_length and
raw_tp/sock_recv_length (the hooks of udpintercept's tracepoint backend),
print "attached" and the hooks on stderr, and hold them until SIGINT or
SIGTERM.

      --with-cgroup   also attach empty cgroup/sendmsg4, sendmsg6, recvmsg4,
                      recvmsg6 and sock_release programs to the cgroup v2 root
      --like-default  instead, empty programs on exactly the hooks that
                      udpintercept's default mode attaches on this kernel (the
                      tracepoint backend, decided as its loader decides):
                      raw_tp/sock_recv_length, cgroup/recvmsg4, recvmsg6,
                      connect4, connect6, sock_release and sock_create; sends at
                      cgroup_skb/egress where cgroup_skb programs may read the
                      current task, else at raw_tp/sock_send_length with
                      cgroup/sendmsg4, sendmsg6 and raw_tp/net_dev_queue; the
                      arrival hook cgroup_skb/ingress; raw_tp/kfree_skb
                      (receive drops)
      --like-egress   the older name of --like-default
      --lazy-inexact  with --like-default: without the arrival hook
                      (cgroup_skb/ingress), as
                      `udpintercept --recv-peers lazy-inexact` starts
  -v, --verbose       show libbpf's warnings and the choices made
  -h, --help          this text

Needs CAP_BPF, CAP_PERFMON and (with --with-cgroup or --like-default)
CAP_NET_ADMIN: run as root.
)";

bool g_verbose = false;

int libbpf_print(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG || (!g_verbose && level == LIBBPF_INFO))
		return 0;
	return std::vfprintf(stderr, format, args);
}

struct SkelDeleter {
	void operator()(empty_probe_bpf *skel) const noexcept { empty_probe_bpf__destroy(skel); }
};

struct LinkDeleter {
	void operator()(bpf_link *link) const noexcept { bpf_link__destroy(link); }
};

int fail(const std::string &what, int err)
{
	const char *hint = (err == EPERM || err == EACCES)
				   ? " (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: run as root)"
				   : "";
	fmt::print(stderr, "empty_probe: {}: {}{}\n", what, std::strerror(err), hint);
	return 1;
}

// The hooks of udpintercept's default mode on the tracepoint backend, chosen
// by the same questions to the kernel as configure_tracepoint() in
// src/loader.cpp asks (keep the two in step): a floor on other hooks would
// not be the floor of what users run.
std::vector<bpf_program *> default_mode_programs(empty_probe_bpf &skel, bool lazy_inexact)
{
	auto &p = skel.progs;
	std::vector<bpf_program *> progs = {p.empty_recv_length, p.empty_recvmsg4, p.empty_recvmsg6,
					    p.empty_connect4,    p.empty_connect6, p.empty_sock_release,
					    p.empty_sock_create};

	bool egress_sees_task = true;
	for (const auto helper :
	     {BPF_FUNC_get_current_pid_tgid, BPF_FUNC_get_current_uid_gid, BPF_FUNC_get_current_cgroup_id,
	      BPF_FUNC_get_current_comm, BPF_FUNC_jiffies64})
		egress_sees_task = egress_sees_task &&
				   udpintercept::detail::helper_allowed(BPF_PROG_TYPE_CGROUP_SKB,
									BPF_CGROUP_INET_EGRESS, helper);
	if (egress_sees_task)
		progs.push_back(p.empty_egress);
	else
		progs.insert(progs.end(), {p.empty_send_length, p.empty_sendmsg4, p.empty_sendmsg6,
					   p.empty_net_dev_queue});
	if (g_verbose)
		fmt::print(stderr, "empty_probe: sends as udpintercept counts them here: {}\n",
			   egress_sees_task ? "cgroup_skb/egress"
					    : "sock_send_length, sendmsg4/6, net_dev_queue");

	// kfree_skb counts receive drops on every kernel, in either mode.
	progs.push_back(p.empty_kfree_skb);
	if (!lazy_inexact)
		progs.push_back(p.empty_ingress);
	return progs;
}

bool is_cgroup_program(bpf_program *prog)
{
	const bpf_prog_type type = bpf_program__type(prog);
	return type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR || type == BPF_PROG_TYPE_CGROUP_SOCK ||
	       type == BPF_PROG_TYPE_CGROUP_SKB;
}

} // namespace

int main(int argc, char **argv)
{
	static const option longopts[] = {
		{"with-cgroup", no_argument, nullptr, 'c'},
		{"like-default", no_argument, nullptr, 'e'},
		{"like-egress", no_argument, nullptr, 'e'},
		{"lazy-inexact", no_argument, nullptr, 'l'},
		{"verbose", no_argument, nullptr, 'v'},
		{"help", no_argument, nullptr, 'h'},
		{nullptr, 0, nullptr, 0},
	};
	bool with_cgroup = false, like_default = false, lazy_inexact = false;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vh", longopts, nullptr)) != -1) {
		switch (c) {
		case 'c':
			with_cgroup = true;
			break;
		case 'e':
			like_default = true;
			break;
		case 'l':
			lazy_inexact = true;
			break;
		case 'v':
			g_verbose = true;
			break;
		case 'h':
			fmt::print("{}", kUsage);
			return 0;
		default:
			bench::option_error("empty_probe", c, argv);
		}
	}
	if (with_cgroup && like_default)
		bench::usage_error("empty_probe", "--with-cgroup and --like-default exclude each other");
	if (lazy_inexact && !like_default)
		bench::usage_error("empty_probe", "--lazy-inexact goes with --like-default");
	bench::no_operands("empty_probe", argc, argv);
	libbpf_set_print(libbpf_print);

	// Blocked before attaching, so that a signal sent as soon as "attached"
	// is read still detaches cleanly.
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, nullptr);

	std::unique_ptr<empty_probe_bpf, SkelDeleter> skel(empty_probe_bpf__open());
	if (!skel)
		return fail("cannot open the embedded BPF object", errno);
	std::vector<bpf_program *> progs = {skel->progs.empty_send_length, skel->progs.empty_recv_length};
	if (with_cgroup)
		progs.insert(progs.end(), {skel->progs.empty_sendmsg4, skel->progs.empty_sendmsg6,
					   skel->progs.empty_recvmsg4, skel->progs.empty_recvmsg6,
					   skel->progs.empty_sock_release});
	if (like_default)
		progs = default_mode_programs(*skel, lazy_inexact);
	bpf_object *obj = skel->obj;
	bpf_program *each;
	bpf_object__for_each_program(each, obj)
	{
		bpf_program__set_autoload(each, std::find(progs.begin(), progs.end(), each) != progs.end());
	}
	if (int err = empty_probe_bpf__load(skel.get()); err)
		return fail("the kernel refused the empty programs (run with -v for libbpf's log)", -err);

	std::string root;
	int cgroup_fd = -1;
	if (std::any_of(progs.begin(), progs.end(), is_cgroup_program)) {
		root = udpintercept::detail::cgroup2_mount();
		if (root.empty()) {
			fmt::print(stderr,
				   "empty_probe: cgroup v2 is not mounted: mount it (mount -t cgroup2 "
				   "none /sys/fs/cgroup) or drop --with-cgroup/--like-default\n");
			return 1;
		}
		cgroup_fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cgroup_fd < 0)
			return fail(fmt::format("cannot open the cgroup v2 root '{}'", root), errno);
	}
	std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links;
	std::vector<std::string> hooks;
	for (bpf_program *prog : progs) {
		// A cgroup link attaches with multi-attach semantics: other programs on
		// the root cgroup keep running.
		bpf_link *link = is_cgroup_program(prog) ? bpf_program__attach_cgroup(prog, cgroup_fd)
							 : bpf_program__attach(prog);
		if (!link) {
			const int err = errno;
			if (cgroup_fd >= 0)
				close(cgroup_fd);
			const std::string where =
				is_cgroup_program(prog)
					? fmt::format("the cgroup v2 root '{}'", root)
					: "its tracepoint (sock_*_length need Linux 6.3 or later)";
			return fail(fmt::format("cannot attach {} ({}) to {}", bpf_program__name(prog),
						bpf_program__section_name(prog), where),
				    err);
		}
		links.emplace_back(link);
		hooks.emplace_back(bpf_program__section_name(prog));
	}
	if (cgroup_fd >= 0)
		close(cgroup_fd);

	fmt::print(stderr, "empty_probe: attached {} empty programs ({}){}; Ctrl-C to detach\n", links.size(),
		   fmt::join(hooks, ", "),
		   root.empty() ? std::string() : fmt::format(" (cgroup programs on {})", root));
	int sig = 0;
	sigwait(&mask, &sig);
	links.clear();
	fmt::print(stderr, "empty_probe: detached\n");
	return 0;
}
