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

#include "kernel_probe.h"

#include "empty_probe.skel.h"

namespace {

constexpr const char *kUsage = R"(Usage: empty_probe [--with-cgroup | --like-egress]
Attach BPF programs that do nothing to raw_tp/sock_send_length and
raw_tp/sock_recv_length (the hooks of udpintercept's tracepoint backend),
print "attached" on stderr, and hold them until SIGINT or SIGTERM.

      --with-cgroup  also attach empty cgroup/sendmsg4, sendmsg6, recvmsg4,
                     recvmsg6 and sock_release programs to the cgroup v2 root
      --like-egress  the hooks the tracepoint backend's default uses where it
                     counts sends at cgroup_skb/egress: raw_tp/sock_recv_length,
                     cgroup_skb/egress, cgroup/recvmsg4, recvmsg6 and
                     sock_release (no sock_send_length, no sendmsg hooks)
  -v, --verbose      show libbpf's warnings
  -h, --help         this text

Needs CAP_BPF, CAP_PERFMON and (with --with-cgroup or --like-egress)
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

} // namespace

int main(int argc, char **argv)
{
	static const option longopts[] = {
		{"with-cgroup", no_argument, nullptr, 'c'},
		{"like-egress", no_argument, nullptr, 'e'},
		{"verbose", no_argument, nullptr, 'v'},
		{"help", no_argument, nullptr, 'h'},
		{nullptr, 0, nullptr, 0},
	};
	bool with_cgroup = false, like_egress = false;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", longopts, nullptr)) != -1) {
		switch (c) {
		case 'c':
			with_cgroup = true;
			break;
		case 'e':
			like_egress = true;
			break;
		case 'v':
			g_verbose = true;
			break;
		case 'h':
			fmt::print("{}", kUsage);
			return 0;
		default:
			fmt::print(stderr, "empty_probe: unknown option '{}'\nTry 'empty_probe --help'.\n",
				   argv[optind - 1]);
			return 2;
		}
	}
	if (with_cgroup && like_egress) {
		fmt::print(stderr, "empty_probe: --with-cgroup and --like-egress exclude each other\n");
		return 2;
	}
	if (optind < argc) {
		fmt::print(stderr, "empty_probe: unexpected argument '{}'\nTry 'empty_probe --help'.\n",
			   argv[optind]);
		return 2;
	}
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
	std::vector<bpf_program *> tp_progs = {skel->progs.empty_send_length, skel->progs.empty_recv_length};
	std::vector<bpf_program *> cgroup_progs;
	if (with_cgroup)
		cgroup_progs = {skel->progs.empty_sendmsg4, skel->progs.empty_sendmsg6,
				skel->progs.empty_recvmsg4, skel->progs.empty_recvmsg6,
				skel->progs.empty_sock_release};
	if (like_egress) {
		tp_progs = {skel->progs.empty_recv_length};
		cgroup_progs = {skel->progs.empty_egress, skel->progs.empty_recvmsg4,
				skel->progs.empty_recvmsg6, skel->progs.empty_sock_release};
	}
	bpf_object *obj = skel->obj;
	bpf_program *each;
	bpf_object__for_each_program(each, obj)
	{
		const auto in = [&](const std::vector<bpf_program *> &v) {
			return std::find(v.begin(), v.end(), each) != v.end();
		};
		bpf_program__set_autoload(each, in(tp_progs) || in(cgroup_progs));
	}
	if (int err = empty_probe_bpf__load(skel.get()); err)
		return fail("the kernel refused the empty programs (run with -v for libbpf's log)", -err);

	std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links;
	for (bpf_program *prog : tp_progs) {
		bpf_link *link = bpf_program__attach(prog);
		if (!link)
			return fail(
				fmt::format("cannot attach {} (the sock_*_length tracepoints need Linux 6.3 "
					    "or later)",
					    bpf_program__name(prog)),
				errno);
		links.emplace_back(link);
	}
	std::string root;
	if (!cgroup_progs.empty()) {
		root = udpintercept::detail::cgroup2_mount();
		if (root.empty()) {
			fmt::print(stderr,
				   "empty_probe: cgroup v2 is not mounted: mount it (mount -t cgroup2 "
				   "none /sys/fs/cgroup) or drop --with-cgroup/--like-egress\n");
			return 1;
		}
		const int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return fail(fmt::format("cannot open the cgroup v2 root '{}'", root), errno);
		for (bpf_program *prog : cgroup_progs) {
			// A link attaches with multi-attach semantics: other programs on the
			// root cgroup keep running.
			bpf_link *link = bpf_program__attach_cgroup(prog, fd);
			if (!link) {
				const int err = errno;
				close(fd);
				return fail(fmt::format("cannot attach {} to '{}'", bpf_program__name(prog),
							root),
					    err);
			}
			links.emplace_back(link);
		}
		close(fd);
	}

	fmt::print(stderr, "empty_probe: attached {} empty programs{}; Ctrl-C to detach\n", links.size(),
		   cgroup_progs.empty() ? std::string() : fmt::format(" (cgroup programs on {})", root));
	int sig = 0;
	sigwait(&mask, &sig);
	links.clear();
	fmt::print(stderr, "empty_probe: detached\n");
	return 0;
}
