/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What the cgroup programs of the tracepoint backend and of the arrival hook
 * share: the socket they are given as a plain address, and the UDP
 * datagram's ends read from the packet headers.
 */
#ifndef UDPINTERCEPT_BPF_CGROUP_BPF_H
#define UDPINTERCEPT_BPF_CGROUP_BPF_H

#include "flow.bpf.h"

/*
 * cgroup hooks hold the socket as PTR_TO_SOCKET, on which the verifier
 * forbids the arithmetic a CO-RE read needs. Storing it in a map value and
 * loading it back yields the same address as a scalar (allowed with
 * CAP_PERFMON, which tracing needs anyway); it is only ever read through
 * bpf_probe_read_kernel.
 *
 * The slot is this CPU's, and a program of a softirq that interrupts this
 * one between the store and the load (an arrival, whose program launders
 * too) leaves its own pointer there: two round trips that agree are this
 * program's, as a second interruption would have to leave the same value.
 * NULL if they never agree.
 */
static __always_inline struct sock *launder_sk(void *p)
{
	__u32 zero = 0;
	__u64 *slot = bpf_map_lookup_elem(&ptr_scratch, &zero);
	__u64 a, b;

	if (!slot)
		return NULL;
	for (int i = 0; i < 3; i++) {
		*(volatile __u64 *)slot = (__u64)p;
		a = *(volatile __u64 *)slot;
		*(volatile __u64 *)slot = (__u64)p;
		b = *(volatile __u64 *)slot;
		if (a == b)
			return (struct sock *)a;
	}
	return NULL;
}

/*
 * One end of a UDP datagram, from the headers at the start of a cgroup_skb
 * program's skb (its IP header): the sender (ingress) or, with `dest`, the
 * receiver (egress); and the payload bytes behind the headers (a GSO skb
 * carries all its segments' payload behind one set). Headers in the linear
 * part are read in place; IPv4 options and up to UDPI_IPV6_MAX_EXT IPv6
 * extension headers through bpf_skb_load_bytes().
 */
static __always_inline bool skb_udp_end(struct __sk_buff *skb, bool dest, struct udpi_peer *p, __u64 *payload)
{
	void *data = (void *)(long)SKB(skb, data);
	void *end = (void *)(long)SKB(skb, data_end);
	struct udpi_ipv6hdr ip6;
	struct udpi_iphdr ip4;
	struct udpi_udphdr uh;
	__u32 off;
	__u8 next;

	if (data + sizeof(ip4) <= end)
		ip4 = *(struct udpi_iphdr *)data;
	else if (bpf_skb_load_bytes(skb, 0, &ip4, sizeof(ip4)))
		return false;
	if (ip4.version_ihl >> 4 == 4) {
		if (ip4.protocol != UDPI_IPPROTO_UDP)
			return false;
		off = (ip4.version_ihl & 0xf) * 4;
		set_v4(p->addr, dest ? ip4.daddr : ip4.saddr);
		p->family = UDPI_AF_INET;
	} else if (ip4.version_ihl >> 4 == 6) {
		if (data + sizeof(ip6) <= end)
			ip6 = *(struct udpi_ipv6hdr *)data;
		else if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return false;
		off = sizeof(ip6);
		next = ip6.nexthdr;
		for (int i = 0; i < UDPI_IPV6_MAX_EXT && next != UDPI_IPPROTO_UDP; i++) {
			__u8 eh[2];

			if (next != UDPI_IPV6_HOPOPTS && next != UDPI_IPV6_ROUTING &&
			    next != UDPI_IPV6_DSTOPTS)
				return false;
			if (bpf_skb_load_bytes(skb, off, eh, sizeof(eh)))
				return false;
			next = eh[0];
			off += (eh[1] + 1) * 8;
		}
		if (next != UDPI_IPPROTO_UDP)
			return false;
		set_v6(p->addr, &p->family, dest ? ip6.daddr : ip6.saddr);
	} else {
		return false;
	}
	if (off == sizeof(ip4) && data + sizeof(ip4) + sizeof(uh) <= end)
		uh = *(struct udpi_udphdr *)(data + sizeof(ip4));
	else if (off == sizeof(ip6) && data + sizeof(ip6) + sizeof(uh) <= end)
		uh = *(struct udpi_udphdr *)(data + sizeof(ip6));
	else if (bpf_skb_load_bytes(skb, off & 0xffff, &uh, sizeof(uh)))
		return false;
	if (SKB(skb, len) < off + sizeof(uh))
		return false;
	p->port = bpf_ntohs(dest ? uh.dest : uh.source);
	*payload = SKB(skb, len) - off - sizeof(uh);
	return true;
}

#endif /* UDPINTERCEPT_BPF_CGROUP_BPF_H */
