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
 * Where the UDP header of a cgroup_skb program's IPv6 packet begins when
 * extension headers come first (nexthdr, the IPv6 header's, is not UDP):
 * up to UDPI_IPV6_MAX_EXT of them are followed; 0 if no UDP header is
 * behind them. A global function (arrivals.bpf.c), so that the verifier
 * walks its loop once, not once more on each of the program's ways to it.
 */
extern int skb_ipv6_udp_offset(struct __sk_buff *skb, __u32 nexthdr);

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
		if (ip6.nexthdr != UDPI_IPPROTO_UDP && !(off = skb_ipv6_udp_offset(skb, ip6.nexthdr)))
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
