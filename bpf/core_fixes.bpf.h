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
 * Whether sk is a datagram socket of protocol UDP, in one read where the
 * two u16 fields sit side by side (every kernel with the tracepoint
 * backend's hooks), else in two.
 */
static __always_inline bool udpi_sk_is_udp_dgram(const struct sock *sk)
{
	const __u32 off_type = bpf_core_field_offset(sk->sk_type);
	__u16 tp[2];

	if (bpf_core_field_size(sk->sk_type) == 2 && bpf_core_field_size(sk->sk_protocol) == 2 &&
	    bpf_core_field_offset(sk->sk_protocol) == off_type + 2) {
		if (bpf_probe_read_kernel(tp, sizeof(tp), (const void *)sk + off_type))
			return false;
		return tp[0] == 2 /* SOCK_DGRAM */ && tp[1] == 17 /* IPPROTO_UDP */;
	}
	return udpi_sk_type(sk) == 2 && udpi_sk_protocol(sk) == 17;
}

/*
 * skc_dport and skc_family: with skc_num between them in struct sock_common
 * since long before 5.10, read as one 6-byte block when the offsets agree.
 */
static __always_inline void udpi_sk_dport_family(const struct sock *sk, __be16 *dport, __u16 *family)
{
	const __u32 off = bpf_core_field_offset(sk->__sk_common.skc_dport);
	__u16 w[3] = {};

	if (bpf_core_field_offset(sk->__sk_common.skc_num) == off + 2 &&
	    bpf_core_field_offset(sk->__sk_common.skc_family) == off + 4) {
		bpf_probe_read_kernel(w, sizeof(w), (const void *)sk + off);
		*dport = w[0];
		*family = w[2];
		return;
	}
	*dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
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

#define UDPI_EEXIST 17
#define UDPI_EBUSY 16
#define UDPI_EFAULT 14

/*
 * Inserts key -> value unless present; 0 or a negative errno.
 *
 * Only the low 32 bits of the result are the error: before Linux 6.4 the
 * map operations returned int, and the verifier calls them directly in place
 * of the helper, so -EEXIST arrives zero-extended (0x00000000ffffffef).
 *
 * Since Linux 5.7 (the per-CPU map_locked counter of kernel/bpf/hashtab.c,
 * added against deadlocks of a program interrupting an update) an update
 * also fails with -EBUSY when this CPU's counter is held by an interrupted
 * update; before 6.1 every preallocated hash map takes that path: a
 * spurious failure that is retried a few times, then left to the caller.
 */
static __always_inline int udpi_map_insert_new(void *map, const void *key, const void *value)
{
	int err = -UDPI_EBUSY;

	for (int i = 0; i < 4 && err == -UDPI_EBUSY; i++)
		err = (int)bpf_map_update_elem(map, key, value, BPF_NOEXIST);
	return err;
}

/*
 * The skb's shared info (skb->head + skb->end): one read where end (an
 * offset, not a pointer, on every 64-bit kernel: NET_SKBUFF_DATA_USES_OFFSET
 * since Linux 2.6.22) sits just before head, as it does on every kernel
 * udpintercept supports; else two CO-RE reads.
 */
static __always_inline struct skb_shared_info *udpi_skb_shinfo(struct sk_buff *skb)
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

/*
 * The kfree_skb tracepoint, where every drop ends, grew with the kernels:
 * (skb, location) on 5.10; the drop reason since 5.17 ("net: skb: introduce
 * kfree_skb_reason()"); the receiving socket since 6.11 ("net: add rx_sk to
 * trace_kfree_skb", with UDP's receive path passing its socket through
 * sk_skb_reason_drop()). User space reads the arity from the kernel's BTF
 * (kfree_skb_arity). The reasons are an enum whose values move between
 * kernels: each is relocated by name, and one the kernel lacks is -2, which
 * no reason equals, nor the -1 of a tracepoint without reasons.
 */
#define UDPI_DROP_REASON(name)                                                                               \
	(bpf_core_enum_value_exists(enum skb_drop_reason, name)                                              \
		 ? (__s64)bpf_core_enum_value(enum skb_drop_reason, name)                                    \
		 : (__s64)-2)

/*
 * A UDP socket that hands its datagrams to a kernel tunnel (encap_rcv):
 * udp_sock.encap_type, a u8 on every kernel from 5.10 (its other flags
 * became bits of udp_flags in 6.6, encap_type stayed).
 */
static __always_inline __u8 udpi_udp_encap_type(struct sock *sk)
{
	return BPF_CORE_READ((struct udp_sock *)sk, encap_type);
}

/*
 * The current task's cgroup v2 ancestor at `level` (the root's is 0, its
 * own cgroup's is its level; 0 below that), as
 * bpf_get_current_ancestor_cgroup_id() says. Tracing programs may call that
 * helper since Linux 5.14 (commit 95b861a7935b "bpf: Allow
 * bpf_get_current_ancestor_cgroup_id for tracing"); cgroup programs long
 * before. Before 5.14 (user space asks the kernel: ancestor_cgroup_helper)
 * the task's default-hierarchy cgroup is read: its ancestor_ids[] holds the
 * ids of its ancestors by level, until ancestors[] (pointers) replaced it in
 * 6.0, whose tracing programs have the helper.
 */
extern const volatile bool ancestor_cgroup_helper;

struct cgroup___ancestor_ids {
	int level;
	__u64 ancestor_ids[];
} __attribute__((preserve_access_index));

static __always_inline __u64 udpi_current_ancestor_cgroup(__u32 level)
{
	struct task_struct *task;
	struct cgroup___ancestor_ids *cgrp;
	__u64 id = 0;

	if (ancestor_cgroup_helper)
		return bpf_get_current_ancestor_cgroup_id(level);
	task = (struct task_struct *)bpf_get_current_task();
	cgrp = (struct cgroup___ancestor_ids *)BPF_CORE_READ(task, cgroups, dfl_cgrp);
	if (!bpf_core_field_exists(cgrp->ancestor_ids) || !cgrp || (int)level > BPF_CORE_READ(cgrp, level))
		return 0;
	bpf_probe_read_kernel(&id, sizeof(id),
			      (void *)cgrp + bpf_core_field_offset(cgrp->ancestor_ids) +
				      level * sizeof(__u64));
	return id;
}

#endif /* UDPINTERCEPT_BPF_CORE_FIXES_BPF_H */
