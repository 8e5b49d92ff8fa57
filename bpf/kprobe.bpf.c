// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The kprobe backend: the fentry backend's hooks through kprobes and
 * kretprobes, for kernels without BPF trampolines. A return probe cannot
 * see the arguments, so the entry probe keeps them per thread.
 */
#include "vmlinux.h"
#include <bpf/bpf_tracing.h>

#include "udp_functions.bpf.h"

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

/* A new socket: a gone one's id at its address ends here (see fentry.bpf.c). */
SEC("kprobe/udp_init_sock")
int BPF_KPROBE(kp_udp_init_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

SEC("kprobe/udpv6_init_sock")
int BPF_KPROBE(kp_udpv6_init_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

/*
 * Drops: the fentry backend's windows (see fentry.bpf.c). The receive
 * functions run in softirq context and __first_packet_length() with bottom
 * halves disabled, so a return probe closes the window its entry opened on
 * the same CPU.
 */
SEC("kprobe/udp_queue_rcv_one_skb")
int BPF_KPROBE(kp_udp_queue_rcv_one_skb, struct sock *sk, struct sk_buff *skb)
{
	drop_window_open(UDPI_WINDOW_RECEIVE, sk, skb);
	return 0;
}

SEC("kretprobe/udp_queue_rcv_one_skb")
int BPF_KRETPROBE(kr_udp_queue_rcv_one_skb)
{
	drop_window_close(UDPI_WINDOW_RECEIVE);
	return 0;
}

SEC("kprobe/udpv6_queue_rcv_one_skb")
int BPF_KPROBE(kp_udpv6_queue_rcv_one_skb, struct sock *sk, struct sk_buff *skb)
{
	drop_window_open(UDPI_WINDOW_RECEIVE, sk, skb);
	return 0;
}

SEC("kretprobe/udpv6_queue_rcv_one_skb")
int BPF_KRETPROBE(kr_udpv6_queue_rcv_one_skb)
{
	drop_window_close(UDPI_WINDOW_RECEIVE);
	return 0;
}

SEC("kprobe/__first_packet_length")
int BPF_KPROBE(kp_first_packet_length, struct sock *sk)
{
	drop_window_open(UDPI_WINDOW_RECEIVE, sk, NULL);
	return 0;
}

SEC("kretprobe/__first_packet_length")
int BPF_KRETPROBE(kr_first_packet_length)
{
	drop_window_close(UDPI_WINDOW_RECEIVE);
	return 0;
}

/* recvmsg() runs in process context, free to move between CPUs: arguments wait by thread. */
struct kp_queue_drop_args {
	__u64 sk;
	__u64 skb;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_queue_drop_args);
} kp_queue_drop SEC(".maps");

SEC("kprobe/__sk_queue_drop_skb")
int BPF_KPROBE(kp_sk_queue_drop_skb, struct sock *sk, struct sk_buff_head *queue, struct sk_buff *skb)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct kp_queue_drop_args a = {(__u64)sk, (__u64)skb};

	bpf_map_update_elem(&kp_queue_drop, &tid, &a, BPF_ANY);
	return 0;
}

SEC("kretprobe/__sk_queue_drop_skb")
int BPF_KRETPROBE(kr_sk_queue_drop_skb, int ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct kp_queue_drop_args *a = bpf_map_lookup_elem(&kp_queue_drop, &tid);

	if (!a)
		return 0;
	on_queue_drop((struct sock *)a->sk, (struct sk_buff *)a->skb, ret);
	bpf_map_delete_elem(&kp_queue_drop, &tid);
	return 0;
}
