#!/usr/bin/env python3
"""Count every nftables set in the current network namespace, anonymous ones included.

`nft list sets` hides anonymous sets (the `{ ... }` written inline in rules), so this asks the
kernel directly: one NFT_MSG_GETSET dump over NETLINK_NETFILTER, counting the NFT_MSG_NEWSET
replies. Prints `sets=N anonymous=M`.
"""
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSET = 9
NFT_MSG_GETSET = 10
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFTA_SET_FLAGS = 3
NFT_SET_ANONYMOUS = 0x1


def attributes(payload):
    offset = 0
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("HH", payload, offset)
        if length < 4:
            break
        yield kind & 0x7FFF, payload[offset + 4:offset + length]
        offset += (length + 3) & ~3


def main():
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    nfgen = struct.pack("BBH", socket.AF_UNSPEC, 0, 0)
    header = struct.pack("IHHII", 16 + len(nfgen), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSET,
                         NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    sock.send(header + nfgen)
    total = anonymous = 0
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset < len(data):
            length, kind, _, _, _ = struct.unpack_from("IHHII", data, offset)
            if kind == NLMSG_DONE:
                print(f"sets={total} anonymous={anonymous}")
                return 0
            if kind == NLMSG_ERROR:
                errno = -struct.unpack_from("i", data, offset + 16)[0]
                if errno:
                    print(f"netlink error {errno}", file=sys.stderr)
                    return 1
            elif kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET:
                total += 1
                for attr, value in attributes(data[offset + 20:offset + length]):
                    if attr == NFTA_SET_FLAGS and struct.unpack(">I", value[:4])[0] & NFT_SET_ANONYMOUS:
                        anonymous += 1
            offset += (length + 3) & ~3


if __name__ == "__main__":
    sys.exit(main())
