// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Programs that do nothing, on the hooks the tracepoint backend uses: the
 * benchmark's floor (empty_probe.cpp chooses which load, as the loader does). What a traced flood loses
 * beyond these is the cost of udpintercept's own work; what it loses to these is the price of the hooks.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("raw_tp/sock_send_length")
int empty_send_length(void *ctx)
{
	return 0;
}

SEC("raw_tp/sock_recv_length")
int empty_recv_length(void *ctx)
{
	return 0;
}

/* cgroup programs on the root cgroup see every process: they must allow (1). */
SEC("cgroup/sendmsg4")
int empty_sendmsg4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/sendmsg6")
int empty_sendmsg6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/recvmsg4")
int empty_recvmsg4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/recvmsg6")
int empty_recvmsg6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/sock_release")
int empty_sock_release(struct bpf_sock *ctx)
{
	return 1;
}

/* A cgroup/sock_create program lets the socket be created with 1. */
SEC("cgroup/sock_create")
int empty_sock_create(struct bpf_sock *ctx)
{
	return 1;
}

/* A cgroup_skb program allows the packet with 1. */
SEC("cgroup_skb/egress")
int empty_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup/connect4")
int empty_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/connect6")
int empty_connect6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup_skb/ingress")
int empty_ingress(struct __sk_buff *skb)
{
	return 1;
}

/* Where sends are counted at sock_send_length, GSO is noticed here. */
SEC("raw_tp/net_dev_queue")
int empty_net_dev_queue(void *ctx)
{
	return 0;
}

/* Receive drops: udpintercept attaches it on every kernel, in either receive mode. */
SEC("raw_tp/kfree_skb")
int empty_kfree_skb(void *ctx)
{
	return 0;
}
