// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The shared part of the BPF object: the definitions of the maps and knobs
 * of maps.bpf.h, and the flush program user space runs (BPF_PROG_TEST_RUN)
 * for a flow whose held-back changes are due, so that every update, whoever
 * asks for it, passes the one rate limit of the flow (last_emit_ns).
 */
#define UDPI_DEFINE_SHARED
#include "flow.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u64 interval_ns = 1000000000ULL;
const volatile __u32 filter_pid = 0;
const volatile __u32 filter_uid = 0;
const volatile bool filter_uid_set = false;
const volatile __u16 filter_port = 0;
const volatile __u16 filter_family = 0;
const volatile __u64 filter_cgroup = 0;
__u32 filter_cgroup_level = 0;
const volatile bool ancestor_cgroup_helper = true;

__u32 full_sweep_wanted = 0;
__u64 last_wakeup_ns = 0;

/*
 * The ring buffer's record types in the object's BTF (a ring buffer map has
 * no value type to carry them), for the layout test of tests/unit/test_abi.cpp.
 */
const struct udpi_record *udpi_btf_record __attribute__((unused));
const struct udpi_pending_record *udpi_btf_pending_record __attribute__((unused));

/* Cgroup levels the filter's cgroup is looked for at, the root's (0) included. */
#define UDPI_CGROUP_LEVELS 64

/*
 * flow.bpf.h: the task's ancestor at the filter's level is the filter's
 * cgroup. That level is the directory's depth below the root of the
 * machine's cgroup tree, which user space cannot tell in a cgroup namespace
 * (its mount's root is the namespace's): it is learnt from the first task
 * found under the filter's cgroup, and until then each task's ancestors are
 * looked at from the root down (a cgroup id names one cgroup, so a match at
 * any level is the one).
 */
__noinline int task_in_filter_cgroup(void)
{
	__u32 known;
	__u64 id;

	/*
	 * Verified on its own, not where it is called: without a filter this
	 * return leaves the rest unreached, so a kernel whose tracing programs
	 * lack the helper (ancestor_cgroup_helper is then left set) loads it.
	 */
	if (!filter_cgroup)
		return 1;
	known = *(volatile __u32 *)&filter_cgroup_level;
	if (known)
		return udpi_current_ancestor_cgroup(known - 1) == filter_cgroup;
	for (__u32 level = 0; level < UDPI_CGROUP_LEVELS; level++) {
		id = udpi_current_ancestor_cgroup(level);
		if (id == filter_cgroup) {
			*(volatile __u32 *)&filter_cgroup_level = level + 1; /* the same for every CPU */
			return 1;
		}
		if (!id)
			break; /* past the task's own cgroup */
	}
	return 0;
}

/* flow.bpf.h */
__noinline int sock_register(__u64 skaddr, __u32 user)
{
	struct udpi_sock fresh = {};
	int err;

	fresh.id = new_sock_id();
	if (!fresh.id)
		return 1;
	if (user)
		sock_note_user(&fresh);
	/* Losing a creation race to another CPU is fine: the caller takes the winner's id. */
	err = udpi_map_insert_new(&socks, &skaddr, &fresh);
	if (err && err != -UDPI_EEXIST) {
		note_insert_failure(err);
		stat_add(UDPI_STAT_SOCKS_UNTRACKED, 1);
		return 1;
	}
	return 0;
}

/*
 * Run by user space with the flow's key as its context (four 64-bit
 * arguments, as a raw tracepoint's); never attached. Raw tracepoint programs can be run so since
 * Linux 5.10 (commit 1b4d60ec162f), the oldest kernel udpintercept supports.
 */
SEC("raw_tp")
int flush_flow(__u64 *ctx)
{
	struct udpi_flow_key key;
	struct udpi_flow *f;
	__u64 now;

	__builtin_memcpy(&key, ctx, sizeof(key));
	f = bpf_map_lookup_elem(&flows, &key);
	if (!f)
		return UDPI_FLUSH_GONE;
	if (f->changes == f->emitted_changes)
		return UDPI_FLUSH_CURRENT;
	now = bpf_ktime_get_ns();
	if (now - f->last_emit_ns < interval_ns)
		return UDPI_FLUSH_NOT_DUE;
	if (!emit_at(f->changes ? UDPI_REC_UPDATE : UDPI_REC_CONNECT, &key, f, now))
		return UDPI_FLUSH_RING_FULL;
	return UDPI_FLUSH_SENT;
}

/*
 * Run by user space with socket addresses from the socket table as its
 * context (see UDPI_SOCK_CHECK_BATCH), never attached: which of them have
 * been released. A release orphans the socket (sk_socket cleared) before
 * its memory is freed, after an RCU grace period, back to the UDP socket
 * cache. The table keeps a socket whose release no program saw (the kernel
 * does not always run the cgroup sock_release programs); the full sweep
 * and stop() end its flows as a deferred close.
 */
SEC("raw_tp")
int check_socks(__u64 *ctx)
{
	__u32 gone = 0;

#pragma unroll
	for (int i = 0; i < UDPI_SOCK_CHECK_BATCH; i++) {
		struct sock *sk = (struct sock *)ctx[i];
		struct socket *owner = NULL;

		if (!sk)
			break;
		if (BPF_CORE_READ_INTO(&owner, sk, sk_socket) || !owner)
			gone |= 1u << i;
	}
	return gone;
}
