/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Layouts that no kernel moves, read without CO-RE: the program contexts
 * (struct __sk_buff, bpf_sock and bpf_sock_addr, the kernel's UAPI) and what
 * travels on the wire or crosses the system call boundary (IP and UDP
 * headers, socket addresses, control message headers).
 *
 * vmlinux.h marks every struct for CO-RE, and each type a CO-RE relocation
 * names costs libbpf a walk over the whole kernel BTF at every start (about
 * 0.6 ms a type with 126,611 types). So the contexts are read at the offsets
 * their UAPI definitions fix (taken from vmlinux.h at build time, where
 * offsetof() is a constant and no relocation), and the rest through the
 * declarations below, checked against vmlinux.h's.
 */
#ifndef UDPINTERCEPT_BPF_FIXED_BPF_H
#define UDPINTERCEPT_BPF_FIXED_BPF_H

#include "vmlinux.h"

/* ptr->field of a UAPI context type, at its fixed offset. */
#define UDPI_UAPI(ptr, type, field)                                                                          \
	(*(__typeof__(((type *)0)->field) *)((char *)(ptr) + __builtin_offsetof(type, field)))
#define SKB(skb, field) UDPI_UAPI(skb, struct __sk_buff, field)
#define BPF_SOCK(sk, field) UDPI_UAPI(sk, struct bpf_sock, field)
#define SOCK_ADDR(ctx, field) UDPI_UAPI(ctx, struct bpf_sock_addr, field)

/* RFC 791 (options follow when ihl > 5) */
struct udpi_iphdr {
	__u8 version_ihl; /* version in the high nibble, header length in 32-bit words in the low */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

/* RFC 8200 */
struct udpi_ipv6hdr {
	__be32 version_class_flow; /* version in the high nibble of the first byte */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* RFC 768 */
struct udpi_udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

/* <netinet/in.h>: struct sockaddr_in and struct sockaddr_in6 */
struct udpi_sockaddr_in {
	__u16 family;
	__be16 port;
	__be32 addr;
	__u8 zero[8];
};

struct udpi_sockaddr_in6 {
	__u16 family;
	__be16 port;
	__be32 flowinfo;
	__u32 addr[4];
	__u32 scope_id;
};

/* <linux/socket.h>: struct cmsghdr on a 64-bit kernel */
struct udpi_cmsghdr {
	__u64 len;
	__s32 level;
	__s32 type;
};

#define UDPI_SAME_FIELD(ours, theirs, a, b)                                                                  \
	_Static_assert(__builtin_offsetof(ours, a) == __builtin_offsetof(theirs, b) &&                       \
			       sizeof(((ours *)0)->a) == sizeof(((theirs *)0)->b),                           \
		       #ours "." #a " is not where " #theirs "." #b " is")

_Static_assert(sizeof(struct udpi_iphdr) == sizeof(struct iphdr), "struct iphdr");
UDPI_SAME_FIELD(struct udpi_iphdr, struct iphdr, protocol, protocol);
UDPI_SAME_FIELD(struct udpi_iphdr, struct iphdr, saddr, saddr);
UDPI_SAME_FIELD(struct udpi_iphdr, struct iphdr, daddr, daddr);
_Static_assert(sizeof(struct udpi_ipv6hdr) == sizeof(struct ipv6hdr), "struct ipv6hdr");
UDPI_SAME_FIELD(struct udpi_ipv6hdr, struct ipv6hdr, nexthdr, nexthdr);
UDPI_SAME_FIELD(struct udpi_ipv6hdr, struct ipv6hdr, saddr, saddr);
UDPI_SAME_FIELD(struct udpi_ipv6hdr, struct ipv6hdr, daddr, daddr);
_Static_assert(sizeof(struct udpi_udphdr) == sizeof(struct udphdr), "struct udphdr");
UDPI_SAME_FIELD(struct udpi_udphdr, struct udphdr, source, source);
UDPI_SAME_FIELD(struct udpi_udphdr, struct udphdr, dest, dest);
_Static_assert(sizeof(struct udpi_sockaddr_in) == sizeof(struct sockaddr_in), "struct sockaddr_in");
UDPI_SAME_FIELD(struct udpi_sockaddr_in, struct sockaddr_in, port, sin_port);
UDPI_SAME_FIELD(struct udpi_sockaddr_in, struct sockaddr_in, addr, sin_addr);
_Static_assert(sizeof(struct udpi_sockaddr_in6) == sizeof(struct sockaddr_in6), "struct sockaddr_in6");
UDPI_SAME_FIELD(struct udpi_sockaddr_in6, struct sockaddr_in6, port, sin6_port);
UDPI_SAME_FIELD(struct udpi_sockaddr_in6, struct sockaddr_in6, addr, sin6_addr);
_Static_assert(sizeof(struct udpi_cmsghdr) == sizeof(struct cmsghdr), "struct cmsghdr");
UDPI_SAME_FIELD(struct udpi_cmsghdr, struct cmsghdr, len, cmsg_len);
UDPI_SAME_FIELD(struct udpi_cmsghdr, struct cmsghdr, level, cmsg_level);
UDPI_SAME_FIELD(struct udpi_cmsghdr, struct cmsghdr, type, cmsg_type);

#endif /* UDPINTERCEPT_BPF_FIXED_BPF_H */
