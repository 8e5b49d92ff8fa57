// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The arrival hook of the tracepoint backend: each datagram queued on an
 * unconnected UDP socket has its sender noted (cgroup_skb/ingress), and a
 * noted datagram the kernel drops instead of queueing is struck out by the
 * backend's kfree_skb program, which counts the drop too. See arrivals.bpf.h
 * and drops.bpf.h.
 */
#define UDPI_DEFINE_ARRIVALS
#include "vmlinux.h"
#include <bpf/bpf_tracing.h>

#include "arrivals.bpf.h"
#include "cgroup.bpf.h"

/* A zeroed ring to insert from: too big for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_ring);
} rx_ring_zero SEC(".maps");

__u64 gro_connected_rings = 0;

/*
 * The socket's ring, begun if it has none. A connected socket's (`connected`)
 * is begun only by a coalesced datagram (`coalesced`), and one begun before
 * it connected is not its: NULL then, the datagram needs no note.
 */
static __always_inline struct rx_ring *rx_ring_get(struct sock *sk, bool connected, bool coalesced)
{
	__u64 skaddr = (__u64)sk;
	struct rx_ring *r = bpf_map_lookup_elem(&rx_rings, &skaddr);
	__u32 zero = 0;
	int err;

	if (r)
		return connected && !r->gro_connected ? NULL : r;
	if (connected && !coalesced)
		return NULL;
	/*
	 * A kernel socket (sunrpc's, say) is read inside the kernel, past
	 * sock_recv_length: nothing would ever take its notes.
	 */
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_kern_sock) || sk_released(sk))
		return NULL;
	r = bpf_map_lookup_elem(&rx_ring_zero, &zero);
	if (!r)
		return NULL;
	r->skip = sk_queued(sk);
	r->gro_connected = connected;
	err = bpf_map_update_elem(&rx_rings, &skaddr, r, BPF_NOEXIST);
	r->skip = 0;
	r->gro_connected = 0;
	if (!err && connected)
		__sync_fetch_and_add(&gro_connected_rings, 1);
	/*
	 * Released since the look above: either its release, which marks
	 * before it forgets, finds this ring, or this look finds the mark.
	 */
	if (!err && sk_released(sk)) {
		if (!bpf_map_delete_elem(&rx_rings, &skaddr) && connected)
			__sync_fetch_and_add(&gro_connected_rings, -1);
		return NULL;
	}
	r = bpf_map_lookup_elem(&rx_rings, &skaddr);
	return r && connected && !r->gro_connected ? NULL : r;
}

/*
 * What this CPU noted last: a drop that follows on this CPU is of that
 * datagram. Where the kfree_skb tracepoint does not name the socket
 * (before 6.11), every UDP socket's arrivals are noted here, connected or
 * not, so that the tracepoint knows whose drop it is.
 */
struct rx_last {
	__u64 sk;
	__u64 skb;
	__u64 seq; /* its arrival note, or UDPI_NO_NOTE (a connected socket's) */
};

#define UDPI_NO_NOTE (~0ULL)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_last);
} rx_last SEC(".maps");

static __always_inline void note_last(struct sock *sk, struct __sk_buff *skb, __u64 seq)
{
	__u32 zero = 0;
	struct rx_last *last = bpf_map_lookup_elem(&rx_last, &zero);

	if (last) {
		last->sk = (__u64)sk;
		last->skb = (__u64)launder_sk(skb);
		last->seq = seq;
	}
}

/* cgroup.bpf.h: only a context pointer and a scalar, as 5.10's verifier takes for a global function. */
__noinline int skb_ipv6_udp_offset(struct __sk_buff *skb, __u32 nexthdr)
{
	__u32 off = sizeof(struct udpi_ipv6hdr);
	__u8 next = nexthdr;

	for (int i = 0; i < UDPI_IPV6_MAX_EXT && next != UDPI_IPPROTO_UDP; i++) {
		__u8 eh[2];

		if (next != UDPI_IPV6_HOPOPTS && next != UDPI_IPV6_ROUTING && next != UDPI_IPV6_DSTOPTS)
			return 0;
		if (bpf_skb_load_bytes(skb, off, eh, sizeof(eh)))
			return 0;
		next = eh[0];
		off += (eh[1] + 1) * 8;
	}
	return next == UDPI_IPPROTO_UDP ? (int)off : 0;
}

SEC("cgroup_skb/ingress")
int cg_skb_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *bsk = SKB(skb, sk);
	struct udpi_peer p = {};
	bool connected = false;
	struct rx_ring *r;
	struct sock *sk;
	__u64 n, head, payload;
	__u16 segs;

	if (!bsk)
		return 1;
	bsk = bpf_sk_fullsock(bsk);
	if (!bsk || BPF_SOCK(bsk, protocol) != UDPI_IPPROTO_UDP)
		return 1;
	segs = skb_wire_datagrams(skb);
	if (BPF_SOCK(bsk, dst_port)) {
		/*
		 * A connected socket's peer is the socket's: no note to take,
		 * unless its datagrams are coalesced (a ring marked for it).
		 */
		connected = true;
		if (segs == 1 && !*(volatile __u64 *)&gro_connected_rings)
			goto no_note;
	}
	sk = launder_sk(bsk);
	if (!sk || !skb_udp_end(skb, false, &p, &payload))
		return 1;
	r = rx_ring_get(sk, connected, segs > 1);
	if (!r) {
		if (connected)
			goto no_note;
		return 1;
	}
	n = __sync_fetch_and_add(&r->tail, 1);
	/*
	 * head is the consumer's, written at every receive: reading it for every
	 * note would move its cache line between the CPUs each time. The copy
	 * on the producer's line is never ahead of it, so a ring that looks
	 * full by the copy is checked again by head itself.
	 */
	head = *(volatile __u64 *)&r->head_seen;
	if (n - head >= UDPI_RX_RING) {
		head = *(volatile __u64 *)&r->head;
		*(volatile __u64 *)&r->head_seen = head;
	}
	if (n - head < UDPI_RX_RING) {
		/* The slot's last note was taken: head has passed it. */
		struct rx_entry *e = &r->e[n % UDPI_RX_RING];

		e->peer = p;
		e->dropped = 0;
		e->segs = segs;
		asm volatile("" ::: "memory");
		e->seq = n + 1; /* last: a reader trusts the slot by it */
	} else {
		struct rx_spill_key key = {(__u64)sk, n};
		struct rx_spilled v = {};

		v.peer = p;
		v.segs = segs;
		/*
		 * A full spill map leaves the sender unknown, counted when it is
		 * read. A ring being forgotten may have passed this number: the
		 * note is taken back (rx_ring_forget()).
		 */
		if (!bpf_map_update_elem(&rx_spill, &key, &v, BPF_NOEXIST) &&
		    __sync_fetch_and_add(&r->closing, 0))
			bpf_map_delete_elem(&rx_spill, &key);
	}
	note_last(sk, skb, n);
	return 1;

no_note:
	if (kfree_skb_arity < 4 && (sk = launder_sk(bsk)))
		note_last(sk, skb, UDPI_NO_NOTE);
	return 1;
}

/*
 * The datagram's note, noted last on this CPU, is struck out: it never
 * reached the queue. Still the socket's newest note (no CPU noted one since),
 * it is taken back whole: the next arrival reuses its number. So a socket
 * whose reader has stopped keeps no note per datagram it drops, where
 * struck notes would pile up until a receive passed over them and fill
 * rx_spill for every socket. A note with newer ones after it stays, struck.
 */
static __always_inline void strike_note(struct rx_last *last)
{
	struct rx_spill_key key = {last->sk, last->seq};
	struct rx_spilled *s;
	struct rx_ring *r;

	r = bpf_map_lookup_elem(&rx_rings, &key.sk);
	if (!r)
		return;
	if (r->e[key.seq % UDPI_RX_RING].seq == key.seq + 1) {
		/*
		 * Struck first: should the take-back fail, it stays struck; once
		 * it succeeds, the next arrival rewrites the slot, its number
		 * last, before its datagram is queued.
		 */
		r->e[key.seq % UDPI_RX_RING].dropped = 1;
		__sync_val_compare_and_swap(&r->tail, key.seq + 1, key.seq);
		return;
	}
	s = bpf_map_lookup_elem(&rx_spill, &key);
	if (!s)
		return;
	/*
	 * Taken back first: an arrival that reuses the number before the
	 * delete finds its key taken and goes unnoted, so that its datagram
	 * counts in peer_unknown (a note struck first and deleted after a
	 * failed take-back could be missed by a reader passing, which would
	 * shift every sender after it).
	 */
	if (__sync_val_compare_and_swap(&r->tail, key.seq + 1, key.seq) == key.seq + 1)
		bpf_map_delete_elem(&rx_spill, &key);
	else
		s->dropped = 1;
}

/*
 * Before 6.11 the tracepoint does not name the socket: a drop is this CPU's
 * last noted datagram when it is that skb and freed for one of the reasons
 * of a socket's drop. Should the skb have been queued, the close that purges
 * the queue frees it with none of them; a bad checksum found when it is read
 * is that socket's drop too.
 */
static __always_inline bool socket_drop_reason(__s64 reason)
{
	return reason == UDPI_DROP_REASON(SKB_DROP_REASON_SOCKET_RCVBUFF) ||
	       reason == UDPI_DROP_REASON(SKB_DROP_REASON_PROTO_MEM) ||
	       reason == UDPI_DROP_REASON(SKB_DROP_REASON_SOCKET_FILTER) ||
	       reason == UDPI_DROP_REASON(SKB_DROP_REASON_XFRM_POLICY) ||
	       reason == UDPI_DROP_REASON(SKB_DROP_REASON_UDP_CSUM);
}

__u64 csum_drops_waiting = 0;

/* A zeroed set of waiting checksum failures to insert from. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct csum_drops);
} csum_drops_zero SEC(".maps");

/*
 * A receive in this thread found skb's checksum bad (see arrivals.bpf.h):
 * it waits, with its sender, for the receive that settles it, in the entry
 * of the drop before it if that was from the same sender to the same port
 * (a search would cost the verifier more than the rare extra entry costs).
 * More than UDPI_CSUM_WAITING entries before one receive: the rest are not
 * counted. The thread's next receive on a socket of that port settles them,
 * or its close of one (cg_sock_release). One that is never settled (the
 * thread neither reads nor closes that socket again) stays until the LRU map
 * needs its room, and until then every receive on the machine looks its
 * thread up (csum_drops_waiting).
 */
static __always_inline void csum_drop_wait(struct sk_buff *skb)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct udpi_peer src = {}, dst = {};
	struct csum_drops *d;
	struct csum_drop *e;
	__u32 zero = 0, n;

	if (!skb_udp_ends(skb, &src, &dst))
		return;
	d = bpf_map_lookup_elem(&csum_drops, &tid);
	if (!d) {
		d = bpf_map_lookup_elem(&csum_drops_zero, &zero);
		if (!d || bpf_map_update_elem(&csum_drops, &tid, d, BPF_NOEXIST))
			return;
		__sync_fetch_and_add(&csum_drops_waiting, 1);
		d = bpf_map_lookup_elem(&csum_drops, &tid);
		if (!d)
			return;
	}
	n = d->n;
	if (n > 0 && n <= UDPI_CSUM_WAITING) {
		const __u64 *x = (const __u64 *)d->e[n - 1].peer.addr, *y = (const __u64 *)src.addr;

		e = &d->e[n - 1];
		if (e->count && e->dport == dst.port && x[0] == y[0] && x[1] == y[1] &&
		    e->peer.port == src.port && e->peer.family == src.family) {
			e->count++;
			return;
		}
	}
	if (n >= UDPI_CSUM_WAITING)
		return;
	e = &d->e[n];
	e->peer = src;
	e->dport = dst.port;
	e->count = 1;
	d->n = n + 1;
}

/*
 * Every drop: counted on its socket's flow (drops.bpf.h), and a datagram
 * dropped after ingress noted it (receive buffer full, the socket's filter)
 * has its note struck out, so that the notes stay in step with the queue.
 * The drop happens on the CPU that noted it, before anything else is noted
 * there, so it is this CPU's last note.
 */
SEC("raw_tp/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb)
{
	struct sock *sk = kfree_skb_rx_sk(ctx);
	struct rx_last *last;
	__u32 zero = 0;
	bool mine;

	last = bpf_map_lookup_elem(&rx_last, &zero);
	mine = last && last->skb == (__u64)skb;
	if (!sk && mine && kfree_skb_arity < 4 && socket_drop_reason(kfree_skb_reason_of(ctx)))
		sk = (struct sock *)last->sk;
	if (!sk && kfree_skb_reason_of(ctx) == UDPI_DROP_REASON(SKB_DROP_REASON_UDP_CSUM)) {
		csum_drop_wait(skb);
		return 0;
	}
	if (!on_kfree_skb(ctx, skb, sk, true) || !mine || last->sk != (__u64)sk)
		return 0;
	last->skb = 0;
	if (last->seq != UDPI_NO_NOTE)
		strike_note(last);
	return 0;
}
