internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// ctnetlink constants (linux/netfilter/nfnetlink_conntrack.h), C names beside Swift names.
enum CT {
    static let subsystem = UInt16(NFNL_SUBSYS_CTNETLINK)  // NFNL_SUBSYS_CTNETLINK = 1
    static let get = UInt16(IPCTNL_MSG_CT_GET.rawValue)  // IPCTNL_MSG_CT_GET = 1
    static let delete = UInt16(IPCTNL_MSG_CT_DELETE.rawValue)  // IPCTNL_MSG_CT_DELETE = 2

    static let tupleOrig = UInt16(CTA_TUPLE_ORIG.rawValue)
    static let tupleReply = UInt16(CTA_TUPLE_REPLY.rawValue)
    static let id = UInt16(CTA_ID.rawValue)
    static let zone = UInt16(CTA_ZONE.rawValue)
    static let filter = UInt16(CTA_FILTER.rawValue)  // since Linux 5.8; older kernels ignore it
    static let filterOrigFlags = UInt16(CTA_FILTER_ORIG_FLAGS.rawValue)

    static let tupleIP = UInt16(CTA_TUPLE_IP.rawValue)
    static let tupleProto = UInt16(CTA_TUPLE_PROTO.rawValue)
    static let ipV4Src = UInt16(CTA_IP_V4_SRC.rawValue)
    static let ipV4Dst = UInt16(CTA_IP_V4_DST.rawValue)
    static let ipV6Src = UInt16(CTA_IP_V6_SRC.rawValue)
    static let ipV6Dst = UInt16(CTA_IP_V6_DST.rawValue)
    static let protoNum = UInt16(CTA_PROTO_NUM.rawValue)
    static let protoSrcPort = UInt16(CTA_PROTO_SRC_PORT.rawValue)
    static let protoDstPort = UInt16(CTA_PROTO_DST_PORT.rawValue)

    /// CTA_FILTER_F_CTA_PROTO_NUM: the filter flag "match CTA_PROTO_NUM of the tuple". Kernel
    /// ABI, but defined only in net/netfilter/nf_internals.h, so it is written out here.
    static let filterProtoNum: UInt32 = 1 << 3

    /// Deletes per datagram: small enough that every ack fits the receive buffer at once.
    static let deletesPerDatagram = 128
    /// Room for one delete message (≈ 110 bytes for IPv6 with CTA_ID and CTA_ZONE).
    static let maxDeleteSize = 256
}

extension NetlinkSocket {
    /// Dumps the family's conntrack table (IPCTNL_MSG_CT_GET, NLM_F_DUMP), asking the kernel to
    /// send only entries of `protocolNumber` (CTA_FILTER); kernels without the filter send
    /// everything, so callers still check the protocol. Unparsable entries are skipped.
    func listConntrack(family: Family, protocolNumber: UInt8, each body: (ConntrackEntry) -> Void) throws(BackendError) {
        do {
            try dumpConntrack(family: family, filter: protocolNumber, each: body)
        } catch where error.errno == EOPNOTSUPP || error.errno == EINVAL {
            // A kernel that knows CTA_FILTER but refuses this one: list everything instead.
            try dumpConntrack(family: family, filter: nil, each: body)
        }
    }

    private func dumpConntrack(family: Family, filter protocolNumber: UInt8?, each body: (ConntrackEntry) -> Void) throws(BackendError) {
        let seq = nextSeq()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let header = ConntrackMessage.start(buffer.baseAddress!, type: CT.get, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), seq: seq, family: family)
        if let protocolNumber {
            let tuple = mnl_attr_nest_start(header, CT.tupleOrig)
            let proto = mnl_attr_nest_start(header, CT.tupleProto)
            mnl_attr_put_u8(header, CT.protoNum, protocolNumber)
            mnl_attr_nest_end(header, proto)
            mnl_attr_nest_end(header, tuple)
            let filter = mnl_attr_nest_start(header, CT.filter)
            mnl_attr_put_u32(header, CT.filterOrigFlags, CT.filterProtoNum)
            mnl_attr_nest_end(header, filter)
        }
        try send(UnsafeRawBufferPointer(start: header, count: Int(header.pointee.nlmsg_len)))

        let what = "listing \(family == .ip ? "IPv4" : "IPv6") conntrack entries (IPCTNL_MSG_CT_GET)"
        var finished = false
        while !finished {
            let received = try receive(blocking: true) { message throws(BackendError) in
                guard !finished, message.pointee.nlmsg_seq == seq, message.pointee.nlmsg_pid == portID else { return }
                switch Int32(message.pointee.nlmsg_type) {
                case NLMSG_DONE:
                    // A dump that failed part-way ends with DONE carrying a negative errno.
                    if mnl_nlmsg_get_payload_len(message) >= MemoryLayout<Int32>.size {
                        let code = mnl_nlmsg_get_payload(message).loadUnaligned(as: Int32.self)
                        if code < 0 { throw BackendError(errno: -code, message: "\(what): \(errorText(-code))") }
                    }
                    finished = true
                case NLMSG_ERROR:
                    guard let ack = Ack(message) else { throw BackendError(errno: EPROTO, message: "\(what): malformed netlink error message") }
                    if ack.errno != 0 {
                        throw BackendError(errno: ack.errno, message: "\(what): \(errorText(ack.errno))" + (ack.text.map { " (\($0))" } ?? ""))
                    }
                    finished = true
                default:
                    if let entry = ConntrackMessage.parse(message, family: family) { body(entry) }
                }
            }
            if received == .overrun {
                throw BackendError(errno: ENOBUFS, message: "\(what): netlink dropped part of the dump (receive buffer overrun)")
            }
        }
    }

    /// Deletes `entries` (IPCTNL_MSG_CT_DELETE by original tuple, CTA_ID and CTA_ZONE), many
    /// per datagram, each acked. Returns how many the kernel deleted; ENOENT (already gone, or
    /// the tuple now belongs to a newer entry) is not counted and not an error. Other errors
    /// do not stop the remaining deletes; the first one is thrown at the end.
    func deleteConntrack(_ entries: [ConntrackEntry], family: Family) throws(BackendError) -> Int {
        guard !entries.isEmpty else { return 0 }
        setBuffer(send: false, bytes: 1 << 20)
        let capacity = CT.deletesPerDatagram * CT.maxDeleteSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        var deleted = 0
        var failure: (entry: ConntrackEntry, ack: Ack)?
        var failures = 0
        var start = 0
        while start < entries.count {
            let chunk = entries[start..<min(start + CT.deletesPerDatagram, entries.count)]
            start += chunk.count
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let firstSeq = reserveSeqs(chunk.count)
            var length = 0
            for (offset, entry) in chunk.enumerated() {
                let header = ConntrackMessage.start(buffer.baseAddress! + length, type: CT.delete, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK),
                                                    seq: firstSeq &+ UInt32(offset), family: family)
                ConntrackMessage.putTuple(header, CT.tupleOrig, entry.original)
                if let id = entry.id { mnl_attr_put_u32(header, CT.id, id) }
                if let zone = entry.zone { mnl_attr_put_u16(header, CT.zone, zone) }
                length += Int(header.pointee.nlmsg_len)
                precondition(length <= capacity, "conntrack delete messages overran their buffer")
            }
            try send(UnsafeRawBufferPointer(start: buffer.baseAddress, count: length))

            // Every message asked for an ack; wait for all of them (nfnetlink answers inside
            // sendmsg, so they are already queued).
            var pending = chunk.count
            while pending > 0 {
                let received = try receive(blocking: true) { message throws(BackendError) in
                    guard message.pointee.nlmsg_pid == portID, let ack = Ack(message) else { return }
                    let index = ack.seq &- firstSeq
                    guard index < UInt32(chunk.count) else { return }
                    pending -= 1
                    switch ack.errno {
                    case 0: deleted += 1
                    case ENOENT: break
                    default:
                        failures += 1
                        if failure == nil { failure = (chunk[chunk.startIndex + Int(index)], ack) }
                    }
                }
                if received == .overrun {
                    throw BackendError(errno: ENOBUFS, message: "deleting conntrack entries: acks were lost (netlink receive buffer overrun); \(deleted) deleted so far")
                }
            }
        }
        if let (entry, ack) = failure {
            var message = "deleting conntrack entry \(entry.original) (reply from \(entry.reply.source)) failed: \(errorText(ack.errno))"
            if let text = ack.text, !text.isEmpty { message += " (\(text))" }
            if failures > 1 { message += "; \(failures - 1) more delete(s) failed" }
            message += "; \(deleted) deleted"
            throw BackendError(errno: ack.errno, message: message)
        }
        return deleted
    }
}

/// Building and parsing ctnetlink messages with libmnl.
enum ConntrackMessage {
    /// Puts an nlmsghdr and the nfgenmsg for `family` at `base` (zeroed memory).
    static func start(_ base: UnsafeMutableRawPointer, type: UInt16, flags: UInt16, seq: UInt32, family: Family) -> UnsafeMutablePointer<nlmsghdr> {
        let header = mnl_nlmsg_put_header(base)!
        header.pointee.nlmsg_type = CT.subsystem << 8 | type
        header.pointee.nlmsg_flags = flags
        header.pointee.nlmsg_seq = seq
        let extra = mnl_nlmsg_put_extra_header(header, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nfgenmsg.self)
        extra.pointee.nfgen_family = family.nfproto
        extra.pointee.version = UInt8(NFNETLINK_V0)
        extra.pointee.res_id = 0
        return header
    }

    /// CTA_TUPLE_* { CTA_TUPLE_IP { src, dst }, CTA_TUPLE_PROTO { num, sport, dport } }.
    static func putTuple(_ header: UnsafeMutablePointer<nlmsghdr>, _ type: UInt16, _ tuple: ConntrackTuple) {
        let nest = mnl_attr_nest_start(header, type)
        let ip = mnl_attr_nest_start(header, CT.tupleIP)
        let v4 = tuple.source.family == .ipv4
        tuple.source.bytes.withUnsafeBytes { mnl_attr_put(header, v4 ? CT.ipV4Src : CT.ipV6Src, $0.count, $0.baseAddress) }
        tuple.destination.bytes.withUnsafeBytes { mnl_attr_put(header, v4 ? CT.ipV4Dst : CT.ipV6Dst, $0.count, $0.baseAddress) }
        mnl_attr_nest_end(header, ip)
        let proto = mnl_attr_nest_start(header, CT.tupleProto)
        mnl_attr_put_u8(header, CT.protoNum, tuple.protocolNumber)
        mnl_attr_put_u16(header, CT.protoSrcPort, tuple.sourcePort.bigEndian)
        mnl_attr_put_u16(header, CT.protoDstPort, tuple.destinationPort.bigEndian)
        mnl_attr_nest_end(header, proto)
        mnl_attr_nest_end(header, nest)
    }

    /// One IPCTNL_MSG_CT_NEW message of a dump, or nil when it lacks a usable tuple (a protocol
    /// without ports, say, which no request can name).
    static func parse(_ message: UnsafePointer<nlmsghdr>, family: Family) -> ConntrackEntry? {
        guard message.pointee.nlmsg_type == CT.subsystem << 8 | UInt16(IPCTNL_MSG_CT_NEW.rawValue) else { return nil }
        let headerSize = MemoryLayout<nfgenmsg>.size
        guard mnl_nlmsg_get_payload_len(message) >= headerSize else { return nil }
        var original: ConntrackTuple?
        var reply: ConntrackTuple?
        var id: UInt32?
        var zone: UInt16?
        let payload = UnsafeRawPointer(mnl_nlmsg_get_payload_offset(message, headerSize)!)
        let tail = UnsafeRawPointer(mnl_nlmsg_get_payload_tail(message)!)
        forEachAttribute(payload, tail - payload) { type, value in
            switch type {
            case CT.tupleOrig: original = tuple(value, family: family)
            case CT.tupleReply: reply = tuple(value, family: family)
            case CT.id where value.count == 4: id = value.loadUnaligned(as: UInt32.self)
            case CT.zone where value.count == 2:
                let raw = value.loadUnaligned(as: UInt16.self)
                if raw != 0 { zone = raw }
            default: break
            }
        }
        guard let original, let reply else { return nil }
        return ConntrackEntry(original: original, reply: reply, id: id, zone: zone)
    }

    private static func tuple(_ nest: UnsafeRawBufferPointer, family: Family) -> ConntrackTuple? {
        var source: IPAddress?, destination: IPAddress?
        var number: UInt8?, sourcePort: UInt16?, destinationPort: UInt16?
        let length = family.ipFamily.addressLength
        let (sourceType, destinationType) = family == .ip ? (CT.ipV4Src, CT.ipV4Dst) : (CT.ipV6Src, CT.ipV6Dst)
        forEachAttribute(nest) { type, value in
            switch type {
            case CT.tupleIP:
                forEachAttribute(value) { type, value in
                    guard value.count == length else { return }
                    if type == sourceType { source = IPAddress(bytes: Array(value)) }
                    if type == destinationType { destination = IPAddress(bytes: Array(value)) }
                }
            case CT.tupleProto:
                forEachAttribute(value) { type, value in
                    switch type {
                    case CT.protoNum where value.count == 1: number = value[0]
                    case CT.protoSrcPort where value.count == 2: sourcePort = UInt16(bigEndian: value.loadUnaligned(as: UInt16.self))
                    case CT.protoDstPort where value.count == 2: destinationPort = UInt16(bigEndian: value.loadUnaligned(as: UInt16.self))
                    default: break
                    }
                }
            default: break
            }
        }
        guard let source, let destination, let number, let sourcePort, let destinationPort else { return nil }
        return ConntrackTuple(source: source, destination: destination, protocolNumber: number,
                              sourcePort: sourcePort, destinationPort: destinationPort)
    }

    private static func forEachAttribute(_ buffer: UnsafeRawBufferPointer, _ body: (UInt16, UnsafeRawBufferPointer) -> Void) {
        guard let base = buffer.baseAddress else { return }
        forEachAttribute(base, buffer.count, body)
    }

    /// Walks the attributes in `length` bytes at `start` with libmnl's bounds checks
    /// (mnl_attr_ok), handing each one's type (flags stripped) and payload to `body`.
    private static func forEachAttribute(_ start: UnsafeRawPointer, _ length: Int, _ body: (UInt16, UnsafeRawBufferPointer) -> Void) {
        let end = start + length
        var attribute = start.assumingMemoryBound(to: nlattr.self)
        while mnl_attr_ok(attribute, Int32(end - UnsafeRawPointer(attribute))) {
            let type = mnl_attr_get_type(attribute)  // NLA_F_NESTED / NLA_F_NET_BYTEORDER stripped
            let payload = UnsafeRawBufferPointer(start: mnl_attr_get_payload(attribute), count: Int(mnl_attr_get_payload_len(attribute)))
            body(type, payload)
            attribute = UnsafePointer(mnl_attr_next(attribute))
        }
    }
}
