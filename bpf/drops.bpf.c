// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The drop windows of drops.bpf.h and the kfree_skb tracepoint program of
 * the fentry and kprobe backends (the tracepoint backend's own, which also
 * keeps its arrival notes in step, is in arrivals.bpf.c).
 */
#define UDPI_DEFINE_DROPS
#include "vmlinux.h"
#include <bpf/bpf_tracing.h>

#include "drops.bpf.h"

const volatile __u32 kfree_skb_arity = 2;

SEC("raw_tp/kfree_skb")
int BPF_PROG(tp_kfree_skb_drop, struct sk_buff *skb)
{
	struct sock *sk = kfree_skb_rx_sk(ctx);

	if (!sk)
		sk = drop_window_of(UDPI_WINDOW_DEQUEUE, skb);
	if (!sk)
		sk = drop_window_of(UDPI_WINDOW_RECEIVE, skb);
	on_kfree_skb(ctx, skb, sk, false);
	return 0;
}
