/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The shared bodies every backend's thin entry points call: one handler per
 * operation (count, drop, connect, close), socket identities and their last
 * users, and the emission
 * policy of design §3: a flow's first operation is sent at once, then at
 * most one update per interval (last_emit_ns is the one rate limiter), and
 * changes it holds back are noted once per interval (UDPI_REC_PENDING) so
 * that user space asks for them when the interval has passed.
 */
#ifndef UDPINTERCEPT_BPF_FLOW_BPF_H
#define UDPINTERCEPT_BPF_FLOW_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "core_fixes.bpf.h"
#include "fixed.bpf.h"
#include "maps.bpf.h"
#include "udpintercept.h"

#define UDPI_IPPROTO_UDP 17
#define UDPI_SOCK_DGRAM 2
#define UDPI_MSG_PEEK 0x2
#define UDPI_MSG_ERRQUEUE 0x2000
/* IPv6 extension headers a UDP header may follow, and how many are followed */
#define UDPI_IPV6_HOPOPTS 0
#define UDPI_IPV6_ROUTING 43
#define UDPI_IPV6_DSTOPTS 60
#define UDPI_IPV6_MAX_EXT 4

/*
 * The endpoint of one operation, in the normalised form of udpi_flow_key.
 * Aligned to 4 bytes (its size stays 20): the address is then copied in
 * 4-byte words, not pieced together from 16-bit halves (22 instructions a
 * copy, and a peer is copied several times a datagram).
 */
struct udpi_peer {
	__u8 addr[16];
	__u16 port;
	__u16 family;
} __attribute__((aligned(4)));

/* What an operation did to its flow. */
enum udpi_op {
	UDPI_OP_TX,   /* a send the kernel accepted */
	UDPI_OP_RX,   /* a datagram the application consumed */
	UDPI_OP_DROP, /* a datagram the kernel discarded on its way into the socket */
};

/*
 * One instruction, so that a program interrupting this one on the CPU (a
 * softirq's) cannot lose its addition or this one's. Nothing for 0: clang
 * turns an atomic addition of 0 into an atomic or, which 5.10 refuses.
 */
static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v;

	if (!n)
		return;
	v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		__sync_fetch_and_add(v, n);
}

/* An operation counted in no flow: its datagrams and bytes still count. */
static __always_inline void count_untracked(__u64 packets, __u64 bytes)
{
	stat_add(UDPI_STAT_FLOWS_UNTRACKED, 1);
	stat_add(UDPI_STAT_UNTRACKED_PACKETS, packets);
	stat_add(UDPI_STAT_UNTRACKED_BYTES, bytes);
}

/*
 * Whether the current task's cgroup is the filter's cgroup or below it (1)
 * or not (0). A global function (flow.bpf.c): verified once, it adds no
 * registers to the programs that ask, only a call when a filter is set.
 */
extern int task_in_filter_cgroup(void);

/* Filters on the current task, checked before any map work. */
static __always_inline bool task_filtered_out(void)
{
	if (filter_pid && (bpf_get_current_pid_tgid() >> 32) != filter_pid)
		return true;
	if (filter_uid_set && (__u32)bpf_get_current_uid_gid() != filter_uid)
		return true;
	if (filter_cgroup && !task_in_filter_cgroup())
		return true;
	return false;
}

/*
 * addr is 4-byte aligned (in every struct that holds one): four word stores,
 * which a word-wise read soon after (the flow key's hash) takes straight
 * from the store buffer, where byte stores would make it wait for them.
 */
static __always_inline void set_v4(__u8 *addr, __be32 v4)
{
	__u32 *w = (__u32 *)addr;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = v4;
}

/* IPv4-mapped IPv6 (::ffff:a.b.c.d) is IPv4 traffic: report it as such. */
static __always_inline __u16 family_of_v6(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff))
		return UDPI_AF_INET;
	return UDPI_AF_INET6;
}

static __always_inline void set_v6(__u8 *addr, __u16 *family, const __u32 *v6)
{
	__builtin_memcpy(addr, v6, 16);
	*family = family_of_v6(addr);
}

/*
 * The connected peer of a socket whose family and remote port were read
 * already, or false if it has none. The remote fields of an unconnected
 * socket are zero, so they are only trusted with a non-zero port.
 */
static __always_inline bool sk_peer_of(struct sock *sk, __u16 family, __be16 dport, struct udpi_peer *p)
{
	if (!dport)
		return false;
	p->port = bpf_ntohs(dport);
	if (family == UDPI_AF_INET) {
		set_v4(p->addr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		p->family = UDPI_AF_INET;
		return true;
	}
	if (family != UDPI_AF_INET6)
		return false;
	bpf_core_read(p->addr, sizeof(p->addr), &sk->__sk_common.skc_v6_daddr);
	p->family = family_of_v6(p->addr);
	return true;
}

/* The connected peer of a socket, or false if it has none. */
static __always_inline bool sk_connected_peer(struct sock *sk, struct udpi_peer *p)
{
	__be16 dport;
	__u16 family;

	udpi_sk_dport_family(sk, &dport, &family);
	return sk_peer_of(sk, family, dport, p);
}

static __always_inline void sk_local(struct sock *sk, struct udpi_flow *f)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	f->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (family == UDPI_AF_INET)
		set_v4(f->laddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
	else
		bpf_core_read(f->laddr, sizeof(f->laddr), &sk->__sk_common.skc_v6_rcv_saddr);
}

/*
 * Datagrams a send of `bytes` leaves as: a UDP_SEGMENT (GSO) send of more
 * than one segment is cut into ceil(bytes / gso_size) datagrams on the wire
 * (udp_send_skb()), whatever OutDatagrams says; anything else is one.
 */
static __always_inline __u64 gso_datagrams(__u64 bytes, __u16 gso_size)
{
	if (!gso_size || bytes <= gso_size)
		return 1;
	return (bytes + gso_size - 1) / gso_size;
}

/* The socket's own UDP_SEGMENT size (setsockopt), 0 if unset. */
static __always_inline __u16 sk_gso_size(struct sock *sk)
{
	return BPF_CORE_READ((struct udp_sock *)sk, gso_size);
}

static __always_inline bool peer_filtered_out(struct sock *sk, const struct udpi_peer *p)
{
	if (filter_family && p->family != filter_family)
		return true;
	if (filter_port && p->port != filter_port && BPF_CORE_READ(sk, __sk_common.skc_num) != filter_port)
		return true;
	return false;
}

static __always_inline void note_insert_failure(int err)
{
	__u32 idx = UDPI_STAT_INSERT_LAST_ERRNO;
	__u64 *v;

	if (err == -7 /* E2BIG: the table is full, counted as untracked */)
		return;
	stat_add(UDPI_STAT_INSERT_FAILED, 1);
	v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v = -err;
}

/*
 * Per-CPU sequence in the high bits, CPU in the low 16: unique without a
 * fetch-and-add (5.10 has none). Linux is built for at most 8,192 CPUs
 * (NR_CPUS, 13 bits); 12 bits gave CPU 4,096 the ids of CPU 0. 48 bits of
 * sequence are 2.8 x 10^14 sockets a CPU. A program that interrupts this
 * one on the CPU (a softirq's drop makes ids too) runs to its end first: if
 * it took a number between the read before the addition and the one after,
 * they are not one apart, and this one draws again. 0 if it never gets one.
 */
static __always_inline __u64 new_sock_id(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&id_seq, &zero);
	__u64 before, after;

	if (!seq)
		return 0;
	for (int i = 0; i < 3; i++) {
		before = *(volatile __u64 *)seq;
		__sync_fetch_and_add(seq, 1);
		after = *(volatile __u64 *)seq;
		if (after == before + 1)
			return (after << 16) | (bpf_get_smp_processor_id() & 0xffff);
	}
	return 0;
}

/* This CPU's cache entry, and in *seen the epoch an entry must carry to be valid. */
static __always_inline struct sock_cache *sock_cache_slot(__u64 *seen)
{
	__u32 zero = 0;
	struct sock_cache *c = bpf_map_lookup_elem(&sock_cache, &zero);
	__u64 *epoch = bpf_map_lookup_elem(&cache_epoch, &zero);

	if (!c || !epoch)
		return NULL;
	*seen = *(volatile __u64 *)epoch;
	return c;
}

/* This CPU's cache entry if it is for skaddr and still valid. */
static __always_inline struct sock_cache *sock_cache_of(__u64 skaddr)
{
	__u64 seen;
	struct sock_cache *c = sock_cache_slot(&seen);

	if (!c || c->sk != skaddr || c->epoch != seen)
		return NULL;
	return c;
}

/* Every CPU's cache entry stops being valid. */
static __always_inline void sock_caches_expire(void)
{
	__u32 zero = 0;
	__u64 *epoch = bpf_map_lookup_elem(&cache_epoch, &zero);

	if (epoch)
		__sync_fetch_and_add(epoch, 1);
}

/* The current task becomes the socket's last user. */
static __always_inline void sock_note_user(struct udpi_sock *s)
{
	s->pid = bpf_get_current_pid_tgid() >> 32;
	s->uid = (__u32)bpf_get_current_uid_gid();
	s->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&s->comm, sizeof(s->comm));
}

/*
 * The socket at skaddr, new to the table, enters it with a new id (the
 * current task its last user when `user`); 0, or nonzero when it could not
 * (counted). A global function (flow.bpf.c): it runs at a socket's first
 * operation only, and the verifier walks it once, not on each of a
 * program's ways to it. Scalar arguments only, as 5.10's verifier takes.
 */
extern int sock_register(__u64 skaddr, __u32 user);

/*
 * The id of the socket at skaddr, made if new; 0 if the table refused it.
 * `user`: the tgid of the current task when it is using the socket (a send,
 * a receive, a connect), which makes it the socket's last user, whom its
 * drops are charged to; 0 for a drop, which runs in whatever context
 * delivered the datagram (on loopback the sender's). The cache remembers
 * whose entry it copied, so that the same process again costs a compare; a
 * new user moves the epoch, as the other CPUs' copies name the previous one.
 */
static __always_inline __u64 sock_id_of(__u64 skaddr, __u32 user)
{
	struct sock_cache *c;
	struct udpi_sock *s;
	__u64 seen, id;

	c = sock_cache_slot(&seen);
	if (!c)
		return 0;
	if (c->sk == skaddr && c->epoch == seen && (!user || c->user == user)) {
		/*
		 * The address again after the id: a program interrupting this
		 * one on the CPU that refilled the entry in between clears it
		 * first, and then the table is asked.
		 */
		id = c->id;
		asm volatile("" ::: "memory");
		if (*(volatile __u64 *)&c->sk == skaddr)
			return id;
	}
	s = bpf_map_lookup_elem(&socks, &skaddr);
	if (!s) {
		/*
		 * The address as a plain number: a tracing program's socket is
		 * a typed pointer, which 5.10's verifier refuses as a global
		 * function's scalar argument.
		 */
		__u64 addr = 0;

		bpf_probe_read_kernel(&addr, sizeof(addr), &skaddr);
		if (!addr || sock_register(addr, user))
			return 0;
		s = bpf_map_lookup_elem(&socks, &skaddr);
		if (!s)
			return 0;
	} else if (user && s->pid != user) {
		sock_note_user(s);
		sock_caches_expire();
	}
	/*
	 * The address last: a program interrupting this one on the CPU misses,
	 * never mismatches. One that fills the entry in between leaves its id:
	 * then the entry is nobody's.
	 */
	id = s->id;
	*(volatile __u64 *)&c->sk = 0;
	asm volatile("" ::: "memory");
	c->id = id;
	c->user = s->pid;
	c->epoch = seen;
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&c->sk = skaddr;
	if (*(volatile __u64 *)&c->id != id)
		*(volatile __u64 *)&c->sk = 0;
	return id;
}

/*
 * The task filters for a drop, which has no task of its own: they match the
 * socket's last user, and a socket with none passes none of them. A user is
 * noted only by an operation that passed them (count_op(), handle_connect()),
 * so a socket with a user passes: its cgroup was under the filter's then,
 * which its id alone cannot tell now.
 */
static __always_inline bool user_filtered_out(__u64 skaddr)
{
	struct udpi_sock *s;

	if (!filter_pid && !filter_uid_set && !filter_cgroup)
		return false;
	s = bpf_map_lookup_elem(&socks, &skaddr);
	return !s || !s->pid;
}

/*
 * How a record is submitted: able to wake the reader (the kernel wakes it
 * only if it has read everything before this record) unless another record
 * could within UDPI_WAKEUP_WINDOW_NS, which the reader's next read, due
 * within the window after the one that found that record, also collects.
 * The clock is read afresh: a time that lagged could hold back a record
 * after the reader's follow-up read had come and gone.
 */
static __always_inline __u64 ring_wakeup(void)
{
	const __u64 now = bpf_ktime_get_ns();

	if (now - last_wakeup_ns < UDPI_WAKEUP_WINDOW_NS)
		return BPF_RB_NO_WAKEUP;
	last_wakeup_ns = now;
	return 0;
}

/*
 * Puts a snapshot of the flow in the ring buffer. A full ring buffer loses
 * it (counted) and asks user space for a full sweep, which finds the flow
 * by its unreported changes (emitted_changes).
 */
static __always_inline bool emit(__u32 kind, const struct udpi_flow_key *key, struct udpi_flow *f)
{
	struct udpi_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		stat_add(UDPI_STAT_RB_DROP_UPDATE, 1);
		full_sweep_wanted = 1;
		return false;
	}
	r->kind = kind;
	r->pad = 0;
	__builtin_memcpy(&r->key, key, sizeof(*key));
	__builtin_memcpy(&r->flow, f, sizeof(*f));
	f->emitted_changes = r->flow.changes;
	bpf_ringbuf_submit(r, ring_wakeup());
	stat_add(UDPI_STAT_RB_SUBMITTED, 1);
	return true;
}

/*
 * Sends a snapshot and makes it the one the rate limit counts from; a lost
 * one leaves the limit where it was, so that the flow is due at once.
 */
static __always_inline bool emit_at(__u32 kind, const struct udpi_flow_key *key, struct udpi_flow *f,
				    __u64 now)
{
	const __u64 before = f->last_emit_ns;

	f->last_emit_ns = now;
	if (emit(kind, key, f))
		return true;
	f->last_emit_ns = before;
	return false;
}

/*
 * The rate limit held back this flow's newest change: tell user space once
 * per interval (the first held-back change after each snapshot), so that it
 * asks for the flow when the interval has passed, should no operation come
 * to send it. A note that finds the ring buffer full asks for a full sweep.
 */
static __always_inline void note_pending(const struct udpi_flow_key *key, struct udpi_flow *f)
{
	const __u64 emitted_at = f->last_emit_ns;
	struct udpi_pending_record *r;

	if (f->pending_for_ns == emitted_at)
		return;
	f->pending_for_ns = emitted_at;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		stat_add(UDPI_STAT_PENDING_DROPPED, 1);
		full_sweep_wanted = 1;
		return;
	}
	r->kind = UDPI_REC_PENDING;
	r->pad = 0;
	__builtin_memcpy(&r->key, key, sizeof(*key));
	r->last_emit_ns = emitted_at;
	/* Wakes no one: a note is acted on at a sweep, which reads the ring first. */
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	stat_add(UDPI_STAT_RB_SUBMITTED, 1);
}

static __always_inline void note_task(struct udpi_flow *f, __u64 now)
{
	f->last_ns = now;
	f->pid = bpf_get_current_pid_tgid() >> 32;
	f->uid = (__u32)bpf_get_current_uid_gid();
	f->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&f->comm, sizeof(f->comm));
}

/*
 * A drop's flow takes the socket's last user, not the task on the CPU; with
 * none known, the flow keeps what it had (pid 0 and no comm for a new one).
 */
static __always_inline void note_user_of(struct udpi_flow *f, __u64 skaddr, __u64 now)
{
	struct udpi_sock *s = bpf_map_lookup_elem(&socks, &skaddr);

	f->last_ns = now;
	if (!s || !s->pid)
		return;
	f->pid = s->pid;
	f->uid = s->uid;
	f->cgroup_id = s->cgroup_id;
	__builtin_memcpy(f->comm, s->comm, sizeof(f->comm));
}

/* Counts one operation of `packets` datagrams and `bytes` bytes into the flow. */
static __always_inline void add_op(struct udpi_flow *f, enum udpi_op op, __u64 bytes, __u64 packets)
{
	switch (op) {
	case UDPI_OP_TX:
		__sync_fetch_and_add(&f->tx_bytes, bytes);
		__sync_fetch_and_add(&f->tx_packets, packets);
		break;
	case UDPI_OP_RX:
		__sync_fetch_and_add(&f->rx_bytes, bytes);
		__sync_fetch_and_add(&f->rx_packets, packets);
		break;
	case UDPI_OP_DROP:
		__sync_fetch_and_add(&f->rx_drops, packets);
		break;
	}
}

/*
 * The flow of (socket, peer), created if new. *created tells whether this
 * call made it, so that exactly one CPU reports the birth.
 */
static __always_inline struct udpi_flow *flow_get(struct sock *sk, const struct udpi_flow_key *key,
						  bool *created, bool *busy)
{
	struct udpi_flow *f = bpf_map_lookup_elem(&flows, key);
	struct udpi_flow fresh;
	int err;

	*created = false;
	*busy = false;
	if (f)
		return f;
	/* Zeroed here, not where declared: a flow that exists (nearly every call) skips it. */
	__builtin_memset(&fresh, 0, sizeof(fresh));
	sk_local(sk, &fresh);
	fresh.netns = udpi_sk_netns(sk);
	fresh.emitted_changes = UDPI_NEVER_EMITTED;
	err = udpi_map_insert_new(&flows, key, &fresh);
	*created = !err;
	if (!err)
		stat_add(UDPI_STAT_FLOWS_CREATED, 1);
	*busy = err == -UDPI_EBUSY;
	if (err && err != -UDPI_EEXIST) {
		note_insert_failure(err);
		return NULL;
	}
	return bpf_map_lookup_elem(&flows, key);
}

static __always_inline void make_key(struct udpi_flow_key *key, __u64 sock_id, const struct udpi_peer *p)
{
	key->sock_id = sock_id;
	__builtin_memcpy(key->raddr, p->addr, 16);
	/* port and family as one word, as the hash reads them (see set_v4()) */
	__builtin_memcpy(&key->rport, &p->port, sizeof(key->rport) + sizeof(key->family));
	key->pad = 0;
}
_Static_assert(__builtin_offsetof(struct udpi_flow_key, family) ==
			       __builtin_offsetof(struct udpi_flow_key, rport) + 2 &&
		       __builtin_offsetof(struct udpi_peer, family) ==
			       __builtin_offsetof(struct udpi_peer, port) + 2,
	       "make_key() copies port and family together");

/*
 * The flow table refused a new flow only because it was busy (udpi_map_insert_new()):
 * the operation goes to user space, which adds the flow or its counts.
 */
static __always_inline void defer(struct sock *sk, const struct udpi_flow_key *key, __u64 bytes,
				  __u64 packets, enum udpi_op op)
{
	struct udpi_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		count_untracked(packets, bytes);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = UDPI_REC_DEFERRED;
	__builtin_memcpy(&r->key, key, sizeof(*key));
	sk_local(sk, &r->flow);
	r->flow.netns = udpi_sk_netns(sk);
	switch (op) {
	case UDPI_OP_TX:
		r->flow.tx_bytes = bytes;
		r->flow.tx_packets = packets;
		break;
	case UDPI_OP_RX:
		r->flow.rx_bytes = bytes;
		r->flow.rx_packets = packets;
		break;
	case UDPI_OP_DROP:
		r->flow.rx_drops = packets;
		break;
	}
	if (op == UDPI_OP_DROP)
		note_user_of(&r->flow, (__u64)sk, bpf_ktime_get_ns());
	else
		note_task(&r->flow, bpf_ktime_get_ns());
	r->flow.changes = 1;
	bpf_ringbuf_submit(r, ring_wakeup());
	stat_add(UDPI_STAT_RB_SUBMITTED, 1);
}

/*
 * Count one operation of `packets` datagrams and `bytes` bytes on the flow
 * (sk, peer), and send a snapshot when the emission policy says so: at once
 * for a flow's first operation, then at most once per interval.
 */
static __always_inline void count_op(struct sock *sk, const struct udpi_peer *p, __u64 bytes, __u64 packets,
				     enum udpi_op op)
{
	const __u32 tgid = op == UDPI_OP_DROP ? 0 : bpf_get_current_pid_tgid() >> 32;
	struct udpi_flow_key key;
	struct udpi_flow *f;
	bool created, first, busy, due;
	__u64 now, id, tick;

	id = sock_id_of((__u64)sk, tgid);
	if (!id)
		goto untracked;
	make_key(&key, id, p);
	f = flow_get(sk, &key, &created, &busy);
	if (!f && busy) {
		defer(sk, &key, bytes, packets, op);
		return;
	}
	if (!f)
		goto untracked;

	first = f->changes == 0;
	add_op(f, op, bytes, packets);
	__sync_fetch_and_add(&f->changes, 1);
	/*
	 * Reading the clock costs more than the rest of the update: a flow reads
	 * it once per scheduler tick (bpf_jiffies64() is a plain load), so its
	 * time is that of its newest change to within a tick, never later.
	 */
	tick = bpf_jiffies64();
	if (tick != f->last_tick) {
		now = bpf_ktime_get_ns();
		f->last_tick = tick;
		f->last_ns = now;
	} else {
		now = f->last_ns;
	}
	due = created || first || now - f->last_emit_ns >= interval_ns;
	/*
	 * The task's identity is taken when a snapshot is due or another
	 * process touches the flow; in between only the time moves (uid, cgroup
	 * and command changes of the same process show at its next snapshot).
	 */
	if (op == UDPI_OP_DROP) {
		if (due)
			note_user_of(f, (__u64)sk, now);
	} else if (due || f->pid != tgid) {
		note_task(f, now);
	}
	/*
	 * A flow born at connect() (cgroup connect4/6 run before the kernel binds
	 * and routes the socket) takes the local address and port the kernel
	 * gave it, as getsockname() says, from its first operation on.
	 */
	if (first && !created)
		sk_local(sk, f);
	if (due)
		emit_at(created ? UDPI_REC_NEW : UDPI_REC_UPDATE, &key, f, now);
	else
		note_pending(&key, f);
	return;

untracked:
	count_untracked(packets, bytes);
}

/* A send (tx) or a receive the kernel accepted, in the task that made it. */
static __always_inline void handle_count(struct sock *sk, const struct udpi_peer *p, __u64 bytes,
					 __u64 packets, bool tx)
{
	if (peer_filtered_out(sk, p))
		return;
	count_op(sk, p, bytes, packets, tx ? UDPI_OP_TX : UDPI_OP_RX);
}

/*
 * The kernel discarded n datagrams from peer p on their way into sk
 * (counted in the socket's drops): the flow of (sk, p) gains n drops,
 * charged to the socket's last user whatever task is on the CPU.
 */
static __always_inline void handle_drops(struct sock *sk, const struct udpi_peer *p, __u64 n)
{
	if (peer_filtered_out(sk, p) || user_filtered_out((__u64)sk))
		return;
	count_op(sk, p, 0, n, UDPI_OP_DROP);
}

/* connect() gave the socket this peer: the flow is born (with no traffic yet). */
static __always_inline void handle_connect(struct sock *sk, const struct udpi_peer *p)
{
	struct udpi_flow_key key;
	struct udpi_flow *f;
	bool created, busy;
	__u64 now, id;

	if (peer_filtered_out(sk, p))
		return;
	id = sock_id_of((__u64)sk, bpf_get_current_pid_tgid() >> 32);
	if (!id)
		return;
	make_key(&key, id, p);
	f = flow_get(sk, &key, &created, &busy);
	if (!f)
		return;
	now = bpf_ktime_get_ns();
	note_task(f, now);
	emit_at(UDPI_REC_CONNECT, &key, f, now);
}

/*
 * The socket is going away. One record names it; user space closes its flows
 * (BPF cannot walk a hash map by socket on 5.10). If the ring buffer is
 * full, the id goes to `closed` for user space to collect; if that is full
 * too, user space reads the tables whole (a full sweep), where the socket is
 * missing from `socks`. Either way the address is forgotten, so a reused
 * struct sock gets a new id.
 */
static __always_inline void handle_close(__u64 skaddr)
{
	struct udpi_flow_key key = {};
	struct udpi_sock *s = bpf_map_lookup_elem(&socks, &skaddr);
	struct udpi_record *r;
	bool unnoted = false;
	__u64 now;

	if (!s)
		return;
	/* Before the address can be reused: no CPU's cached id outlives this. */
	sock_caches_expire();
	key.sock_id = s->id;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (r) {
		__builtin_memset(r, 0, sizeof(*r));
		r->kind = UDPI_REC_SOCK_CLOSE;
		r->key.sock_id = key.sock_id;
		bpf_ringbuf_submit(r, ring_wakeup());
		stat_add(UDPI_STAT_RB_SUBMITTED, 1);
	} else {
		now = bpf_ktime_get_ns();
		unnoted = bpf_map_update_elem(&closed, &key.sock_id, &now, BPF_ANY) != 0;
		stat_add(UDPI_STAT_RB_DROP_CLOSE, 1);
	}
	bpf_map_delete_elem(&socks, &skaddr);
	/*
	 * Again after the delete: a program on another CPU may have cached the
	 * id between the first move and the delete.
	 */
	sock_caches_expire();
	/* After the delete: the sweep must not find the socket still there. */
	if (unnoted)
		full_sweep_wanted = 1;
}

#endif /* UDPINTERCEPT_BPF_FLOW_BPF_H */
