/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel drift lives here: every difference between the kernels udpintercept
 * runs on (5.10 and up, with BTF) that the BPF side must know about, each
 * under a comment that says which kernel changed what. No version numbers:
 * CO-RE relocations and field/type existence checks decide at load time.
 */
#ifndef UDPINTERCEPT_BPF_CORE_FIXES_BPF_H
#define UDPINTERCEPT_BPF_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

/*
 * struct sock's sk_protocol and sk_type were bitfields sharing a word until
 * v5.6 (commit bf9765145b85 "sock: Make sk_protocol a 16-bit value"), plain
 * u16 since. Every kernel udpintercept supports (5.10+) has the u16 layout,
 * so a plain CO-RE read is right; the bitfield flavor is kept out on purpose.
 */
static __always_inline __u16 udpi_sk_protocol(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_protocol);
}

static __always_inline __u16 udpi_sk_type(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_type);
}

/*
 * possible_net_t holds `struct net *net` only with CONFIG_NET_NS (every
 * distribution kernel has it); without it there is one namespace, reported
 * as 0.
 */
static __always_inline __u32 udpi_sk_netns(const struct sock *sk)
{
	if (!bpf_core_field_exists(sk->__sk_common.skc_net.net))
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

#endif /* UDPINTERCEPT_BPF_CORE_FIXES_BPF_H */
