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
