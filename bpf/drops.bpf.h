/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Receive drops (design §2): the datagrams the kernel discards on their way
 * into a socket after demultiplexing (receive buffer or protocol memory
 * full, the socket's filter, a bad checksum found when the application
 * reads or polls), each counted on the flow of that socket and the
 * datagram's sender where the kernel counts it in the socket's drops; and
 * the datagrams that found no socket at all (no_listener).
 *
 * Every drop ends in the kfree_skb tracepoint while the skb still holds its
 * headers, so the sender is read there. Which socket it was for: since 6.11
 * the tracepoint names it; before, the fentry and kprobe backends open a
 * per-CPU window around the kernel functions whose frees are drops (the
 * window is the socket's until they return), and the tracepoint backend
 * takes the datagram its arrival hook saw last on this CPU. A checksum
 * failure found by recvmsg() opens a window of its own where the kernel
 * unlinks the datagram (__sk_queue_drop_skb() returning 0), just before it
 * frees it.
 */
#ifndef UDPINTERCEPT_BPF_DROPS_BPF_H
#define UDPINTERCEPT_BPF_DROPS_BPF_H

#include "skb.bpf.h"

#ifdef UDPI_DEFINE_DROPS
#define UDPI_DROPS
#else
#define UDPI_DROPS extern
#endif

/* Arguments of the kernel's kfree_skb tracepoint (2 to 4, from its BTF; see core_fixes.bpf.h). */
extern const volatile __u32 kfree_skb_arity;

/* A kernel function whose frees are drops is running on this CPU for `sk`. */
struct drop_window {
	__u64 sk;  /* the socket whose drops they are; 0: no window */
	__u64 skb; /* the datagram the window is for; 0: any skb freed in it */
};

/*
 * Windows of the same kind never nest: the receive functions run in softirq
 * context, the poll one with bottom halves disabled, so nothing else of
 * theirs runs on the CPU until they return. A recvmsg() in process context
 * can be interrupted by a softirq's receive: its window is a slot apart.
 */
enum drop_window_kind {
	UDPI_WINDOW_RECEIVE = 0, /* the datagram's way in, or poll()'s checksum checks */
	UDPI_WINDOW_DEQUEUE = 1, /* recvmsg() unlinked a datagram with a bad checksum */
	UDPI_WINDOW_KINDS,
};

UDPI_DROPS struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UDPI_WINDOW_KINDS);
	__type(key, __u32);
	__type(value, struct drop_window);
} drop_windows SEC(".maps");

static __always_inline void drop_window_open(__u32 kind, struct sock *sk, struct sk_buff *skb)
{
	struct drop_window *w = bpf_map_lookup_elem(&drop_windows, &kind);

	if (w) {
		w->sk = (__u64)sk;
		w->skb = (__u64)skb;
	}
}

static __always_inline void drop_window_close(__u32 kind)
{
	struct drop_window *w = bpf_map_lookup_elem(&drop_windows, &kind);

	if (w)
		w->sk = 0;
}

/* The socket whose drop freeing skb on this CPU is, if a window says so. */
static __always_inline struct sock *drop_window_of(__u32 kind, struct sk_buff *skb)
{
	struct drop_window *w = bpf_map_lookup_elem(&drop_windows, &kind);
	__u64 sk;

	if (!w || !w->sk || (w->skb && w->skb != (__u64)skb))
		return NULL;
	sk = w->sk;
	if (kind == UDPI_WINDOW_DEQUEUE)
		w->sk = 0; /* it is for one free; a receive window closes when its function returns */
	return (struct sock *)sk;
}

/* The sender of sk's dropped datagram skb, or the unspecified peer of sk's family. */
static __always_inline void drop_sender(struct sock *sk, struct sk_buff *skb, struct udpi_peer *p)
{
	if (skb_source(skb, p))
		return;
	__builtin_memset(p, 0, sizeof(*p));
	p->family = BPF_CORE_READ(sk, __sk_common.skc_family) == UDPI_AF_INET6 ? UDPI_AF_INET6 : UDPI_AF_INET;
}

/*
 * The tracepoint backend's drops' flow update (tracepoint.bpf.c), a global
 * function that the verifier checks once per program. Global functions take
 * pointer arguments since 5.12 ("bpf: Support pointers in global func
 * args"), so the other backends, which run on 5.10, update inline.
 */
extern int count_drops(__u64 skaddr, const struct udpi_peer *p, __u32 n);

/*
 * skb, for sk, was discarded; true if it was sk's drop. Tunnel sockets
 * (encap_rcv: ESP, L2TP, WireGuard, VXLAN, ...) belong to the kernel, whose
 * frees of their datagrams are the tunnel's business, not the socket's drops.
 */
static __always_inline bool count_drop(struct sock *sk, struct sk_buff *skb, bool global_update)
{
	struct udpi_peer p = {};

	if (!udpi_sk_is_udp_dgram(sk) || udpi_udp_encap_type(sk))
		return false;
	drop_sender(sk, skb, &p);
	if (global_update)
		count_drops((__u64)sk, &p, 1);
	else
		handle_drops(sk, &p, 1);
	return true;
}

/* The kfree_skb tracepoint's receiving socket (6.11+), else NULL. */
static __always_inline struct sock *kfree_skb_rx_sk(__u64 *ctx)
{
	if (kfree_skb_arity < 4)
		return NULL;
	return (struct sock *)*(volatile __u64 *)&ctx[3];
}

/* The kfree_skb tracepoint's drop reason (5.17+), else -1. */
static __always_inline __s64 kfree_skb_reason_of(__u64 *ctx)
{
	if (kfree_skb_arity < 3)
		return -1;
	return (__u32) * (volatile __u64 *)&ctx[2];
}

/*
 * A UDP datagram to a port no socket listened on: the kernel counts it in
 * NoPorts and frees it with SKB_DROP_REASON_NO_SOCKET (which TCP uses too).
 * It has no process, so task filters leave it out.
 */
static __always_inline void count_no_listener(struct sk_buff *skb)
{
	struct udpi_peer src = {}, dst = {};

	if (filter_pid || filter_uid_set || filter_cgroup || !skb_udp_ends(skb, &src, &dst))
		return;
	if (filter_family && dst.family != filter_family)
		return;
	if (filter_port && dst.port != filter_port && src.port != filter_port)
		return;
	stat_add(UDPI_STAT_NO_LISTENER, 1);
}

/*
 * The kfree_skb tracepoint (ctx) freed skb, a drop; sk is the socket it was
 * for, if known. Returns whether it was counted as sk's drop. global_update:
 * count it through count_drops() (the tracepoint backend only).
 */
static __always_inline bool on_kfree_skb(__u64 *ctx, struct sk_buff *skb, struct sock *sk, bool global_update)
{
	if (sk)
		return count_drop(sk, skb, global_update);
	if (kfree_skb_reason_of(ctx) == UDPI_DROP_REASON(SKB_DROP_REASON_NO_SOCKET))
		count_no_listener(skb);
	return false;
}

/*
 * recvmsg() found a bad checksum: __sk_queue_drop_skb() returned 0, having
 * unlinked skb from sk's queue and counted it in the socket's drops (the
 * MIB's InCsumErrors and InErrors follow); the kernel frees it next, where
 * the kfree_skb program counts it. Other protocols use the function too.
 */
static __always_inline void on_queue_drop(struct sock *sk, struct sk_buff *skb, int ret)
{
	if (!ret)
		drop_window_open(UDPI_WINDOW_DEQUEUE, sk, skb);
}

#endif /* UDPINTERCEPT_BPF_DROPS_BPF_H */
