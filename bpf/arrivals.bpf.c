// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The arrival hook of the tracepoint backend: each datagram queued on an
 * unconnected UDP socket has its sender noted (cgroup_skb/ingress), and a
 * noted datagram the kernel drops instead of queueing is struck out
 * (kfree_skb, which names the socket since 6.12).
 */
#define UDPI_DEFINE_ARRIVALS
#include "vmlinux.h"
#include <bpf/bpf_tracing.h>

#include "arrivals.bpf.h"
#include "cgroup.bpf.h"

const volatile bool kfree_skb_has_sk = false;

/* A zeroed ring to insert from: too big for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_ring);
} rx_ring_zero SEC(".maps");

static __always_inline struct rx_ring *rx_ring_get(struct sock *sk)
{
	__u64 skaddr = (__u64)sk;
	struct rx_ring *r = bpf_map_lookup_elem(&rx_rings, &skaddr);
	__u32 zero = 0;

	if (r)
		return r;
	r = bpf_map_lookup_elem(&rx_ring_zero, &zero);
	if (!r)
		return NULL;
	r->skip = sk_queued(sk);
	bpf_map_update_elem(&rx_rings, &skaddr, r, BPF_NOEXIST);
	r->skip = 0;
	return bpf_map_lookup_elem(&rx_rings, &skaddr);
}

SEC("cgroup_skb/ingress")
int cg_skb_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *bsk = skb->sk;
	struct udpi_peer p = {};
	struct rx_entry *e;
	struct rx_ring *r;
	struct sock *sk;
	__u64 n, payload;

	if (!bsk)
		return 1;
	bsk = bpf_sk_fullsock(bsk);
	if (!bsk || bsk->protocol != UDPI_IPPROTO_UDP || bsk->dst_port)
		return 1; /* a connected socket's peer is the socket's */
	sk = launder_sk(bsk);
	if (!sk)
		return 1;
	r = rx_ring_get(sk);
	if (!r || r->quiet || !skb_udp_end(skb, false, &p, &payload))
		return 1;
	n = __sync_fetch_and_add(&r->tail, 1);
	e = &r->e[n % UDPI_RX_RING];
	if (kfree_skb_has_sk)
		e->skb = (__u64)launder_sk(skb);
	e->peer = p;
	e->dropped = 0;
	e->seq = n + 1;
	return 1;
}

/* A datagram the kernel dropped after ingress noted it never reaches the queue. */
SEC("raw_tp/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, int reason, struct sock *rx_sk)
{
	__u64 skaddr;
	struct rx_ring *r;

	if (!kfree_skb_has_sk || !rx_sk)
		return 0;
	skaddr = (__u64)rx_sk;
	r = bpf_map_lookup_elem(&rx_rings, &skaddr);
	if (!r)
		return 0;
	for (int i = 0; i < UDPI_RX_RING; i++) {
		struct rx_entry *e = &r->e[i];

		if (e->skb == (__u64)skb && e->seq > r->head)
			e->dropped = 1;
	}
	return 0;
}
