/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one definition of everything that crosses the kernel boundary.
 *
 * Included by the BPF programs (after vmlinux.h) and by user space (after
 * <linux/types.h>). Every structure has fixed-width fields, explicit
 * padding and a fixed size. src/abi.cpp holds the static_asserts on sizes
 * and offsets, so a change here that moves a field fails the build, and a
 * unit test compares them with the BTF of the built BPF object.
 */
#ifndef UDPINTERCEPT_BPF_UDPINTERCEPT_H
#define UDPINTERCEPT_BPF_UDPINTERCEPT_H

#define UDPI_COMM_LEN 16
#define UDPI_AF_INET 2
#define UDPI_AF_INET6 10

/* udpi_flow.emitted_changes of a flow no snapshot of which reached the ring buffer. */
#define UDPI_NEVER_EMITTED (~0ULL)

/*
 * Wake-ups of the ring buffer's reader. Waking it costs the program that
 * submits a record more than the rest of its work (an irq_work and the
 * reader's wake-up: 1-3 us a record, measured with a socket a query), so a
 * record submitted within this window of the last one that could wake the
 * reader does not wake it. The reader, after every read that found records,
 * reads again this window later (src/event_loop.cpp), so such a record waits
 * at most the window: a flow's first operation after a quiet spell still
 * wakes the reader at once.
 */
#define UDPI_WAKEUP_WINDOW_NS 1000000ULL

/* Kinds of ring-buffer record. */
enum udpi_record_kind {
	/* first operation of a flow (struct udpi_record) */
	UDPI_REC_NEW = 1,
	/* counters changed, at most once per flow per interval (struct udpi_record) */
	UDPI_REC_UPDATE = 2,
	/* connect() set this peer (struct udpi_record) */
	UDPI_REC_CONNECT = 3,
	/* a socket went away: close its flows (struct udpi_record, key.sock_id only) */
	UDPI_REC_SOCK_CLOSE = 4,
	/* one operation the busy flow table could not take: user space adds it (struct udpi_record) */
	UDPI_REC_DEFERRED = 5,
	/* a recv() without an address met the arrival hook detached: user space attaches it */
	UDPI_REC_WANT_ARRIVALS = 6,
	/* the flow has changes the rate limit held back (struct udpi_pending_record) */
	UDPI_REC_PENDING = 7,
};

/* Indexes into the per-CPU statistics array. */
enum udpi_stat {
	UDPI_STAT_RB_DROP_UPDATE = 0, /* snapshot records the ring buffer had no room for */
	UDPI_STAT_RB_DROP_CLOSE,      /* socket-close records left for user space to collect */
	UDPI_STAT_FLOWS_UNTRACKED,    /* operations counted in no flow (a full table, a peer not learned) */
	UDPI_STAT_UNTRACKED_PACKETS,  /* datagrams of such operations */
	UDPI_STAT_UNTRACKED_BYTES,    /* bytes of such operations */
	UDPI_STAT_SOCKS_UNTRACKED,    /* sockets the full socket table could not admit */
	UDPI_STAT_PEER_UNKNOWN,       /* receives whose peer could not be determined */
	/* socket/flow inserts the kernel refused for a reason other than a full table */
	UDPI_STAT_INSERT_FAILED,
	UDPI_STAT_INSERT_LAST_ERRNO, /* the errno of the last of those (not a sum) */
	UDPI_STAT_RB_SUBMITTED,      /* records put in the ring buffer */
	UDPI_STAT_FLOWS_CREATED,     /* flows the kernel inserted into the flow table */
	UDPI_STAT_PENDING_DROPPED,   /* pending notes the ring buffer had no room for */
	UDPI_STAT_NO_LISTENER,       /* datagrams to a port no socket listened on (NoPorts) */
	UDPI_STAT_MAX,
};

/*
 * Flow identity: one local socket and one remote endpoint.
 * Addresses are always 16 bytes; IPv4 (and IPv4-mapped IPv6) peers are
 * stored as ::ffff:a.b.c.d with family UDPI_AF_INET.
 */
struct udpi_flow_key {
	__u64 sock_id;  /* unique per socket for the tracer's lifetime; never reused */
	__u8 raddr[16]; /* remote address, network byte order */
	__u16 rport;    /* remote port, host byte order */
	__u16 family;   /* UDPI_AF_INET or UDPI_AF_INET6, by the traffic */
	__u32 pad;      /* must be zero */
};

/* Cumulative per-flow state: the truth the snapshots are taken from. */
struct udpi_flow {
	__u64 tx_bytes;   /* accepted by the kernel (udp_sendmsg's return) */
	__u64 rx_bytes;   /* consumed by the application (recvmsg's return) */
	__u64 tx_packets; /* datagrams on the wire */
	__u64 rx_packets; /* datagrams consumed */
	/* datagrams from this peer the kernel discarded on their way into the socket */
	__u64 rx_drops;
	__u64 last_ns; /* CLOCK_MONOTONIC of the newest change */
	/* CLOCK_MONOTONIC of the last snapshot sent: the one rate limiter of updates */
	__u64 last_emit_ns;
	__u64 cgroup_id; /* cgroup v2 id of the task of the newest change */
	/* operations counted; a snapshot's value orders the snapshots of a flow */
	__u64 changes;
	/* jiffies when last_ns was read: it is read once per tick, not per operation */
	__u64 last_tick;
	/* `changes` of the last snapshot the ring buffer took, or UDPI_NEVER_EMITTED */
	__u64 emitted_changes;
	/* last_emit_ns when the flow was last noted pending: one note per interval */
	__u64 pending_for_ns;
	__u32 pid;                /* tgid of the task of the newest change */
	__u32 uid;                /* its uid */
	__u32 netns;              /* inode number of the socket's network namespace */
	__u16 lport;              /* local port, host byte order */
	__u16 pad0;               /* must be zero */
	__u8 laddr[16];           /* local address, network byte order (::ffff:a.b.c.d for IPv4) */
	char comm[UDPI_COMM_LEN]; /* command of the task of the newest change */
};

/* One ring-buffer record carrying a snapshot (or, for SOCK_CLOSE, a socket). */
struct udpi_record {
	__u32 kind; /* enum udpi_record_kind */
	__u32 pad;  /* must be zero */
	struct udpi_flow_key key;
	struct udpi_flow flow; /* unused (zero) for UDPI_REC_SOCK_CLOSE */
};

/*
 * UDPI_REC_PENDING: the flow's newest changes were held back by the rate
 * limit. Unless an update of the flow follows, user space asks the kernel to
 * send one (the flush program) once last_emit_ns + interval has passed.
 */
struct udpi_pending_record {
	__u32 kind; /* UDPI_REC_PENDING */
	__u32 pad;  /* must be zero */
	struct udpi_flow_key key;
	__u64 last_emit_ns; /* the flow's last_emit_ns when it was noted */
};

/*
 * Socket addresses the check program takes at once (a raw tracepoint's
 * twelve arguments; 0 ends the list). Bit i of its result: the socket at
 * address i is gone (its release cleared sk_socket).
 */
#define UDPI_SOCK_CHECK_BATCH 12

/* What the flush program did with one flow (its return value). */
enum udpi_flush_result {
	UDPI_FLUSH_GONE = 0,      /* no such flow (closed) */
	UDPI_FLUSH_CURRENT = 1,   /* nothing unreported */
	UDPI_FLUSH_NOT_DUE = 2,   /* the interval since the last snapshot has not passed */
	UDPI_FLUSH_SENT = 3,      /* a snapshot is in the ring buffer */
	UDPI_FLUSH_RING_FULL = 4, /* the ring buffer had no room: try again */
};

/*
 * Value of the socket table, keyed by the kernel address of struct sock: the
 * socket's identity and its last known user, whom a drop is charged to (a
 * drop runs in whatever context delivered the datagram, on loopback the
 * sender's). pid 0 and an empty comm: no operation of the socket was seen.
 */
struct udpi_sock {
	__u64 id;                 /* becomes udpi_flow_key.sock_id */
	__u64 cgroup_id;          /* cgroup v2 id of the last user */
	__u32 pid;                /* tgid of the last task that sent, received or connected on it */
	__u32 uid;                /* its uid */
	char comm[UDPI_COMM_LEN]; /* its command */
};

/*
 * Peer stashed by a cgroup sock_addr hook for the sendmsg/recvmsg that
 * follows in the same thread (in task storage, or keyed by pid_tgid).
 */
struct udpi_peer_stash {
	__u64 sk;      /* struct sock (UDP) the peer belongs to; 0 = consumed */
	__u8 addr[16]; /* as in udpi_flow_key */
	__u16 port;    /* host byte order */
	__u16 family;
	__u16 connected; /* the socket had a connected peer (its remote port was set) */
	__u16 pad;
};

#endif /* UDPINTERCEPT_BPF_UDPINTERCEPT_H */
