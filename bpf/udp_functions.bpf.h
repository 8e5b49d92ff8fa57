/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The bodies the fentry and kprobe backends share: both hook the same UDP
 * functions of the kernel and see the same arguments, one through BPF
 * trampolines, the other through kprobes.
 */
#ifndef UDPINTERCEPT_BPF_UDP_FUNCTIONS_BPF_H
#define UDPINTERCEPT_BPF_UDP_FUNCTIONS_BPF_H

#include "drops.bpf.h"

/* The destination a sendmsg was given (msg_name: a kernel copy), if any. */
static __always_inline bool msg_peer(struct msghdr *msg, struct udpi_peer *p)
{
	void *name = BPF_CORE_READ(msg, msg_name);
	struct udpi_sockaddr_in6 sin6;
	__u16 family;

	if (!name || bpf_probe_read_kernel(&family, sizeof(family), name))
		return false;
	if (family == UDPI_AF_INET) {
		struct udpi_sockaddr_in sin;

		if (bpf_probe_read_kernel(&sin, sizeof(sin), name))
			return false;
		set_v4(p->addr, sin.addr);
		p->port = bpf_ntohs(sin.port);
		p->family = UDPI_AF_INET;
		return true;
	}
	if (family != UDPI_AF_INET6 || bpf_probe_read_kernel(&sin6, sizeof(sin6), name))
		return false;
	set_v6(p->addr, &p->family, sin6.addr);
	p->port = bpf_ntohs(sin6.port);
	return true;
}

#define UDPI_SOL_UDP 17
#define UDPI_UDP_SEGMENT 103
#define UDPI_MAX_CMSGS 8

/*
 * The UDP_SEGMENT size a sendmsg asked for in a control message (the
 * kernel copy ____sys_sendmsg() made), else the socket's; 0 for none.
 */
static __always_inline __u16 msg_gso_size(struct sock *sk, struct msghdr *msg)
{
	__u64 len = BPF_CORE_READ(msg, msg_controllen);
	unsigned char *ctl = BPF_CORE_READ(msg, msg_control);
	__u64 off = 0;

	if (!ctl || len < sizeof(struct udpi_cmsghdr))
		return sk_gso_size(sk);
	for (int i = 0; i < UDPI_MAX_CMSGS; i++) {
		struct udpi_cmsghdr cm;
		__u16 gso;

		if (off + sizeof(cm) > len || bpf_probe_read_kernel(&cm, sizeof(cm), ctl + off))
			break;
		if (cm.len < sizeof(cm))
			break;
		if (cm.level == UDPI_SOL_UDP && cm.type == UDPI_UDP_SEGMENT &&
		    cm.len >= sizeof(cm) + sizeof(gso) &&
		    !bpf_probe_read_kernel(&gso, sizeof(gso), ctl + off + sizeof(cm)))
			return gso;
		off += (cm.len + sizeof(long) - 1) & ~(sizeof(long) - 1);
	}
	return sk_gso_size(sk);
}

/*
 * udp_sendmsg()/udpv6_sendmsg() returned `ret` for `msg` on `sk`.
 * udpv6_sendmsg() hands IPv4 and IPv4-mapped destinations to udp_sendmsg()
 * (net/ipv6/udp.c, "do_udp_sendmsg"), which counts them: the outer call
 * (`v6_outer`) must not count them again.
 */
static __always_inline void on_udp_sendmsg(struct sock *sk, const struct udpi_peer *given, int ret,
					   __u16 gso_size, bool v6_outer)
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
	handle_count(sk, &p, (__u64)ret, gso_datagrams(ret, gso_size), true);
}

/*
 * The datagrams on the wire a received skb is: a socket with UDP_GRO set
 * receives the segments of a GSO send, or those GRO coalesced, as one skb
 * (one receive returns them all), which counts as its segments, as the send
 * did. Every other skb reaching a socket is one datagram.
 */
static __always_inline __u64 skb_wire_segs(struct sk_buff *skb)
{
	struct skb_shared_info *shinfo = udpi_skb_shinfo(skb);
	__u16 size, segs;

	/* A segment of a split GSO skb has no gso_size: only a whole one counts as more. */
	if (!shinfo || bpf_probe_read_kernel(&size, sizeof(size), &shinfo->gso_size) || !size)
		return 1;
	if (bpf_probe_read_kernel(&segs, sizeof(segs), &shinfo->gso_segs) || segs <= 1)
		return 1;
	return segs;
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
	handle_count(sk, &p, (__u64)len, skb_wire_segs(skb), false);
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

#endif /* UDPINTERCEPT_BPF_UDP_FUNCTIONS_BPF_H */
