/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A datagram's ends read from a kernel sk_buff by the tracing programs
 * (fentry, kprobe, raw tracepoints), through the header offsets the IP
 * layer set on arrival: they stay valid after UDP pulled its header, until
 * the skb is freed.
 */
#ifndef UDPINTERCEPT_BPF_SKB_BPF_H
#define UDPINTERCEPT_BPF_SKB_BPF_H

#include "flow.bpf.h"

/* The sender of a received datagram, from its IP and UDP headers. */
static __always_inline bool skb_source(struct sk_buff *skb, struct udpi_peer *p)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct udpi_udphdr uh;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return false;
	version >>= 4;
	if (version == 4) {
		struct udpi_iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh))
			return false;
		set_v4(p->addr, iph.saddr);
		p->family = UDPI_AF_INET;
	} else if (version == 6) {
		struct udpi_ipv6hdr ip6h;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return false;
		set_v6(p->addr, &p->family, ip6h.saddr);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&uh, sizeof(uh), head + th))
		return false;
	p->port = bpf_ntohs(uh.source);
	return true;
}

/*
 * Both ends of the skb's datagram, or false if the skb holds no UDP
 * datagram: for skbs of any protocol, as the kfree_skb tracepoint sees them.
 * Up to UDPI_IPV6_MAX_EXT IPv6 extension headers are followed.
 */
static __always_inline bool skb_udp_ends(struct sk_buff *skb, struct udpi_peer *src, struct udpi_peer *dst)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct udpi_udphdr uh;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return false;
	version >>= 4;
	if (version == 4) {
		struct udpi_iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh) || iph.protocol != UDPI_IPPROTO_UDP)
			return false;
		set_v4(src->addr, iph.saddr);
		set_v4(dst->addr, iph.daddr);
		src->family = dst->family = UDPI_AF_INET;
	} else if (version == 6) {
		struct udpi_ipv6hdr ip6h;
		__u32 off = sizeof(ip6h);
		__u8 next;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return false;
		next = ip6h.nexthdr;
		for (int i = 0; i < UDPI_IPV6_MAX_EXT && next != UDPI_IPPROTO_UDP; i++) {
			__u8 eh[2];

			if (next != UDPI_IPV6_HOPOPTS && next != UDPI_IPV6_ROUTING &&
			    next != UDPI_IPV6_DSTOPTS)
				return false;
			if (bpf_probe_read_kernel(eh, sizeof(eh), head + nh + off))
				return false;
			next = eh[0];
			off += (eh[1] + 1) * 8;
		}
		if (next != UDPI_IPPROTO_UDP)
			return false;
		set_v6(src->addr, &src->family, ip6h.saddr);
		set_v6(dst->addr, &dst->family, ip6h.daddr);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&uh, sizeof(uh), head + th))
		return false;
	src->port = bpf_ntohs(uh.source);
	dst->port = bpf_ntohs(uh.dest);
	return true;
}

#endif /* UDPINTERCEPT_BPF_SKB_BPF_H */
