// guest_probe: stand-in guest program for tests/vm/run-matrix.
//
// Checks, inside a kernel-matrix guest, the things the real integration tests
// rely on, and reports each as "@@RESULT <name> PASS|FAIL":
//   uname            kernel release (and that it matches $UDPI_VM_KERNEL)
//   btf_vmlinux      /sys/kernel/btf/vmlinux exists
//   unshare_netns    unshare(CLONE_NEWNET) gives a fresh namespace (lo down)
//   lo_up            lo brought up with ioctl(SIOCSIFFLAGS)
//   udp4_loopback    a datagram sent and received on 127.0.0.1
//   udp6_loopback    a datagram sent and received on ::1
//   bpf_map_array    raw bpf(BPF_MAP_CREATE) of an array map, update + lookup
//   bpf_prog_load    raw bpf(BPF_PROG_LOAD) of a 2-instruction socket filter
// Exit status: 0 if everything passed, 1 otherwise.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <unistd.h>

static int failures;

static void report(const char *name, int ok, const char *fmt, ...)
{
	va_list ap;
	printf("# %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n@@RESULT %s %s\n", name, ok ? "PASS" : "FAIL");
	fflush(stdout);
	if (!ok)
		failures++;
}

static int lo_flags(short *flags)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	int saved = errno;
	close(s);
	errno = saved;
	if (rc == 0)
		*flags = ifr.ifr_flags;
	return rc;
}

static int lo_up(char *err, size_t len)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		snprintf(err, len, "socket: %s", strerror(errno));
		return -1;
	}
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		snprintf(err, len, "SIOCGIFFLAGS: %s", strerror(errno));
		close(s);
		return -1;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
		snprintf(err, len, "SIOCSIFFLAGS: %s", strerror(errno));
		close(s);
		return -1;
	}
	close(s);
	short flags = 0;
	if (lo_flags(&flags) < 0 || !(flags & IFF_UP)) {
		snprintf(err, len, "lo still down after SIOCSIFFLAGS");
		return -1;
	}
	snprintf(err, len, "lo flags 0x%x", (unsigned)(unsigned short)flags);
	return 0;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

// Sends one datagram from one loopback socket to another and checks that it
// arrives intact and from the right port.
static int udp_roundtrip(int family, char *err, size_t len)
{
	struct sockaddr_storage rxa, txa, from;
	socklen_t alen, flen;
	int rx = -1, tx = -1, ok = -1;
	static const char msg[] = "udpintercept guest probe";
	char buf[128];

	memset(&rxa, 0, sizeof rxa);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&rxa;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		alen = sizeof *a;
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&rxa;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		alen = sizeof *a;
	}
	txa = rxa;

	rx = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	tx = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (rx < 0 || tx < 0) {
		snprintf(err, len, "socket: %s", strerror(errno));
		goto out;
	}
	if (bind(rx, (struct sockaddr *)&rxa, alen) < 0 || bind(tx, (struct sockaddr *)&txa, alen) < 0) {
		snprintf(err, len, "bind: %s", strerror(errno));
		goto out;
	}
	socklen_t l = sizeof rxa;
	if (getsockname(rx, (struct sockaddr *)&rxa, &l) < 0) {
		snprintf(err, len, "getsockname: %s", strerror(errno));
		goto out;
	}
	l = sizeof txa;
	if (getsockname(tx, (struct sockaddr *)&txa, &l) < 0) {
		snprintf(err, len, "getsockname: %s", strerror(errno));
		goto out;
	}
	struct timeval tv = {.tv_sec = 10};
	setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	ssize_t n = sendto(tx, msg, sizeof msg, 0, (struct sockaddr *)&rxa, alen);
	if (n != (ssize_t)sizeof msg) {
		snprintf(err, len, "sendto: %zd (%s)", n, n < 0 ? strerror(errno) : "short");
		goto out;
	}
	flen = sizeof from;
	n = recvfrom(rx, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
	if (n != (ssize_t)sizeof msg || memcmp(buf, msg, sizeof msg) != 0) {
		snprintf(err, len, "recvfrom: %zd (%s)", n, n < 0 ? strerror(errno) : "wrong payload");
		goto out;
	}
	if (from.ss_family != family || port_of(&from) != port_of(&txa)) {
		snprintf(err, len, "datagram from unexpected peer (port %u, want %u)", port_of(&from),
			 port_of(&txa));
		goto out;
	}
	snprintf(err, len, "%zd bytes port %u -> %u", n, port_of(&txa), port_of(&rxa));
	ok = 0;
out:
	if (rx >= 0)
		close(rx);
	if (tx >= 0)
		close(tx);
	return ok;
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

static int bpf_map_probe(char *err, size_t len)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = sizeof(uint32_t);
	attr.value_size = sizeof(uint64_t);
	attr.max_entries = 4;
	strncpy(attr.map_name, "udpi_probe", sizeof attr.map_name - 1);
	int fd = (int)sys_bpf(BPF_MAP_CREATE, &attr);
	if (fd < 0) {
		snprintf(err, len, "BPF_MAP_CREATE: %s", strerror(errno));
		return -1;
	}
	uint32_t key = 2;
	uint64_t val = 0x5544504901ULL, got = 0;
	memset(&attr, 0, sizeof attr);
	attr.map_fd = (uint32_t)fd;
	attr.key = (uint64_t)(uintptr_t)&key;
	attr.value = (uint64_t)(uintptr_t)&val;
	attr.flags = BPF_ANY;
	if (sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0) {
		snprintf(err, len, "BPF_MAP_UPDATE_ELEM: %s", strerror(errno));
		close(fd);
		return -1;
	}
	memset(&attr, 0, sizeof attr);
	attr.map_fd = (uint32_t)fd;
	attr.key = (uint64_t)(uintptr_t)&key;
	attr.value = (uint64_t)(uintptr_t)&got;
	if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &attr) < 0 || got != val) {
		snprintf(err, len, "BPF_MAP_LOOKUP_ELEM: %s (got 0x%llx)", strerror(errno),
			 (unsigned long long)got);
		close(fd);
		return -1;
	}
	snprintf(err, len, "array map fd %d, update+lookup ok", fd);
	close(fd);
	return 0;
}

static int bpf_prog_probe(char *err, size_t len)
{
	// r0 = 0; exit
	struct bpf_insn insns[2];
	memset(insns, 0, sizeof insns);
	insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
	insns[0].dst_reg = BPF_REG_0;
	insns[0].imm = 0;
	insns[1].code = BPF_JMP | BPF_EXIT;
	static char log[4096];
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.insn_cnt = 2;
	attr.license = (uint64_t)(uintptr_t) "GPL";
	attr.log_buf = (uint64_t)(uintptr_t)log;
	attr.log_size = sizeof log;
	attr.log_level = 1;
	strncpy(attr.prog_name, "udpi_probe", sizeof attr.prog_name - 1);
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd < 0) {
		snprintf(err, len, "BPF_PROG_LOAD: %s; log: %.200s", strerror(errno), log);
		return -1;
	}
	snprintf(err, len, "socket filter fd %d", fd);
	close(fd);
	return 0;
}

int main(void)
{
	char msg[512];
	struct utsname u;

	setvbuf(stdout, NULL, _IOLBF, 0);

	if (uname(&u) < 0) {
		report("uname", 0, "uname: %s", strerror(errno));
	} else {
		const char *label = getenv("UDPI_VM_KERNEL");
		int match = 1;
		if (label && *label) {
			size_t n = strlen(label);
			match = strncmp(u.release, label, n) == 0 && u.release[n] == '.';
		}
		report("uname", match, "release %s machine %s (UDPI_VM_KERNEL=%s)", u.release, u.machine,
		       label ? label : "(unset)");
	}

	report("btf_vmlinux", access("/sys/kernel/btf/vmlinux", R_OK) == 0, "/sys/kernel/btf/vmlinux: %s",
	       access("/sys/kernel/btf/vmlinux", R_OK) == 0 ? "present" : strerror(errno));

	if (unshare(CLONE_NEWNET) < 0) {
		report("unshare_netns", 0, "unshare(CLONE_NEWNET): %s", strerror(errno));
	} else {
		short flags = 0;
		int rc = lo_flags(&flags);
		report("unshare_netns", rc == 0 && !(flags & IFF_UP), "new netns, lo flags 0x%x%s",
		       (unsigned)(unsigned short)flags, rc == 0 ? "" : " (SIOCGIFFLAGS failed)");
	}

	int up = lo_up(msg, sizeof msg);
	report("lo_up", up == 0, "%s", msg);

	report("udp4_loopback", udp_roundtrip(AF_INET, msg, sizeof msg) == 0, "%s", msg);
	report("udp6_loopback", udp_roundtrip(AF_INET6, msg, sizeof msg) == 0, "%s", msg);
	report("bpf_map_array", bpf_map_probe(msg, sizeof msg) == 0, "%s", msg);
	report("bpf_prog_load", bpf_prog_probe(msg, sizeof msg) == 0, "%s", msg);

	return failures ? 1 : 0;
}
