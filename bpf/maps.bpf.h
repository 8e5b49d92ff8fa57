/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The maps and knobs every backend shares, declared for each translation
 * unit of the BPF object and defined once, in flow.bpf.c (which defines
 * UDPI_DEFINE_SHARED first). bpftool gen object links the units into one
 * object, resolving these declarations to that definition.
 */
#ifndef UDPINTERCEPT_BPF_MAPS_BPF_H
#define UDPINTERCEPT_BPF_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "udpintercept.h"

#ifdef UDPI_DEFINE_SHARED
#define UDPI_SHARED
#else
#define UDPI_SHARED extern
#endif

/* Knobs set by user space between open and load (rodata; defined in flow.bpf.c). */
extern const volatile __u64 interval_ns; /* 0: a snapshot per operation */
extern const volatile __u32 filter_pid;  /* tgid; 0 = any */
extern const volatile __u32 filter_uid;
extern const volatile bool filter_uid_set; /* uid 0 is a real uid */
extern const volatile __u16 filter_port;   /* local or remote; 0 = any */
extern const volatile __u16 filter_family; /* UDPI_AF_INET/INET6; 0 = any */
extern const volatile __u64 filter_cgroup; /* cgroup v2 id (with its descendants); 0 = any */

/* filter_cgroup's level in the cgroup v2 tree + 1, once a task under it was seen; 0 = not yet */
extern __u32 filter_cgroup_level;

/*
 * Set when a snapshot or a pending note found the ring buffer full: user
 * space then reads the whole flow table once instead of only what it was
 * told about (user space clears it).
 */
extern __u32 full_sweep_wanted;

/* When a record last could wake the ring buffer's reader (ring_wakeup()). */
extern __u64 last_wakeup_ns;

/* The flow table: the truth the snapshots are taken from. */
UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by user space before load */
	__type(key, struct udpi_flow_key);
	__type(value, struct udpi_flow);
} flows SEC(".maps");

/* Socket identities and last users, keyed by the kernel address of struct sock. */
UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct udpi_sock);
} socks SEC(".maps");

/* Closed sockets whose close record found the ring buffer full: id -> time. */
UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} closed SEC(".maps");

/* Per-CPU counter that makes socket ids unique without fetch-and-add (5.10). */
UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} id_seq SEC(".maps");

UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UDPI_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by user space before load */
} events SEC(".maps");

/*
 * The last socket each CPU looked up, valid while cache_epoch has not moved:
 * a flood on one socket skips the socket table. Every close moves the epoch
 * (a closed socket's address may come back as a new socket, which must get
 * a new id), and so does anything else that changes what an entry says.
 */
struct sock_cache {
	__u64 sk;
	__u64 id;
	__u64 epoch;
	__u32 user; /* the entry's last user (its pid) when cached */
	__u32 pad;  /* a power-of-two size */
};

UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sock_cache);
} sock_cache SEC(".maps");

UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cache_epoch SEC(".maps");

/* One slot per CPU to turn a verifier-typed socket pointer into a plain value. */
UDPI_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ptr_scratch SEC(".maps");

#endif /* UDPINTERCEPT_BPF_MAPS_BPF_H */
