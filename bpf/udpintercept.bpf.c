// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * udpintercept's BPF programs: thin entry points per backend around the
 * shared handlers of handlers.bpf.h. User space loads only the programs of
 * the backend it chose (see src/backend.cpp's table).
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "handlers.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Peers stashed by the cgroup sock_addr hooks for the operation that follows
 * in the same thread: sendmsg4/6 run inside udp_sendmsg before the send,
 * recvmsg4/6 inside udp_recvmsg after the copy, both before the
 * sock_{send,recv}_length tracepoint of the same call. Keyed by thread: the
 * task can migrate between CPUs in between (udp_sendmsg may sleep).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udpi_peer_stash);
} send_stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udpi_peer_stash);
} recv_stash SEC(".maps");

/* One slot per CPU to turn a verifier-typed socket pointer into a plain value. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ptr_scratch SEC(".maps");

/*
 * cgroup hooks hold the socket as PTR_TO_SOCKET, on which the verifier
 * forbids the arithmetic a CO-RE read needs. Storing it in a map value and
 * loading it back yields the same address as a scalar (allowed with
 * CAP_PERFMON, which tracing needs anyway); it is only ever read through
 * bpf_probe_read_kernel.
 */
static __always_inline struct sock *launder_sk(void *p)
{
	__u32 zero = 0;
	__u64 *slot = bpf_map_lookup_elem(&ptr_scratch, &zero);

	if (!slot)
		return NULL;
	*(volatile __u64 *)slot = (__u64)p;
	return (struct sock *)*(volatile __u64 *)slot;
}

static __always_inline bool sk_is_udp(struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != UDPI_AF_INET && family != UDPI_AF_INET6)
		return false;
	return udpi_sk_protocol(sk) == UDPI_IPPROTO_UDP && udpi_sk_type(sk) == UDPI_SOCK_DGRAM;
}

/* Takes the stashed peer if it was left for this socket by this thread. */
static __always_inline bool take_stash(void *map, struct sock *sk, struct udpi_peer *p)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct udpi_peer_stash *st = bpf_map_lookup_elem(map, &tid);

	if (!st || st->sk != (__u64)sk)
		return false;
	__builtin_memcpy(p->addr, st->addr, 16);
	p->port = st->port;
	p->family = st->family;
	st->sk = 0;
	return true;
}

/* ---- hook bodies shared by the fentry and kprobe backends ---- */

/* The destination a sendmsg was given (msg_name: a kernel copy), if any. */
static __always_inline bool msg_peer(struct msghdr *msg, struct udpi_peer *p)
{
	void *name = BPF_CORE_READ(msg, msg_name);
	struct sockaddr_in6 sin6;
	__u16 family;

	if (!name || bpf_probe_read_kernel(&family, sizeof(family), name))
		return false;
	if (family == UDPI_AF_INET) {
		struct sockaddr_in sin;

		if (bpf_probe_read_kernel(&sin, sizeof(sin), name))
			return false;
		set_v4(p->addr, sin.sin_addr.s_addr);
		p->port = bpf_ntohs(sin.sin_port);
		p->family = UDPI_AF_INET;
		return true;
	}
	if (family != UDPI_AF_INET6 || bpf_probe_read_kernel(&sin6, sizeof(sin6), name))
		return false;
	set_v6(p->addr, &p->family, sin6.sin6_addr.in6_u.u6_addr32);
	p->port = bpf_ntohs(sin6.sin6_port);
	return true;
}

/*
 * udp_sendmsg()/udpv6_sendmsg() returned `ret` for `msg` on `sk`.
 * udpv6_sendmsg() hands IPv4 and IPv4-mapped destinations to udp_sendmsg()
 * (net/ipv6/udp.c, "do_udp_sendmsg"), which counts them: the outer call
 * (`v6_outer`) must not count them again.
 */
static __always_inline void on_udp_sendmsg(struct sock *sk, const struct udpi_peer *given, int ret,
					   bool v6_outer)
{
	struct udpi_peer p = {};

	if (ret < 0 || task_filtered_out())
		return; /* refused sends count nothing */
	if (given)
		p = *given;
	else if (!sk_connected_peer(sk, &p))
		return;
	if (v6_outer && p.family == UDPI_AF_INET)
		return;
	handle_count(sk, &p, (__u64)ret, 1, true);
}

/* The sender of a received datagram, from its IP and UDP headers. */
static __always_inline bool skb_source(struct sk_buff *skb, struct udpi_peer *p)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct udphdr uh;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return false;
	version >>= 4;
	if (version == 4) {
		struct iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh))
			return false;
		set_v4(p->addr, iph.saddr);
		p->family = UDPI_AF_INET;
	} else if (version == 6) {
		struct ipv6hdr ip6h;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return false;
		set_v6(p->addr, &p->family, ip6h.saddr.in6_u.u6_addr32);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&uh, sizeof(uh), head + th))
		return false;
	p->port = bpf_ntohs(uh.source);
	return true;
}

/*
 * skb_consume_udp(sk, skb, len) ends every datagram read by udp_recvmsg()
 * and udpv6_recvmsg() with len = what the call returns (the copied bytes,
 * or the datagram's length under MSG_TRUNC), negated when MSG_PEEK left the
 * datagram queued. An entry hook sees the result without a return probe, so
 * many threads blocked in recv() cannot exhaust kretprobe instances. A peek
 * of a zero-length datagram also passes 0: the peek's extra reference on the
 * skb tells it apart.
 */
static __always_inline void on_skb_consume_udp(struct sock *sk, struct sk_buff *skb, int len)
{
	struct udpi_peer p = {};

	if (len < 0 || task_filtered_out())
		return;
	if (len == 0 && BPF_CORE_READ(skb, users.refs.counter) > 1)
		return;
	if (!skb_source(skb, &p) && !sk_connected_peer(sk, &p))
		return;
	handle_count(sk, &p, (__u64)len, 1, false);
}

/* ip4/ip6_datagram_connect() succeeded: the socket has its peer and local port. */
static __always_inline void on_datagram_connect(struct sock *sk, int ret)
{
	struct udpi_peer p = {};

	if (ret || udpi_sk_protocol(sk) != UDPI_IPPROTO_UDP || task_filtered_out())
		return; /* raw and ping sockets share these functions */
	if (sk_connected_peer(sk, &p))
		handle_connect(sk, &p);
}

/* ---- fentry backend: BPF trampolines ---- */

SEC("fexit/udp_sendmsg")
int BPF_PROG(fx_udp_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	struct udpi_peer p = {};
	bool given = msg_peer(msg, &p);

	on_udp_sendmsg(sk, given ? &p : NULL, ret, false);
	return 0;
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fx_udpv6_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	struct udpi_peer p = {};
	bool given = msg_peer(msg, &p);

	on_udp_sendmsg(sk, given ? &p : NULL, ret, true);
	return 0;
}

SEC("fentry/skb_consume_udp")
int BPF_PROG(fe_skb_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	on_skb_consume_udp(sk, skb, len);
	return 0;
}

SEC("fexit/ip4_datagram_connect")
int BPF_PROG(fx_ip4_datagram_connect, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	on_datagram_connect(sk, ret);
	return 0;
}

SEC("fexit/ip6_datagram_connect")
int BPF_PROG(fx_ip6_datagram_connect, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	on_datagram_connect(sk, ret);
	return 0;
}

/*
 * Closes: sk_common_release() calls sk_prot->destroy, udp_destroy_sock() or
 * udpv6_destroy_sock() (the latter does not call the former), for every
 * UDP socket. The seed's udp_destruct_sock hook misses IPv6 sockets since
 * udpv6_destruct_sock() was added (6.1 and stable backports) and is static
 * on current kernels.
 */
SEC("fentry/udp_destroy_sock")
int BPF_PROG(fe_udp_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

SEC("fentry/udpv6_destroy_sock")
int BPF_PROG(fe_udpv6_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

/* ---- kprobe backend: the same hooks through kprobes ---- */

/*
 * Arguments a kprobe saw, for the kretprobe of the same call. One map per
 * function: udpv6_sendmsg() nests udp_sendmsg() in the same thread.
 */
struct kp_send_args {
	__u64 sk;
	struct udpi_peer peer;
	bool given;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_send_args);
} kp_send4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_send_args);
} kp_send6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} kp_connect SEC(".maps");

static __always_inline void kp_send_enter(void *map, struct sock *sk, struct msghdr *msg)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct kp_send_args a = {};

	a.sk = (__u64)sk;
	a.given = msg_peer(msg, &a.peer);
	bpf_map_update_elem(map, &tid, &a, BPF_ANY);
}

static __always_inline void kp_send_exit(void *map, int ret, bool v6_outer)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct kp_send_args *a = bpf_map_lookup_elem(map, &tid);

	if (!a)
		return;
	on_udp_sendmsg((struct sock *)a->sk, a->given ? &a->peer : NULL, ret, v6_outer);
	bpf_map_delete_elem(map, &tid);
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(kp_udp_sendmsg, struct sock *sk, struct msghdr *msg)
{
	kp_send_enter(&kp_send4, sk, msg);
	return 0;
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(kr_udp_sendmsg, int ret)
{
	kp_send_exit(&kp_send4, ret, false);
	return 0;
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(kp_udpv6_sendmsg, struct sock *sk, struct msghdr *msg)
{
	kp_send_enter(&kp_send6, sk, msg);
	return 0;
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(kr_udpv6_sendmsg, int ret)
{
	kp_send_exit(&kp_send6, ret, true);
	return 0;
}

SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(kp_skb_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	on_skb_consume_udp(sk, skb, len);
	return 0;
}

static __always_inline void kp_connect_enter(struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 skaddr = (__u64)sk;

	bpf_map_update_elem(&kp_connect, &tid, &skaddr, BPF_ANY);
}

static __always_inline void kp_connect_exit(int ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 *skaddr = bpf_map_lookup_elem(&kp_connect, &tid);

	if (!skaddr)
		return;
	on_datagram_connect((struct sock *)*skaddr, ret);
	bpf_map_delete_elem(&kp_connect, &tid);
}

SEC("kprobe/ip4_datagram_connect")
int BPF_KPROBE(kp_ip4_datagram_connect, struct sock *sk)
{
	kp_connect_enter(sk);
	return 0;
}

SEC("kretprobe/ip4_datagram_connect")
int BPF_KRETPROBE(kr_ip4_datagram_connect, int ret)
{
	kp_connect_exit(ret);
	return 0;
}

SEC("kprobe/ip6_datagram_connect")
int BPF_KPROBE(kp_ip6_datagram_connect, struct sock *sk)
{
	kp_connect_enter(sk);
	return 0;
}

SEC("kretprobe/ip6_datagram_connect")
int BPF_KRETPROBE(kr_ip6_datagram_connect, int ret)
{
	kp_connect_exit(ret);
	return 0;
}

SEC("kprobe/udp_destroy_sock")
int BPF_KPROBE(kp_udp_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

SEC("kprobe/udpv6_destroy_sock")
int BPF_KPROBE(kp_udpv6_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

/* ---- tracepoint backend: raw tracepoints + cgroup hooks (kernel >= 6.3) ---- */

/* sock_sendmsg_nosec(): trace_sock_send_length(sk, ret, 0) after every send. */
SEC("raw_tp/sock_send_length")
int BPF_PROG(tp_send_length, struct sock *sk, int ret, int flags)
{
	struct udpi_peer p = {};

	if (!sk_is_udp(sk) || task_filtered_out())
		return 0;
	/* Consume the stash even for a refused send, so it cannot go stale. */
	if (!take_stash(&send_stash, sk, &p) && !sk_connected_peer(sk, &p))
		return 0;
	if (ret < 0)
		return 0; /* refused sends count nothing */
	handle_count(sk, &p, (__u64)ret, 1, true);
	return 0;
}

/* sock_recvmsg_nosec(): trace_sock_recv_length(sk, ret, flags) after every receive. */
SEC("raw_tp/sock_recv_length")
int BPF_PROG(tp_recv_length, struct sock *sk, int ret, int flags)
{
	struct udpi_peer p = {};
	bool have;

	if (!sk_is_udp(sk) || task_filtered_out())
		return 0;
	have = take_stash(&recv_stash, sk, &p);
	if (ret < 0 || (flags & (UDPI_MSG_PEEK | UDPI_MSG_ERRQUEUE)))
		return 0; /* errors, peeks and the error queue consume no datagram */
	if (!have && !sk_connected_peer(sk, &p)) {
		/* recv() without an address on an unconnected socket */
		stat_add(UDPI_STAT_PEER_UNKNOWN, 1);
		p.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	}
	handle_count(sk, &p, (__u64)ret, 1, false);
	return 0;
}

static __always_inline void stash_v4(void *map, struct bpf_sock_addr *ctx)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct udpi_peer_stash st = {};

	/* The sock pointer is only a key here, never dereferenced. */
	st.sk = (__u64)ctx->sk;
	set_v4(st.addr, ctx->user_ip4);
	st.port = bpf_ntohs((__u16)ctx->user_port);
	st.family = UDPI_AF_INET;
	bpf_map_update_elem(map, &tid, &st, BPF_ANY);
}

static __always_inline void stash_v6(void *map, struct bpf_sock_addr *ctx)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct udpi_peer_stash st = {};
	__u32 a[4];

	st.sk = (__u64)ctx->sk;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	set_v6(st.addr, &st.family, a);
	st.port = bpf_ntohs((__u16)ctx->user_port);
	bpf_map_update_elem(map, &tid, &st, BPF_ANY);
}

/* cgroup programs on the root cgroup see every process: always allow (return 1). */
SEC("cgroup/sendmsg4")
int cg_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v4(&send_stash, ctx);
	return 1;
}

SEC("cgroup/sendmsg6")
int cg_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v6(&send_stash, ctx);
	return 1;
}

SEC("cgroup/recvmsg4")
int cg_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v4(&recv_stash, ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int cg_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v6(&recv_stash, ctx);
	return 1;
}

/* connect4/6 run before the kernel sets the peer: the flow is born here. */
SEC("cgroup/connect4")
int cg_connect4(struct bpf_sock_addr *ctx)
{
	struct udpi_peer p = {};
	struct sock *sk;

	if (ctx->protocol != UDPI_IPPROTO_UDP || task_filtered_out())
		return 1;
	set_v4(p.addr, ctx->user_ip4);
	p.port = bpf_ntohs((__u16)ctx->user_port);
	p.family = UDPI_AF_INET;
	sk = launder_sk(ctx->sk);
	if (p.port && sk)
		handle_connect(sk, &p);
	return 1;
}

SEC("cgroup/connect6")
int cg_connect6(struct bpf_sock_addr *ctx)
{
	struct udpi_peer p = {};
	struct sock *sk;
	__u32 a[4];

	if (ctx->protocol != UDPI_IPPROTO_UDP || task_filtered_out())
		return 1;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	set_v6(p.addr, &p.family, a);
	p.port = bpf_ntohs((__u16)ctx->user_port);
	sk = launder_sk(ctx->sk);
	if (p.port && sk)
		handle_connect(sk, &p);
	return 1;
}

/* Fires for every UDP socket's release, also at process exit. */
SEC("cgroup/sock_release")
int cg_sock_release(struct bpf_sock *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP)
		handle_close((__u64)ctx);
	return 1;
}
