// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * udpintercept's BPF programs: thin entry points per backend around the
 * shared handlers of handlers.bpf.h. User space loads only the programs of
 * the backend it chose (see src/backend.cpp's table).
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "handlers.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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
 * Where the kernel lets cgroup programs reach task storage (user space
 * probes it), the stashes live with the thread instead: no hashing, no
 * LRU lists, and gone with the thread.
 */
struct task_stash {
	struct udpi_peer_stash send;
	struct udpi_peer_stash recv;
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

/* One slot per CPU to turn a verifier-typed socket pointer into a plain value. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ptr_scratch SEC(".maps");

/*
 * cgroup hooks hold the socket as PTR_TO_SOCKET, on which the verifier
 * forbids the arithmetic a CO-RE read needs. Storing it in a map value and
 * loading it back yields the same address as a scalar (allowed with
 * CAP_PERFMON, which tracing needs anyway); it is only ever read through
 * bpf_probe_read_kernel.
 */
static __always_inline struct sock *launder_sk(void *p)
{
	__u32 zero = 0;
	__u64 *slot = bpf_map_lookup_elem(&ptr_scratch, &zero);

	if (!slot)
		return NULL;
	*(volatile __u64 *)slot = (__u64)p;
	return (struct sock *)*(volatile __u64 *)slot;
}

/*
 * The stash of this thread's operation on sk, if one was left (and takes
 * it). A stash is only ever left for a UDP socket, so finding one also
 * settles what the socket is. *connected: the socket had a peer of its own.
 */
static __always_inline bool take_stash(bool send, struct sock *sk, struct udpi_peer *p, bool *connected)
{
	struct udpi_peer_stash *st;

	if (stash_in_task) {
		struct task_stash *ts = bpf_task_storage_get(&task_stashes, bpf_get_current_task_btf(), 0, 0);

		if (!ts)
			return false;
		st = send ? &ts->send : &ts->recv;
	} else {
		__u64 tid = bpf_get_current_pid_tgid();

		st = bpf_map_lookup_elem(lru_stash(send), &tid);
		if (!st)
			return false;
	}
	if (st->sk != (__u64)sk)
		return false;
	__builtin_memcpy(p->addr, st->addr, 16);
	p->port = st->port;
	p->family = st->family;
	*connected = st->connected;
	st->sk = 0;
	return true;
}

/* ---- hook bodies shared by the fentry and kprobe backends ---- */

/* The destination a sendmsg was given (msg_name: a kernel copy), if any. */
static __always_inline bool msg_peer(struct msghdr *msg, struct udpi_peer *p)
{
	void *name = BPF_CORE_READ(msg, msg_name);
	struct sockaddr_in6 sin6;
	__u16 family;

	if (!name || bpf_probe_read_kernel(&family, sizeof(family), name))
		return false;
	if (family == UDPI_AF_INET) {
		struct sockaddr_in sin;

		if (bpf_probe_read_kernel(&sin, sizeof(sin), name))
			return false;
		set_v4(p->addr, sin.sin_addr.s_addr);
		p->port = bpf_ntohs(sin.sin_port);
		p->family = UDPI_AF_INET;
		return true;
	}
	if (family != UDPI_AF_INET6 || bpf_probe_read_kernel(&sin6, sizeof(sin6), name))
		return false;
	set_v6(p->addr, &p->family, sin6.sin6_addr.in6_u.u6_addr32);
	p->port = bpf_ntohs(sin6.sin6_port);
	return true;
}

#define UDPI_SOL_UDP 17
#define UDPI_UDP_SEGMENT 103
#define UDPI_MAX_CMSGS 8

/*
 * The UDP_SEGMENT size a sendmsg asked for in a control message (the
 * kernel copy ____sys_sendmsg() made), else the socket's; 0 for none.
 */
static __always_inline __u16 msg_gso_size(struct sock *sk, struct msghdr *msg)
{
	__u64 len = BPF_CORE_READ(msg, msg_controllen);
	unsigned char *ctl = BPF_CORE_READ(msg, msg_control);
	__u64 off = 0;

	if (!ctl || len < sizeof(struct cmsghdr))
		return sk_gso_size(sk);
	for (int i = 0; i < UDPI_MAX_CMSGS; i++) {
		struct cmsghdr cm;
		__u16 gso;

		if (off + sizeof(cm) > len || bpf_probe_read_kernel(&cm, sizeof(cm), ctl + off))
			break;
		if (cm.cmsg_len < sizeof(cm))
			break;
		if (cm.cmsg_level == UDPI_SOL_UDP && cm.cmsg_type == UDPI_UDP_SEGMENT &&
		    cm.cmsg_len >= sizeof(cm) + sizeof(gso) &&
		    !bpf_probe_read_kernel(&gso, sizeof(gso), ctl + off + sizeof(cm)))
			return gso;
		off += (cm.cmsg_len + sizeof(long) - 1) & ~(sizeof(long) - 1);
	}
	return sk_gso_size(sk);
}

/*
 * udp_sendmsg()/udpv6_sendmsg() returned `ret` for `msg` on `sk`.
 * udpv6_sendmsg() hands IPv4 and IPv4-mapped destinations to udp_sendmsg()
 * (net/ipv6/udp.c, "do_udp_sendmsg"), which counts them: the outer call
 * (`v6_outer`) must not count them again.
 */
static __always_inline void on_udp_sendmsg(struct sock *sk, const struct udpi_peer *given, int ret,
					   __u16 gso_size, bool v6_outer)
{
	struct udpi_peer p = {};

	if (ret < 0 || task_filtered_out())
		return; /* refused sends count nothing */
	if (given)
		p = *given;
	else if (!sk_connected_peer(sk, &p))
		return;
	if (v6_outer && p.family == UDPI_AF_INET)
		return;
	handle_count(sk, &p, (__u64)ret, gso_datagrams(ret, gso_size), true);
}

/* The sender of a received datagram, from its IP and UDP headers. */
static __always_inline bool skb_source(struct sk_buff *skb, struct udpi_peer *p)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct udphdr uh;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return false;
	version >>= 4;
	if (version == 4) {
		struct iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh))
			return false;
		set_v4(p->addr, iph.saddr);
		p->family = UDPI_AF_INET;
	} else if (version == 6) {
		struct ipv6hdr ip6h;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return false;
		set_v6(p->addr, &p->family, ip6h.saddr.in6_u.u6_addr32);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&uh, sizeof(uh), head + th))
		return false;
	p->port = bpf_ntohs(uh.source);
	return true;
}

/*
 * skb_consume_udp(sk, skb, len) ends every datagram read by udp_recvmsg()
 * and udpv6_recvmsg() with len = what the call returns (the copied bytes,
 * or the datagram's length under MSG_TRUNC), negated when MSG_PEEK left the
 * datagram queued. An entry hook sees the result without a return probe, so
 * many threads blocked in recv() cannot exhaust kretprobe instances. A peek
 * of a zero-length datagram also passes 0: the peek's extra reference on the
 * skb tells it apart.
 */
static __always_inline void on_skb_consume_udp(struct sock *sk, struct sk_buff *skb, int len)
{
	struct udpi_peer p = {};

	if (len < 0 || task_filtered_out())
		return;
	if (len == 0 && BPF_CORE_READ(skb, users.refs.counter) > 1)
		return;
	if (!skb_source(skb, &p) && !sk_connected_peer(sk, &p))
		return;
	handle_count(sk, &p, (__u64)len, 1, false);
}

/* ip4/ip6_datagram_connect() succeeded: the socket has its peer and local port. */
static __always_inline void on_datagram_connect(struct sock *sk, int ret)
{
	struct udpi_peer p = {};

	if (ret || udpi_sk_protocol(sk) != UDPI_IPPROTO_UDP || task_filtered_out())
		return; /* raw and ping sockets share these functions */
	if (sk_connected_peer(sk, &p))
		handle_connect(sk, &p);
}

/* ---- fentry backend: BPF trampolines ---- */

SEC("fexit/udp_sendmsg")
int BPF_PROG(fx_udp_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	struct udpi_peer p = {};
	bool given = msg_peer(msg, &p);

	if (ret >= 0)
		on_udp_sendmsg(sk, given ? &p : NULL, ret, msg_gso_size(sk, msg), false);
	return 0;
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fx_udpv6_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	struct udpi_peer p = {};
	bool given = msg_peer(msg, &p);

	if (ret >= 0)
		on_udp_sendmsg(sk, given ? &p : NULL, ret, msg_gso_size(sk, msg), true);
	return 0;
}

SEC("fentry/skb_consume_udp")
int BPF_PROG(fe_skb_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	on_skb_consume_udp(sk, skb, len);
	return 0;
}

SEC("fexit/ip4_datagram_connect")
int BPF_PROG(fx_ip4_datagram_connect, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	on_datagram_connect(sk, ret);
	return 0;
}

SEC("fexit/ip6_datagram_connect")
int BPF_PROG(fx_ip6_datagram_connect, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	on_datagram_connect(sk, ret);
	return 0;
}

/*
 * Closes: sk_common_release() calls sk_prot->destroy, udp_destroy_sock() or
 * udpv6_destroy_sock() (the latter does not call the former), for every
 * UDP socket. The seed's udp_destruct_sock hook misses IPv6 sockets since
 * udpv6_destruct_sock() was added (6.1 and stable backports) and is static
 * on current kernels.
 */
SEC("fentry/udp_destroy_sock")
int BPF_PROG(fe_udp_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

SEC("fentry/udpv6_destroy_sock")
int BPF_PROG(fe_udpv6_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

/* ---- kprobe backend: the same hooks through kprobes ---- */

/*
 * Arguments a kprobe saw, for the kretprobe of the same call. One map per
 * function: udpv6_sendmsg() nests udp_sendmsg() in the same thread.
 */
struct kp_send_args {
	__u64 sk;
	struct udpi_peer peer;
	__u16 gso_size;
	bool given;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_send_args);
} kp_send4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_send_args);
} kp_send6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} kp_connect SEC(".maps");

static __always_inline void kp_send_enter(void *map, struct sock *sk, struct msghdr *msg)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct kp_send_args a = {};

	a.sk = (__u64)sk;
	a.given = msg_peer(msg, &a.peer);
	a.gso_size = msg_gso_size(sk, msg);
	bpf_map_update_elem(map, &tid, &a, BPF_ANY);
}

static __always_inline void kp_send_exit(void *map, int ret, bool v6_outer)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct kp_send_args *a = bpf_map_lookup_elem(map, &tid);

	if (!a)
		return;
	on_udp_sendmsg((struct sock *)a->sk, a->given ? &a->peer : NULL, ret, a->gso_size, v6_outer);
	bpf_map_delete_elem(map, &tid);
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(kp_udp_sendmsg, struct sock *sk, struct msghdr *msg)
{
	kp_send_enter(&kp_send4, sk, msg);
	return 0;
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(kr_udp_sendmsg, int ret)
{
	kp_send_exit(&kp_send4, ret, false);
	return 0;
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(kp_udpv6_sendmsg, struct sock *sk, struct msghdr *msg)
{
	kp_send_enter(&kp_send6, sk, msg);
	return 0;
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(kr_udpv6_sendmsg, int ret)
{
	kp_send_exit(&kp_send6, ret, true);
	return 0;
}

SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(kp_skb_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	on_skb_consume_udp(sk, skb, len);
	return 0;
}

static __always_inline void kp_connect_enter(struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 skaddr = (__u64)sk;

	bpf_map_update_elem(&kp_connect, &tid, &skaddr, BPF_ANY);
}

static __always_inline void kp_connect_exit(int ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 *skaddr = bpf_map_lookup_elem(&kp_connect, &tid);

	if (!skaddr)
		return;
	on_datagram_connect((struct sock *)*skaddr, ret);
	bpf_map_delete_elem(&kp_connect, &tid);
}

SEC("kprobe/ip4_datagram_connect")
int BPF_KPROBE(kp_ip4_datagram_connect, struct sock *sk)
{
	kp_connect_enter(sk);
	return 0;
}

SEC("kretprobe/ip4_datagram_connect")
int BPF_KRETPROBE(kr_ip4_datagram_connect, int ret)
{
	kp_connect_exit(ret);
	return 0;
}

SEC("kprobe/ip6_datagram_connect")
int BPF_KPROBE(kp_ip6_datagram_connect, struct sock *sk)
{
	kp_connect_enter(sk);
	return 0;
}

SEC("kretprobe/ip6_datagram_connect")
int BPF_KRETPROBE(kr_ip6_datagram_connect, int ret)
{
	kp_connect_exit(ret);
	return 0;
}

SEC("kprobe/udp_destroy_sock")
int BPF_KPROBE(kp_udp_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

SEC("kprobe/udpv6_destroy_sock")
int BPF_KPROBE(kp_udpv6_destroy_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

/* ---- tracepoint backend: raw tracepoints + cgroup hooks (kernel >= 6.3) ---- */

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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64); /* struct sock address */
	__type(value, struct rx_ring);
} rx_rings SEC(".maps");

/* A zeroed ring to insert from: too big for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_ring);
} rx_ring_zero SEC(".maps");

const volatile bool kfree_skb_has_sk = false; /* set from the kernel's BTF */

static __always_inline __u64 sk_queued(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_receive_queue.qlen) +
	       BPF_CORE_READ((struct udp_sock *)sk, reader_queue.qlen);
}

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

#define UDPI_IPV6_HOPOPTS 0
#define UDPI_IPV6_ROUTING 43
#define UDPI_IPV6_DSTOPTS 60
#define UDPI_IPV6_MAX_EXT 4

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
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr ip6;
	struct iphdr ip4;
	struct udphdr uh;
	__u32 off;
	__u8 next;

	if (data + sizeof(ip4) <= end)
		ip4 = *(struct iphdr *)data;
	else if (bpf_skb_load_bytes(skb, 0, &ip4, sizeof(ip4)))
		return false;
	if (ip4.version == 4) {
		if (ip4.protocol != UDPI_IPPROTO_UDP)
			return false;
		off = ip4.ihl * 4;
		set_v4(p->addr, dest ? ip4.daddr : ip4.saddr);
		p->family = UDPI_AF_INET;
	} else if (ip4.version == 6) {
		if (data + sizeof(ip6) <= end)
			ip6 = *(struct ipv6hdr *)data;
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
		set_v6(p->addr, &p->family, dest ? ip6.daddr.in6_u.u6_addr32 : ip6.saddr.in6_u.u6_addr32);
	} else {
		return false;
	}
	if (off == sizeof(ip4) && data + sizeof(ip4) + sizeof(uh) <= end)
		uh = *(struct udphdr *)(data + sizeof(ip4));
	else if (off == sizeof(ip6) && data + sizeof(ip6) + sizeof(uh) <= end)
		uh = *(struct udphdr *)(data + sizeof(ip6));
	else if (bpf_skb_load_bytes(skb, off & 0xffff, &uh, sizeof(uh)))
		return false;
	if (skb->len < off + sizeof(uh))
		return false;
	p->port = bpf_ntohs(dest ? uh.dest : uh.source);
	*payload = skb->len - off - sizeof(uh);
	return true;
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

/*
 * UDP_SEGMENT sends: sock_send_length tells the bytes, not the segment size
 * (a control message sets it per call, out of sight of this backend). The
 * GSO skb passes __dev_queue_xmit() in the sender's context before the send
 * returns, carrying gso_segs: the datagrams it leaves as.
 */
struct gso_note {
	__u64 sk;
	__u64 extra; /* datagrams beyond one per send */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct gso_note);
} gso_notes SEC(".maps");

/* GSO notes not yet taken: most sends need not look (a hash lookup each). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gso_pending SEC(".maps");

/*
 * The skb's shared info (skb->head + skb->end): one read where end (an
 * offset on 64-bit kernels) sits just before head, as it has for years.
 */
static __always_inline struct skb_shared_info *skb_shinfo_of(struct sk_buff *skb)
{
	const __u32 off_end = bpf_core_field_offset(skb->end);
	struct {
		__u32 end;
		__u32 head_lo;
		__u32 head_hi;
	} w;

	if (bpf_core_field_size(skb->end) == 4 && bpf_core_field_offset(skb->head) == off_end + 4) {
		if (bpf_probe_read_kernel(&w, sizeof(w), (void *)skb + off_end))
			return NULL;
		return (struct skb_shared_info *)((((__u64)w.head_hi << 32) | w.head_lo) + w.end);
	}
	return (struct skb_shared_info *)(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end));
}

SEC("raw_tp/net_dev_queue")
int BPF_PROG(tp_net_dev_queue, struct sk_buff *skb)
{
	struct skb_shared_info *shinfo = skb_shinfo_of(skb);
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
	tid = bpf_get_current_pid_tgid();
	n = bpf_map_lookup_elem(&gso_notes, &tid);
	if (n && n->sk == (__u64)sk) {
		n->extra += segs - 1;
		return 0;
	}
	fresh.sk = (__u64)sk;
	fresh.extra = segs - 1;
	if (!bpf_map_update_elem(&gso_notes, &tid, &fresh, BPF_ANY)) {
		__u32 zero = 0;
		__u64 *pending = bpf_map_lookup_elem(&gso_pending, &zero);

		if (pending)
			__sync_fetch_and_add(pending, 1);
	}
	return 0;
}

/* Datagrams beyond the first that this thread's last send on sk left as. */
static __always_inline __u64 take_gso_extra(struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	__u64 *pending = bpf_map_lookup_elem(&gso_pending, &zero);
	struct gso_note *n;
	__u64 extra;

	if (!pending || !*pending)
		return 0;
	n = bpf_map_lookup_elem(&gso_notes, &tid);
	if (!n || n->sk != (__u64)sk)
		return 0;
	extra = n->extra;
	bpf_map_delete_elem(&gso_notes, &tid);
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
	struct bpf_sock *bsk = skb->sk;
	struct udpi_peer p = {};
	struct sock *sk;
	__u64 bytes, segs;

	if (!bsk)
		return 1;
	bsk = bpf_sk_fullsock(bsk);
	if (!bsk || bsk->protocol != UDPI_IPPROTO_UDP || bsk->type != UDPI_SOCK_DGRAM || task_filtered_out())
		return 1;
	segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	if (!skb_udp_end(skb, true, &p, &bytes)) {
		/* headers this program cannot read: counted, not attributed */
		stat_add(UDPI_STAT_FLOWS_UNTRACKED, 1);
		stat_add(UDPI_STAT_UNTRACKED_PACKETS, segs);
		stat_add(UDPI_STAT_UNTRACKED_BYTES, skb->len);
		return 1;
	}
	sk = launder_sk(bsk);
	if (sk)
		handle_count(sk, &p, bytes, segs, true);
	return 1;
}

/* sock_sendmsg_nosec(): trace_sock_send_length(sk, ret, 0) after every send. */
SEC("raw_tp/sock_send_length")
int BPF_PROG(tp_send_length, struct sock *sk, int ret, int flags)
{
	struct udpi_peer p = {};
	bool given, connected;
	__be16 dport;
	__u16 family;
	__u64 extra;

	/* Consume the notes even for a refused send, so they cannot go stale. */
	given = take_stash(true, sk, &p, &connected);
	if (!given && !udpi_sk_is_udp_dgram(sk))
		return 0;
	extra = take_gso_extra(sk);
	if (ret < 0 || task_filtered_out())
		return 0; /* refused sends count nothing */
	if (!given) {
		udpi_sk_dport_family(sk, &dport, &family);
		if (!sk_peer_of(sk, family, dport, &p))
			return 0;
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

/* sock_recvmsg_nosec(): trace_sock_recv_length(sk, ret, flags) after every receive. */
SEC("raw_tp/sock_recv_length")
int BPF_PROG(tp_recv_length, struct sock *sk, int ret, int flags)
{
	struct udpi_peer p = {};
	bool have, connected = false, quiet = false;
	__be16 dport = 0;
	__u16 family = 0;

	have = take_stash(false, sk, &p, &connected);
	if (!have && !udpi_sk_is_udp_dgram(sk))
		return 0;
	if (ret < 0 || (flags & (UDPI_MSG_PEEK | UDPI_MSG_ERRQUEUE)) || task_filtered_out())
		return 0; /* errors, peeks and the error queue consume no datagram */
	if (!have) {
		udpi_sk_dport_family(sk, &dport, &family);
		if (family != UDPI_AF_INET && family != UDPI_AF_INET6)
			return 0;
		connected = dport != 0;
	}
	if (!connected) {
		struct sock_cache *c = have ? sock_cache_of((__u64)sk) : NULL;
		struct udpi_peer noted = {};

		/* A named receive on a quiet ring has nothing to keep in step. */
		if (!c || !c->rx_quiet) {
			if (rx_ring_take(sk, have, &noted, &quiet) && !have) {
				p = noted;
				have = true;
			}
		}
	}
	if (!have && !sk_peer_of(sk, family, dport, &p)) {
		/* recv() without an address on an unconnected socket */
		stat_add(UDPI_STAT_PEER_UNKNOWN, 1);
		p.family = family;
		if (!arrivals_asked)
			ask_for_arrivals();
	}
	handle_count(sk, &p, (__u64)ret, 1, false);
	if (quiet) {
		/* handle_count() just made this CPU's cache entry this socket's */
		struct sock_cache *c = sock_cache_of((__u64)sk);

		if (c)
			c->rx_quiet = 1;
	}
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
		}
		return;
	}
	tid = bpf_get_current_pid_tgid();
	slot = bpf_map_lookup_elem(lru_stash(send), &tid);
	if (slot)
		*slot = *st;
	else
		bpf_map_update_elem(lru_stash(send), &tid, st, BPF_ANY);
}

/* Whether the hook's socket has a connected peer (its remote port is set). */
static __always_inline __u16 ctx_connected(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	return sk && sk->dst_port;
}

static __always_inline void stash_v4(bool send, struct bpf_sock_addr *ctx)
{
	struct udpi_peer_stash st = {};

	/* The sock pointer is only a key here, never dereferenced. */
	st.sk = (__u64)ctx->sk;
	if (!send)
		st.connected = ctx_connected(ctx);
	set_v4(st.addr, ctx->user_ip4);
	st.port = bpf_ntohs((__u16)ctx->user_port);
	st.family = UDPI_AF_INET;
	put_stash(send, &st);
}

static __always_inline void stash_v6(bool send, struct bpf_sock_addr *ctx)
{
	struct udpi_peer_stash st = {};
	__u32 a[4];

	st.sk = (__u64)ctx->sk;
	if (!send)
		st.connected = ctx_connected(ctx);
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	set_v6(st.addr, &st.family, a);
	st.port = bpf_ntohs((__u16)ctx->user_port);
	put_stash(send, &st);
}

/* cgroup programs on the root cgroup see every process: always allow (return 1). */
SEC("cgroup/sendmsg4")
int cg_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v4(true, ctx);
	return 1;
}

SEC("cgroup/sendmsg6")
int cg_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v6(true, ctx);
	return 1;
}

SEC("cgroup/recvmsg4")
int cg_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v4(false, ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int cg_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP && !task_filtered_out())
		stash_v6(false, ctx);
	return 1;
}

/* connect4/6 run before the kernel sets the peer: the flow is born here. */
SEC("cgroup/connect4")
int cg_connect4(struct bpf_sock_addr *ctx)
{
	struct udpi_peer p = {};
	struct sock *sk;

	if (ctx->protocol != UDPI_IPPROTO_UDP || task_filtered_out())
		return 1;
	set_v4(p.addr, ctx->user_ip4);
	p.port = bpf_ntohs((__u16)ctx->user_port);
	p.family = UDPI_AF_INET;
	sk = launder_sk(ctx->sk);
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

	if (ctx->protocol != UDPI_IPPROTO_UDP || task_filtered_out())
		return 1;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	set_v6(p.addr, &p.family, a);
	p.port = bpf_ntohs((__u16)ctx->user_port);
	sk = launder_sk(ctx->sk);
	if (p.port && sk)
		handle_connect(sk, &p);
	return 1;
}

/* Fires for every UDP socket's release, also at process exit. */
SEC("cgroup/sock_release")
int cg_sock_release(struct bpf_sock *ctx)
{
	if (ctx->protocol == UDPI_IPPROTO_UDP)
		handle_close((__u64)ctx);
	return 1;
}
