#ifndef CNFTABLES_H
#define CNFTABLES_H
/* The C shim over libnftnl and libmnl. It holds only what Swift cannot call directly
 * (macros, variadic helpers, constants); every function is named cnft_ and says why it exists.
 *
 * Everything else (libnftnl objects, libmnl sockets, the kernel UAPI enums and structs) is
 * imported by Swift straight from the headers below; only Sources/NftNetlink imports this module. */
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <sys/socket.h>
/* glibc's netinet/in.h first: linux/libc-compat.h then skips the UAPI copies of in_addr &co,
 * which would otherwise clash with Glibc's in Swift modules that import both. */
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nfnetlink_conntrack.h> /* ctnetlink (CTA_*, IPCTNL_MSG_CT_*), for NetlinkConntrack */
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

/* Moves the calling thread into the network namespace open at `fd`.
 * Why C: setns(2) and CLONE_NEWNET are declared only under _GNU_SOURCE, which Swift's Glibc
 * module is not built with. Returns 0, or -1 with errno set (as setns does). */
int cnft_enter_netns(int fd);

/* The most datagrams one cnft_receive_many call takes. */
#define CNFT_RECEIVE_MANY_MAX 64

/* Receives up to `count` datagrams into `buffers` (one each) in one recvmmsg(2), and their
 * lengths into `lengths`. Blocking: waits for the first only (MSG_WAITFORONE), so a dump's
 * queued answer comes back in one call: netlink builds a dump's next datagram while the
 * previous one is received. Why C: recvmmsg and struct mmsghdr are declared only under
 * _GNU_SOURCE. Returns the number received, or -1 with errno set (EAGAIN: nothing queued and
 * not blocking; EMSGSIZE: a datagram was longer than its buffer, its length in `lengths`). */
int cnft_receive_many(int fd, struct iovec *buffers, unsigned int count, size_t *lengths, int blocking);

#endif
