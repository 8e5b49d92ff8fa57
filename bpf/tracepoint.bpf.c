// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The tracepoint backend (kernel >= 6.3): the sock_send_length and
 * sock_recv_length raw tracepoints count what sendmsg/recvmsg returned, and
 * cgroup hooks on the cgroup v2 root say what the tracepoints cannot: the
 * peer of an unconnected send or receive (sendmsg4/6, recvmsg4/6), connects
 * and closes. Where the kernel lets cgroup_skb programs see the current
 * task, one cgroup_skb/egress program counts sends instead.
 */
#include "vmlinux.h"
#include <bpf/bpf_tracing.h>

#include "arrivals.bpf.h"
#include "cgroup.bpf.h"

/*
 * Peers stashed by the cgroup sock_addr hooks for the operation that follows
 * in the same thread: sendmsg4/6 run inside udp_sendmsg before the send,
 * recvmsg4/6 inside udp_recvmsg after the copy, both before the
 * sock_{send,recv}_length tracepoint of the same call. Keyed by thread: the
 * task can migrate between CPUs in between (udp_sendmsg may sleep).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udpi_peer_stash);
} send_stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udpi_peer_stash);
} recv_stash SEC(".maps");

/*
 * UDP_SEGMENT sends on the sock_send_length path: that tracepoint tells the
 * bytes, not the segment size (a control message sets it per call, out of
 * sight of this backend). The GSO skb passes __dev_queue_xmit() in the
 * sender's context before the send returns, carrying gso_segs: the datagrams
 * it leaves as. On stacked devices (a bridge and its port, a VLAN, a tunnel)
 * the same skb passes it once per device: only its first pass counts.
 */
struct gso_note {
	__u64 sk;    /* 0: none (taken) */
	__u64 skb;   /* the last skb counted */
	__u64 extra; /* datagrams beyond one per send */
};

/*
 * Where the kernel lets cgroup programs reach task storage (user space
 * probes it), the stashes and the GSO note live with the thread instead: no
 * hashing, no LRU lists, and gone with the thread.
 */
struct task_stash {
	struct udpi_peer_stash send;
	struct udpi_peer_stash recv;
	struct gso_note gso;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_stash);
} task_stashes SEC(".maps");

const volatile bool stash_in_task = false;

static __always_inline void *lru_stash(bool send)
{
	return send ? (void *)&send_stash : (void *)&recv_stash;
}

/*
 * Stashes a thread left in the LRU maps because it had no task storage (its
 * creation failed: the kernel allocates it on the thread's first stash and
 * may refuse then) and not yet taken: only while some are does a stash that
 * task storage lacks have to be looked for there.
 */
__u64 stashes_spilled = 0;

/* Takes the stash st if it is sk's. */
static __always_inline bool take_from(struct udpi_peer_stash *st, struct sock *sk, struct udpi_peer *p,
				      bool *connected)
{
	if (st->sk != (__u64)sk)
		return false;
	__builtin_memcpy(p->addr, st->addr, 16);
	p->port = st->port;
	p->family = st->family;
	*connected = st->connected;
	st->sk = 0;
	return true;
}

/* This thread's task storage, if it has some (never made here). */
static __always_inline struct task_stash *own_task_stash(void)
{
	if (!stash_in_task)
		return NULL;
	return bpf_task_storage_get(&task_stashes, bpf_get_current_task_btf(), 0, 0);
}

/*
 * The stash of this thread's operation on sk, if one was left (and takes
 * it); ts: own_task_stash(). A stash is only ever left for a UDP socket, so
 * finding one also settles what the socket is. *connected: the socket had a
 * peer of its own.
 */
static __always_inline bool take_stash(struct task_stash *ts, bool send, struct sock *sk, struct udpi_peer *p,
				       bool *connected)
{
	struct udpi_peer_stash *st;
	__u64 tid;

	if (stash_in_task) {
		if (ts && take_from(send ? &ts->send : &ts->recv, sk, p, connected))
			return true;
		if (!*(volatile __u64 *)&stashes_spilled)
			return false;
	}
	tid = bpf_get_current_pid_tgid();
	st = bpf_map_lookup_elem(lru_stash(send), &tid);
	if (!st || !take_from(st, sk, p, connected))
		return false;
	/* A spilled stash leaves the table with its thread's next take. */
	if (stash_in_task && !bpf_map_delete_elem(lru_stash(send), &tid))
		__sync_fetch_and_add(&stashes_spilled, -1);
	return true;
}

/*
 * Where the thread has no task storage, its note waits in this table (the
 * kernel could not allocate the storage, or cgroup programs cannot reach it).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct gso_note);
} gso_notes SEC(".maps");

/*
 * Notes in gso_notes not yet taken: most sends need not look (a hash lookup
 * each). A note its thread never takes (an skb that leaves later, from a
 * softirq, is noted for whichever thread it interrupted) keeps it above zero:
 * in task storage such a note costs nothing and goes with its thread.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gso_pending SEC(".maps");

/* Notes the skb's datagrams beyond its first for sk's send, in n. */
static __always_inline void note_gso(struct gso_note *n, struct sock *sk, struct sk_buff *skb, __u16 segs)
{
	if (n->sk != (__u64)sk) {
		/* taken, or a note its thread left for another socket: this one replaces it */
		n->sk = (__u64)sk;
		n->skb = (__u64)skb;
		n->extra = segs - 1;
	} else if (n->skb != (__u64)skb) {
		n->skb = (__u64)skb;
		n->extra += segs - 1;
	}
}

SEC("raw_tp/net_dev_queue")
int BPF_PROG(tp_net_dev_queue, struct sk_buff *skb)
{
	struct skb_shared_info *shinfo = udpi_skb_shinfo(skb);
	struct gso_note fresh = {}, *n;
	struct sock *sk;
	__u64 tid;
	__u16 segs;

	/* Nearly every skb is one datagram: two reads decide that. */
	if (!shinfo || bpf_probe_read_kernel(&segs, sizeof(segs), &shinfo->gso_segs) || segs <= 1)
		return 0;
	if (!(BPF_CORE_READ(shinfo, gso_type) & SKB_GSO_UDP_L4))
		return 0;
	sk = BPF_CORE_READ(skb, sk);
	if (!sk)
		return 0;
	if (stash_in_task) {
		struct task_stash *ts = bpf_task_storage_get(&task_stashes, bpf_get_current_task_btf(), 0,
							     BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (ts) {
			note_gso(&ts->gso, sk, skb, segs);
			return 0;
		}
	}
	tid = bpf_get_current_pid_tgid();
	n = bpf_map_lookup_elem(&gso_notes, &tid);
	if (n) {
		/* still one note of this thread's waiting: the count stands */
		note_gso(n, sk, skb, segs);
		return 0;
	}
	note_gso(&fresh, sk, skb, segs);
	if (!bpf_map_update_elem(&gso_notes, &tid, &fresh, BPF_NOEXIST)) {
		__u32 zero = 0;
		__u64 *pending = bpf_map_lookup_elem(&gso_pending, &zero);

		if (pending)
			__sync_fetch_and_add(pending, 1);
	}
	return 0;
}

/*
 * Datagrams beyond the first that this thread's last send on sk left as (and
 * takes the note); ts: own_task_stash().
 */
static __always_inline __u64 take_gso_extra(struct task_stash *ts, struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	__u64 *pending;
	struct gso_note *n;
	__u64 extra;

	if (ts && ts->gso.sk == (__u64)sk) {
		ts->gso.sk = 0;
		return ts->gso.extra;
	}
	pending = bpf_map_lookup_elem(&gso_pending, &zero);
	if (!pending || !*pending)
		return 0;
	n = bpf_map_lookup_elem(&gso_notes, &tid);
	if (!n || n->sk != (__u64)sk)
		return 0;
	extra = n->extra;
	if (!bpf_map_delete_elem(&gso_notes, &tid))
		__sync_fetch_and_add(pending, -1);
	return extra;
}

/*
 * Sends counted on their way out (where the kernel lets cgroup_skb programs
 * see the current task: user space probes it). cgroup_skb/egress runs in
 * ip_finish_output()/ip6_finish_output() for every skb of a socket, in the
 * sender's context, before fragmentation and GSO segmentation: one program
 * sees the destination (the headers), the payload and, for a UDP_SEGMENT
 * send, the datagrams it leaves as (gso_segs). It replaces the cgroup
 * sendmsg hooks, sock_send_length and net_dev_queue, three programs per
 * send. A send the kernel refuses builds no skb and counts nothing; a corked
 * send counts as the one datagram it becomes.
 */
const volatile bool send_at_egress = false;

SEC("cgroup_skb/egress")
int cg_skb_egress(struct __sk_buff *skb)
{
	struct bpf_sock *bsk = SKB(skb, sk);
	struct udpi_peer p = {};
	struct sock *sk;
	__u64 bytes, segs;

	if (!bsk)
		return 1;
	bsk = bpf_sk_fullsock(bsk);
	if (!bsk || BPF_SOCK(bsk, protocol) != UDPI_IPPROTO_UDP || BPF_SOCK(bsk, type) != UDPI_SOCK_DGRAM ||
	    task_filtered_out())
		return 1;
	segs = SKB(skb, gso_segs) > 1 ? SKB(skb, gso_segs) : 1;
	sk = launder_sk(bsk);
	if (!sk || !skb_udp_end(skb, true, &p, &bytes)) {
		/* a socket or headers this program could not read: counted, not attributed */
		count_untracked(segs, SKB(skb, len));
		return 1;
	}
	handle_count(sk, &p, bytes, segs, true);
	return 1;
}

/* sock_sendmsg_nosec(): trace_sock_send_length(sk, ret, 0) after every send. */
SEC("raw_tp/sock_send_length")
int BPF_PROG(tp_send_length, struct sock *sk, int ret, int flags)
{
	struct udpi_peer p = {};
	struct task_stash *ts;
	bool given, connected;
	__be16 dport;
	__u16 family;
	__u64 extra;

	/* Consume the notes even for a refused send, so they cannot go stale. */
	ts = own_task_stash();
	given = take_stash(ts, true, sk, &p, &connected);
	if (!given && !udpi_sk_is_udp_dgram(sk))
		return 0;
	extra = take_gso_extra(ts, sk);
	if (ret < 0 || task_filtered_out())
		return 0; /* refused sends count nothing */
	if (!given) {
		udpi_sk_dport_family(sk, &dport, &family);
		if (!sk_peer_of(sk, family, dport, &p)) {
			/* an unconnected send whose destination no hook left: counted, not attributed */
			count_untracked(1 + extra, (__u64)ret);
			return 0;
		}
	}
	handle_count(sk, &p, (__u64)ret, 1 + extra, true);
	return 0;
}

/*
 * Noting arrivals costs every datagram the machine receives a cgroup_skb
 * program, for the sake of recv() without an address on unconnected sockets,
 * which few applications do. So user space attaches cg_skb_ingress (and
 * tp_kfree_skb) when the first such receive asks for it, unless told to from
 * the start (then arrivals_asked starts at 1). The receives before the hook
 * is in place, and the datagrams already queued then, count as peer unknown
 * (rx_ring_get() skips what was queued before a socket's ring began).
 */
__u32 arrivals_asked = 0;

static __always_inline void ask_for_arrivals(void)
{
	struct udpi_record *r;

	arrivals_asked = 1; /* two CPUs may both ask: user space attaches once */
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		arrivals_asked = 0; /* the next such receive asks again */
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = UDPI_REC_WANT_ARRIVALS;
	bpf_ringbuf_submit(r, 0);
	stat_add(UDPI_STAT_RB_SUBMITTED, 1);
}

/* A receive settling its thread's waiting checksum failures. */
struct csum_settling {
	struct sock *sk;
	struct csum_drops *d;
	__u64 settled; /* drops settled, whose notes it passes over */
	__u16 port;    /* the receiving socket's */
	bool waiting;  /* drops are left for another socket */
};

/*
 * The drops' flow update, as a global function: the verifier checks it once,
 * not on each of its passes over the bpf_loop() callback below until their
 * states converge (most of the receive program's verification before).
 */
__noinline int count_drops(__u64 skaddr, const struct udpi_peer *p, __u32 n)
{
	if (!p)
		return 0;
	handle_drops((struct sock *)skaddr, p, n);
	return 0;
}

/* One waiting entry (a bpf_loop() callback, 5.17+). */
static long csum_settle_one(__u32 i, struct csum_settling *s)
{
	struct udpi_peer peer;
	struct csum_drop *e;

	if (i >= UDPI_CSUM_WAITING)
		return 1;
	e = &s->d->e[i];
	if (!e->count)
		return 0;
	if (e->dport != s->port) {
		s->waiting = true;
		return 0;
	}
	peer = e->peer;
	count_drops((__u64)s->sk, &peer, e->count);
	s->settled += e->count;
	e->count = 0;
	return 0;
}

/* Whether the socket has a connected peer (its remote port is set). */
static __always_inline bool sk_has_peer(struct sock *sk)
{
	__be16 dport;
	__u16 family;

	udpi_sk_dport_family(sk, &dport, &family);
	return dport != 0;
}

/* sk's receive in this thread settles the checksum failures waiting for it. */
static __always_inline void settle_csum_drops(struct sock *sk, bool known, bool connected)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct csum_settling s = {sk, bpf_map_lookup_elem(&csum_drops, &tid), 0, 0, false};
	struct rx_ring *r;

	if (!s.d)
		return;
	s.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	bpf_loop(UDPI_CSUM_WAITING, csum_settle_one, &s, 0);
	/*
	 * Asked of the socket only now, after the loop: its callback is verified
	 * once. A connected socket's receives take notes only from a ring its
	 * coalesced datagrams began.
	 */
	if (s.settled) {
		__u64 skaddr = (__u64)sk;

		r = bpf_map_lookup_elem(&rx_rings, &skaddr);
		if (r && (r->gro_connected || !(known ? connected : sk_has_peer(sk))))
			__sync_fetch_and_add(&r->discard, s.settled);
	}
	if (!s.waiting && !bpf_map_delete_elem(&csum_drops, &tid))
		__sync_fetch_and_add(&csum_drops_waiting, -1);
}

/*
 * The receive's flow update, as a global function: the verifier walks it
 * once, not again on each of the program's ways to it (about five times
 * as a static subprogram: 4,600 of the 12,200 instructions it walked),
 * and its stack adds to the program's own but not to that of
 * settle_csum_drops()'s bpf_loop() callback, which updates a flow too
 * (6.12's verifier refused the 544 bytes of the two inlined).
 */
__noinline int count_receive(__u64 skaddr, const struct udpi_peer *p, __u64 bytes, __u64 segs)
{
	if (!p)
		return 0;
	handle_count((struct sock *)skaddr, p, bytes, segs, false);
	return 0;
}

/*
 * rx_ring_take() as a global function: the program takes a note in two
 * places, and the verifier walks the take (its bpf_loop() callback until
 * its states converge) once for both.
 */
__noinline int take_note(__u64 skaddr, struct udpi_peer *p, __u16 *segs, __u32 connected)
{
	if (!p || !segs)
		return 0;
	return rx_ring_take((struct sock *)skaddr, p, segs, connected);
}

#define UDPI_RCV_SHUTDOWN 1

/* sock_recvmsg_nosec(): trace_sock_recv_length(sk, ret, flags) after every receive. */
SEC("raw_tp/sock_recv_length")
int BPF_PROG(tp_recv_length, struct sock *sk, int ret, int flags)
{
	struct udpi_peer p = {}, noted = {};
	bool have, connected = false;
	__be16 dport = 0;
	__u16 family = 0, segs = 1;

	have = take_stash(own_task_stash(), false, sk, &p, &connected);
	/* This CPU's socket cache holds UDP sockets only: a hit spares reading the socket's type. */
	if (!have && !sock_cache_of((__u64)sk) && !udpi_sk_is_udp_dgram(sk))
		return 0;
	/* Also after an error: a receive that found only damaged datagrams fails. */
	if (*(volatile __u64 *)&csum_drops_waiting)
		settle_csum_drops(sk, have, connected);
	if (ret < 0 || (flags & (UDPI_MSG_PEEK | UDPI_MSG_ERRQUEUE))) {
		/*
		 * Errors, peeks and the error queue consume no datagram, but for
		 * a copy to the application that failed: the kernel took that
		 * datagram off the queue and dropped it, and its note goes too.
		 */
		if (ret == -UDPI_EFAULT && !(flags & (UDPI_MSG_PEEK | UDPI_MSG_ERRQUEUE)))
			take_note((__u64)sk, &noted, &segs, connected);
		return 0;
	}
	/*
	 * A receive that returned no datagram: a reader woken by
	 * shutdown(SHUT_RD) returns 0 (a zero-length datagram read with an
	 * address leaves a stash; one read without, after the shutdown, is
	 * taken for none).
	 */
	if (!ret && !have && (BPF_CORE_READ(sk, sk_shutdown) & UDPI_RCV_SHUTDOWN))
		return 0;
	/*
	 * Every receive on an unconnected socket takes its note, named or not;
	 * on a connected one, where coalesced datagrams gave it a ring. Also a
	 * receive the filters leave out: the notes stay in step with the queue.
	 */
	if (take_note((__u64)sk, &noted, &segs, connected) && !have) {
		p = noted;
		have = true;
	}
	if (task_filtered_out())
		return 0;
	if (!have) {
		udpi_sk_dport_family(sk, &dport, &family);
		if (family != UDPI_AF_INET && family != UDPI_AF_INET6)
			return 0;
	}
	if (!have && !sk_peer_of(sk, family, dport, &p)) {
		/* recv() without an address of a datagram whose sender was not noted */
		stat_add(UDPI_STAT_PEER_UNKNOWN, 1);
		p.family = family;
		if (!arrivals_asked)
			ask_for_arrivals();
	}
	count_receive((__u64)sk, &p, (__u64)ret, segs);
	return 0;
}

/*
 * A thread keeps its stash: it is rewritten in place, and only a thread's
 * first stash inserts (an LRU insert per datagram costs several times the
 * lookup).
 */
static __always_inline void put_stash(bool send, const struct udpi_peer_stash *st)
{
	struct udpi_peer_stash *slot;
	__u64 tid;

	if (stash_in_task) {
		struct task_stash *ts = bpf_task_storage_get(&task_stashes, bpf_get_current_task_btf(), 0,
							     BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (ts) {
			if (send)
				ts->send = *st;
			else
				ts->recv = *st;
			return;
		}
		/* No task storage to be had: the LRU map holds the stash instead. */
	}
	tid = bpf_get_current_pid_tgid();
	slot = bpf_map_lookup_elem(lru_stash(send), &tid);
	if (slot)
		*slot = *st;
	else if (!bpf_map_update_elem(lru_stash(send), &tid, st, BPF_ANY) && stash_in_task)
		__sync_fetch_and_add(&stashes_spilled, 1);
}

/* The hook's IPv6 address, one 32-bit load each (the context allows no other). */
static __always_inline void sock_addr_ip6(struct bpf_sock_addr *ctx, __u32 a[4])
{
	a[0] = SOCK_ADDR(ctx, user_ip6[0]);
	a[1] = SOCK_ADDR(ctx, user_ip6[1]);
	a[2] = SOCK_ADDR(ctx, user_ip6[2]);
	a[3] = SOCK_ADDR(ctx, user_ip6[3]);
}

/* Whether the hook's socket has a connected peer (its remote port is set). */
static __always_inline __u16 ctx_connected(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = SOCK_ADDR(ctx, sk);

	return sk && BPF_SOCK(sk, dst_port);
}

static __always_inline void stash_v4(bool send, struct bpf_sock_addr *ctx)
{
	struct udpi_peer_stash st = {};

	/* The sock pointer is only a key here, never dereferenced. */
	st.sk = (__u64)SOCK_ADDR(ctx, sk);
	if (!send)
		st.connected = ctx_connected(ctx);
	set_v4(st.addr, SOCK_ADDR(ctx, user_ip4));
	st.port = bpf_ntohs((__u16)SOCK_ADDR(ctx, user_port));
	st.family = UDPI_AF_INET;
	put_stash(send, &st);
}

static __always_inline void stash_v6(bool send, struct bpf_sock_addr *ctx)
{
	struct udpi_peer_stash st = {};
	__u32 a[4];

	st.sk = (__u64)SOCK_ADDR(ctx, sk);
	if (!send)
		st.connected = ctx_connected(ctx);
	sock_addr_ip6(ctx, a);
	set_v6(st.addr, &st.family, a);
	st.port = bpf_ntohs((__u16)SOCK_ADDR(ctx, user_port));
	put_stash(send, &st);
}

/* cgroup programs on the root cgroup see every process: always allow (return 1). */
SEC("cgroup/sendmsg4")
int cg_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (SOCK_ADDR(ctx, protocol) == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v4(true, ctx);
	return 1;
}

SEC("cgroup/sendmsg6")
int cg_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (SOCK_ADDR(ctx, protocol) == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v6(true, ctx);
	return 1;
}

SEC("cgroup/recvmsg4")
int cg_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (SOCK_ADDR(ctx, protocol) == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v4(false, ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int cg_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (SOCK_ADDR(ctx, protocol) == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v6(false, ctx);
	return 1;
}

/* connect4/6 run before the kernel sets the peer: the flow is born here. */
SEC("cgroup/connect4")
int cg_connect4(struct bpf_sock_addr *ctx)
{
	struct udpi_peer p = {};
	struct sock *sk;

	if (SOCK_ADDR(ctx, protocol) != UDPI_IPPROTO_UDP || task_filtered_out())
		return 1;
	set_v4(p.addr, SOCK_ADDR(ctx, user_ip4));
	p.port = bpf_ntohs((__u16)SOCK_ADDR(ctx, user_port));
	p.family = UDPI_AF_INET;
	sk = launder_sk(SOCK_ADDR(ctx, sk));
	if (p.port && sk)
		handle_connect(sk, &p);
	return 1;
}

SEC("cgroup/connect6")
int cg_connect6(struct bpf_sock_addr *ctx)
{
	struct udpi_peer p = {};
	struct sock *sk;
	__u32 a[4];

	if (SOCK_ADDR(ctx, protocol) != UDPI_IPPROTO_UDP || task_filtered_out())
		return 1;
	sock_addr_ip6(ctx, a);
	set_v6(p.addr, &p.family, a);
	p.port = bpf_ntohs((__u16)SOCK_ADDR(ctx, user_port));
	sk = launder_sk(SOCK_ADDR(ctx, sk));
	if (p.port && sk)
		handle_connect(sk, &p);
	return 1;
}

/*
 * A new socket at an address the socket table still holds: the socket
 * there before was released without cg_sock_release running (the kernel
 * does not always run it), so its flows end now, and the new one gets its
 * own id and arrival ring. Returns 1: the socket is created.
 */
SEC("cgroup/sock_create")
int cg_sock_create(struct bpf_sock *ctx)
{
	if (BPF_SOCK(ctx, protocol) == UDPI_IPPROTO_UDP) {
		handle_close((__u64)ctx);
		rx_ring_forget((__u64)ctx);
	}
	return 1;
}

/*
 * Fires for every UDP socket's release, also at process exit, in the thread
 * that closes it. Checksum failures that thread's poll() found on the socket
 * with no receive after it (a client that gave up waiting) are settled
 * first: no receive will come, and its close is its flows' last record.
 */
SEC("cgroup/sock_release")
int cg_sock_release(struct bpf_sock *ctx)
{
	struct sock *sk;

	if (BPF_SOCK(ctx, protocol) == UDPI_IPPROTO_UDP) {
		if (*(volatile __u64 *)&csum_drops_waiting && (sk = launder_sk(ctx)))
			settle_csum_drops(sk, false, false);
		handle_close((__u64)ctx);
		/*
		 * Marked before its ring is forgotten: see rx_released. A
		 * connected socket begins a ring only with a coalesced datagram
		 * (rx_ring_get()): while no connected socket has one, a connected
		 * socket's close (a client's, a socket a query) is not marked,
		 * and one whose first coalesced datagram came between its
		 * release and its unhash would keep its ring.
		 */
		if (arrivals_asked && (!BPF_SOCK(ctx, dst_port) || *(volatile __u64 *)&gro_connected_rings)) {
			__u64 skaddr = (__u64)ctx, cookie = bpf_get_socket_cookie(ctx);

			bpf_map_update_elem(&rx_released, &skaddr, &cookie, BPF_ANY);
		}
		rx_ring_forget((__u64)ctx);
	}
	return 1;
}
