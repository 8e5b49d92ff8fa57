// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The fentry backend: BPF trampolines (fentry/fexit) on the kernel's UDP
 * send, receive, connect and close functions, around the bodies of
 * udp_functions.bpf.h. User space loads these programs only when it chose
 * this backend (src/loader.cpp's table).
 */
#include "vmlinux.h"
#include <bpf/bpf_tracing.h>

#include "udp_functions.bpf.h"

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

/*
 * A new socket (sk_prot->init: udp_init_sock(), and udpv6_init_sock() for
 * IPv6 where it exists, 6.1 and stable backports): its address may still be
 * in the socket table under an id of a socket gone unseen, one whose
 * destruction ran no program (a run the kernel skipped) or one a drop
 * registered again between its destruction and its unhash. That socket's
 * flows end here, so the new one takes an id of its own, not the dead
 * one's flows.
 */
SEC("fentry/udp_init_sock")
int BPF_PROG(fe_udp_init_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

SEC("fentry/udpv6_init_sock")
int BPF_PROG(fe_udpv6_init_sock, struct sock *sk)
{
	handle_close((__u64)sk);
	return 0;
}

/*
 * Drops (drops.bpf.h). Where the kfree_skb tracepoint does not name the
 * receiving socket (before 6.11), the datagram's way into a socket,
 * udp_queue_rcv_one_skb() and udpv6_queue_rcv_one_skb() (the socket's
 * filter, then the enqueue that finds the buffer or protocol memory full),
 * is a window: what it frees is that socket's drop.
 */
SEC("fentry/udp_queue_rcv_one_skb")
int BPF_PROG(fe_udp_queue_rcv_one_skb, struct sock *sk, struct sk_buff *skb)
{
	drop_window_open(UDPI_WINDOW_RECEIVE, sk, skb);
	return 0;
}

SEC("fexit/udp_queue_rcv_one_skb")
int BPF_PROG(fx_udp_queue_rcv_one_skb)
{
	drop_window_close(UDPI_WINDOW_RECEIVE);
	return 0;
}

SEC("fentry/udpv6_queue_rcv_one_skb")
int BPF_PROG(fe_udpv6_queue_rcv_one_skb, struct sock *sk, struct sk_buff *skb)
{
	drop_window_open(UDPI_WINDOW_RECEIVE, sk, skb);
	return 0;
}

SEC("fexit/udpv6_queue_rcv_one_skb")
int BPF_PROG(fx_udpv6_queue_rcv_one_skb)
{
	drop_window_close(UDPI_WINDOW_RECEIVE);
	return 0;
}

/*
 * poll() and ioctl(FIONREAD) check the checksums of the datagrams at the
 * head of the queue (__first_packet_length(), shared by IPv4 and IPv6) and
 * free the bad ones, which no tracepoint argument ties to the socket.
 */
SEC("fentry/__first_packet_length")
int BPF_PROG(fe_first_packet_length, struct sock *sk)
{
	drop_window_open(UDPI_WINDOW_RECEIVE, sk, NULL);
	return 0;
}

SEC("fexit/__first_packet_length")
int BPF_PROG(fx_first_packet_length)
{
	drop_window_close(UDPI_WINDOW_RECEIVE);
	return 0;
}

/* recvmsg() found a bad checksum (udp_recvmsg() and udpv6_recvmsg()): it frees the datagram next. */
SEC("fexit/__sk_queue_drop_skb")
int BPF_PROG(fx_sk_queue_drop_skb, struct sock *sk, struct sk_buff_head *queue, struct sk_buff *skb,
	     unsigned int flags, void *destructor, int ret)
{
	on_queue_drop(sk, skb, ret);
	return 0;
}
