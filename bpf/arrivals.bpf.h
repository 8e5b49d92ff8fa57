/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The arrival hook's rings (defined in arrivals.bpf.c): the senders of the
 * datagrams queued on unconnected sockets, which the tracepoint backend's
 * receive program takes in order.
 */
#ifndef UDPINTERCEPT_BPF_ARRIVALS_BPF_H
#define UDPINTERCEPT_BPF_ARRIVALS_BPF_H

#include "drops.bpf.h"

#ifdef UDPI_DEFINE_ARRIVALS
#define UDPI_ARRIVALS
#else
#define UDPI_ARRIVALS extern
#endif

/*
 * recv() without an address on an unconnected socket: neither the socket
 * nor a cgroup recvmsg hook names the sender. The datagrams' senders are
 * noted on arrival (cgroup_skb/ingress sees each one with its socket, just
 * before the kernel queues it) in arrival order; a UDP socket's queue is
 * FIFO, so each consumed datagram is the oldest noted one that was neither
 * consumed nor dropped. Every consumption takes its entry, also when the
 * sender came from elsewhere (recvfrom()), so the notes stay in step with
 * the queue whichever way the application reads.
 *
 * A datagram dropped later, when a receive found its checksum bad, leaves
 * its note to be passed over (discard) by the receive that settles the drop.
 *
 * The notes of a socket live in a ring of UDPI_RX_RING entries; a burst that
 * queues more spills the rest into rx_spill, keyed by socket and arrival
 * number, so any depth the socket's receive buffer allows is followed.
 *
 * A note also says how many datagrams on the wire its datagram is: a socket
 * with UDP_GRO set receives the segments of a GSO send, or those GRO
 * coalesced, as one datagram (one receive returns them all), which counts as
 * its segments, as the send did. A connected socket's peer needs no note, but
 * its coalesced datagrams do: its first one gives the socket a ring (marked
 * gro_connected), and from then on every datagram it queues is noted and every
 * receive takes its note, as on an unconnected socket.
 */
#define UDPI_RX_RING 64

struct rx_entry {
	__u64 seq; /* arrival number + 1; 0 = empty */
	struct udpi_peer peer;
	__u16 dropped; /* the kernel dropped it instead of queueing it */
	__u16 segs;    /* datagrams on the wire it is (1, or a coalesced one's segments) */
};

/* The consumer's and the producer's counters on separate cache lines. */
struct rx_ring {
	__u64 head; /* next arrival number to consume */
	__u64 skip; /* datagrams queued before tracking began: their senders are not known */
	/* notes of datagrams a receive dropped for a bad checksum, to pass over */
	__u64 discard;
	/* a connected socket's ring, begun by a coalesced datagram (gro_connected_rings) */
	__u64 gro_connected;
	__u64 consumer_pad[4];
	__u64 tail; /* next arrival number to note */
	/* head as a producer last read it (never ahead of head): read again only when the ring looks full */
	__u64 head_seen;
	/* set (once) when the socket is gone and its ring is being forgotten: see rx_ring_forget() */
	__u64 closing;
	__u64 producer_pad[5];
	struct rx_entry e[UDPI_RX_RING];
};

UDPI_ARRIVALS struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* sized to the socket table by user space */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64); /* struct sock address */
	__type(value, struct rx_ring);
} rx_rings SEC(".maps");

/*
 * Sockets released, by address, with the cookie that tells this socket from
 * a later one at the same address. The kernel unhashes a UDP socket only
 * after its release programs ran (cg_sock_release forgets its ring): a
 * datagram arriving in between must not begin a ring that nothing would
 * forget. A mark needs to outlive only that moment, and a new socket's
 * cookie never matches it: each CPU's own LRU list, a few dozen marks a CPU
 * (sized by user space), drops the old ones.
 */
UDPI_ARRIVALS struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u64);   /* struct sock address */
	__type(value, __u64); /* its cookie */
} rx_released SEC(".maps");

/* The socket was released: it will receive nothing more, and needs no ring. */
static __always_inline bool sk_released(struct sock *sk)
{
	__u64 skaddr = (__u64)sk;
	__u64 *cookie = bpf_map_lookup_elem(&rx_released, &skaddr);

	return cookie && *cookie == (__u64)BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

struct rx_spill_key {
	__u64 sk;  /* struct sock address */
	__u64 seq; /* arrival number */
};

struct rx_spilled {
	struct udpi_peer peer;
	__u16 dropped;
	__u16 segs;
};

/* The notes beyond a ring's depth (allocated only while a burst lasts). */
UDPI_ARRIVALS struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rx_spill_key);
	__type(value, struct rx_spilled);
} rx_spill SEC(".maps");

static __always_inline __u64 sk_queued(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_receive_queue.qlen) +
	       BPF_CORE_READ((struct udp_sock *)sk, reader_queue.qlen);
}

/*
 * Connected sockets whose rings a coalesced datagram began: while there are
 * none, a connected socket's datagrams and receives skip the ring table.
 */
extern __u64 gro_connected_rings;

/*
 * The datagrams on the wire an arriving skb is: its segments if it is a
 * whole GSO skb (a segment of a split one has no gso_size).
 */
static __always_inline __u16 skb_wire_datagrams(struct __sk_buff *skb)
{
	const __u32 segs = SKB(skb, gso_segs);

	return segs > 1 && SKB(skb, gso_size) ? (__u16)segs : 1;
}

/*
 * Takes one from a count that readers of the socket share, unless it is 0:
 * a compare-and-swap, so that two readers seeing the last one cannot both
 * take it (the count would wrap). False if none was left, or if it kept
 * changing under this reader.
 */
static __always_inline bool take_one(__u64 *count)
{
	for (int i = 0; i < 4; i++) {
		const __u64 n = *(volatile __u64 *)count;

		if (!n)
			return false;
		if (__sync_val_compare_and_swap(count, n, n - 1) == n)
			return true;
	}
	return false;
}

/* A live note taken while notes are to be passed over is one of them. */
static __always_inline bool rx_ring_passed_over(struct rx_ring *r)
{
	return take_one(&r->discard);
}

/* A take of a socket's note, step by step (one step: one note looked at). */
struct rx_take {
	struct rx_ring *r;
	__u64 sk;
	struct udpi_peer peer;
	__u16 segs;
	__s16 found; /* 1: a note taken; -1: none to take; 0: looking */
};

/*
 * Notes a take may pass over: every note a socket can have outstanding (the
 * ring's and rx_spill's), and more for readers racing on the head.
 */
#define UDPI_RX_TAKE_STEPS (1 << 18)

/* One step of a take: 1 when it has ended (t->found says how), 0 to go on. */
static __always_inline long rx_take_step(struct rx_take *t)
{
	struct rx_ring *r = t->r;
	const __u64 n = *(volatile __u64 *)&r->head;
	struct rx_spill_key key = {t->sk, n};
	struct rx_spilled *s;
	struct rx_entry e;

	/*
	 * The slot is copied before head moves on: the producer reuses it
	 * only once head has passed it. A slot that carries this arrival's
	 * number is its note (written before the datagram was queued), so
	 * the producer's counter, on the producer's cache line, is read
	 * only when it does not. Two readers of one socket take turns
	 * through the compare-and-swap.
	 */
	__builtin_memcpy(&e, &r->e[n % UDPI_RX_RING], sizeof(e));
	if (e.seq != n + 1 && n >= *(volatile __u64 *)&r->tail) {
		t->found = -1; /* arrived before tracking began */
		return 1;
	}
	if (__sync_val_compare_and_swap(&r->head, n, n + 1) != n)
		return 0;
	if (e.seq != n + 1) {
		s = bpf_map_lookup_elem(&rx_spill, &key);
		if (!s) {
			t->found = -1; /* no room was left to note it */
			return 1;
		}
		e.peer = s->peer;
		e.dropped = s->dropped;
		e.segs = s->segs;
		bpf_map_delete_elem(&rx_spill, &key);
	}
	if (e.dropped || rx_ring_passed_over(r))
		return 0;
	t->peer = e.peer;
	t->segs = e.segs;
	t->found = 1;
	return 1;
}

/* rx_take_step() as a bpf_loop() callback (5.17+; this backend needs 6.3). */
static long rx_take_next(__u32 i, void *ctx)
{
	return rx_take_step(ctx);
}

/*
 * Takes the note of the datagram this receive consumed; true with its
 * sender in *p and the datagrams on the wire it was in *segs, false if it
 * was not noted (queued before tracking began, or no room to note it). A
 * note the kernel struck out (a drop after ingress) is passed over, as many
 * in a row as there are: those datagrams never reached the queue. The first
 * note is looked at here, the rest (struck ones, a race with another
 * reader) in a loop. `connected`: the socket has a peer, so only a ring a
 * coalesced datagram began is its (an older one holds the notes of its
 * unconnected days, read only by recv() without an address).
 */
static __always_inline bool rx_ring_take(struct sock *sk, struct udpi_peer *p, __u16 *segs, bool connected)
{
	__u64 skaddr = (__u64)sk;
	struct rx_take t = {};
	struct rx_ring *r;

	if (connected && !*(volatile __u64 *)&gro_connected_rings)
		return false;
	r = bpf_map_lookup_elem(&rx_rings, &skaddr);
	if (!r || (connected && !r->gro_connected))
		return false;
	if (take_one(&r->skip))
		return false;
	t.r = r;
	t.sk = skaddr;
	if (!rx_take_step(&t))
		bpf_loop(UDPI_RX_TAKE_STEPS, rx_take_next, &t, 0);
	if (!t.found) {
		/*
		 * Given up, the datagram's note still ahead (readers kept
		 * winning the head): the next take passes over it, so the
		 * notes stay in step with the queue.
		 */
		__sync_fetch_and_add(&r->discard, 1);
		return false;
	}
	if (t.found < 0)
		return false;
	*p = t.peer;
	*segs = t.segs;
	return true;
}

/*
 * Checksum failures found by a receive (recvmsg() or poll()): the kernel
 * frees those datagrams with SKB_DROP_REASON_UDP_CSUM in the reading thread
 * and names no socket. They wait by thread, with their senders and
 * destination ports, for the thread's next receive on a socket of that
 * port, which settles them on its flows and passes over their arrival notes,
 * or for its close of such a socket (a poll() found them and no receive
 * followed).
 */
#define UDPI_CSUM_WAITING 8

struct csum_drop {
	struct udpi_peer peer;
	__u16 dport; /* the datagram's destination port */
	__u16 pad;
	__u32 count; /* in a row from this sender to this port; 0: settled */
};

struct csum_drops {
	__u32 n; /* entries used, in the order the drops were found */
	__u32 pad;
	struct csum_drop e[UDPI_CSUM_WAITING];
};

UDPI_ARRIVALS struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	/* threads with failures waiting at once (304 bytes each, preallocated) */
	__uint(max_entries, 1024);
	__type(key, __u64); /* pid_tgid of the reading thread */
	__type(value, struct csum_drops);
} csum_drops SEC(".maps");

/* Threads with checksum failures waiting: receives look only while some wait. */
extern __u64 csum_drops_waiting;

/*
 * The spilled notes from seq on, up to end, forgotten one by one (a
 * bpf_loop() callback); a note still in its slot goes with the ring.
 */
struct rx_forget {
	struct rx_ring *r;
	__u64 sk;
	__u64 seq;
	__u64 end;
};

static long rx_spill_forget_one(__u32 i, void *ctx)
{
	struct rx_forget *f = ctx;
	struct rx_spill_key key = {f->sk, f->seq};

	if (f->seq >= f->end)
		return 1;
	f->seq++;
	if (f->r->e[key.seq % UDPI_RX_RING].seq != key.seq + 1 && bpf_map_lookup_elem(&rx_spill, &key))
		bpf_map_delete_elem(&rx_spill, &key);
	return 0;
}

/*
 * The socket is gone: a new socket at its address starts with no notes. A
 * lookup first: deleting a missing key (most sockets never had a ring)
 * takes the bucket's lock.
 */
static __always_inline void rx_ring_forget(__u64 skaddr)
{
	struct rx_ring *r = bpf_map_lookup_elem(&rx_rings, &skaddr);
	struct rx_forget f = {r, skaddr};

	if (!r)
		return;
	/*
	 * Notes spilled beyond the ring's depth (datagrams never read, notes
	 * struck) go too: a socket at the same address later must not find
	 * them, nor may they fill rx_spill. One spilled while the ring was
	 * full stays spilled after the reader moved on, so every outstanding
	 * number is looked at, not only those past the ring's depth. A
	 * datagram arriving meanwhile may spill a note past the tail read
	 * here: its program, which takes its number before it looks at
	 * closing, finds closing set and takes the note back (the atomic
	 * operations on both sides order them).
	 */
	if (__sync_fetch_and_or(&r->closing, 1))
		return; /* another program is forgetting it */
	f.seq = *(volatile __u64 *)&r->head;
	f.end = *(volatile __u64 *)&r->tail;
	if (f.end != f.seq)
		bpf_loop(UDPI_RX_TAKE_STEPS, rx_spill_forget_one, &f, 0);
	/* Only the call that deleted it gives its mark back: a close may race a create's cleanup. */
	if (r->gro_connected && !bpf_map_delete_elem(&rx_rings, &skaddr))
		__sync_fetch_and_add(&gro_connected_rings, -1);
	else
		bpf_map_delete_elem(&rx_rings, &skaddr);
}

#endif /* UDPINTERCEPT_BPF_ARRIVALS_BPF_H */
