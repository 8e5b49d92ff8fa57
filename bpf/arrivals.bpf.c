// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The arrival hook of the tracepoint backend: each datagram queued on an
 * unconnected UDP socket has its sender noted (cgroup_skb/ingress), and a
 * noted datagram the kernel drops instead of queueing is struck out
 * (kfree_skb, which names the socket since 6.12). See arrivals.bpf.h.
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

/* What this CPU noted last: a drop that follows on this CPU is of that datagram. */
struct rx_last {
	__u64 sk;
	__u64 skb;
	__u64 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_last);
} rx_last SEC(".maps");

SEC("cgroup_skb/ingress")
int cg_skb_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *bsk = skb->sk;
	struct udpi_peer p = {};
	struct rx_last *last;
	struct rx_ring *r;
	struct sock *sk;
	__u64 n, payload;
	__u32 zero = 0;

	if (!bsk)
		return 1;
	bsk = bpf_sk_fullsock(bsk);
	if (!bsk || bsk->protocol != UDPI_IPPROTO_UDP || bsk->dst_port)
		return 1; /* a connected socket's peer is the socket's */
	sk = launder_sk(bsk);
	if (!sk || !skb_udp_end(skb, false, &p, &payload))
		return 1;
	r = rx_ring_get(sk);
	if (!r)
		return 1;
	n = __sync_fetch_and_add(&r->tail, 1);
	if (n - *(volatile __u64 *)&r->head < UDPI_RX_RING) {
		/* The slot's last note was taken: head has passed it. */
		struct rx_entry *e = &r->e[n % UDPI_RX_RING];

		e->peer = p;
		e->dropped = 0;
		asm volatile("" ::: "memory");
		e->seq = n + 1; /* last: a reader trusts the slot by it */
	} else {
		struct rx_spill_key key = {(__u64)sk, n};
		struct rx_spilled v = {};

		v.peer = p;
		/* A full spill map leaves the sender unknown, counted when it is read. */
		bpf_map_update_elem(&rx_spill, &key, &v, BPF_NOEXIST);
	}
	last = bpf_map_lookup_elem(&rx_last, &zero);
	if (last) {
		last->sk = (__u64)sk;
		last->skb = (__u64)launder_sk(skb);
		last->seq = n;
	}
	return 1;
}

/*
 * A datagram the kernel dropped after ingress noted it (receive buffer
 * full, the socket's filter) never reaches the queue: its note is struck
 * out. The drop happens on the CPU that noted it, before anything else is
 * noted there, so it is this CPU's last note. kfree_skb names the socket of
 * such a drop since Linux 6.12.
 */
SEC("raw_tp/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, int reason, struct sock *rx_sk)
{
	struct rx_spill_key key;
	struct rx_spilled *s;
	struct rx_last *last;
	struct rx_ring *r;
	__u32 zero = 0;

	if (!kfree_skb_has_sk || !rx_sk)
		return 0;
	last = bpf_map_lookup_elem(&rx_last, &zero);
	if (!last || last->skb != (__u64)skb || last->sk != (__u64)rx_sk)
		return 0;
	last->skb = 0;
	key.sk = last->sk;
	key.seq = last->seq;
	r = bpf_map_lookup_elem(&rx_rings, &key.sk);
	if (!r)
		return 0;
	if (r->e[key.seq % UDPI_RX_RING].seq == key.seq + 1) {
		r->e[key.seq % UDPI_RX_RING].dropped = 1;
		return 0;
	}
	s = bpf_map_lookup_elem(&rx_spill, &key);
	if (s)
		s->dropped = 1;
	return 0;
}
