/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The arrival hook's rings (defined in arrivals.bpf.c): the senders of the
 * datagrams queued on unconnected sockets, which the tracepoint backend's
 * receive program takes in order.
 */
#ifndef UDPINTERCEPT_BPF_ARRIVALS_BPF_H
#define UDPINTERCEPT_BPF_ARRIVALS_BPF_H

#include "flow.bpf.h"

#ifdef UDPI_DEFINE_ARRIVALS
#define UDPI_ARRIVALS
#else
#define UDPI_ARRIVALS extern
#endif

/* The kernel's kfree_skb tracepoint names the receiving socket (set from its BTF). */
extern const volatile bool kfree_skb_has_sk;

/*
 * recv() without an address on an unconnected socket: neither the socket
 * nor a cgroup recvmsg hook names the sender. The datagrams' senders are
 * noted on arrival (cgroup_skb/ingress sees each one with its socket, just
 * before the kernel queues it) in a per-socket ring, in arrival order; a
 * UDP socket's queue is FIFO, so each consumed datagram is the oldest noted
 * one that was neither consumed nor dropped (kfree_skb names the socket of
 * a drop since 6.12). Every consumption takes its entry, also when the
 * sender came from elsewhere, so the ring stays in step with the queue.
 */
#define UDPI_RX_RING 64

struct rx_entry {
	__u64 seq; /* arrival number + 1; 0 = empty */
	__u64 skb; /* identity for drops */
	struct udpi_peer peer;
	__u32 dropped;
};

/*
 * A socket whose application has read this many datagrams in a row with
 * their addresses (recvfrom, recvmsg with msg_name) goes quiet: arrivals are
 * no longer noted, which is most of the cost of this path. Its first recv()
 * without an address wakes the ring; the datagrams queued at that moment
 * count as peer unknown, later ones are noted again.
 */
#define UDPI_RX_QUIET_AFTER 256

/* The consumer's and the producer's counters on separate cache lines. */
struct rx_ring {
	__u64 head;   /* next arrival number to consume */
	__u64 skip;   /* datagrams queued before tracking began: their senders are not known */
	__u32 quiet;  /* arrivals are not noted (see UDPI_RX_QUIET_AFTER) */
	__u32 streak; /* consecutive receives that named their sender */
	__u64 consumer_pad[5];
	__u64 tail; /* next arrival number to note */
	__u64 producer_pad[7];
	struct rx_entry e[UDPI_RX_RING];
};

UDPI_ARRIVALS struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64); /* struct sock address */
	__type(value, struct rx_ring);
} rx_rings SEC(".maps");

static __always_inline __u64 sk_queued(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_receive_queue.qlen) +
	       BPF_CORE_READ((struct udp_sock *)sk, reader_queue.qlen);
}

/*
 * The sender of the datagram this receive consumed, from the ring. `named`:
 * the receive named its sender itself (a cgroup recvmsg hook's stash).
 * *quiet: the ring was quiet, which this CPU's socket cache may remember
 * (a wake expires every cache).
 */
static __always_inline bool rx_ring_take(struct sock *sk, bool named, struct udpi_peer *p, bool *quiet)
{
	__u64 skaddr = (__u64)sk;
	struct rx_ring *r = bpf_map_lookup_elem(&rx_rings, &skaddr);

	if (!r)
		return false;
	if (named) {
		*quiet = r->quiet;
		if (r->quiet)
			return false;
		if (++r->streak >= UDPI_RX_QUIET_AFTER)
			r->quiet = 1; /* this entry is still taken below */
	} else {
		r->streak = 0;
		if (r->quiet) {
			/* Wake the ring: what is queued now was not noted. */
			__sync_fetch_and_and(&r->quiet, 0);
			sock_caches_expire();
			r->skip = sk_queued(sk);
			r->head = *(volatile __u64 *)&r->tail;
			return false;
		}
	}
	if (r->skip) {
		r->skip--;
		return false;
	}
	for (int i = 0; i < UDPI_RX_RING; i++) {
		__u64 n = __sync_fetch_and_add(&r->head, 1);
		struct rx_entry *e = &r->e[n % UDPI_RX_RING];

		if (e->seq != n + 1) {
			/* never noted (the ring overflowed, or arrived before the socket was tracked) */
			if (n >= r->tail)
				__sync_fetch_and_add(&r->head, -1);
			return false;
		}
		if (e->dropped)
			continue;
		*p = e->peer;
		return true;
	}
	return false;
}

#endif /* UDPINTERCEPT_BPF_ARRIVALS_BPF_H */
